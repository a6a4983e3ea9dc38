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
on gunicorn's 1 s loop.

Readiness is read from the worker's heartbeat file, which the master already
holds.  ``WorkerTmp`` is created by ``mkstemp`` with the wall-clock time as
its mtime; a worker's ``notify()`` sets it to ``time.monotonic()``.  Every
stock worker class first notifies when it is ready to serve (UvicornWorker
once its lifespan startup is complete and its sockets listen; sync and gthread
at the top of their run loop).  So "the mtime moved away from its fork-time
value" means ready, and costs one ``fstat`` per booting worker per tick.

Exits are found by comparing the pids we track with gunicorn's ``WORKERS``
after gunicorn reaped them; the exit status is peeked just before gunicorn
reaps (``waitid(..., WNOWAIT)``), so gunicorn's own handling of boot errors
(exit 3 / 4 stops the server) stays exactly as it is.  Because the first step
forks one worker, a broken application stops the server after one fork.

SIGHUP is a rolling reload: gunicorn's ``reload()`` reloads the config (its
spawn-everything tail is neutralised), then the new generation is ramped like
a first start while each old worker is stopped only when a new one is ready,
so the server never has fewer ready workers than it had before the reload.

``mode = "off"`` leaves gunicorn's own spawning, reload and scale-down code in
charge; the master still records readiness, so the timeline compares fairly.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import sys
import time
from dataclasses import dataclass

from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer

from . import settings as settings_mod
from .cpus import IdleCpuSampler, usable_cpus
from .memory import available_memory_mb
from .policy import HTTP, LONG, BackoffConfig, PolicyConfig, SlowStartPolicy
from .pool import LongWorkerPool, PoolLink, check_target
from .status import StatusReporter

RAMP_TICK = 0.025  # seconds between readiness checks while workers boot
NOTIFIED_SKEW = 86400.0  # a notified mtime (monotonic) is this far from wall time
KILL_GRACE = 5.0  # a booting worker we stop: SIGTERM, then SIGKILL this much later
RESEND = 1.0  # re-send SIGTERM this often: one sent in the instant after fork can be lost
SHUTDOWN_REAP = 1.0  # after gunicorn's stop(), wait this long to record SIGKILLed workers
MEMORY_POLL = 1.0
IDLE_SAMPLE = 0.25  # seconds between idle-CPU samples while a ramp is in progress


@dataclass
class _Boot:
    forked_at: float
    baseline: float  # heartbeat mtime right after the fork
    wall: float


