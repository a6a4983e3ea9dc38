"""Why the master stopped a process: the reasons the timeline records.

Theory of operation
-------------------
A worker's exit status says how it ended (exit 0, SIGTERM, SIGKILL), not
why: a SIGTERM ends a reload's old worker, a recycled one, one dropped by
TTOU and every worker at shutdown alike.  The master knows why at the moment
it decides, so the arbiter records the decision then, once per process, with
one of the fixed ``REASONS`` below and the time it asked (``Timeline.stopped``
keeps the first: a worker stopped for a reload that is still draining when
the server shuts down was stopped for the reload).  A process whose exit has
no record left on its own: a crash, a failed boot, ``max_requests``, an
operator's ``kill``.

This module is pure (no clock, no process table, no gunicorn): the reasons,
the rules that name the stops gunicorn's own code makes, and the count a
reader prints.  The arbiter feeds it plain values.

Reasons
-------
``reload``        a rolling reload (SIGHUP) stopped an old-generation worker once a
                  new one was ready; ``mode = "off"``: gunicorn's reload did; a long
                  worker retired by the pool's rolling reload (or the pool removed)
``recycle``       max_worker_age / max_worker_memory: replaced by a ready new one
``memory_guard``  the memory guard stopped a booting worker before the OOM killer
``boot_timeout``  not ready within boot_timeout
``scale_down``    TTOU, the control socket's ``worker remove``
``rollback``      a reload abandoned: its generation's booting workers are stopped
``priority``      a background boot that could not be raised to normal priority
``timeout``       gunicorn's own worker ``timeout`` (a hung worker; SIGABRT)
``shutdown``      the master stops (SIGTERM, SIGINT, SIGQUIT)
``halt``          the master gives up (boot errors: it exits non-zero)
"""

from __future__ import annotations

import signal

RELOAD = "reload"
RECYCLE = "recycle"
MEMORY_GUARD = "memory_guard"
BOOT_TIMEOUT = "boot_timeout"
SCALE_DOWN = "scale_down"
ROLLBACK = "rollback"
PRIORITY = "priority"
TIMEOUT = "timeout"
SHUTDOWN = "shutdown"
HALT = "halt"
REASONS = (RELOAD, RECYCLE, MEMORY_GUARD, BOOT_TIMEOUT, SCALE_DOWN, ROLLBACK, PRIORITY, TIMEOUT, SHUTDOWN, HALT)

# what gunicorn sends to stop a worker (SIGUSR1, SIGHUP, SIGTTIN ... are not stops)
STOPPING_SIGNALS = frozenset({signal.SIGTERM, signal.SIGKILL, signal.SIGQUIT, signal.SIGINT, signal.SIGABRT})


def halt_reason(exit_status: int) -> str:
    """The master stops all its workers: a shutdown, or a halt (a non-zero exit: it gave up)."""
    return HALT if exit_status else SHUTDOWN


def shutdown_reason(handling: BaseException | None) -> str:
    """Why ``stop()`` stops everything when no halt said why first: a shutdown (SIGTERM and
    SIGQUIT reach it as gunicorn's StopIteration, SIGINT as KeyboardInterrupt), or a halt
    when gunicorn's main loop calls it on an unexpected exception (it then exits -1)."""
    crashed = isinstance(handling, Exception) and not isinstance(handling, StopIteration)
    return HALT if crashed else SHUTDOWN


def retire_reason(reloading: bool) -> str:
    """A retiring HTTP worker stopped once its replacement is ready: one of a generation older
    than the newest (a reload's, in progress or done: its ramp does not wait for a boot past
    ready_timeout), else the one worker recycling marked (it marks one only while nothing
    else retires)."""
    return RELOAD if reloading else RECYCLE


def gunicorn_stop_reason(sig: int, *, stopping: str | None, older_generation: bool) -> str | None:
    """Why gunicorn's own code (its ``kill_worker``) stops a worker the master has not
    recorded a stop for: its worker timeout (SIGABRT, then SIGKILL), its shutdown
    (``stopping``: the master's halt reason), else its ``manage_workers`` killing the
    oldest workers beyond ``num_workers`` (``mode = "off"``): those of an older generation
    are a reload's, the others a scale-down.  None: the signal does not stop a worker."""
    if sig not in STOPPING_SIGNALS:
        return None
    if stopping is not None:
        return stopping
    if sig == signal.SIGABRT:
        return TIMEOUT
    return RELOAD if older_generation else SCALE_DOWN


def stop_counts(processes: list[dict]) -> dict | None:
    """How the exited processes ended: ``{"stopped": {reason: n}, "on_own": n}``; None when
    the record predates stop reasons (no process has a ``stop`` field)."""
    if processes and not any("stop" in p for p in processes):
        return None
    stopped: dict[str, int] = {}
    on_own = 0
    for p in processes:
        stop = p.get("stop")
        if isinstance(stop, dict):
            reason = str(stop.get("reason"))
            stopped[reason] = stopped.get(reason, 0) + 1
        elif p.get("exit") is not None:
            on_own += 1
    order = {reason: index for index, reason in enumerate(REASONS)}
    return {"stopped": dict(sorted(stopped.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))),
            "on_own": on_own}
