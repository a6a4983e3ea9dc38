"""Discrete-event simulator of a gunicorn master starting N workers.

The spawn decisions in the ``timer`` and ``ready`` modes are made by the real
``SlowStartPolicy`` (imported unchanged from ``gunicorn_slowstart.policy``),
fed the same events the arbiter gives it.  ``off`` replays gunicorn's own
``spawn_workers()`` loop.  Run ``python -m benchmarks.simulate --help``; in
code, ``run(SimConfig(mode, n, cores, ...))`` (or ``simulate(...)`` with the
same fields as arguments) returns a ``Result``.

Model and assumptions
---------------------
* CPU: processor sharing.  ``capacity = min(cores, quota)`` CPUs.  Every
  runnable process -- our booting workers, the master while it forks, and the
  ``neighbours`` (L processes that always want a CPU) -- gets the same rate
  ``min(1, capacity / runnable)``.  A cgroup quota is modelled as a smaller
  pool shared by everybody, neighbours included.  There is no cost of
  contention beyond the sharing itself (no cache or memory thrashing, no
  context-switch overhead, no swapping), so in this model running everything
  at once never loses throughput; pacing can only win on the time to the first
  ready worker.  Ready workers are idle (they use no CPU).
* A worker's boot is a CPU demand, in CPU seconds, drawn up front for the N
  workers from ``dist``: ``fixed``; ``normal`` (sd 20 %, redrawn until > 0);
  ``longtail`` (lognormal, sigma 0.6, mean ``boot_cpu``); ``straggler`` (all
  ``boot_cpu``, one random worker ``5 x boot_cpu``).  Boot demands are handed
  out in fork order; a respawn takes over the demand of the worker it replaces.
* Failures: each fork dies with probability ``fail_prob`` at a uniformly drawn
  point of its boot; the master learns it at once (SIGCHLD) and the worker must
  be respawned.  Failed workers are not ready, ever.
* The master spends ``fork_cost`` CPU seconds per fork, one fork at a time,
  competing for the CPU like everybody else; the child starts booting when its
  fork is done.  In the policy modes ``policy.spawned(key, t)`` is stamped at
  the decision time (the arbiter is blocked while it forks, so no decision can
  come in between).
* Readiness is seen ``detect_lag`` seconds after the boot ends, and the
  policy's decision (and its forks) come at that instant.  The default,
  ``DETECT_LAG`` = 4 ms, is the event-driven master (``wakeups.py``: an
  inotify watch on each booting worker's heartbeat file wakes it), measured
  on a real gunicorn 27 master by ``benchmarks/detectlag.py`` (2 cores,
  UvicornWorkers, slow start's defaults; 87 forks that followed a worker's
  first notify, in 9 ramps of 8 and 16 workers, on a shared machine): from
  the worker's first ``notify()`` to the master building the next worker,
  just before its fork, median 1.7 ms, mean 3.9 ms, max 24 ms (the master's
  timeline stamped the worker ready 0.6 ms after its notify, median of 120,
  max 17 ms).  The simulator pays the gap once per ready -> fork round, so it
  takes the mean.
  ``--detect-lag 0.025`` (``POLLED_LAG``) models a master that polls every
  ``RAMP_TICK`` instead because it cannot watch (not Linux, no libc, the
  inotify watch limit): a worst case, the poll's full period.
  ``first_ready`` and ``all_ready`` are these *seen* times, in every mode,
  so the modes compare on equal terms.
* ``off``: at t=0 the master runs gunicorn's loop ``for _ in range(N - len(
  WORKERS)): spawn_worker(); time.sleep(0.1 * random())``.  The sleep blocks
  the master; deaths during the loop are reaped and respawned by another loop
  once it returns.
* ``timer`` / ``ready``: ``PolicyConfig(mode, max_batch=cap, delay=2.0,
  growth=..., initial=..., tail_merge=..., extra=...)``, every other field at
  its default (the defaults are the product's: ``initial = auto``, ``growth =
  idle``, tail merge on).  ``decide(now, N - alive)`` is called at t=0, after
  each ready or exit event delivered, at the decision's ``wake_at`` and after
  each ``cpu_idle`` sample.  Before the first decision the policy gets the
  master's start sample, ``capacity - min(capacity, neighbours)`` (the real
  master measures from its ``setup()`` to its first fork, its own CPU time
  excluded).  Samples come every 0.25 s: ``idle = capacity - CPU used by
  everybody in the last 0.25 s`` (so neighbours count as busy).
* Background boots (``background = k``, the policy's setting of the same
  name): a boot the policy marks background runs at ``SCHED_IDLE`` priority
  until the decision promotes it: it shares only the CPU the normal-priority
  processes (boots, the forking master, neighbours) leave, and keeps what it
  has done when promoted.  ``0`` (the default) is a master that may not raise
  a worker's priority back (no ``CAP_SYS_NICE``); ``1`` is the product's
  default where it may.  Under a quota below the cores the product confines
  every booting worker to the quota's whole CPUs (a ``SCHED_IDLE`` task yields
  only on its own core, so on a free core it would spend the quota the
  foreground boot needs): the model's boots then share ``usable`` CPUs
  (``floor(quota)``, at least 1; neighbours share them too, a simplification).
* Contention: with ``overhead = c > 0`` every runnable process's rate is
  further divided by ``1 + c * max(0, runnable / cores - 1)``: the cost of
  caches, memory bandwidth and context switches when more processes share a
  core (with a quota they still spread over every core).  It is a
  sensitivity parameter, not this machine's fact.  The default, 0, is pure
  processor sharing, and it is what was measured for CPU-bound boots here:
  stock gunicorn's 16 workers on 2 cores burned 16.38-16.41 CPU-s from the
  first fork to the last ready, where 16 lone boots burn 16.3 (under 1 %
  more; README, Results).  ``c = 0.012`` (``CONTENTION``) makes 16 boots on
  2 cores cost 8 % more each (``1 + 0.012 * (16 / 2 - 1)``): it was once
  fitted to stock's wall time over the CPU bound (8.9 s against 8.2 s), but
  that gap is mostly the master's own start, the client and the kernel, not
  the boots slowing each other.  Use it to ask what pacing would be worth on
  a machine whose caches or memory bandwidth do make crowded boots slower.
* A ``wake_at`` that is not in the future is counted (``zero_wakes``) and
  re-polled one ``detect_lag`` later (at least 1 ms), rather than looping at
  one instant.
* Default caps: the product's rule (``policy.default_max_batch``): ``ready`` ->
  usable CPUs (``floor(min(cores, quota))``, at least 1); ``timer`` ->
  ``max(1, usable // 2)``.
* Bounds: ``lone_boot = boot_cpu / min(1, capacity / (1 + L))`` (the nominal
  boot of one worker with the neighbours running); ``cpu_bound = sum of the N
  boot demands / (N * min(1, capacity / (N + L)))`` (the most CPU we can get
  is with all N runnable).  The goal of a cell: ``first_ready <= 1.2 *
  lone_boot`` and ``all_ready <= max(off's all_ready, cpu_bound) + lone_boot``.
  Each row also carries ``vs_stock = all_ready / off's all_ready`` (the
  issue's "never slower than stock": ``<= 1`` is as fast as stock).
* Deterministic for a seed: the boot demands, failures and gunicorn's jitter
  come from three ``random.Random`` streams derived from it, so the modes of a
  cell see the same demands.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

if __package__ in (None, ""):  # run as a file (python benchmarks/simulate.py): import the project from here
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunicorn_slowstart.policy import (  # noqa: E402
    DEFAULT_GROWTH,
    DEFAULT_INITIAL,
    GROWTHS,
    HTTP,
    PolicyConfig,
    SlowStartPolicy,
    default_max_batch,
)
from gunicorn_slowstart.policy import MODES as POLICY_MODES  # noqa: E402

MODES = tuple(reversed(POLICY_MODES))  # off (stock) first: the order of the grid's rows
DISTS = ("fixed", "normal", "longtail", "straggler")
CONTENTION = 0.012  # a sensitivity --overhead: 8 % for stock at 16 workers on 2 cores (CPU accounting here: < 1 %)
DETECT_LAG = 0.004  # first notify -> the master's next fork, event-driven master (benchmarks/detectlag.py: mean 3.9 ms)
POLLED_LAG = 0.025  # the same for a master that polls (RAMP_TICK: it cannot watch the heartbeats): its worst case
TIMER_DELAY = 2.0
SAMPLE_EVERY = 0.25
OFF_JITTER = 0.1
NORMAL_SD = 0.2
LONGTAIL_SIGMA = 0.6
STRAGGLER_FACTOR = 5.0
MAX_TIME = 3600.0
FIRST_SLACK = 1.2
DEFAULT_BACKGROUND = 0  # the product's without CAP_SYS_NICE; 1 where the master may raise priorities (priority.py)
EPS = 1e-9
INF = math.inf

PolicyFactory = Callable[[PolicyConfig, float], SlowStartPolicy]


# -- model helpers ------------------------------------------------------------


def capacity_of(cores: int, quota: float | None) -> float:
    return float(cores) if quota is None else min(float(cores), float(quota))


def usable_cpus(cores: int, quota: float | None) -> int:
    return max(1, math.floor(capacity_of(cores, quota)))


def default_cap(mode: str, cores: int, quota: float | None) -> int:
    return default_max_batch(mode, usable_cpus(cores, quota))


def lone_boot_bound(boot_cpu: float, cores: int, quota: float | None, neighbours: int) -> float:
    return boot_cpu / min(1.0, capacity_of(cores, quota) / (1 + neighbours))


def cpu_bound_of(boots: Sequence[float], cores: int, quota: float | None, neighbours: int) -> float:
    n = len(boots)
    if not n:
        return 0.0
    ours = n * min(1.0, capacity_of(cores, quota) / (n + neighbours))
    return sum(boots) / ours


def draw_boots(n: int, boot_cpu: float, dist: str, rng: random.Random) -> list[float]:
    if dist == "fixed":
        return [boot_cpu] * n
    if dist == "normal":
        out = []
        for _ in range(n):
            x = 0.0
            while x <= 0.0:
                x = rng.gauss(boot_cpu, NORMAL_SD * boot_cpu)
            out.append(x)
        return out
    if dist == "longtail":
        mu = math.log(boot_cpu) - LONGTAIL_SIGMA**2 / 2
        return [rng.lognormvariate(mu, LONGTAIL_SIGMA) for _ in range(n)]
    if dist == "straggler":
        out = [boot_cpu] * n
        if n:
            out[rng.randrange(n)] = STRAGGLER_FACTOR * boot_cpu
        return out
    raise ValueError(f"dist must be one of {', '.join(DISTS)}, not {dist!r}")


# -- the configuration of one run ----------------------------------------------


@dataclass(frozen=True)
class SimConfig:
    """Everything one simulated start depends on (the model: the module docstring).

    The machine (``cores``, ``quota``, ``neighbours``), the app (``boot_cpu``,
    ``dist``, ``fail_prob``, ``seed``), the master (``detect_lag``,
    ``fork_cost``, ``overhead``) and the policy's settings (``growth``, ``cap``
    -- None: the product's rule --, ``initial``, ``tail_merge``, ``extra``).
    ``policy_factory(config, now)`` may replace ``SlowStartPolicy`` (to try a
    variant of the policy); ``decide_on_sample=False`` calls ``decide`` only on
    ready/exit events and at ``wake_at``.  Refuses nonsense with a ValueError.
    """

    mode: str
    n: int
    cores: int
    quota: float | None = None
    neighbours: int = 0
    boot_cpu: float = 1.0
    dist: str = "fixed"
    seed: int = 0
    growth: str = DEFAULT_GROWTH
    detect_lag: float = DETECT_LAG
    fork_cost: float = 0.002
    fail_prob: float = 0.0
    cap: int | None = None
    initial: int | str = DEFAULT_INITIAL
    tail_merge: bool = True
    extra: int = 0
    overhead: float = 0.0
    policy_factory: PolicyFactory | None = None
    decide_on_sample: bool = True
    background: int = DEFAULT_BACKGROUND

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.growth not in GROWTHS:
            raise ValueError(f"growth must be one of {', '.join(GROWTHS)}, not {self.growth!r}")
        if self.dist not in DISTS:
            raise ValueError(f"dist must be one of {', '.join(DISTS)}, not {self.dist!r}")
        if self.n < 1 or self.cores < 1 or self.neighbours < 0 or self.boot_cpu <= 0:
            raise ValueError("n and cores must be >= 1, neighbours >= 0, boot_cpu > 0")
        if self.quota is not None and self.quota <= 0:
            raise ValueError("quota must be > 0")
        if not 0.0 <= self.fail_prob < 1.0:
            raise ValueError("fail_prob must be in [0, 1)")
        if self.overhead < 0 or self.background < 0:
            raise ValueError("overhead and background must be >= 0")

    @property
    def confined(self) -> bool:
        """Background boots under a quota below the cores: the product confines every booting
        worker to ``usable`` CPUs (``priority.confinement``), so that a ``SCHED_IDLE`` boot
        yields to the foreground ones instead of spending the quota on a free core."""
        return self.mode == "ready" and self.background > 0 and self.quota is not None and self.quota < self.cores

    @property
    def policy_cap(self) -> int | None:
        """The policy's max_batch: ``cap``, else the product's rule; None for ``off`` (no policy)."""
        if self.mode == "off":
            return None
        return self.cap if self.cap is not None else default_cap(self.mode, self.cores, self.quota)


# -- results ------------------------------------------------------------------


@dataclass
class Proc:
    """One forked worker.  Times are simulated seconds; ``None``: did not happen."""

    key: int
    boot_cpu: float  # CPU seconds its boot needs
    fail_at: float | None  # CPU seconds into the boot at which it dies (None: it boots)
    spawned_at: float  # the master decided to fork it (the policy's ``spawned`` stamp)
    started_at: float | None = None  # fork done: the child runs
    done_at: float | None = None  # boot ended (ready, or dead if ``failed``)
    seen_at: float | None = None  # the master saw it ready
    background: bool = False  # boots at background priority (until promoted)

    @property
    def failed(self) -> bool:
        return self.fail_at is not None


@dataclass
class Result:
    mode: str
    n: int
    cores: int
    quota: float | None
    neighbours: int
    growth: str
    initial: int | str
    dist: str
    seed: int
    cap: int | None  # the policy's max_batch (None for off)
    first_ready: float  # inf: never
    all_ready: float  # inf: never (exhausted, or stuck)
    peak_booting: int  # most children booting at once
    lone_boot: float
    cpu_bound: float
    spawns: int
    failures: int
    stale: int  # workers the policy reported stale (ready_timeout)
    zero_wakes: int  # decisions whose wake_at was not in the future
    exhausted: bool
    end: float
    procs: list[Proc] = field(default_factory=list, repr=False)

    @property
    def intervals(self) -> list[tuple[float, float, bool]]:
        """(child start, boot end, failed) per forked worker that started."""
        return [
            (p.started_at, p.done_at if p.done_at is not None else self.end, p.failed)
            for p in self.procs
            if p.started_at is not None
        ]

    def summary(self) -> dict[str, Any]:
        """The figures, without the per-process records."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "procs"}


