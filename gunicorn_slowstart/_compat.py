"""Every assumption gunicorn-slowstart makes about gunicorn's internals, in one place.

Theory of operation
-------------------
The master is a subclass of gunicorn's ``Arbiter`` and leans on code gunicorn
does not promise to keep: the private methods it overrides, what ``reload()``
and ``reap_workers()`` do inside, the meaning of a heartbeat file's mtime, the
statsd logger's attributes, the module-level names ``install()`` replaces.
Each such assumption is written here, once, next to the helper that relies
on it; the rest of the package calls the helpers and never reaches into
gunicorn's private parts itself.

Importing this module checks that every assumption still holds on the
installed gunicorn (names exist, and where the assumption is about a method's
body, that the body still does what is relied on).  On a gunicorn it does not
know it raises ``UnsupportedGunicorn`` with one line naming the version and
the assumption that broke, instead of a master that misbehaves later.  The
supported range is the one tox tests (gunicorn 23 to 27) and ``setup.cfg``
declares.  Checking costs one ``inspect.getsource`` per method, once per
process; where gunicorn ships without sources only the names are checked.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import os
import select
import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import gunicorn
import gunicorn.app.base
from gunicorn import sock as _sock
from gunicorn import systemd as _systemd
from gunicorn import util as _util
from gunicorn.arbiter import Arbiter
from gunicorn.errors import AppImportError, HaltServer
from gunicorn.instrument.statsd import Statsd
from gunicorn.workers.workertmp import WorkerTmp

__all__ = ["Arbiter", "HaltServer", "AppImportError", "UnsupportedGunicorn", "SUPPORTED"]

SUPPORTED = (23, 28)  # gunicorn major versions: 23 <= major < 28 (setup.cfg, tox.ini, README)
NOTIFIED_SKEW = 86400.0  # a notified heartbeat mtime (monotonic) is this far from wall time

# Arbiter methods SlowStartArbiter overrides, and the ones it calls; by the gunicorn that has them.
OVERRIDDEN = ("setup", "spawn_worker", "spawn_workers", "manage_workers", "reap_workers", "reload",
              "halt", "stop", "wakeup", "kill_worker")  # kill_worker: also called (CALLED)
OVERRIDDEN_24 = ("wait_for_signals",)  # gunicorn >= 24
OVERRIDDEN_23 = ("sleep",)  # gunicorn 23's main-loop wait
# gunicorn >= 25 (the control socket): the override only defers gunicorn's own call, so where
# the method does not exist nothing calls it and nothing is lost.
OVERRIDDEN_OPTIONAL = ("_start_control_server",)
CALLED = ("kill_worker",)


class UnsupportedGunicorn(ImportError):
    """The installed gunicorn breaks an assumption slow start relies on."""


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return -1


WAITS_FOR_SIGNALS = hasattr(Arbiter, "wait_for_signals")  # gunicorn >= 24: a queue; 23: select on PIPE


def _source(obj: Any) -> str | None:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return None  # installed without sources: the names are checked, the bodies cannot be


def _body_problems() -> list[str]:
    """The assumptions about what gunicorn's methods do inside."""
    expectations = [
        (Arbiter.reload, ("self.spawn_worker()", "self.manage_workers()", "self.app.reload()"),
         "Arbiter.reload() no longer forks through spawn_worker() and trims through manage_workers() "
         "(the rolling reload hides WORKERS and neutralises its forks)"),
        (Arbiter.reap_workers, ("raise HaltServer", "self.WORKERS.pop(", "worker.tmp.close()",
                                "self.cfg.child_exit(self, worker)"),
         "Arbiter.reap_workers() no longer raises HaltServer on exit 3 / 4 before closing the worker's "
         "tmp and calling child_exit (finish_reap() completes it)"),
        (Arbiter.spawn_worker, ("self.worker_class(", "self.cfg.post_fork(self, worker)", "worker.init_process()",
                                "AppImportError", "WORKER_BOOT_ERROR", "self.cfg.worker_exit(self, worker)"),
         "Arbiter.spawn_worker()'s child side changed (run_worker() copies it for template forks)"),
        (Arbiter.manage_workers, ("_last_logged_active_worker_count",),
         "Arbiter.manage_workers() no longer logs the worker count through _last_logged_active_worker_count"),
        (WorkerTmp.notify, ("monotonic", "utime"),
         "WorkerTmp.notify() no longer sets the mtime to time.monotonic() with utime (readiness is read from "
         "it, and watched as an inotify IN_ATTRIB event)"),
        (WorkerTmp.last_update, ("st_mtime",), "WorkerTmp.last_update() no longer returns the file's mtime"),
        (WorkerTmp.close, ("self._tmp",), "WorkerTmp no longer keeps its file as self._tmp"),
        (Statsd.__init__, ("self.prefix",), "the statsd logger no longer has a prefix attribute"),
    ]
    if not WAITS_FOR_SIGNALS:
        expectations.append((Arbiter.sleep, ("select.select([self.PIPE[0]]", "os.read(self.PIPE[0]"),
                             "gunicorn 23's Arbiter.sleep() no longer waits on the signal pipe"))
    problems = []
    for method, needles, what in expectations:
        source = _source(method)
        if source is not None and not all(needle in source for needle in needles):
            problems.append(what)
    return problems


