"""``SlowStartArbiter``: gunicorn's master, with worker forks paced by the policy.

Theory of operation
-------------------
gunicorn's master forks every missing worker at once.  This subclass keeps
gunicorn's main loop, signals and reaping as they are and changes only who
decides to fork: every path that creates workers (the first start, a respawn
after a worker died, TTIN, a control-socket scale-up, SIGHUP) ends in
``manage_workers()``, which here asks the pure ``SlowStartPolicy`` how many it
may fork now.  The master never sleeps to pace: while a ramp is in progress it
shortens gunicorn's own wait (``wait_for_signals`` in gunicorn 27, ``sleep`` in
gunicorn 23) to ``RAMP_TICK`` so that it sees readiness within tens of
milliseconds and still handles every signal at once; after the ramp it is back
on gunicorn's 1 s loop.  Where the kernel can watch the booting workers'
heartbeat files (``wakeups.py``: inotify) the wait ends the moment one of them
notifies instead (a long worker's or a loading template's report on its socket
ends it too), and the master wakes only every ``WATCHED_TICK`` otherwise:
40 passes of the loop a second cost the master's CPU, which a container's
quota shares with the booting workers.

Readiness is read from the worker's heartbeat file, which the master already
holds.  ``WorkerTmp`` is created by ``mkstemp`` with the wall-clock time as
its mtime; a worker's ``notify()`` sets it to ``time.monotonic()``.  Every
stock worker class first notifies when it is ready to serve (UvicornWorker
once its lifespan startup is complete and its sockets listen; sync and gthread
at the top of their run loop).  So "the mtime moved away from its fork-time
value" means ready, and costs one ``fstat`` per booting worker per tick.

Exits are found by comparing the pids we track with gunicorn's ``WORKERS``
after gunicorn reaped them; the exit status is peeked just before gunicorn
reaps (``waitid(..., WNOWAIT)``).  gunicorn stops the server when a worker
exits 3 / 4 (a boot error); ``rollout.py`` decides per pid whether that halt
applies: on a first start it does (a broken application stops the server
after its first step, before anything has served), on a serving server or in
a reload it does not, and the exit is an ordinary boot failure.

SIGHUP is a rolling reload: the config file is executed and checked first (a
bad one is refused with one error line, nothing changes), gunicorn's
``reload()`` applies it (its spawn-everything tail is neutralised), then the
new generation is ramped like a first start while each old worker is stopped
only when a new one is ready, so the server never has fewer ready workers
than it had before the reload.  A new generation that cannot boot is
abandoned and the old one keeps serving.

``mode = "off"`` leaves gunicorn's own spawning, reload and scale-down code in
charge; the master still records readiness, so the timeline compares fairly.

The rest of a worker's life goes through the same machinery.  Memory
admission (``admission.py``) caps the forks the policy may make by what fits
under the memory and pids limits, measured from the ready workers; when
nothing fits, the policy is held.  The first step is forked before any
worker's cost is known (as many as CPUs stand idle, plus a background boot),
so the memory guard (``_guard_memory``, ``admission.guard``) watches it boot
and stops the youngest booting worker before the kernel's OOM killer would
pick a process.  Recycling (``recycling.py``) marks one
worker at a time as retiring, exactly as a reload marks the old generation,
so its replacement is paced and it is stopped only once that one is ready.
The status file (``statusfile.py``) is rewritten at the end of every pass.

The arbiter is the only thing that feeds the policy and the status
reporter: HTTP workers' readiness and exits it sees itself, long workers'
come from ``PoolLink.poll()`` as typed events.  Every process is keyed by a
``ProcKey(kind, id)`` in the policy, so its decisions (``kill``, ``stale``)
say which kind each process is.

Who owns which fact: the arbiter alone records who is booting, in one
``Boots`` registry (``boots.py``) keyed by ``ProcKey`` for both kinds, with
an HTTP worker's heartbeat baseline; it is written only here, from the forks
and grants the arbiter makes and the readiness and exits it sees.  The policy
keeps its own ``booting`` map: it is the pure core that decides and is told
the same events, it does not read the shell's records.  The status reporter
gets boot durations from the registry (``ready(key, now, boot_seconds)``) and
keeps no fork times; the timeline keeps the history, not the state.
``_tracked`` is the HTTP workers forked and not yet seen exit, with their fork
time (exits are found against it; recycling reads ages from it); gunicorn's
``WORKERS`` says who is alive; ``PoolLink`` keeps only what its wire protocol
needs (granted ids not reported forked yet, the current and the retiring
generation, pids).

What this relies on in gunicorn beyond its public hooks (the bodies of
``reload()`` and ``reap_workers()``, the heartbeat file, gunicorn 23's wait on
the signal pipe, its statsd logger) lives in ``_compat.py``, which checks it
at import; this module calls the helpers named there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import random
import signal
import sys
import time
from dataclasses import dataclass

from . import _compat, stops
from . import settings as settings_mod
from ._compat import Arbiter, HaltServer
from .admission import (
    Admission,
    Growing,
    GuardVerdict,
    MemoryView,
    PidsView,
    Room,
    admit,
    guard,
    guard_message,
    hold_message,
)
from .boots import Boot, Boots
from .cgroup import pids_limit
from .cpus import IdleCpuSampler, cpu_report, per_cpu_idle
from .escalation import Escalation
from .keys import ProcKey
from .memory import anon_resident_mb, available_memory_mb, memory_view, process_cost
from .policy import HTTP, LONG, BackoffConfig, PolicyConfig, SlowStartPolicy, default_max_batch
from .pool.api import LongWorkerPool
from .pool.link import READY, SPAWNED, PoolEvent, PoolLink
from .pool.target import check_target
from .priority import Priorities, cpu_list
from .priority import confinement as priority_confinement
from .priority import unavailable as priority_unavailable
from .recycling import age_limit, due, next_recycle
from .rollout import Rollout, to_retire
from .status import StatusReporter
from .statusfile import StatusFile, status_state
from .template import RELOAD_FAILED, TemplateSpawner, check_config
from .wakeups import Wakeups

RAMP_TICK = 0.025  # seconds between readiness checks while workers boot
WATCHED_TICK = 0.25  # the same while every booting worker is watched (its readiness wakes the master)
KILL_GRACE = 5.0  # a booting worker we stop: SIGTERM, then SIGKILL this much later
RESEND = 1.0  # re-send SIGTERM this often: one sent in the instant after fork can be lost
SHUTDOWN_REAP = 1.0  # after gunicorn's stop(), wait this long to record SIGKILLed workers
MEMORY_POLL = 1.0
IDLE_SAMPLE = 0.25  # seconds between idle-CPU samples while a ramp is in progress
ADMIT_POLL = 0.5  # seconds between memory/pids admission checks while workers are wanted (forks since
# the last check are subtracted from its room, so a longer interval only delays seeing memory freed)
RESAMPLE_AFTER = 60.0  # seconds: a ready worker's USS sample this old is taken again when forks are wanted
RESAMPLE_PER_LOOK = 4  # at most this many re-measured per admission check (smaps_rollup: 5.6 ms for 215 MiB)
RESAMPLE_BUDGET = 0.025  # and no more once a check spent this re-measuring (a worker of GiBs: tens of ms each)
RECYCLE_POLL = 1.0  # seconds between looks for workers due for recycling (age, USS)
RECYCLE_PAUSE = 60.0  # after a replacement failed to boot, no recycling for this long
GUARD_HOLD = "memory guard stopped"  # how a hold set by the memory guard starts
GUARD_LOOKAHEAD = 0.25  # seconds: the guard projects growth at most this far (a stalled master's gap)
GUARD_BURST = 256.0  # MiB a booting worker may allocate in WATCHED_TICK (1 GiB/s; a bytearray fills at 0.77)


@dataclass
class _Termination:
    expected: bool  # we stopped it (scale-down, rolling reload); False: boot time-out, a failure
    escalation: Escalation


@dataclass
class _Ramp:
    reason: str
    started: float
    first_ready: float | None = None


class SlowStartArbiter(Arbiter):
    """gunicorn's Arbiter, forking workers as the slow-start policy allows."""

    def __init__(self, app) -> None:
        self.slowstart: settings_mod.Settings | None = None
        self.policy: SlowStartPolicy | None = None
        self.status: StatusReporter | None = None
        self.cpus = 1
        self.cap = 1
        self._boots = Boots()  # who is booting, both kinds (see the theory of operation)
        self._wakeups = Wakeups(signal_pipe=_compat.WAITS_FOR_SIGNALS)  # booting workers' readiness wakes us
        self._tracked: dict[int, float] = {}  # HTTP workers forked and not seen exit: their fork time
        self._retiring: set[int] = set()
        self._terminating: dict[int, _Termination] = {}
        self._statuses: dict[int, tuple[int | None, int | None]] = {}
        self._ramp: _Ramp | None = None
        self._next_reason = "start"
        self._settled_target = 0  # num_workers when the last ramp ended
        self._wake_at: float | None = None
        self._memory_checked_at = -MEMORY_POLL
        self._idle: IdleCpuSampler | None = None
        self._idle_sampled_at = -IDLE_SAMPLE
        self._last_failure = "no failure recorded"
        self._halting = False
        self._stop_reason: str | None = None  # why the master stops every process (stops.halt_reason)
        self._reloading = False
        self._control_pending = False
        self.pool: LongWorkerPool | None = None
        self.pool_size = 0
        self._pool_link: PoolLink | None = None
        self.rollout = Rollout()
        self.templates: TemplateSpawner | None = None  # fork_from = "template"
        self._admission = Admission()
        self._priorities = Priorities()
        self._background_said: str | None = None
        self._confine_quota: float | None = None  # the quota booting workers are confined under
        self._idle_per_cpu: dict[int, float] = {}
        self._room = Room(None)
        self._room_known: set[int] = set()  # workers alive when the room was measured
        self._room_for_spawns = False  # was the HTTP room measured while HTTP workers were wanted?
        self._long_room_for_spawns = False  # and the long workers' room while long workers were?
        self._said_cost: dict[str, float] = {}  # the cost last logged, per kind ("worker", "long worker")
        self._long_admission = Admission()  # the long workers' cost: a kind of its own
        self._long_room = Room(None)
        self._long_granted = 0  # the pool's next id when the long room was measured
        self._long_held = ""  # why long workers are held for memory, logged once
        self._held_text = ""
        self._age_limits: dict[int, float] = {}
        self._recycle_checked_at = -RECYCLE_POLL
        self._recycling: int | None = None  # the worker being recycled, until it is stopped
        self._recycle_paused_until = -RECYCLE_PAUSE
        self._status_file = StatusFile(None)
        self._fork_failing = False
        self._status_failing = False
        self._memory_limit_warned = False
        self._unvetted: set[int] = set()  # workers forked while no worker's cost was known: guarded
        self._guard_samples: dict[int, tuple[float, float]] = {}  # pid: (when, MiB grown since fork)
        self._guard_base: dict[int, float] = {}  # pid: its anonymous resident MiB when it was forked
        self._grown_cost: float | None = None  # MiB a guarded worker had grown by when it was ready
        self._guard_at = 0.0
        self._guard_text = ""
        self._guard_stopped = 0  # booting workers the guard stopped since its hold began
        self._guard_failing = False
        self._guard_look: float | None = None  # seconds to the memory guard's next look (see _guard_memory)
        super().__init__(app)  # calls setup(), which resolves the settings

    # -- configuration ----------------------------------------------------------

    def setup(self, app) -> None:
        """Resolve and check the slow-start settings before anything forks."""
        from .hooks import current_installation

        installation = current_installation()
        try:
            resolved = settings_mod.resolve(app.cfg, installation.namespace, installation.keywords)
            pool = self._pool_from(resolved, installation.pool)
            check_config(resolved.fork_from, resolved.mode, app.cfg)
        except settings_mod.SettingError:
            if self.slowstart is None:
                raise  # first start: gunicorn prints "Error: ..." and exits 1
            self.log.error("slow start: keeping previous settings: %s", sys.exc_info()[1])
            resolved, pool = self.slowstart, self.pool
        self._begin_idle_sampling(resolved)
        super().setup(app)
        installation.ensure_hooks(self.cfg)
        self._apply(resolved)
        self._apply_pool(pool)

    @staticmethod
    def _pool_from(resolved: settings_mod.Settings, pool: LongWorkerPool | None) -> LongWorkerPool | None:
        """The pool install() was given, else the one the settings describe; checked."""
        if pool is None and resolved.long_workers not in (0, None):
            if not resolved.long_worker:
                raise settings_mod.SettingError(
                    "slowstart_long_workers (GUNICORN_SLOWSTART_LONG_WORKERS) needs a target: set "
                    "slowstart_long_worker (GUNICORN_SLOWSTART_LONG_WORKER) to 'package.module:function'")
            pool = LongWorkerPool(resolved.long_worker, resolved.long_workers)
        if pool is None:
            return None
        try:
            pool.size = settings_mod.parse_one("long_workers", pool.size, "LongWorkerPool(size=...)")
            check_target(pool.target)
        except ValueError as exc:
            raise settings_mod.SettingError(f"long worker target {pool.target!r}: {exc}") from None
        return pool

    def _apply_pool(self, pool: LongWorkerPool | None) -> None:
        self.pool = pool
        self.pool_size = 0 if pool is None else 2 * self.cpus if pool.size == "auto" else pool.size
        if self._pool_link is not None and pool is not None:
            self.policy.forget_failures(LONG)  # a pool backing off tries the new code at once
            self._pool_link.reload(pool, self.pool_size)
        elif self._pool_link is not None and self._pool_link.size:
            self._remove_pool()

    def _remove_pool(self) -> None:
        """SIGHUP without a pool any more (long_workers 2 -> 0): a rolling change to size 0."""
        link = self._pool_link
        self.log.info("slow start: long-worker pool %r removed by the new configuration: stopping its "
                      "%d workers", link.pool.name, self._long_alive(link))
        link.reload(link.pool, 0)

    def start_long_workers(self) -> None:
        """Called from the first ``pre_fork``: fork the pool manager (once)."""
        if self._pool_link is None and self.pool is not None and self.pool_size > 0:
            self._pool_link = PoolLink(self.pool, self.pool_size, self.log)
            self._pool_link.start(self)

    def _begin_idle_sampling(self, resolved: settings_mod.Settings) -> None:
        """Usable CPUs, and the first idle-CPU sample (for ``initial = auto`` and idle
        growth).  Taken before gunicorn's own set-up, which becomes the interval the
        first fork's sample measures: no wait the user can see."""
        self._cpu_report = cpu_report()  # also what _background asks of the cgroup quota
        if self._cpu_report.cgroup_quota is not None:  # which CPUs stand idlest, should boots be confined
            self._idle_per_cpu = per_cpu_idle()
        if hasattr(os, "sched_getaffinity"):
            self._priorities.home = set(os.sched_getaffinity(0))
        self.cpus = self._cpu_report.usable if resolved.cpus == "auto" else resolved.cpus
        sampled = resolved.growth == "idle" or resolved.initial == "auto"
        self._idle = IdleCpuSampler(usable=self.cpus, exclude_self=True) if sampled else None
        self._idle_sampled_at = -IDLE_SAMPLE
        if self._idle is not None:
            self._idle.sample(time.monotonic())

    def _apply(self, resolved: settings_mod.Settings) -> None:
        now = time.monotonic()
        self.slowstart = resolved
        if resolved.max_batch != "auto":
            self.cap = resolved.max_batch
        else:
            self.cap = default_max_batch(resolved.mode, self.cpus)
        config = PolicyConfig(
            mode=resolved.mode, initial=resolved.initial, max_batch=self.cap, delay=resolved.delay,
            ready_timeout=resolved.ready_timeout, boot_timeout=resolved.boot_timeout,
            growth=resolved.growth, tail_merge=resolved.max_batch == "auto",  # an explicit max_batch is a limit
            background=self._background(resolved),
            http_backoff=BackoffConfig(max_failures=resolved.max_boot_failures),
            flap_window=resolved.flap_window,
        )
        if self.policy is None:
            self.policy = SlowStartPolicy(config, now)
        else:
            self.policy.reconfigure(config)
        if self.status is None:
            self.status = StatusReporter(self.log, now, time.time())
        self.status.configure(resolved.timeline, dict(
            mode=resolved.mode, cap=None if resolved.mode == "off" else self.cap, cpus=self.cpus,
            target=self.cfg.workers, background=config.background,
            worker_class=self.cfg.worker_class_str))
        self._status_file.path = resolved.status_file

    def _background(self, resolved: settings_mod.Settings) -> int:
        """One background boot (``priority.py``) where the user left it on, the first step and
        the window are the CPUs (``initial`` and ``max_batch`` auto) and the master may raise
        workers back."""
        if (resolved.background_boots == "off" or resolved.mode != "ready" or resolved.max_batch != "auto"
                or resolved.initial != "auto"):  # initial = 1 is a single probe, max_batch = N a limit
            self._confine_quota, self._priorities.confine_to = None, None  # a reload turned them off
            return 0
        report = self._cpu_report
        cores = min(report.host, report.affinity or report.host)
        why = self._priorities.broken or priority_unavailable(report.cgroup_quota, cores)
        if why and why != self._background_said:
            self.log.info("slow start: no background boots: %s", why)
        self._background_said = why
        self._confine_quota = report.cgroup_quota if not why else None
        if why:
            self._priorities.confine_to = None
        return 0 if why else 1

    def _choose_confinement(self) -> None:
        """Under a CPU quota below the cores, the CPUs this ramp's boots share
        (``priority.confinement``): the idlest since the last choice (or the setup)."""
        if self._confine_quota is None:
            return
        idle, before = per_cpu_idle(), self._idle_per_cpu
        since = {cpu: idle[cpu] - before.get(cpu, idle[cpu]) for cpu in idle}
        self._idle_per_cpu = idle
        self._priorities.confine_to = priority_confinement(self._confine_quota, self._priorities.home, since)
        if self._priorities.confine_to is not None:
            self.log.info("slow start: booting workers share CPU %s (the cgroup's %g CPU quota), so that "
                          "a background boot only takes what the others leave",
                          cpu_list(self._priorities.confine_to), self._confine_quota)

    @property
    def mode(self) -> str:
        return self.slowstart.mode if self.slowstart else "ready"

    # -- gunicorn's main loop, with a short wait while a ramp is in progress ------

    def _timeout(self, default: float) -> float:
        """How long the main loop may wait: a tick while something boots that only a look
        reveals, ``WATCHED_TICK`` while every boot is watched, else until the next timer."""
        boots = self._active_boots()
        reports = self._awaits_reports()
        if reports and not self._wakeups.usable():
            return RAMP_TICK  # their reports cannot end the wait: look again soon
        # the guard runs in no off-mode pass: a reload from ready mode leaves its last look behind
        guard_look = self._guard_look if self.mode != "off" else None
        if guard_look == RAMP_TICK:
            return RAMP_TICK  # the memory guard watches boots past ready_timeout too (a big model's load)
        if any(not self._wakeups.watching(pid) for pid in boots):
            return RAMP_TICK
        now = time.monotonic()
        times = [t.escalation.next_at() for t in self._terminating.values()]
        if self._wake_at is not None:
            times.append(self._wake_at)
        if boots or reports or guard_look:
            times.append(now + WATCHED_TICK)  # time-outs (boot_timeout), the guard's next look
        if not times:
            return default
        return max(RAMP_TICK, min(default, min(times) - now))

    def _active_boots(self) -> list[int]:
        """Booting HTTP workers that still hold back the ramp (not past ready_timeout)."""
        return [key.id for key in self._boots.keys(HTTP) if not self.policy.is_stale(key)]

    def _active_long_boots(self) -> list[ProcKey]:
        return [key for key in self._boots.keys(LONG) if not self.policy.is_stale(key)]

    def _awaits_reports(self) -> bool:
        """Is a long worker booting or a template loading?  Their readiness comes as a report
        on a socket (``_report_fds``), not as a heartbeat."""
        return bool(self._active_long_boots()) or bool(self.templates and self.templates.busy())

    def _report_fds(self) -> list[int]:
        """Sockets whose reports end the wait: the pool manager's, a loading template's."""
        fds = [self._pool_link.fileno()] if self._pool_link is not None else []
        fds.append(self.templates.loading_fd() if self.templates is not None else None)
        return [fd for fd in fds if fd is not None]

    def _evented(self) -> bool:
        """Can this wait end on events?  A watched boot's notify, a report awaited on a socket,
        a signal.  Asked before ``_timeout``: it may open the descriptors, or find the signal
        wake-up fd taken and stop watching."""
        return self._wakeups.watched() or (self._awaits_reports() and self._wakeups.can_wait())

    def _booting(self, pid: int) -> bool:
        """Is HTTP worker ``pid`` booting (forked, not ready yet)?"""
        return ProcKey(HTTP, pid) in self._boots

    def wait_for_signals(self, timeout: float = 1.0):  # gunicorn >= 24
        evented = self._evented()
        timeout = self._timeout(timeout)
        if not evented:
            return super().wait_for_signals(timeout=timeout)
        signals = super().wait_for_signals(timeout=0)  # what came while the master worked
        if not signals:
            self._wakeups.wait(timeout, self._report_fds())  # a signal writes to the wake-up pipe
            signals = super().wait_for_signals(timeout=0)
        return signals

    def sleep(self) -> None:  # gunicorn 23: the same wait, on the signal pipe
        evented = self._evented()
        timeout = self._timeout(1.0)
        if evented:
            reports = self._report_fds()
            return _compat.wait_on_signal_pipe(
                self, timeout, lambda seconds, fds: self._wakeups.wait(seconds, [*fds, *reports]))
        if timeout >= 1.0:
            return super().sleep()
        _compat.wait_on_signal_pipe(self, timeout)

    def wakeup(self) -> None:
        """gunicorn's own wake-up (its control socket's thread calls it) ends our wait too."""
        super().wakeup()
        self._wakeups.poke()

    # -- creating workers ---------------------------------------------------------

    def spawn_worker(self):
        """Every fork goes through here; remember it so readiness can be watched."""
        if self._reloading:
            return None  # gunicorn's reload() forks cfg.workers at once: the ramp does it instead
        try:
            if self.templates is not None and not self.templates.from_master():
                pid = self.templates.spawn(self)  # None: nothing forked (logged); the next step retries
                if pid is None:
                    return None
            else:
                pid = super().spawn_worker()  # in the child this never returns
        except (BlockingIOError, MemoryError) as exc:  # EAGAIN (pids limit), ENOMEM: fork refused
            return self._fork_refused(exc)
        self._fork_failing = False
        self._drop_if_reaped(pid)
        now = time.monotonic()
        worker = self.WORKERS.get(pid)
        baseline = _compat.heartbeat(worker) if worker is not None else 0.0
        self._boots.add(ProcKey(HTTP, pid), now, baseline, time.time())
        if worker is not None:
            self._watch(pid, worker)
        if self.mode != "off" and self.slowstart.memory_admission and self._admission.cost_mb is None:
            # the guard has not looked at this boot yet (it joins _unvetted at the next pass, after
            # _guard_look was set): its first look comes in a tick, as every look did before
            self._guard_look = RAMP_TICK
        self._tracked[pid] = now
        self.policy.spawned(ProcKey(HTTP, pid), now, HTTP)
        self.status.spawned(ProcKey(HTTP, pid), now, pid)
        self._place(ProcKey(HTTP, pid), now)
        self.rollout.spawned(pid)
        return pid

    def _watch(self, pid: int, worker) -> None:
        """Let the worker's first notify wake the master.  The watch comes after the fork (and
        a template's fork is older still: its reply came first), so a worker that already
        notified sends no event: it is left unwatched, and the next tick (RAMP_TICK) sees it.
        A notify after the watch is in place is an event."""
        if self._wakeups.watch(pid, _compat.heartbeat_fd(worker)) and self._notified(
                worker, self._boots.get(ProcKey(HTTP, pid))):
            self._wakeups.forget(pid)

    def _place(self, key: ProcKey, now: float) -> None:
        """A new boot on the CPUs boots share under a quota, at idle priority if the policy
        put it in the background (``priority.py``)."""
        confined = self._priorities.confine(key.id)
        if not confined:
            self._confine_failed()
        if self.policy.is_background(key):
            if confined and self._priorities.lower(key.id):
                self.status.background(key, now)
            else:
                self.policy.raised(key, now)  # it boots at normal priority after all

    def manage_workers(self) -> None:
        """Observe, retire, then fork as many workers as the policy allows now."""
        if self._reloading:
            return
        now = time.monotonic()
        self._observe(now)
        self._enforce_terminations(now)
        if self.mode == "off" and not self._retiring:
            self._maybe_begin_ramp(now, self.num_workers - len(self._current()))
            super().manage_workers()  # stock spawning and scale-down
            self._spawn(now)  # nothing left for HTTP: this starts the long workers, all at once
            self._report(time.monotonic())
            self._write_status(time.monotonic())
            return
        self._guard_memory(now)
        self._scale_down()
        self._recycle(now)
        self._retire_old()
        self._spawn(now)
        self._report(time.monotonic())
        self._write_status(time.monotonic())
        self._report_like_gunicorn()

    def _report_like_gunicorn(self) -> None:
        """What gunicorn's own manage_workers() logs and sends besides spawning, so that
        dashboards on ``gunicorn.workers`` and ``gunicorn.backlog`` keep working: the
        "N workers" debug line and gauge when the count changes, and the listen backlog
        on every loop with ``--enable-backlog-metric`` (gunicorn >= 24)."""
        active = min(sum(1 for pid in list(self.WORKERS) if pid not in self._terminating), self.num_workers)
        _compat.log_worker_count(self, active)
        _compat.log_backlog(self)

    def spawn_workers(self) -> None:
        """gunicorn only calls this from manage_workers(); should another path call it,
        the spawns still go through the policy."""
        if self.mode == "off":
            return super().spawn_workers()
        self._spawn(time.monotonic())

    def _current(self) -> list[int]:
        """Workers that count toward ``num_workers``: not old, not being stopped."""
        return [pid for pid in list(self.WORKERS) if pid not in self._retiring
                and not (pid in self._terminating and self._terminating[pid].expected)]

    def _spawn(self, now: float) -> None:
        wanted = min(self.num_workers - len(self._current()), self._surge_room())
        self._check_memory(now)
        self._sample_idle(now)
        self._maybe_begin_ramp(now, wanted)
        if self.templates is not None and self.templates.holds():
            wanted = 0  # the template is still importing the app: nothing to fork from yet
        link = self._pool_link
        decision = self.policy.decide(now, self._admitted(wanted), self._admitted_long(link.wanted()) if link else 0)
        self._warn_stale(decision.stale, now)
        self._boot_timeout(decision.kill, now)
        if HTTP in decision.exhausted:  # the policy says so only while no HTTP worker is ready
            failures = self.policy.failures(HTTP)
            reason = f"{failures} consecutive boot failures; last: {self._last_failure}"
            raise HaltServer(reason, self.WORKER_BOOT_ERROR)
        self._promote(decision.promote)
        for _ in range(decision.spawn):
            self.spawn_worker()
        if decision.spawn_long:
            for key in link.grant(decision.spawn_long):
                self.policy.spawned(key, now, LONG)
                self._boots.add(key, now)
        if decision.spawn or decision.spawn_long:
            self._log_step(decision.spawn, decision.spawn_long)
        self._wake_at = decision.wake_at

    def _promote(self, keys: tuple[ProcKey, ...]) -> None:
        """Background boots whose turn came: back to normal priority.  (gunicorn's
        ``timeout`` does not run before a worker's first notify, and the policy times a
        background boot from its promotion: the wait was not the worker's doing.)"""
        for key in keys:
            if not self._priorities.raise_(key.id):
                self._priority_failed(key.id)
            else:
                self.status.background(key, time.monotonic(), raised=True)

    def _priority_failed(self, pid: int) -> None:
        """A worker we cannot raise would serve at idle priority: replace it, boot no more
        in the background."""
        self.log.error("slow start: %s; stopping it (a new one boots at normal priority) and "
                       "booting no more workers in the background", self._priorities.broken)
        self.policy.reconfigure(dataclasses.replace(self.policy.config, background=0))
        self.status.meta["background"] = 0
        self._priorities.forget(pid)
        self._terminate(pid, time.monotonic(), expected=True, reason=stops.PRIORITY)

    def _confine_failed(self) -> None:
        """A boot we could not confine would spend the quota a foreground boot needs, were
        it in the background: it boots in the foreground, and no more boot in the background."""
        self.log.error("slow start: %s; booting no more workers in the background", self._priorities.broken)
        self.policy.reconfigure(dataclasses.replace(self.policy.config, background=0))
        self.status.meta["background"] = 0
        self._priorities.confine_to = None
        self._confine_quota = None

    def _surge_room(self) -> int:
        """A reload runs at most ``reload_surge`` workers above the target (Kubernetes' maxSurge);
        it never runs below it (old workers retire only when new ones are ready)."""
        surge = self.slowstart.reload_surge
        if not self._retiring or surge == "auto":
            return self.num_workers  # the policy's own limit: the window (ready mode), the batch (timer)
        live = [pid for pid in list(self.WORKERS)
                if not (pid in self._terminating and self._terminating[pid].expected)]
        return max(0, surge - (len(live) - self.num_workers))

    def _maybe_begin_ramp(self, now: float, wanted: int) -> None:
        if wanted <= 0 or self._ramp is not None:
            return
        reason, self._next_reason = self._next_reason, "respawn"
        if reason == "respawn" and self.num_workers > self._settled_target:
            reason = "scale"  # TTIN, or the control socket's "worker add"
        if reason in ("start", "reload"):
            self.policy.restart(now)
            self._choose_confinement()
        self._ramp = _Ramp(reason, now)
        self.status.ramp_started(now, wanted, reason)

    def _log_step(self, spawned: int, spawned_long: int = 0) -> None:
        booting, ready = self._counts()
        old = self._old_serving()
        if spawned and old:  # a rolling reload: say what serves while the new generation boots
            self.log.info("slow start: spawned %d, booting %d, serving: %d old + %d new ready of %d, "
                          "window %d, cap %d", spawned, booting, old, ready, self.num_workers,
                          self.policy.window, self.cap)
        elif spawned:
            self.log.info("slow start: spawned %d, booting %d, ready %d of %d, window %d, cap %d%s",
                          spawned, booting, ready, self.num_workers, self.policy.window, self.cap,
                          self._background_text())
        if spawned_long:
            link = self._pool_link
            self.log.info("slow start: long workers: spawned %d, booting %d, ready %d of %d",
                          spawned_long, self._boots.count(LONG), self._long_ready(link), link.size)

    def _long_ready(self, link: PoolLink) -> int:
        """Ready long workers of the current generation."""
        return sum(1 for key in link.current_keys() if key not in self._boots)

    def _long_alive(self, link: PoolLink) -> int:
        """Long workers of the current generation, and any still booting."""
        return len(set(link.current_keys()) | set(self._boots.keys(LONG)))

    def _background_text(self) -> str:
        waiting = sum(1 for pid in self._priorities.lowered if self.policy.is_background(ProcKey(HTTP, pid)))
        return f", {waiting} in the background" if waiting else ""

    def _old_serving(self) -> int:
        """Old-generation workers still serving during a rolling reload (not yet being stopped)."""
        return sum(1 for pid in self._retiring if pid in self.WORKERS and pid not in self._terminating)

    def _counts(self) -> tuple[int, int]:
        current = self._current()
        booting = sum(1 for pid in current if self._booting(pid))
        return booting, len(current) - booting

    # -- watching workers ---------------------------------------------------------

    def _observe(self, now: float) -> None:
        """Feed the policy what happened since the last look: exits, then readiness."""
        if self._pool_link is not None:
            self._on_pool_events(self._pool_link.check_alive(self, now), now)
            retiring = self._long_retiring(self._pool_link)  # poll() forgets them as they exit
            self._on_pool_events(self._pool_link.poll(), now, retiring)
        self._record_exits(now)
        self._poll_templates(now)
        for key, boot in self._boots.items(HTTP):
            worker = self.WORKERS.get(key.id)
            if worker is not None and self._notified(worker, boot):
                self._on_ready(key.id, now)
        self._wakeups.keep(self._boots.ids(HTTP))  # ready or gone: its heartbeats no longer wake us

    @staticmethod
    def _long_retiring(link: PoolLink) -> frozenset[ProcKey]:
        """Long workers of the generation a pool reload replaces: the manager stops them."""
        return frozenset(ProcKey(LONG, wid) for wid in link.retiring)

    def _on_pool_events(self, events: list[PoolEvent], now: float,
                        retiring: frozenset[ProcKey] = frozenset()) -> None:
        """What the long-worker pool reported, fed to the policy and the status reporter.
        A ``retiring`` worker the manager stopped (``expected``) was retired by the pool's
        rolling reload: the master asked for it when it sent the reload, so its stop is
        recorded here, when the master hears of it."""
        for event in events:
            if event.what == SPAWNED:
                self._boots.forked(event.key, now)
                self.status.spawned(event.key, now, event.pid)
            elif event.what == READY:
                boot = self._boots.pop(event.key)
                self.policy.ready(event.key, now)
                self.status.ready(event.key, now, None if boot is None else now - boot.forked_at)
            else:
                if event.expected and event.key in retiring:
                    self._record_stop(event.key, stops.RELOAD, now)
                self._boots.pop(event.key)
                self.policy.exited(event.key, now, expected=event.expected, failed=event.failed)
                self.status.exited(event.key, now, event.code, event.sig)

    def _drop_if_reaped(self, pid: int) -> None:
        """gunicorn 23 reaps in its SIGCHLD handler: a worker that dies in the instant between
        the fork and gunicorn adding it to ``WORKERS`` is reaped unseen and would stay there
        forever (its heartbeat never moves, so nothing times it out).  It is gone: drop it, and
        ``_record_exits`` counts it as the boot failure it was."""
        worker = self.WORKERS.get(pid)
        if worker is None:
            return
        try:
            os.kill(pid, 0)  # a zombie still answers; only a reaped pid does not
        except ProcessLookupError:
            self.WORKERS.pop(pid, None)
            _compat.close_heartbeat(worker)

    def _record_exits(self, now: float) -> None:
        alive = set(self.WORKERS)
        for pid in sorted(set(self._tracked) - alive):
            self._on_exit(pid, now)
        for pid in set(self._terminating) - alive:
            del self._terminating[pid]
        self._retiring &= alive

    @staticmethod
    def _notified(worker, boot: Boot) -> bool:
        return _compat.has_notified(worker, boot.baseline, boot.wall)

    def _on_ready(self, pid: int, now: float) -> None:
        boot = self._boots.pop(ProcKey(HTTP, pid))
        if not self._priorities.ready(pid):
            self._priority_failed(pid)  # stopped before it serves: its exit is expected, not a ready
            return
        self.policy.ready(ProcKey(HTTP, pid), now)
        self.status.ready(ProcKey(HTTP, pid), now, now - boot.forked_at)
        self.rollout.ready(pid)
        self.log.debug("slow start: worker %s ready after %.2f s", pid, now - boot.forked_at)
        if self._ramp is not None and self._ramp.first_ready is None:
            self._ramp.first_ready = now

    def _on_exit(self, pid: int, now: float) -> None:
        self._tracked.pop(pid, None)
        self._priorities.forget(pid)
        termination = self._terminating.pop(pid, None)
        code, sig = self._statuses.pop(pid, (None, None))
        expected = (termination is not None and termination.expected) or self._halting
        boot = self._boots.pop(ProcKey(HTTP, pid))
        clean = boot is None and code == 0  # a ready worker that chose to go (max_requests) did not flap
        flaps = self.policy.flaps(HTTP)
        self.policy.exited(ProcKey(HTTP, pid), now, expected=expected or clean)
        if self.policy.flaps(HTTP) > flaps:
            self._log_flap(pid, now, code, sig)
        self.status.exited(ProcKey(HTTP, pid), now, code, sig)
        if boot is not None and not expected:
            how = f"signal {sig}" if sig else f"exit code {code}"
            self._last_failure = f"worker {pid} died {now - boot.forked_at:.1f} s after fork ({how})"
            self.log.warning("slow start: %s before it was ready%s", self._last_failure, self._backoff_text(now))
            if self.rollout.boot_failed(pid, self._last_failure):
                self._abandon_reload(pid, code, now)
        self.rollout.exited(pid)

    def _backoff_text(self, now: float) -> str:
        """What a boot failure costs a serving server: when the next fork may come."""
        if self.mode == "off":
            return ""
        serving = sum(1 for pid in list(self.WORKERS) if not self._booting(pid) and pid not in self._terminating)
        return (f"; next fork in {max(0.0, self.policy.retry_at(HTTP) - now):.1f} s (back-off after "
                f"{self.policy.failures(HTTP)} consecutive boot failures), {serving} of {self.num_workers} serving")

    def _log_flap(self, pid: int, now: float, code: int | None, sig: int | None) -> None:
        how = f"signal {sig}" if sig else f"exit code {code}"
        self.log.warning("slow start: worker %s died (%s) within %.0f s of becoming ready: flap %d in a row, "
                         "next spawn in %.0f s (flap_window)", pid, how, self.slowstart.flap_window,
                         self.policy.flaps(HTTP), max(0.0, self.policy.retry_at(HTTP) - now))

    def reap_workers(self) -> None:
        """Peek at exit statuses, then let gunicorn reap.  gunicorn halts the server on a
        worker's exit 3 / 4; here that halt applies only where ``Rollout.halts`` says so."""
        if self._reloading:
            return  # gunicorn 23 reaps in its SIGCHLD handler; WORKERS is swapped out: reap after
        self._peek_statuses()
        for _ in range(len(self.WORKERS) + 1):  # each halt caught here has reaped one worker
            workers = dict(self.WORKERS)
            try:
                super().reap_workers()
                break
            except HaltServer as exc:
                if self._halting:
                    break  # gunicorn 27 raises again while halting when several workers fail at once
                pid = self._halted_by(workers, exc.exit_status)
                if pid is None or self._gunicorn_halt_applies(pid):
                    raise
                self._finish_reap(pid, workers[pid])
        if self._halting:
            self._record_exits(time.monotonic())  # stop() reaps in its own loop: stamp exits on time

    def _peek_statuses(self) -> None:
        for pid in list(self.WORKERS):
            try:
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except (ChildProcessError, OSError):
                continue
            if info is not None and info.si_pid == pid:
                exited = info.si_code == os.CLD_EXITED
                self._statuses[pid] = (info.si_status if exited else None,
                                       None if exited else info.si_status)

    def _gunicorn_halt_applies(self, pid: int) -> bool:
        if self.mode == "off":
            return True  # stock gunicorn
        return self.rollout.halts(pid, never_give_up=self.slowstart.max_boot_failures == 0)

    def _halted_by(self, workers: dict, code: int) -> int | None:
        """The worker whose exit made gunicorn raise HaltServer (reaped now, exit ``code``)."""
        return _compat.halted_by(workers, code, self._statuses)

    def _finish_reap(self, pid: int, worker) -> None:
        """What gunicorn's reap_workers() does after its halt check, which it skipped."""
        _compat.finish_reap(self, pid, worker)

    # -- stopping workers ---------------------------------------------------------

    def _terminate(self, pid: int, now: float, expected: bool, reason: str) -> None:
        """SIGTERM now, again every second, SIGKILL at the deadline; ``reason`` (``stops.py``)
        goes to the timeline.

        A worker forked a moment ago may still run the master's signal
        handler, which only queues the signal in its own copy of the master:
        a single SIGTERM can be lost, so it is re-sent until the worker exits.
        """
        self._record_stop(ProcKey(HTTP, pid), reason, now)
        grace = KILL_GRACE if self._booting(pid) else self.cfg.graceful_timeout
        self._terminating[pid] = _Termination(expected, Escalation.begin(now, grace, RESEND))
        self.kill_worker(pid, signal.SIGTERM)

    def _enforce_terminations(self, now: float) -> None:
        for pid, term in list(self._terminating.items()):
            if pid not in self.WORKERS:
                continue
            sig = term.escalation.due(now)  # a re-sent SIGTERM, or SIGKILL at the deadline
            if sig is not None:
                self.kill_worker(pid, sig)

    def _stop(self, pid: int, reason: str) -> None:
        self._terminate(pid, time.monotonic(), expected=True, reason=reason)

    def _record_stop(self, key: ProcKey, reason: str, now: float) -> None:
        """The one place the master's decision to stop a process is recorded, with its reason
        (``stops.py``), for both kinds: the timeline keeps the first one per process, so an
        exit without one is the process's own."""
        self.status.stopping(key, now, reason)

    def kill_worker(self, pid: int, sig: int) -> None:
        """Every signal to an HTTP worker goes through here.  The master's own stops are
        recorded before they send one; what is left is gunicorn's own code: its worker
        timeout, its shutdown, and its ``manage_workers`` scale-down and reload (``mode =
        "off"``), named by ``stops.gunicorn_stop_reason``."""
        if pid in self._tracked and pid not in self._terminating and self.status is not None:  # else recorded
            generation = self.rollout.of.get(pid, self.rollout.generation)
            reason = stops.gunicorn_stop_reason(sig, stopping=self._stop_reason,
                                                older_generation=generation < self.rollout.generation)
            if reason is not None:
                self._record_stop(ProcKey(HTTP, pid), reason, time.monotonic())
        super().kill_worker(pid, sig)

    def _scale_down(self) -> None:
        """TTOU or fewer workers: stop booting workers first, then the oldest."""
        current = self._current()
        surplus = len(current) - self.num_workers
        if surplus <= 0:
            return
        ages = {pid: w.age for pid, w in list(self.WORKERS.items())}  # gunicorn 23 reaps in a signal handler
        age = {pid: ages[pid] for pid in current if pid in ages}
        booting = sorted((p for p in age if self._booting(p)), key=age.get, reverse=True)
        ready = sorted((p for p in age if not self._booting(p)), key=age.get)
        for pid in (booting + ready)[:surplus]:
            self._stop(pid, stops.SCALE_DOWN)

    def _retire_old(self) -> None:
        """Rolling reload: stop an old worker only once a new one is ready."""
        ages = {pid: w.age for pid, w in list(self.WORKERS.items())}  # gunicorn 23 reaps in a signal handler
        old = [pid for pid in self._retiring if pid in ages and pid not in self._terminating]
        if not old:
            return
        ready_new = sum(1 for pid in self._current() if not self._booting(pid))
        old.sort(key=ages.get)
        # an older generation than the newest (the reload's, or the one serving once it is done: a
        # new worker booting past ready_timeout does not hold its ramp) is a reload's; else a recycle
        rollout = self.rollout
        newest = rollout.reload.generation if rollout.reload is not None else rollout.serving
        for pid in to_retire(old, self.num_workers, ready_new):
            self._stop(pid, stops.retire_reason(reloading=rollout.of.get(pid, newest) < newest))

    def _boot_timeout(self, keys: tuple[ProcKey, ...], now: float) -> None:
        for key in keys:
            pid = key.id
            if key.kind == LONG:
                self.log.warning("slow start: long worker #%s not ready after %.1f s: killing it "
                                 "(boot_timeout)", key.id, self.slowstart.boot_timeout)
                self._record_stop(key, stops.BOOT_TIMEOUT, now)
                self._pool_link.kill(key)
            elif pid in self.WORKERS:
                self.log.warning("slow start: worker %s not ready %.1f s after fork: killing it "
                                 "(boot_timeout)", pid, self._boots.age(key, now) or 0.0)
                self._terminate(pid, now, expected=False, reason=stops.BOOT_TIMEOUT)

    def _warn_stale(self, keys: tuple[ProcKey, ...], now: float) -> None:
        for key in keys:
            if key.kind == LONG:
                pid = self._pool_link.pid_of(key)
                self.log.warning("slow start: long worker pid %s not ready after %.1f s; no longer holding "
                                 "back the ramp (ready_timeout)", "?" if pid is None else pid,
                                 self.slowstart.ready_timeout)
                continue
            pid = key.id
            boot = self._boots.get(key)
            if boot is not None:
                self.log.warning("slow start: worker %s not ready %.1f s after fork; "
                                 "no longer holding back the ramp (ready_timeout)", pid, now - boot.forked_at)

    def _sample_idle(self, now: float) -> None:
        """Growth by idle CPU: a cheap read of /proc/stat or the cgroup's usage, no thread."""
        if self._idle is None or now - self._idle_sampled_at < IDLE_SAMPLE:
            return
        self._idle_sampled_at = now
        idle = self._idle.sample(now)
        if idle is not None:
            self.policy.cpu_idle(idle, now)

    def _check_memory(self, now: float) -> None:
        """Hold the ramp while memory is short: below ``min_free_mb``, or (memory admission)
        no room for one more worker in the memory or pids limit.  Re-checked every
        ``ADMIT_POLL`` s while workers are wanted, every ``MEMORY_POLL`` s otherwise."""
        wanted, long_wanted = self.num_workers - len(self._current()), self._long_wanted()
        # a kind not wanted at the last look got no room (Room(None): admit all): measure once it is
        stale = (wanted > 0 and not self._room_for_spawns) or (long_wanted > 0 and not self._long_room_for_spawns)
        stale = stale or (wanted > 0 and self._first_cost_due()) or (long_wanted > 0 and self._first_long_cost_due())
        if wanted > 0 and self._ramp is None:  # a ramp begins in this pass: what workers cost now
            self._admission.fresh_since, stale = now, True
        if now - self._memory_checked_at < (ADMIT_POLL if wanted or long_wanted else MEMORY_POLL) and not stale:
            return
        self._memory_checked_at = now
        self._room_for_spawns, self._long_room_for_spawns = wanted > 0, long_wanted > 0
        reasons = []
        floor = self.slowstart.min_free_mb
        free = available_memory_mb() if floor else None
        if free is not None and free < floor:
            reasons.append(f"{free:.0f} MiB available, below min_free_mb {floor:.0f}")
        self._room, self._long_room = Room(None), Room(None)
        if self.slowstart.memory_admission and (wanted > 0 or long_wanted > 0):
            self._room, self._long_room = self._measure_room(wanted, long_wanted, now)
        self._hold_long(long_wanted, now)
        if self._guard_text and (self._admission.cost_mb is not None or not self._guarded_boots()):
            # a worker's cost is known: admission decides; or no worker the guard let boot is left
            # (it died before ready): nothing will make the cost known, so the policy's back-off decides
            self._guard_text, self._guard_stopped = "", 0
        if self._guard_text:
            reasons.append(self._guard_text)
        if self._room.count == 0:
            reasons.append(hold_message(self._room, len(self._current()), self.num_workers))
        self._set_held("; ".join(reasons), now, wanted)

    # -- worker lifecycle: memory admission, recycling, status file ---------------------

    def _first_cost_due(self) -> bool:
        """A worker is ready but its cost is not known yet: measure before the next fork,
        or the window's first growth would fork unchecked."""
        return (self.slowstart.memory_admission and self._admission.cost_mb is None
                and any(not self._booting(pid) for pid in list(self.WORKERS)))

    def _first_long_cost_due(self) -> bool:
        """The same for long workers: one is ready, what it costs is not known yet."""
        link = self._pool_link
        return (self.slowstart.memory_admission and self._long_admission.cost_mb is None and link is not None
                and any(key not in self._boots for key in link.current_keys()))

    def _sample_ready_workers(self, now: float) -> None:
        """Learn what an HTTP worker and a long worker cost from the ready ones."""
        alive = set(self.WORKERS)
        ready = {pid: pid for pid in alive - self._boots.ids(HTTP) - self._retiring}
        self._sample(self._admission, ready, alive, now, "worker")
        link = self._pool_link
        if link is not None:
            current = link.current_keys()
            ready_long = {key: link.pid_of(key) for key in current if key not in self._boots}
            self._sample(self._long_admission, {key: pid for key, pid in ready_long.items() if pid},
                         set(current), now, "long worker")

    def _sample(self, admission: Admission, ready: dict, alive: set, now: float, what: str) -> None:
        """Measure each ready process (``ready``: key -> pid) when first seen ready, and again,
        a few per look, once its sample is stale: taken before this ramp began (a respawn, TTIN,
        a reload, a recycle), or ``RESAMPLE_AFTER`` ago.  An app grows after it is ready."""
        for key in ready.keys() - set(admission.uss):  # an unreadable first sample is tried again
            first = admission.cost_mb is None
            uss, pss, threads = process_cost(ready[key])
            admission.measured(key, uss, threads, now)
            if first and admission.cost_mb is not None:  # PSS: for the reader; USS is what a fork adds
                self._said_cost[what] = admission.cost_mb
                self.log.info("slow start: memory admission: a %s costs ~%.0f MiB USS (PSS %s), %s threads "
                              "(%s %s)", what, uss, "?" if pss is None else f"{pss:.0f} MiB",
                              "?" if threads is None else threads, what, ready[key])
        for key in set(admission.uss) | set(admission.threads) | set(admission.sampled_at):  # after: a live
            # sample replaces; and a worker that could never be read leaves only its time
            if key not in alive:
                admission.forget(key)
        stale = admission.sampled_before(max(admission.fresh_since, now - RESAMPLE_AFTER))
        started = time.monotonic()
        for index, key in enumerate([key for key in stale if key in ready][:RESAMPLE_PER_LOOK]):
            if index and time.monotonic() - started >= RESAMPLE_BUDGET:
                break  # the rest at the next look: the master has boots to watch and signals to handle
            uss, _, threads = process_cost(ready[key])
            admission.measured(key, uss, threads, now)
        self._say_cost_moved(admission, what)

    def _say_cost_moved(self, admission: Admission, what: str) -> None:
        """Log the cost admission counts with when it moved by a quarter since last said."""
        cost, said = admission.cost_mb, self._said_cost.get(what)
        if cost is None or said is None or abs(cost - said) < 0.25 * said:
            return
        self._said_cost[what] = cost
        self.log.info("slow start: memory admission: a %s now costs ~%.0f MiB USS (was ~%.0f MiB), "
                      "measured again on the ready ones", what, cost, said)

    def _fork_refused(self, exc: BaseException) -> None:
        """The kernel refused the fork (pids limit, no memory): the server keeps serving with
        the workers it has; the next try is on the next pass of the main loop."""
        if not self._fork_failing:
            self.log.error("slow start: cannot fork a worker: %s; %d of %d workers running, retrying",
                           exc, len(self._current()), self.num_workers)
        self._fork_failing = True

    def _measure_room(self, wanted: int, long_wanted: int, now: float) -> tuple[Room, Room]:
        """How many more HTTP and long workers fit now, counting what the booting ones will
        still take.  A measurement that fails for any reason admits (as without admission)."""
        try:
            self._sample_ready_workers(now)
            return self._room_now(wanted, long_wanted)
        except Exception as exc:  # noqa: BLE001 - a measurement must never stop a serving master
            self.log.warning("slow start: memory admission could not measure: %r", exc)
            return Room(None), Room(None)

    def _room_now(self, wanted: int, long_wanted: int) -> tuple[Room, Room]:
        """The rooms; the booting workers' USS (milliseconds each, from smaps_rollup) is read
        only when it matters: when what is wanted would not fit if each of them still took a
        whole worker's cost (a lower bound of the room, so admitting by it is safe)."""
        self._room_known = set(self.WORKERS)
        link = self._pool_link
        self._long_granted = link.next_id if link is not None else 0
        booting = [key.id for key in self._boots.keys(HTTP) if key.id in self._room_known]
        booting_long = [link.pid_of(key) for key in self._boots.keys(LONG)] if link is not None else []
        memory, pids = memory_view(), pids_limit()
        pids_view = None if pids is None else PidsView(*pids)

        def rooms(costs: list, long_costs: list) -> tuple[Room, Room]:
            http = (self._admission.room(memory, pids_view, costs, self._long_admission.promised(long_costs))
                    if wanted > 0 else Room(None))
            forks = admit(wanted, http)  # HTTP workers come first
            reserved = self._admission.promised(costs, forks)
            long = (self._long_admission.room(memory, pids_view, long_costs, reserved)
                    if long_wanted > 0 else Room(None))
            return http, long

        worst = rooms([(None, None)] * len(booting), [(None, None)] * len(booting_long))
        if all(room.count is None or room.count >= want for room, want in zip(worst, (wanted, long_wanted))):
            return worst
        measured = [process_cost(pid)[::2] for pid in booting]
        return rooms(measured, [process_cost(pid)[::2] if pid else (None, None) for pid in booting_long])

    def _admitted(self, wanted: int) -> int:
        """``wanted``, capped by the room measured last, less the forks made since."""
        if self._room.count is None:
            return wanted
        forked_since = len(set(self.WORKERS) - self._room_known)
        return admit(wanted, Room(max(0, self._room.count - forked_since)))

    def _long_wanted(self) -> int:
        """Long workers the pool still wants (none admitted by memory in mode off: stock forks all)."""
        link = self._pool_link
        return link.wanted() if link is not None and self.mode != "off" else 0

    def _admitted_long(self, wanted: int) -> int:
        """The long workers' ``wanted``, capped by their room measured last, less the grants since."""
        link = self._pool_link
        if self._long_room.count is None or link is None:
            return wanted
        return admit(wanted, Room(max(0, self._long_room.count - (link.next_id - self._long_granted))))

    def _hold_long(self, long_wanted: int, now: float) -> None:
        """Log (once) and record that long workers wait for memory, and when that ends.  HTTP
        workers are not held by it: they come first, and their own room decides for them."""
        link = self._pool_link
        room = self._long_room
        text = ""
        if link is not None and long_wanted > 0 and room.count == 0:
            text = hold_message(room, link.size - long_wanted, link.size, "long workers")
        if text and not self._long_held:
            self.log.warning("slow start: holding the long workers: %s", text)
        elif self._long_held and not text:
            self.log.info("slow start: long workers: %s", "memory recovered, they resume" if long_wanted
                          else "memory hold ended: no more wanted")
        if bool(text) != bool(self._long_held):
            self.status.long_memory_held(now, bool(text), text or self._long_held)
        self._long_held = text

    def _set_held(self, text: str, now: float, wanted: int) -> None:
        """Log a hold once, and its end; tell the policy, the timeline, statsd and systemd."""
        was = self._held_text
        self._held_text = text
        self.policy.set_hold(bool(text))
        after_guard = GUARD_HOLD in was and text and GUARD_HOLD not in text  # its reason changed
        if text and (not was or after_guard):
            self.log.warning("slow start: holding the ramp: %s", text)
        elif was and not text and wanted > 0:
            self.log.info("slow start: memory recovered, ramp resumes")
        elif was and not text:
            self.log.info("slow start: memory hold ended: no more workers wanted")
        if bool(text) != bool(was) or after_guard:
            self.status.memory_held(now, bool(text), text or was)

    def _guarded_boots(self) -> list[int]:
        """Booting HTTP workers the master is not stopping: the ones a guard hold waits for."""
        return [key.id for key in self._boots.keys(HTTP)
                if key.id in self.WORKERS and key.id not in self._terminating]

    def _guard_memory(self, now: float) -> None:
        """The first step is forked before any worker's cost is known, so admission cannot
        cap it: watch those workers boot (every ramp tick) and stop the youngest before the
        kernel's OOM killer, which takes the biggest process (maybe a serving worker), would
        (``admission.guard``).  Then hold until a worker's cost is known and one more fits."""
        self._guard_look = None
        if not self.slowstart.memory_admission or self.mode == "off":
            return
        booting = self._guarded_boots()
        if self._admission.cost_mb is None:
            self._unvetted.update(booting)
        self._unvetted.intersection_update(booting)
        self._learn_grown_cost()
        if not self._unvetted:
            return
        try:
            watched, memory = self._guard_sample(now)
        except Exception as exc:  # noqa: BLE001 - a measurement must never stop a serving master
            if not self._guard_failing:
                self.log.warning("slow start: memory guard could not measure: %r", exc)
            self._guard_failing = True
            return
        self._guard_failing = False
        lookahead = min(max(RAMP_TICK, now - self._guard_at), GUARD_LOOKAHEAD)  # the next look comes as late
        self._guard_at = now
        if memory is None or len(watched) < 2:
            return  # it never stops the last booting worker: nothing to look for
        headroom = self._admission.headroom
        verdict = guard(memory, watched, self._grown_cost, lookahead, headroom)
        if verdict.stop:
            self._guard_stop(verdict, memory, watched, now)
        # Look again in a tick, unless every guarded boot fits growing at its current rate until
        # a look WATCHED_TICK away with memory to spare for a burst from each beyond that (what a
        # worker grows by may be unknown, or outgrown): plenty of memory, no need to wake 40 times a second.
        later = guard(memory, watched, self._grown_cost, WATCHED_TICK, headroom)
        spare = later.left - later.need - later.floor
        close = bool(verdict.stop or later.stop) or spare < GUARD_BURST * len(watched)
        self._guard_look = RAMP_TICK if close else WATCHED_TICK

    def _guard_sample(self, now: float) -> tuple[list[Growing], MemoryView | None]:
        """The guarded workers, oldest first, with what each grew since its fork and how fast."""
        master = anon_resident_mb(self.pid) or 0.0  # a fork starts as a copy of the master
        from_template = self.templates is not None and not self.templates.from_master()
        forked = {pid: self._boots.get(ProcKey(HTTP, pid)) for pid in self._unvetted}
        watched = []
        for pid in sorted(self._unvetted, key=lambda p: forked[p].forked_at if forked[p] else now):
            anon = anon_resident_mb(pid)
            if anon is None:
                continue
            # a template's fork starts as a copy of the template (the app loaded): its first look
            base = self._guard_base.setdefault(pid, anon if from_template else master)
            grown = max(0.0, anon - base)
            then, before = self._guard_samples.get(pid, (now, grown))
            # over a tick at least: two looks a millisecond apart (a SIGCHLD's extra pass) would make
            # a burst of page faults a rate, projected over the next tick: a stop for nothing
            rate = max(0.0, (grown - before) / max(now - then, RAMP_TICK)) if now > then else 0.0
            self._guard_samples[pid] = (now, grown)
            watched.append(Growing(pid, grown, rate))
        return watched, memory_view()

    def _learn_grown_cost(self) -> None:
        """A guarded worker that became ready tells how much a worker grows while it boots."""
        for pid in list(self._guard_samples):
            if pid in self._unvetted:
                continue
            _, grown = self._guard_samples.pop(pid)
            self._guard_base.pop(pid, None)
            if pid in self.WORKERS and pid not in self._terminating and not self._booting(pid):
                self._grown_cost = max(self._grown_cost or 0.0, grown)

    def _guard_stop(self, verdict: GuardVerdict, memory: MemoryView, watched: list[Growing], now: float) -> None:
        """SIGKILL (a booting worker serves nobody, and SIGTERM waits for its import to end,
        which is when it allocates): an expected exit, logged with the figures, and a hold."""
        figures = guard_message(verdict, memory, len(watched))
        grown = {w.key: w.grown for w in watched}
        for pid in verdict.stop:
            self.log.warning("slow start: memory guard: stopping booting worker %s (+%.0f MiB since fork), the "
                             "youngest, before the kernel's OOM killer picks a process: %s", pid, grown[pid],
                             figures)
            self._record_stop(ProcKey(HTTP, pid), stops.MEMORY_GUARD, now)
            self._terminating[pid] = _Termination(True, Escalation.begin(now, KILL_GRACE))
            self._unvetted.discard(pid)
            self._guard_samples.pop(pid, None)
            self._guard_base.pop(pid, None)
            self.kill_worker(pid, signal.SIGKILL)
        if self._admission.cost_mb is not None:
            return  # the cost is known: admission's room (which counts these boots) holds the ramp
        self._guard_stopped += len(verdict.stop)
        self._guard_text = (f"{GUARD_HOLD} {self._guard_stopped} booting worker(s) to stay under "
                            f"{memory.limit:.0f} MiB, no more forks until a worker's cost is known and one "
                            f"more fits: {figures}")
        self._set_held(self._guard_text, now, self.num_workers - len(self._current()))  # min_free_mb: next look

    def _recycle(self, now: float) -> None:
        """max_worker_age / max_worker_memory: mark one due worker as retiring; the rolling
        machinery forks its replacement (paced) and stops it once the new one is ready."""
        settings = self.slowstart
        if not (settings.max_worker_age or settings.max_worker_memory):
            return
        if now - self._recycle_checked_at < RECYCLE_POLL:
            return
        self._recycle_checked_at = now
        if self._cancel_failed_recycle(now) or now < self._recycle_paused_until:
            return
        ready = [pid for pid in self._current() if not self._booting(pid)]
        born = self._tracked
        ages = {pid: now - born[pid] for pid in ready if pid in born}
        for pid in set(self._age_limits) - set(ages):
            del self._age_limits[pid]
        if settings.max_worker_age:
            for pid in ages:
                self._age_limits.setdefault(pid, age_limit(settings.max_worker_age, random.random()))
        uss = {}
        if settings.max_worker_memory and not self._fresh_worker_too_big(settings.max_worker_memory):
            uss = {pid: cost for pid in ages if (cost := process_cost(pid)[0]) is not None}
        pick = next_recycle(due(ages, self._age_limits, uss, settings.max_worker_memory),
                            len(self._retiring), self._boots.count(HTTP), self._ramp is not None)
        if pick is not None:
            self.log.info("slow start: recycling worker %s (%s): a new one first", pick.key, pick.text)
            self._retiring.add(pick.key)
            self._recycling = pick.key
            self._next_reason = "recycle"

    def _fresh_worker_too_big(self, limit: float) -> bool:
        """A fresh worker already above max_worker_memory would be replaced forever: say so
        once and recycle by age only."""
        cost = self._admission.cost_mb
        too_big = cost is not None and cost > limit
        if too_big and not self._memory_limit_warned:
            self.log.error("slow start: max_worker_memory %g MiB is below a fresh worker's USS (~%.0f MiB): "
                           "not recycling by memory", limit, cost)
        self._memory_limit_warned = too_big
        return too_big

    def _cancel_failed_recycle(self, now: float) -> bool:
        """A replacement failed to boot, or memory admission has no room for it: the old
        worker serves on (it is not retiring any more) and recycling pauses, so a broken
        environment never stops a serving master through max_boot_failures, and a full
        memory limit never leaves a recycle waiting forever."""
        pid = self._recycling
        other_ramp = self._ramp is not None and self._ramp.reason != "recycle"  # e.g. a SIGHUP since
        if pid is None or pid not in self._retiring or pid in self._terminating or other_ramp:
            self._recycling = None
            return False
        failed = self.policy.failures(HTTP) > 0
        if not failed and not self._held_text:
            return False
        self._retiring.discard(pid)
        self._recycling = None
        self._recycle_paused_until = now + RECYCLE_PAUSE
        if failed:
            self.policy.forget_failures(HTTP)  # the pause is the back-off; failures must not add up to a halt
        why = f"failed to boot ({self._last_failure})" if failed else f"does not fit ({self._held_text})"
        self.log.warning("slow start: replacement for worker %s %s; worker %s keeps serving, recycling "
                         "paused for %.0f s", pid, why, pid, RECYCLE_PAUSE)
        return True

    def _write_status(self, now: float) -> None:
        """The status file (slowstart_status_file): on every change, and as a heartbeat."""
        if not self._status_file.path:
            return
        alive = list(self.WORKERS)
        booting = sum(1 for pid in alive if self._booting(pid))
        serving = sum(1 for pid in alive if not self._booting(pid) and pid not in self._terminating)
        ramp = self._ramp
        state = status_state(stopping=self._halting, reload_failed=self.rollout.reload_failed is not None,
                             held=bool(self._held_text), reloading=ramp is not None and ramp.reason == "reload",
                             started=self._settled_target > 0)
        try:
            if self._status_file.update(now, time.time(), ready=serving, booting=booting,
                                        target=self.num_workers, state=state, generation=self.rollout.serving,
                                        pid=self.pid, detail=self._held_text):
                self._status_failing = False
        except (OSError, ValueError) as exc:
            if not self._status_failing:  # once until a write succeeds: it is retried every 2 s
                self.log.warning("slow start: cannot write status file %s: %s", self._status_file.path, exc)
            self._status_failing = True

    # -- reporting ----------------------------------------------------------------

    def _report(self, now: float) -> None:
        booting, ready = self._counts()
        if self.mode == "off":  # everything may boot at once
            self.status.step(now, self.num_workers, self.num_workers, booting, ready)
        else:
            self.status.step(now, self.policy.window, self.cap, booting, ready)
        if self.policy.held:
            self._start_pending_control_server()
        ramp = self._ramp
        current = self._current()
        if ramp is None or len(current) < self.num_workers or set(self._active_boots()) & set(current):
            return
        stale = f", {booting} not ready after ready_timeout" if booting else ""
        first = (ramp.first_ready or now) - ramp.started
        self.log.info("slow start: %d/%d workers ready in %.2f s (first ready after %.2f s, %s%s)",
                      ready, self.num_workers, now - ramp.started, first, ramp.reason, stale)
        self.status.ramp_done(now, ready, self.num_workers)
        if ramp.reason == "reload" and self.rollout.reload is not None:
            self.rollout.reload_done()
            self.status.reload_done(self.rollout.serving)
        self._ramp = None
        self._settled_target = self.num_workers
        self._start_pending_control_server()

    def _start_pending_control_server(self) -> None:
        if self._control_pending:
            self._control_pending = False
            super()._start_control_server()

    def _start_control_server(self) -> None:
        """gunicorn 27 starts its control socket after the first spawn "to avoid fork
        deadlocks with asyncio", and stops and restarts it around every later fork.
        Starting it once the first ramp is done keeps that intent for the whole ramp."""
        if self._ramp is not None and self._ramp.reason == "start":
            self._control_pending = True
        else:
            super()._start_control_server()

    # -- SIGHUP -----------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: the config is read again and checked first (a bad one is refused and
        changes nothing); then the new workers come as a rolling ramp (or, for
        ``mode = "off"`` in the new config, as gunicorn's own reload)."""
        resolved = self._reload_config()
        if resolved is None:
            return
        app = self.app
        app.reload = _already_loaded  # gunicorn's reload() would execute the config file again
        try:
            if resolved.mode == "off":
                self._reload_stock()
            else:
                self._reload_rolling()
        finally:
            del app.reload  # the instance attribute goes, the class's method is back

    def _reload_config(self) -> settings_mod.Settings | None:
        """Execute the config file again, as gunicorn's ``reload()`` does, and check it.

        gunicorn exits the master (status 1, workers left running) on a config
        file that fails or holds an invalid value; here the error is logged
        as one line and everything stays as it was.
        """
        from .hooks import current_installation, restore_installation

        cfg, installation, environ = self.app.cfg, current_installation(), dict(os.environ)
        for key in cfg.env:  # as gunicorn does before it reads the file: the launch environment
            if key in cfg.env_orig:
                os.environ[key] = cfg.env_orig[key]
            else:
                os.environ.pop(key, None)
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured):  # gunicorn prints the error, then sys.exit(1)
                self.app.reload()
            new = current_installation()
            resolved = settings_mod.resolve(self.app.cfg, new.namespace, new.keywords)
            self._pool_from(resolved, new.pool)
            return resolved
        except (SystemExit, Exception) as exc:  # nothing in a config file may stop the master
            self.app.cfg = cfg
            restore_installation(installation)
            os.environ.clear()
            os.environ.update(environ)
            self.log.error("slow start: SIGHUP refused, keeping the previous configuration and workers: %s",
                           _config_error(exc, captured.getvalue()))
            self.log.debug("slow start: the config file's output: %s", captured.getvalue())
            return None

    def _reload_stock(self) -> None:
        """``mode = "off"``: gunicorn's reload (all new workers at once, then the old ones go)."""
        self._retiring.clear()
        self.rollout.begin_reload(0)
        self._ramp, self._next_reason = None, "reload"
        self._maybe_begin_ramp(time.monotonic(), self.app.cfg.workers)  # the new config's (a TTOU is undone)
        super().reload()

    def _reload_rolling(self) -> None:
        target = self.num_workers  # the serving generation's, should this reload be rolled back
        self._reloading = True
        try:
            with _compat.workers_hidden(self) as workers:
                super().reload()
        finally:
            self._reloading = False
        self.reap_workers()
        self._retiring.update(pid for pid in workers if pid not in self._terminating)
        limit = self.slowstart.reload_max_failures
        self.rollout.begin_reload(self.policy.first_step() if limit == "auto" else limit, target)
        self.policy.forget_failures(HTTP)  # new code: the old code's failures say nothing about it
        self._ramp = None
        self._next_reason = "reload"
        self._reload_templates()
        self.manage_workers()

    def _abandon_reload(self, pid: int, code: int | None, now: float) -> None:
        """The new generation cannot boot: stop what is left of it, keep the old one serving."""
        reload = self._roll_back(now)
        current = self._current()
        meaning = {self.WORKER_BOOT_ERROR: ": the worker failed to boot",
                   self.APP_LOAD_ERROR: ": the application failed to load"}.get(code, "")
        self.log.error("slow start: reload to generation %d failed and is abandoned after %d boot "
                       "failure(s): %s%s (its own log lines, any traceback among them, follow 'Booting worker with "
                       "pid: %d' in this log); "
                       "serving generation %d with %d workers; send SIGHUP again once the code is fixed",
                       reload.generation, reload.failures, reload.last_failure, meaning, pid,
                       self.rollout.serving, len(current))
        self.status.reload_failed(now, reload.generation, self.rollout.serving, reload.last_failure)
        self._say_missing(reload.generation)

    def _roll_back(self, now: float):
        """Stop what is left of the reload's generation; the serving one is current again.

        A failed config's larger ``workers`` does not take effect (its extra places would
        fork the code that failed); a smaller one does, as any SIGHUP drops TTIN's workers,
        but the roll-back itself stops no serving worker.  A reload abandoned while the old
        generation was still ramping (or short of workers) leaves places missing, and those
        are filled as any respawn is, paced and backed off (``_say_missing``)."""
        reload = self.rollout.abandon()
        for other in [key.id for key in self._boots.keys(HTTP)]:
            if self.rollout.of.get(other) == reload.generation and other in self.WORKERS:
                self._terminate(other, now, expected=True, reason=stops.ROLLBACK)
        self._retiring.clear()  # the old generation is the current one again
        target = min(self.num_workers, reload.target or self.num_workers)  # lowering forks no failed code
        target = max(target, len(self._current()))  # nor does the roll-back stop a serving worker
        if target != self.num_workers:
            self.num_workers = target
        self._ramp = None
        self._settled_target = self.num_workers
        self._next_reason = "respawn"
        return reload

    def _say_missing(self, generation: int) -> None:
        """One line when the abandoned reload leaves fewer workers than the target: how
        many serve, and how the missing places will be filled."""
        current = self._current()
        if len(current) >= self.num_workers:
            return
        booting = sum(1 for pid in current if self._booting(pid))
        serving = len(current) - booting
        if self.templates is not None and self.templates.active():
            source = ("fork from the template of the last code that loaded, backing off (1, 2, 4 ... 30 s) "
                      "while they fail to boot")
        else:
            source = (f"fork from the master and load the code on disk now: while that still fails "
                      f"to boot (as generation {generation} did) they back off (1, 2, 4 ... 30 s)")
        still = f" ({booting} still booting)" if booting else ""
        self.log.warning("slow start: %d of %d workers serve after the abandoned reload%s; the %d missing "
                         "places are filled as respawns, which %s%s", serving, self.num_workers, still,
                         self.num_workers - len(current), source,
                         "; the serving workers keep serving" if serving else "")

    # -- fork_from = "template" (template.py) -----------------------------------------

    def _poll_templates(self, now: float) -> None:
        """Start the template when needed, read its reports; the first failed import halts (exit 4)."""
        if self.templates is None and self.slowstart.fork_from == "template":
            self.templates = TemplateSpawner(self.log, self.status)
        if self.templates is not None and self.templates.poll(self, now) == RELOAD_FAILED:
            self._abandon_template_reload(now)

    def _abandon_template_reload(self, now: float) -> None:
        """The new code does not load in its template (logged there): the old generation stays current."""
        if self.rollout.reload is None:
            self._retiring.clear()
            return
        reload = self._roll_back(now)
        reload.last_failure = "the new code did not load in its template"
        self.status.reload_failed(now, reload.generation, self.rollout.serving, reload.last_failure)
        self._say_missing(reload.generation)

    def _reload_templates(self) -> None:
        """SIGHUP: the new generation forks from a new template (or from the master again)."""
        if self.templates is not None and self.slowstart.fork_from != "template":
            self.templates.stop()
            self.templates = None
        elif self.slowstart.fork_from == "template":
            self.templates = self.templates or TemplateSpawner(self.log, self.status)
            self.templates.reload(self)

    # -- shutting down ------------------------------------------------------------

    def halt(self, reason=None, exit_status=0) -> None:
        self._halting = True
        self._stop_reason = self._stop_reason or stops.halt_reason(exit_status)
        super().halt(reason=reason, exit_status=exit_status)

    def stop(self, graceful: bool = True) -> None:
        """Stop the pool alongside the HTTP workers, within gunicorn's graceful timeout."""
        self._halting = True
        # gunicorn's kills say so (kill_worker); a crash of its main loop ends here too, handling it
        self._stop_reason = self._stop_reason or stops.shutdown_reason(sys.exc_info()[1])
        if self.templates is not None:
            self.templates.stop()
        self._write_status(time.monotonic())
        link = self._pool_link
        for key in link.current_keys() if link else ():  # a pool reload's old ones: the reload's (_observe)
            self._record_stop(key, self._stop_reason, time.monotonic())
        deadline = link.request_stop(graceful, self.cfg.graceful_timeout) if link else 0.0
        super().stop(graceful)
        reap_until = time.monotonic() + SHUTDOWN_REAP
        while self.WORKERS and time.monotonic() < reap_until:  # the ones gunicorn just SIGKILLed
            time.sleep(0.02)
            self.reap_workers()
        if link is not None:
            retiring = self._long_retiring(link)
            link.wait_stopped(deadline)
            self._on_pool_events(link.poll(), time.monotonic(), retiring)
        self._record_exits(time.monotonic())
        self.status.close(time.monotonic())
        self._wakeups.close()


def _already_loaded() -> None:
    """Stands in for ``app.reload()`` during gunicorn's ``reload()``: the arbiter has
    already executed and checked the config file (``_reload_config``)."""


def _config_error(exc: BaseException, output: str) -> str:
    """One line for a config file refused on SIGHUP, from the exception or gunicorn's output."""
    if isinstance(exc, SystemExit) and isinstance(exc.code, str):
        text = exc.code  # install() with a bad keyword
    elif not isinstance(exc, SystemExit):
        text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, settings_mod.SettingError) else str(exc)
    else:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("Error:")]
        if errors:
            text = errors[-1]
        elif lines:
            text = lines[0] if len(lines) == 1 else f"{lines[0]}: {lines[-1]}"
        else:
            text = f"the config file exited with status {exc.code}"
    text = text.strip()
    return text[len("Error:"):].strip() if text.startswith("Error:") else text