def goal(result: Result, stock_all_ready: float) -> bool:
    """The project's goal for one cell (see the module docstring)."""
    return not goal_misses(result, stock_all_ready)


def goal_misses(result: Result, stock_all_ready: float) -> list[str]:
    """Which parts of the goal a run misses: ``"first"`` and/or ``"all"``."""
    misses = []
    if result.first_ready > FIRST_SLACK * result.lone_boot:
        misses.append("first")
    if result.all_ready > max(stock_all_ready, result.cpu_bound) + result.lone_boot:
        misses.append("all")
    return misses


def miss_ratio(result: Result, stock_all_ready: float) -> float:
    """How far from the goal: > 1 is a MISS, the worse of the two criteria."""
    first = result.first_ready / (FIRST_SLACK * result.lone_boot)
    total = result.all_ready / (max(stock_all_ready, result.cpu_bound) + result.lone_boot)
    return max(first, total)


# -- the simulator ------------------------------------------------------------


class _Sim:
    """One run: processor sharing by virtual time (every runnable process gets the same rate,
    so each completes when the shared virtual clock reaches its demand), plus a heap of
    timed events.  Time jumps from event to event; nothing is stepped."""

    def __init__(self, config: SimConfig, boots: list[float]) -> None:
        self.mode = config.mode
        self.cores = config.cores
        self.overhead = config.overhead
        self.n = config.n
        self.capacity = capacity_of(config.cores, config.quota)
        if config.confined:  # the boots share the usable CPUs they are confined to
            self.capacity = min(self.capacity, float(usable_cpus(config.cores, config.quota)))
        self.neighbours = config.neighbours
        self.detect_lag = config.detect_lag
        self.fork_cost = config.fork_cost
        self.fail_prob = config.fail_prob
        self.decide_on_sample = config.decide_on_sample
        self.fail_rng = random.Random(f"{config.seed}:fail")
        self.jitter_rng = random.Random(f"{config.seed}:jitter")
        self.demands: deque[float] = deque(boots)

        self.now = 0.0
        self.vtime = 0.0  # CPU seconds each runnable process has received so far
        self.busy = 0.0  # CPU seconds used by everybody so far
        self.seq = 0
        # (vtime at which it completes, seq, what, proc): the runnable processes
        self.cpu: list[tuple[float, int, str, Proc]] = []
        # background boots (SCHED_IDLE): the same, on their own clock, fed only the CPU left over
        self.bg: list[tuple[float, int, str, Proc]] = []
        self.bg_vtime = 0.0
        # (time, seq, what, proc): readiness seen, the master's sleep ends
        self.timed: list[tuple[float, int, str, Proc | None]] = []
        self.forks: deque[Proc] = deque()
        self.master_on_cpu = False

        self.procs: list[Proc] = []
        self.alive = 0  # forked (or about to be) and not dead
        self.booting = 0
        self.peak = 0
        self.ready = 0
        self.failures = 0
        self.first_ready = INF
        self.all_ready = INF
        self.stale = 0
        self.zero_wakes = 0
        self.exhausted = False
        self.finished = False

        # off mode: gunicorn's spawn_workers() loop
        self.loop_left = 0
        self.in_loop = False

        self.policy: SlowStartPolicy | None = None
        self.next_wake = INF
        self.next_sample = INF
        self.sample_no = 0
        self.busy_at_sample = 0.0
        if config.mode != "off":
            policy_config = PolicyConfig(mode=config.mode, max_batch=config.policy_cap, delay=TIMER_DELAY,
                                         growth=config.growth, initial=config.initial,
                                         tail_merge=config.tail_merge, extra=config.extra,
                                         background=config.background)
            self.policy = (config.policy_factory or SlowStartPolicy)(policy_config, 0.0)
            self.next_sample = SAMPLE_EVERY
            self.policy.cpu_idle(self.capacity - min(self.capacity, self.neighbours), 0.0)  # the start sample
            self.policy.restart(0.0)  # the arbiter's first ramp begins after its start sample

    # -- CPU ----------------------------------------------------------------

    def _leftover(self) -> float:
        """CPU the normal-priority processes leave: what background boots share."""
        return max(0.0, self.capacity - (len(self.cpu) + self.neighbours))

    def _slowdown(self) -> float:
        runnable = len(self.cpu) + self.neighbours + (len(self.bg) if self._leftover() > EPS else 0)
        return 1.0 + self.overhead * max(0.0, runnable / self.cores - 1.0)

    def _rate(self) -> float:
        runnable = len(self.cpu) + self.neighbours
        if not runnable:
            return 0.0
        return min(1.0, self.capacity / runnable) / self._slowdown()

    def _bg_rate(self) -> float:
        if not self.bg:
            return 0.0
        return min(1.0, self._leftover() / len(self.bg)) / self._slowdown()

    def _push_cpu(self, need: float, what: str, proc: Proc) -> None:
        self.seq += 1
        if what == "boot" and proc.background:
            heapq.heappush(self.bg, (self.bg_vtime + need, self.seq, what, proc))
        else:
            heapq.heappush(self.cpu, (self.vtime + need, self.seq, what, proc))

    def _promote(self, proc: Proc) -> None:
        """Raised to normal priority: what is left of its boot moves to the normal clock."""
        proc.background = False
        for i, (at, _, what, other) in enumerate(self.bg):
            if other is proc:
                self.bg.pop(i)
                heapq.heapify(self.bg)
                self._push_cpu(max(0.0, at - self.bg_vtime), what, proc)
                return

    def _push_timed(self, at: float, what: str, proc: Proc | None) -> None:
        self.seq += 1
        heapq.heappush(self.timed, (at, self.seq, what, proc))

    def _advance(self, t: float) -> None:
        dt = t - self.now
        if dt > 0:
            runnable = len(self.cpu) + self.neighbours
            background = min(self._leftover(), len(self.bg))
            self.vtime += self._rate() * dt
            self.bg_vtime += self._bg_rate() * dt
            self.busy += (min(self.capacity, runnable) + background) * dt
            self.now = t

    def _next_cpu_time(self) -> float:
        times = [INF]
        if self.cpu:
            times.append(self.now + max(0.0, self.cpu[0][0] - self.vtime) / self._rate())
        rate = self._bg_rate()
        if self.bg and rate > 0:
            times.append(self.now + max(0.0, self.bg[0][0] - self.bg_vtime) / rate)
        return min(times)

    # -- the master ---------------------------------------------------------

    def _new_proc(self) -> Proc:
        demand = self.demands.popleft()
        fail_at = None
        if self.fail_rng.random() < self.fail_prob:
            fail_at = self.fail_rng.random() * demand
        proc = Proc(len(self.procs), demand, fail_at, self.now)
        self.procs.append(proc)
        self.alive += 1
        return proc

    def _fork(self, proc: Proc) -> None:
        self.forks.append(proc)
        if not self.master_on_cpu:
            self._start_fork()

    def _start_fork(self) -> None:
        self.master_on_cpu = True
        self._push_cpu(self.fork_cost, "fork", self.forks[0])

    def _forked(self, proc: Proc) -> None:
        self.forks.popleft()
        self.master_on_cpu = False
        proc.started_at = self.now
        self.booting += 1
        self.peak = max(self.peak, self.booting)
        self._push_cpu(proc.fail_at if proc.failed else proc.boot_cpu, "boot", proc)
        if self.mode == "off":
            self._push_timed(self.now + OFF_JITTER * self.jitter_rng.random(), "sleep", None)
        elif self.forks:
            self._start_fork()

    def _spawn_workers(self) -> None:
        """gunicorn's spawn_workers(): N - len(WORKERS) forks, a sleep after each."""
        left = self.n - self.alive
        if left > 0 and not self.in_loop:
            self.in_loop = True
            self.loop_left = left
            self._fork(self._new_proc())

    def _slept(self) -> None:
        self.loop_left -= 1
        if self.loop_left > 0:
            self._fork(self._new_proc())
        else:
            self.in_loop = False
            self._spawn_workers()  # the next manage_workers() replaces the dead

    def _decide(self) -> None:
        policy = self.policy
        if policy is None or self.exhausted:
            return
        decision = policy.decide(self.now, self.n - self.alive)
        self.stale += len(decision.stale)
        if HTTP in decision.exhausted:
            self.exhausted = True  # the arbiter halts the server
            self.finished = True
            return
        for key in decision.promote:
            self._promote(self.procs[key])
        for _ in range(decision.spawn):
            proc = self._new_proc()
            policy.spawned(proc.key, self.now)
            proc.background = policy.is_background(proc.key)
            self._fork(proc)
        wake = INF if decision.wake_at is None else decision.wake_at
        if wake <= self.now + EPS:
            self.zero_wakes += 1
            wake = self.now + max(self.detect_lag, 1e-3)
        self.next_wake = wake

    # -- events -------------------------------------------------------------

    def _boot_ended(self, proc: Proc) -> None:
        self.booting -= 1
        proc.done_at = self.now
        if proc.failed:
            self.alive -= 1
            self.failures += 1
            self.demands.appendleft(proc.boot_cpu)  # the respawn boots the same app
            if self.policy is None:
                self._spawn_workers()
            else:
                self.policy.exited(proc.key, self.now)
                self._decide()
        else:
            self._push_timed(self.now + self.detect_lag, "seen", proc)

    def _seen(self, proc: Proc) -> None:
        proc.seen_at = self.now
        self.ready += 1
        self.first_ready = min(self.first_ready, self.now)
        if self.ready >= self.n:
            self.all_ready = self.now
            self.finished = True
            return
        if self.policy is not None:
            self.policy.ready(proc.key, self.now)
            self._decide()

    def _sample(self) -> None:
        assert self.policy is not None
        idle = self.capacity - (self.busy - self.busy_at_sample) / SAMPLE_EVERY
        self.busy_at_sample = self.busy
        self.sample_no += 1
        self.next_sample = (self.sample_no + 1) * SAMPLE_EVERY
        self.policy.cpu_idle(idle, self.now)
        if self.decide_on_sample:
            self._decide()

    def run(self) -> None:
        if self.policy is None:
            self._spawn_workers()
        else:
            self._decide()
        while not self.finished:
            timed = self.timed[0][0] if self.timed else INF
            t = min(self._next_cpu_time(), timed, self.next_sample, self.next_wake)
            if t == INF or t > MAX_TIME:
                break  # stuck (nothing left to happen) or far too slow
            self._advance(t)
            while self.cpu and self.cpu[0][0] <= self.vtime + EPS and not self.finished:
                _, _, what, proc = heapq.heappop(self.cpu)
                if what == "fork":
                    self._forked(proc)
                else:
                    self._boot_ended(proc)
            while self.bg and self.bg[0][0] <= self.bg_vtime + EPS and not self.finished:
                self._boot_ended(heapq.heappop(self.bg)[3])
            while self.timed and self.timed[0][0] <= self.now + EPS and not self.finished:
                _, _, what, maybe = heapq.heappop(self.timed)
                if what == "sleep":
                    self._slept()
                else:
                    assert maybe is not None
                    self._seen(maybe)
            if self.next_sample <= self.now + EPS and not self.finished:
                self._sample()
            if self.next_wake <= self.now + EPS and not self.finished:
                self.next_wake = INF
                self._decide()