def _name_problems() -> list[str]:
    """The assumptions about which names exist."""
    methods = OVERRIDDEN + CALLED + (OVERRIDDEN_24 if WAITS_FOR_SIGNALS else OVERRIDDEN_23)
    problems = [f"Arbiter.{name}() is gone" for name in methods if not callable(getattr(Arbiter, name, None))]
    if (Arbiter.WORKER_BOOT_ERROR, Arbiter.APP_LOAD_ERROR) != (3, 4):
        problems.append("the boot-error exit codes are no longer 3 and 4")
    named = [(_util, "_setproctitle"), (_sock, "create_sockets"), (_systemd, "sd_notify"),
             (gunicorn.app.base, "Arbiter"), (gunicorn.app.base.Application, "run"),
             (Statsd, "gauge"), (Statsd, "histogram"), (WorkerTmp, "notify"), (WorkerTmp, "last_update")]
    problems += [f"{getattr(owner, '__name__', owner)}.{name} is gone" for owner, name in named
                 if not hasattr(owner, name)]
    return problems


def check(version: str = gunicorn.__version__) -> None:
    """Raise ``UnsupportedGunicorn`` unless ``version`` is in range and every assumption holds."""
    low, high = SUPPORTED
    problems = [] if low <= _major(version) < high else [f"it supports gunicorn {low} to {high - 1}"]
    problems += _name_problems() + _body_problems()
    if problems:
        raise UnsupportedGunicorn(f"gunicorn-slowstart does not support gunicorn {version}: "
                                  + "; ".join(problems))


check()


# -- the main loop's wait ------------------------------------------------------------

def wait_on_signal_pipe(arbiter: Any, timeout: float,
                        wait: Callable[[float, list[int]], list[int]] | None = None) -> None:
    """gunicorn 23's ``Arbiter.sleep()`` with a shorter time-out: wait on the signal pipe
    (with ``wait``, e.g. ``Wakeups.wait``: on it and on what ``wait`` selects on)."""
    try:
        if wait is not None:
            readable = wait(timeout, [arbiter.PIPE[0]])
        else:
            readable = select.select([arbiter.PIPE[0]], [], [], timeout)[0]
        if readable:
            while os.read(arbiter.PIPE[0], 1):
                pass
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EINTR):
            raise
    except KeyboardInterrupt:
        sys.exit()


# -- readiness: the heartbeat file's mtime -----------------------------------------------

def heartbeat(worker: Any) -> float:
    """The worker's heartbeat mtime: wall-clock time from ``mkstemp`` until its first
    ``notify()``, ``time.monotonic()`` after (raises OSError/ValueError once closed)."""
    return worker.tmp.last_update()