@dataclass
class _Termination:
    expected: bool  # we stopped it (scale-down, rolling reload); False: boot time-out, a failure
    kill_at: float
    resend_at: float


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
        self._boots: dict[int, _Boot] = {}
        self._tracked: set[int] = set()
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
        self._reloading = False
        self._control_pending = False
        self.pool: LongWorkerPool | None = None
        self.pool_size = 0
        self._pool_link: PoolLink | None = None
        super().__init__(app)  # calls setup(), which resolves the settings

    # -- configuration ----------------------------------------------------------

    def setup(self, app) -> None:
        """Resolve and check the slow-start settings before anything forks."""
        from .hooks import current_installation

        installation = current_installation()
        try:
            resolved = settings_mod.resolve(app.cfg, installation.namespace, installation.keywords)
            pool = self._pool_from(resolved, installation.pool)
        except settings_mod.SettingError:
            if self.slowstart is None:
                raise  # first start: gunicorn prints "Error: ..." and exits 1
            self.log.error("slow start: keeping previous settings: %s", sys.exc_info()[1])
            resolved, pool = self.slowstart, self.pool
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
            self.policy.forget_failures(LONG)  # a pool that gave up tries the new code
            self._pool_link.reload(pool, self.pool_size)

    def start_long_workers(self) -> None:
        """Called from the first ``pre_fork``: fork the pool manager (once)."""
        if self._pool_link is None and self.pool is not None and self.pool_size > 0:
            self._pool_link = PoolLink(self.pool, self.pool_size, self.log)
            self._pool_link.start(self)

    def _apply(self, resolved: settings_mod.Settings) -> None:
        now = time.monotonic()
        self.slowstart = resolved
        self.cpus = usable_cpus() if resolved.cpus == "auto" else resolved.cpus
        if resolved.max_batch != "auto":
            self.cap = resolved.max_batch
        else:
            self.cap = self.cpus if resolved.mode == "ready" else max(1, self.cpus // 2)
        config = PolicyConfig(
            mode=resolved.mode, initial=resolved.initial, max_batch=self.cap, delay=resolved.delay,
            ready_timeout=resolved.ready_timeout, boot_timeout=resolved.boot_timeout,
            growth=resolved.growth,
            http_backoff=BackoffConfig(max_failures=resolved.max_boot_failures),
            flap_window=resolved.flap_window,
        )
        if self.policy is None:
            self.policy = SlowStartPolicy(config, now)
        else:
            self.policy.reconfigure(config)
        self._idle = IdleCpuSampler(usable=self.cpus) if resolved.growth == "idle" else None
        if self.status is None:
            self.status = StatusReporter(self.log, now, time.time())
        self.status.configure(resolved.timeline, dict(
            mode=resolved.mode, cap=None if resolved.mode == "off" else self.cap, cpus=self.cpus,
            target=self.cfg.workers,
            worker_class=self.cfg.worker_class_str))

    @property
    def mode(self) -> str:
        return self.slowstart.mode if self.slowstart else "ready"

    # -- gunicorn's main loop, with a short wait while a ramp is in progress ------

    def _timeout(self, default: float) -> float:
        if self._active_boots() or self._active_long_boots():
            return RAMP_TICK
        times = [min(t.kill_at, t.resend_at) for t in self._terminating.values()]
        if self._wake_at is not None:
            times.append(self._wake_at)
        if not times:
            return default
        return max(RAMP_TICK, min(default, min(times) - time.monotonic()))

    def _active_boots(self) -> list[int]:
        """Booting HTTP workers that still hold back the ramp (not past ready_timeout)."""
        return [pid for pid in list(self._boots) if not self.policy.is_stale(pid)]

    def _active_long_boots(self) -> list[int]:
        link = self._pool_link
        return [wid for wid in link.booting if not self.policy.is_stale((LONG, wid))] if link else []

    def wait_for_signals(self, timeout: float = 1.0):  # gunicorn >= 24
        return super().wait_for_signals(timeout=self._timeout(timeout))

    def sleep(self) -> None:  # gunicorn 23: the same wait, on the signal pipe
        timeout = self._timeout(1.0)
        if timeout >= 1.0:
            return super().sleep()
        try:
            if select.select([self.PIPE[0]], [], [], timeout)[0]:
                while os.read(self.PIPE[0], 1):
                    pass
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EINTR):
                raise
        except KeyboardInterrupt:
            sys.exit()

    # -- creating workers ---------------------------------------------------------

    def spawn_worker(self):
        """Every fork goes through here; remember it so readiness can be watched."""
        if self._reloading:
            return None  # gunicorn's reload() forks cfg.workers at once: the ramp does it instead
        pid = super().spawn_worker()  # in the child this never returns
        now = time.monotonic()
        worker = self.WORKERS.get(pid)
        baseline = worker.tmp.last_update() if worker is not None else 0.0
        self._boots[pid] = _Boot(now, baseline, time.time())
        self._tracked.add(pid)
        self.policy.spawned(pid, now, HTTP)
        self.status.spawned(HTTP, pid, now)
        return pid

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
            return
        self._scale_down()
        self._retire_old()
        self._spawn(now)
        self._report(time.monotonic())

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
        wanted = self.num_workers - len(self._current())
        self._check_memory(now)
        self._sample_idle(now)
        self._maybe_begin_ramp(now, wanted)
        link = self._pool_link
        decision = self.policy.decide(now, wanted, link.wanted() if link else 0)
        self._warn_stale(decision.stale, now)
        self._boot_timeout(decision.kill, now)
        if HTTP in decision.exhausted:
            failures = self.policy.backoff[HTTP].failures
            reason = f"{failures} consecutive boot failures; last: {self._last_failure}"
            raise HaltServer(reason, self.WORKER_BOOT_ERROR)
        if LONG in decision.exhausted and link and not link.gave_up:
            link.gave_up = True
            self.log.error("slow start: long worker %r failed %d times in a row; no longer restarting "
                           "it (the HTTP server keeps serving)", link.pool.name,
                           self.policy.backoff[LONG].failures)
        for _ in range(decision.spawn):
            self.spawn_worker()
        if decision.spawn_long:
            link.grant(decision.spawn_long, now, self.policy)
        if decision.spawn or decision.spawn_long:
            self._log_step(decision.spawn, decision.spawn_long)
        self._wake_at = decision.wake_at

    def _maybe_begin_ramp(self, now: float, wanted: int) -> None:
        if wanted <= 0 or self._ramp is not None:
            return
        reason, self._next_reason = self._next_reason, "respawn"
        if reason == "respawn" and self.num_workers > self._settled_target:
            reason = "scale"  # TTIN, or the control socket's "worker add"
        if reason in ("start", "reload"):
            self.policy.restart(now)
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
            self.log.info("slow start: spawned %d, booting %d, ready %d of %d, window %d, cap %d",
                          spawned, booting, ready, self.num_workers, self.policy.window, self.cap)
        if spawned_long:
            link = self._pool_link
            ready = len(link.current - link.booting)
            self.log.info("slow start: long workers: spawned %d, booting %d, ready %d of %d",
                          spawned_long, len(link.booting), ready, link.size)

    def _old_serving(self) -> int:
        """Old-generation workers still serving during a rolling reload (not yet being stopped)."""
        return sum(1 for pid in self._retiring if pid in self.WORKERS and pid not in self._terminating)

    def _counts(self) -> tuple[int, int]:
        current = self._current()
        booting = sum(1 for pid in current if pid in self._boots)
        return booting, len(current) - booting

    # -- watching workers ---------------------------------------------------------

    def _observe(self, now: float) -> None:
        """Feed the policy what happened since the last look: exits, then readiness."""
        if self._pool_link is not None:
            self._pool_link.check_alive(self, now, self.policy, self.status)
            self._pool_link.poll(now, self.policy, self.status)
        self._record_exits(now)
        for pid, boot in list(self._boots.items()):
            worker = self.WORKERS.get(pid)
            if worker is not None and self._notified(worker, boot):
                self._on_ready(pid, now)

    def _record_exits(self, now: float) -> None:
        alive = set(self.WORKERS)
        for pid in sorted(self._tracked - alive):
            self._on_exit(pid, now)
        for pid in set(self._terminating) - alive:
            del self._terminating[pid]
        self._retiring &= alive

    @staticmethod
    def _notified(worker, boot: _Boot) -> bool:
        try:
            mtime = worker.tmp.last_update()
        except (OSError, ValueError):
            return False
        return mtime != boot.baseline or abs(mtime - boot.wall) > NOTIFIED_SKEW

    def _on_ready(self, pid: int, now: float) -> None:
        boot = self._boots.pop(pid)
        self.policy.ready(pid, now)
        self.status.ready(pid, now)
        self.log.debug("slow start: worker %s ready after %.2f s", pid, now - boot.forked_at)
        if self._ramp is not None and self._ramp.first_ready is None:
            self._ramp.first_ready = now

    def _on_exit(self, pid: int, now: float) -> None:
        self._tracked.discard(pid)
        termination = self._terminating.pop(pid, None)
        code, sig = self._statuses.pop(pid, (None, None))
        expected = (termination is not None and termination.expected) or self._halting
        boot = self._boots.pop(pid, None)
        clean = boot is None and code == 0  # a ready worker that chose to go (max_requests) did not flap
        flaps = self.policy.backoff[HTTP].flaps
        self.policy.exited(pid, now, expected=expected or clean)
        if self.policy.backoff[HTTP].flaps > flaps:
            self._log_flap(pid, now, code, sig)
        self.status.exited(pid, now, code, sig)
        if boot is not None and not expected:
            how = f"signal {sig}" if sig else f"exit code {code}"
            self._last_failure = f"worker {pid} died {now - boot.forked_at:.1f} s after fork ({how})"
            self.log.warning("slow start: %s before it was ready", self._last_failure)

    def _log_flap(self, pid: int, now: float, code: int | None, sig: int | None) -> None:
        backoff = self.policy.backoff[HTTP]
        how = f"signal {sig}" if sig else f"exit code {code}"
        self.log.warning("slow start: worker %s died (%s) within %.0f s of becoming ready: flap %d in a row, "
                         "next spawn in %.0f s (flap_window)", pid, how, self.slowstart.flap_window,
                         backoff.flaps, max(0.0, backoff.next_at - now))

    def reap_workers(self) -> None:
        """Peek at exit statuses, then let gunicorn reap (and halt on boot errors)."""
        if self._reloading:
            return  # gunicorn 23 reaps in its SIGCHLD handler; WORKERS is swapped out: reap after
        for pid in list(self.WORKERS):
            try:
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except (ChildProcessError, OSError):
                continue
            if info is not None and info.si_pid == pid:
                exited = info.si_code == os.CLD_EXITED
                self._statuses[pid] = (info.si_status if exited else None,
                                       None if exited else info.si_status)
        try:
            super().reap_workers()
        except HaltServer:
            if not self._halting:
                raise  # gunicorn 27 raises again while halting when several workers fail at once
        if self._halting:
            self._record_exits(time.monotonic())  # stop() reaps in its own loop: stamp exits on time

    # -- stopping workers ---------------------------------------------------------

    def _terminate(self, pid: int, now: float, expected: bool) -> None:
        """SIGTERM now, again every second, SIGKILL at the deadline.

        A worker forked a moment ago may still run the master's signal
        handler, which only queues the signal in its own copy of the master:
        a single SIGTERM can be lost, so it is re-sent until the worker exits.
        """
        grace = KILL_GRACE if pid in self._boots else self.cfg.graceful_timeout
        self._terminating[pid] = _Termination(expected, now + grace, now + RESEND)
        self.kill_worker(pid, signal.SIGTERM)

    def _enforce_terminations(self, now: float) -> None:
        for pid, term in list(self._terminating.items()):
            if pid not in self.WORKERS:
                continue
            if now >= term.kill_at:
                self.kill_worker(pid, signal.SIGKILL)
                term.kill_at = term.resend_at = float("inf")
            elif now >= term.resend_at:
                self.kill_worker(pid, signal.SIGTERM)
                term.resend_at = now + RESEND

    def _stop(self, pid: int) -> None:
        self._terminate(pid, time.monotonic(), expected=True)

    def _scale_down(self) -> None:
        """TTOU or fewer workers: stop booting workers first, then the oldest."""
        current = self._current()
        surplus = len(current) - self.num_workers
        if surplus <= 0:
            return
        ages = {pid: w.age for pid, w in list(self.WORKERS.items())}  # gunicorn 23 reaps in a signal handler
        age = {pid: ages[pid] for pid in current if pid in ages}
        booting = sorted((p for p in age if p in self._boots), key=age.get, reverse=True)
        ready = sorted((p for p in age if p not in self._boots), key=age.get)
        for pid in (booting + ready)[:surplus]:
            self._stop(pid)

    def _retire_old(self) -> None:
        """Rolling reload: stop an old worker only once a new one is ready."""
        ages = {pid: w.age for pid, w in list(self.WORKERS.items())}  # gunicorn 23 reaps in a signal handler
        old = [pid for pid in self._retiring if pid in ages and pid not in self._terminating]
        if not old:
            return
        ready_new = sum(1 for pid in self._current() if pid not in self._boots)
        keep = max(0, self.num_workers - ready_new)
        old.sort(key=ages.get)
        for pid in old[: max(0, len(old) - keep)]:
            self._stop(pid)

    def _boot_timeout(self, pids: tuple, now: float) -> None:
        for pid in pids:
            if isinstance(pid, tuple):  # a long worker: (LONG, id)
                self.log.warning("slow start: long worker #%s not ready after %.1f s: killing it "
                                 "(boot_timeout)", pid[1], self.slowstart.boot_timeout)
                self._pool_link.kill(pid[1])
            elif pid in self.WORKERS:
                self.log.warning("slow start: worker %s not ready %.1f s after fork: killing it "
                                 "(boot_timeout)", pid, now - self._boots[pid].forked_at)
                self._terminate(pid, now, expected=False)

    def _warn_stale(self, pids: tuple, now: float) -> None:
        for pid in pids:
            if isinstance(pid, tuple):  # a long worker: (LONG, id)
                self.log.warning("slow start: long worker pid %s not ready after %.1f s; no longer holding "
                                 "back the ramp (ready_timeout)", self._pool_link.pids.get(pid[1], "?"),
                                 self.slowstart.ready_timeout)
                continue
            boot = self._boots.get(pid)
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
        """Hold the ramp while available memory is below ``min_free_mb``."""
        limit = self.slowstart.min_free_mb
        if not limit or now - self._memory_checked_at < MEMORY_POLL:
            return
        self._memory_checked_at = now
        free = available_memory_mb()
        held = free is not None and free < limit
        if held and not self.policy.held:
            self.log.warning("slow start: holding the ramp: %.0f MiB available, below min_free_mb %.0f",
                             free, limit)
        elif self.policy.held and not held:
            self.log.info("slow start: memory recovered, ramp resumes")
        self.policy.set_hold(held)  # re-checked every MEMORY_POLL s: gunicorn's own 1 s loop calls us

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
        """SIGHUP: gunicorn reloads the config; the new workers come as a rolling ramp."""
        if self.mode == "off":
            self._ramp, self._next_reason = None, "reload"
            self._maybe_begin_ramp(time.monotonic(), self.num_workers)
            return super().reload()
        workers, self.WORKERS = self.WORKERS, {}
        self._reloading = True
        try:
            super().reload()
        finally:
            self.WORKERS = workers
            self._reloading = False
        self.reap_workers()
        self._retiring.update(pid for pid in workers if pid not in self._terminating)
        self._ramp = None
        self._next_reason = "reload"
        self.manage_workers()

    # -- shutting down ------------------------------------------------------------

    def halt(self, reason=None, exit_status=0) -> None:
        self._halting = True
        super().halt(reason=reason, exit_status=exit_status)

    def stop(self, graceful: bool = True) -> None:
        """Stop the pool alongside the HTTP workers, within gunicorn's graceful timeout."""
        self._halting = True
        link = self._pool_link
        deadline = link.request_stop(graceful, self.cfg.graceful_timeout) if link else 0.0
        super().stop(graceful)
        reap_until = time.monotonic() + SHUTDOWN_REAP
        while self.WORKERS and time.monotonic() < reap_until:  # the ones gunicorn just SIGKILLed
            time.sleep(0.02)
            self.reap_workers()
        if link is not None:
            link.wait_stopped(deadline)
            link.poll(time.monotonic(), self.policy, self.status)
        self._record_exits(time.monotonic())
        self.status.close(time.monotonic())