def simulate(
    mode: str,
    n: int,
    cores: int,
    quota: float | None = None,
    neighbours: int = 0,
    boot_cpu: float = 1.0,
    dist: str = "fixed",
    seed: int = 0,
    growth: str = DEFAULT_GROWTH,
    detect_lag: float = DETECT_LAG,
    fork_cost: float = 0.002,
    fail_prob: float = 0.0,
    cap: int | None = None,
    *,
    initial: int | str = DEFAULT_INITIAL,
    tail_merge: bool = True,
    extra: int = 0,
    overhead: float = 0.0,
    policy_factory: PolicyFactory | None = None,
    decide_on_sample: bool = True,
    background: int = DEFAULT_BACKGROUND,
) -> Result:
    """Simulate one start of ``n`` workers: ``run(SimConfig(...))`` with these fields
    (their meaning: ``SimConfig``)."""
    return run(SimConfig(mode=mode, n=n, cores=cores, quota=quota, neighbours=neighbours, boot_cpu=boot_cpu,
                         dist=dist, seed=seed, growth=growth, detect_lag=detect_lag, fork_cost=fork_cost,
                         fail_prob=fail_prob, cap=cap, initial=initial, tail_merge=tail_merge, extra=extra,
                         overhead=overhead, policy_factory=policy_factory, decide_on_sample=decide_on_sample,
                         background=background))