def close_heartbeat(worker: Any) -> None:
    """Close the master's copy of a worker's heartbeat file (a forked helper holds none)."""
    worker.tmp.close()


def has_notified(worker: Any, baseline: float, wall: float) -> bool:
    """Has the worker notified since its fork (``baseline``: its mtime then, ``wall``: the time)?"""
    try:
        mtime = heartbeat(worker)
    except (OSError, ValueError):
        return False
    return mtime != baseline or abs(mtime - wall) > NOTIFIED_SKEW


# -- SIGHUP: gunicorn's reload() without its forks ----------------------------------------

@contextlib.contextmanager
def workers_hidden(arbiter: Any) -> Iterator[dict]:
    """Run gunicorn's ``reload()`` with ``WORKERS`` empty: its "kill the workers above
    num_workers" and (gunicorn 27) "wait for the old ones" then touch no worker;
    yields the real ``WORKERS``, which are back afterwards."""
    workers, arbiter.WORKERS = arbiter.WORKERS, {}
    try:
        yield workers
    finally:
        arbiter.WORKERS = workers


# -- reaping: gunicorn's halt on exit 3 / 4 --------------------------------------------------

def halted_by(workers: dict, code: int, statuses: dict) -> int | None:
    """The worker whose exit made gunicorn raise HaltServer: reaped now, exit ``code``.

    gunicorn 27 pops it from WORKERS before raising, gunicorn 23 after: so
    look for the pid the kernel no longer holds as a child.  ``statuses``
    (pid -> (code, signal)) is updated with it."""
    reaped = []
    for pid in workers:
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            reaped.append(pid)
        except OSError:
            continue
    exact = [pid for pid in reaped if statuses.get(pid, (None, None))[0] == code]
    unknown = [pid for pid in reaped if pid not in statuses]  # exited after the peek
    for pid in exact + unknown:
        statuses[pid] = (code, None)
        return pid
    return None


def finish_reap(arbiter: Any, pid: int, worker: Any) -> None:
    """What gunicorn's ``reap_workers()`` does after its halt check, which it skipped."""
    arbiter.WORKERS.pop(pid, None)
    close_heartbeat(worker)
    arbiter.cfg.child_exit(arbiter, worker)


# -- what gunicorn's manage_workers() reports besides spawning ----------------------------------

def log_worker_count(arbiter: Any, active: int) -> None:
    """gunicorn's "N workers" debug line and ``gunicorn.workers`` gauge, when the count changes."""
    if arbiter._last_logged_active_worker_count != active:
        arbiter._last_logged_active_worker_count = active
        arbiter.log.debug(f"{active} workers",
                          extra={"metric": "gunicorn.workers", "value": active, "mtype": "gauge"})


def log_backlog(arbiter: Any) -> None:
    """The listen backlog histogram with ``--enable-backlog-metric`` (gunicorn >= 24)."""
    if getattr(arbiter.cfg, "enable_backlog_metric", False):
        backlog = sum(sock.get_backlog() or 0 for sock in arbiter.LISTENERS)
        if backlog >= 0:
            arbiter.log.debug(f"socket backlog: {backlog}",
                              extra={"metric": "gunicorn.backlog", "value": backlog, "mtype": "histogram"})


# -- process titles, statsd, systemd ------------------------------------------------------------

def set_proctitle(title: str) -> None:
    """gunicorn's own process title (``gunicorn: <title>``, with setproctitle installed)."""
    _util._setproctitle(title)


def send_metric(log: Any, kind: str, name: str, value: float) -> None:
    """A statsd gauge or histogram, when gunicorn's logger is its Statsd logger (it has a
    ``prefix`` and the method); nothing otherwise."""
    send = getattr(log, kind, None)
    if send is not None and callable(send) and hasattr(log, "prefix"):
        send(name, value)