def run(config: SimConfig) -> Result:
    """Simulate one start; see the module docstring for the model."""
    boots = draw_boots(config.n, config.boot_cpu, config.dist, random.Random(config.seed))
    sim = _Sim(config, boots)
    sim.run()
    return Result(
        mode=config.mode,
        n=config.n,
        cores=config.cores,
        quota=config.quota,
        neighbours=config.neighbours,
        growth=config.growth,
        initial=config.initial,
        dist=config.dist,
        seed=config.seed,
        cap=config.policy_cap,
        first_ready=sim.first_ready,
        all_ready=sim.all_ready,
        peak_booting=sim.peak,
        lone_boot=lone_boot_bound(config.boot_cpu, config.cores, config.quota, config.neighbours),
        cpu_bound=cpu_bound_of(boots, config.cores, config.quota, config.neighbours),
        spawns=len(sim.procs),
        failures=sim.failures,
        stale=sim.stale,
        zero_wakes=sim.zero_wakes,
        exhausted=sim.exhausted,
        end=sim.now,
        procs=sim.procs,
    )


# -- the grid -----------------------------------------------------------------

GRID_CORES = (2, 8, 16, 64, 128)
MAX_GRID_N = 512


def grid_quotas(cores: int) -> list[float | None]:
    if cores == 2:
        return [None, 0.5, 1.0]
    return [None, max(0.5, cores / 4)]