def notify_systemd(text: str, log: Any) -> None:
    """systemd's ``STATUS=`` line, under ``Type=notify``."""
    if os.environ.get("NOTIFY_SOCKET"):
        _systemd.sd_notify("STATUS=" + text, log)


# -- install(): which master gunicorn's runner builds ---------------------------------------------

def use_arbiter(cls: type, wrap_run: Callable[[Callable], Callable]) -> None:
    """Make ``BaseApplication.run()`` build ``cls`` (it looks ``Arbiter`` up in
    ``gunicorn.app.base`` when it runs), and wrap ``Application.run`` (``--check-config``)."""
    gunicorn.app.base.Arbiter = cls
    gunicorn.app.base.Application.run = wrap_run(gunicorn.app.base.Application.run)


# -- fork_from = "template": a worker built outside gunicorn's spawn_worker() -----------------------

def master_side_worker(arbiter: Any) -> Any:
    """The worker object ``Arbiter.spawn_worker()`` builds before it forks (a new age, a new
    heartbeat file); a template forks the process for it."""
    arbiter.worker_age += 1
    return arbiter.worker_class(arbiter.worker_age, arbiter.pid, arbiter.LISTENERS, arbiter.app,
                                arbiter.timeout / 2.0, arbiter.cfg, arbiter.log)


def heartbeat_fd(worker: Any) -> int:
    """The descriptor of the worker's heartbeat file, to hand to the process that becomes it."""
    return worker.tmp.fileno()


def adopt_worker(arbiter: Any, worker: Any, pid: int) -> None:
    """What ``Arbiter.spawn_worker()`` records once the fork succeeded."""
    worker.pid = pid
    arbiter.WORKERS[pid] = worker
    stats = getattr(arbiter, "_stats", None)  # gunicorn >= 24
    if stats is not None:
        stats["workers_spawned"] += 1


class InheritedTmp(WorkerTmp):
    """The master's heartbeat file for this worker, received as a descriptor."""

    def __init__(self, fd: int) -> None:  # not super().__init__(): that would create a new file
        self._tmp = os.fdopen(fd, "w+b", 0)


def new_worker(server: Any, age: int, ppid: int, tmp_fd: int) -> Any:
    """A worker object as ``Arbiter.spawn_worker()`` builds it, with the master's heartbeat file."""
    worker = server.worker_class(age, ppid, server.LISTENERS, server.app,
                                 server.timeout / 2.0, server.cfg, server.log)
    worker.tmp.close()  # the constructor made a new heartbeat file: the master watches the inherited one
    worker.tmp = InheritedTmp(tmp_fd)
    return worker


def run_worker(server: Any, worker: Any) -> None:
    """What gunicorn's ``Arbiter.spawn_worker`` runs in the child (gunicorn 23 to 27)."""
    worker.pid = os.getpid()
    try:
        _util._setproctitle(f"worker [{server.proc_name}]")
        server.log.info("Booting worker with pid: %s", worker.pid)
        if server.cfg.reuse_port and hasattr(socket, "SO_REUSEPORT"):
            worker.sockets = _sock.create_sockets(server.cfg, server.log)
        server.cfg.post_fork(server, worker)
        worker.init_process()
        sys.exit(0)
    except SystemExit:
        raise
    except AppImportError as e:
        server.log.debug("Exception while loading the application", exc_info=True)
        print(str(e), file=sys.stderr)
        sys.stderr.flush()
        sys.exit(server.APP_LOAD_ERROR)
    except Exception as e:
        server.log.exception("Exception in worker process")
        print(str(e), file=sys.stderr)
        sys.stderr.flush()
        if not worker.booted:
            sys.exit(server.WORKER_BOOT_ERROR)
        sys.exit(-1)
    finally:
        server.log.info("Worker exiting (pid: %s)", worker.pid)
        try:
            worker.tmp.close()
            server.cfg.worker_exit(server, worker)
        except Exception:
            server.log.warning("Exception during worker exit:\n%s", traceback.format_exc())