def grid_ns(cores: int) -> list[int]:
    ns = [max(1, cores // 2), cores, 2 * cores + 1, 4 * cores]
    return sorted({min(MAX_GRID_N, x) for x in ns})


SWEEP_NS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 16)  # --ns sweep: the small N most pods run, and the tails


def grid_cells(cores_list: Sequence[int] = GRID_CORES,
               ns: Sequence[int] | None = None) -> list[tuple[int, float | None, int, int]]:
    """Every (cores, quota, N, neighbours); ``ns`` replaces the grid's N values."""
    return [
        (cores, quota, n, neighbours)
        for cores in cores_list
        for quota in grid_quotas(cores)
        for n in (ns or grid_ns(cores))
        for neighbours in (0, cores)
    ]


def run_grid(
    cores_list: Sequence[int] = GRID_CORES,
    growth: str = DEFAULT_GROWTH,
    boot_cpu: float = 1.0,
    dist: str = "fixed",
    seed: int = 0,
    fail_prob: float = 0.0,
    detect_lag: float = DETECT_LAG,
    fork_cost: float = 0.002,
    policy_factory: PolicyFactory | None = None,
    *,
    ns: Sequence[int] | None = None,
    initial: int | str = DEFAULT_INITIAL,
    tail_merge: bool = True,
    extra: int = 0,
    overhead: float = 0.0,
    background: int = DEFAULT_BACKGROUND,
) -> list[dict[str, Any]]:
    """One row per cell and mode, each with its goal verdict (``ok`` / ``MISS``) and its
    all-ready against stock's (``vs_stock``).  Every run is the same ``SimConfig`` but for
    its cell (cores, quota, N, neighbours) and mode; the other arguments are its fields."""
    base = SimConfig(mode="off", n=1, cores=1, boot_cpu=boot_cpu, dist=dist, seed=seed, growth=growth,
                     detect_lag=detect_lag, fork_cost=fork_cost, fail_prob=fail_prob, initial=initial,
                     tail_merge=tail_merge, extra=extra, overhead=overhead, policy_factory=policy_factory,
                     background=background)
    rows = []
    for cores, quota, n, neighbours in grid_cells(cores_list, ns):
        cell = replace(base, n=n, cores=cores, quota=quota, neighbours=neighbours)
        results = {mode: run(replace(cell, mode=mode)) for mode in MODES}
        stock = results["off"].all_ready
        for mode in MODES:
            r = results[mode]
            row = r.summary()
            misses = goal_misses(r, stock)
            row["goal"] = "MISS" if misses else "ok"
            row["missed"] = "+".join(misses)
            row["miss_ratio"] = miss_ratio(r, stock)
            row["stock_all_ready"] = stock
            row["vs_stock"] = r.all_ready / stock if stock > 0 else INF
            rows.append(row)
    return rows


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Strict JSON: ``inf`` (never happened) becomes ``null``."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _fmt(x: float | None, width: int = 7) -> str:
    if x is None:
        return "-".rjust(width)
    if x == INF:
        return "inf".rjust(width)
    return f"{x:{width}.2f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'cores':>5} {'quota':>5} {'N':>4} {'L':>4} {'mode':>5} {'first':>7} {'all':>7} {'peak':>4} "
        f"{'lone':>7} {'cpu':>7} {'goal':>4} {'/stock':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        quota = "-" if r["quota"] is None else f"{r['quota']:g}"
        lines.append(
            f"{r['cores']:>5} {quota:>5} {r['n']:>4} {r['neighbours']:>4} {r['mode']:>5} "
            f"{_fmt(r['first_ready'])} {_fmt(r['all_ready'])} {r['peak_booting']:>4} "
            f"{_fmt(r['lone_boot'])} {_fmt(r['cpu_bound'])} {r['goal']:>4} {_fmt(r['vs_stock'], 6)}"
        )
    return "\n".join(lines)


def format_summary(rows: list[dict[str, Any]], growth: str, worst: int = 5) -> str:
    lines = [f"growth={growth}:"]
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        misses = sum(r["goal"] == "MISS" for r in mine)
        alone = [r for r in mine if not r["neighbours"]]
        slower = sum(r["vs_stock"] > 1.0 + 1e-9 for r in alone)
        worst_vs = max((r["vs_stock"] for r in alone), default=INF)
        lines.append(f"  {mode:>5}: {misses:3d} / {len(mine)} MISS; without neighbours, all ready slower than "
                     f"stock in {slower} / {len(alone)} cells (worst {worst_vs:.2f}x stock)")
    for mode in ("timer", "ready"):
        bad = sorted((r for r in rows if r["mode"] == mode), key=lambda r: -r["miss_ratio"])[:worst]
        for r in bad:
            if r["goal"] != "MISS":
                break
            quota = "-" if r["quota"] is None else f"{r['quota']:g}"
            lines.append(
                f"  worst {mode}: cores={r['cores']} quota={quota} N={r['n']} L={r['neighbours']} "
                f"first={r['first_ready']:.2f} (lone {r['lone_boot']:.2f}) all={r['all_ready']:.2f} "
                f"(stock {r['stock_all_ready']:.2f}, cpu {r['cpu_bound']:.2f}) x{r['miss_ratio']:.2f} "
                f"missed {r['missed']}"
            )
    return "\n".join(lines)


def _initial(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.simulate",
        description="Simulate gunicorn starting N workers (off / timer / ready) over a grid of machines.",
    )
    parser.add_argument("--boot-cpu", type=float, default=1.0, help="CPU seconds per boot (default 1.0)")
    parser.add_argument("--dist", choices=DISTS, default="fixed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--growth", choices=(*GROWTHS, "both"), default=DEFAULT_GROWTH)
    parser.add_argument("--initial", type=_initial, default=DEFAULT_INITIAL,
                        help=f"the policy's initial: a count or 'auto' (default {DEFAULT_INITIAL})")
    parser.add_argument("--no-tail-merge", action="store_true", help="turn the policy's tail merge off")
    parser.add_argument("--extra", type=int, default=0, help="the policy's extra places once a worker is ready")
    parser.add_argument("--background", type=int, default=DEFAULT_BACKGROUND,
                        help=f"the policy's background boots (default {DEFAULT_BACKGROUND}: an unprivileged master; "
                             "1: the product's default where the master may raise priorities back)")
    parser.add_argument("--overhead", type=float, default=0.0,
                        help=f"contention cost c, a sensitivity (default 0: pure sharing, < 1 %% measured here "
                             f"for CPU-bound boots; {CONTENTION}: 16 boots on 2 cores cost 8 %% more each)")
    parser.add_argument("--ns", type=lambda s: [int(x) for x in s.split(",")],
                        help=f"worker counts instead of the grid's (e.g. {','.join(map(str, SWEEP_NS))})")
    parser.add_argument(
        "--cores",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(GRID_CORES),
        help="comma-separated core counts (default 2,8,16,64,128)",
    )
    parser.add_argument("--fail-prob", type=float, default=0.0)
    parser.add_argument("--detect-lag", type=float, default=DETECT_LAG,
                        help=f"seconds from a worker's first notify to the master's next fork decision (default "
                             f"{DETECT_LAG:g}: the event-driven master, measured by benchmarks/detectlag.py; "
                             f"{POLLED_LAG:g}: a master that polls, no inotify)")
    parser.add_argument("--fork-cost", type=float, default=0.002)
    parser.add_argument("--json", metavar="PATH", help="write every row (and its goal) as JSON here")
    args = parser.parse_args(argv)

    growths = GROWTHS if args.growth == "both" else (args.growth,)
    started = time.perf_counter()
    all_rows: list[dict[str, Any]] = []
    summaries = []
    for growth in growths:
        rows = run_grid(
            args.cores,
            growth=growth,
            boot_cpu=args.boot_cpu,
            dist=args.dist,
            seed=args.seed,
            fail_prob=args.fail_prob,
            detect_lag=args.detect_lag,
            fork_cost=args.fork_cost,
            ns=args.ns,
            initial=args.initial,
            tail_merge=not args.no_tail_merge,
            extra=args.extra,
            overhead=args.overhead,
            background=args.background,
        )
        print(f"# growth={growth} initial={args.initial} tail_merge={not args.no_tail_merge} extra={args.extra} "
              f"background={args.background} overhead={args.overhead:g} boot_cpu={args.boot_cpu} "
              f"dist={args.dist} seed={args.seed}")
        print(format_table(rows))
        print()
        summaries.append(format_summary(rows, growth))
        all_rows.extend(rows)
    print("\n".join(summaries))
    print(f"({len(all_rows)} runs in {time.perf_counter() - started:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([_jsonable(r) for r in all_rows], f, indent=1, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
