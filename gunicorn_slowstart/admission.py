"""How many more workers fit in memory and under the pids limit (pure logic).

Theory of operation
-------------------
Forking a worker that does not fit ends in the kernel's OOM killer: gunicorn
respawns the victim, which does not fit either, and the server crash-loops.
So before each fork the master asks "does one more fit?", and holds the ramp
when it does not.  This module is the answer, computed from plain numbers the
arbiter measured (``memory.py``, ``cgroup.py``, psutil): it never reads a
file, a clock or a process.

* **What one worker costs** is learnt, not configured: each worker's USS
  (memory only it holds; what one more fork adds, since pages shared with the
  master are already paid for) and thread count are sampled when it becomes
  ready, and the cost is the **median** of those samples, so one odd worker
  does not decide it.  An app keeps growing after it is ready (caches warm
  up), so a sample is taken again when it is old (``sampled_before``): the
  arbiter re-measures the ready workers, a few per look, when a later ramp
  begins (a respawn, TTIN, a reload, a recycle: ``fresh_since``) and any
  sample older than a bound; the latest sample of each worker counts, and the
  cost is never below the median of the samples taken since the ramp began
  (a respawn's single look refreshes only a few of many workers).  Until the first worker is ready nothing is known, and
  admission cannot cap the first step (as many workers as CPUs stand idle,
  plus one background boot): the **guard** below watches that step instead.
* **What is left** is the memory really available (the cgroup limit minus the
  cgroup's working set, else ``MemAvailable``) minus a **headroom** (a
  fraction of the limit, 10 % by default: page cache, the master, a request
  spike) minus what the workers still booting have not allocated yet
  (``cost - their USS so far``; a booting worker will grow to the cost).
* ``room = floor(left / cost)``, never negative.  The same for the cgroup
  ``pids`` limit, with threads per worker in place of MiB and no headroom
  fraction but one spare task.

Long workers (the pool) are a second kind with their own ``Admission``: their
cost is learnt from the ready long workers the same way, and each kind's room
is computed with the other's promises reserved (its booting workers still
growing, and for the long workers' room the HTTP forks admitted first: HTTP
workers come first, as in the policy).

The arbiter forks at most ``room`` more, logs once when the room runs out
(``hold_message``) and looks again later: memory freed by a worker that exited
or by the rest of the cgroup lets the ramp resume.

The guard (``guard``): the first step is forked blind
-----------------------------------------------------
Sizing the first step by a guessed cost would either undo the
work-conserving start (most pods have a memory limit) or be wrong.  So the
master measures instead: every ramp tick (25 ms) while workers admitted
without a known cost boot under a memory limit, it reads what is left (the
same ``MemoryView``) and how much each booting worker has grown since its fork
(cheap ``/proc/PID/statm`` reads: anonymous resident memory beyond the
master's, since a fork starts as a copy of it) and how fast.  What each one
will still take is at least the larger of (a) the biggest growth seen so far
(from a booting worker, or the growth of the first ones at readiness) minus
its own, since workers run the same code, and (b) its growth rate over the
time to the next look.  When what is left, less all of that, falls below the
headroom, the **youngest** booting workers are stopped (their growth comes
back) until the rest fit, never the last one.  The kernel's OOM killer would
instead take the biggest process, which can be a serving worker.  A stop is
expected (not a boot failure); the ramp holds until a worker's cost is
known and one more fits.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from statistics import median

HEADROOM = 0.10  # of the memory limit, kept free
SPARE_TASKS = 1  # pids: keep one task free for the master (a thread, a subprocess)


@dataclass(frozen=True)
class MemoryView:
    """The memory that matters, in MiB: what is available now, and the limit it is part of."""

    available: float
    limit: float
    source: str = "cgroup"  # "cgroup" (a limit) or "host" (MemAvailable of MemTotal)


@dataclass(frozen=True)
class PidsView:
    """The cgroup ``pids`` controller: tasks allowed and tasks in use."""

    limit: int
    current: int


@dataclass(frozen=True)
class Room:
    """How many more workers may be forked now; ``count`` None means "no limit known"."""

    count: int | None
    reason: str | None = None  # "memory" or "pids": the one that limits, when something does
    cost: float | None = None  # MiB (memory) or threads (pids) per worker, of the limiting reason
    limit: float | None = None  # the limit the reason refers to (MiB, or tasks)


class Admission:
    """Per-worker cost samples and the "how many more fit" answer."""

    def __init__(self, headroom: float = HEADROOM) -> None:
        if not 0 <= headroom < 1:
            raise ValueError("headroom must be a fraction in [0, 1)")
        self.headroom = headroom
        self.uss: dict[Hashable, float] = {}
        self.threads: dict[Hashable, int] = {}
        self.sampled_at: dict[Hashable, float] = {}  # when each worker was last measured
        self.fresh_since = 0.0  # samples taken since (this ramp's start) outweigh older ones

    # -- samples --------------------------------------------------------------------

    def measured(self, key: Hashable, uss_mb: float | None, threads: int | None, at: float = 0.0) -> None:
        """A ready worker's USS (MiB) and thread count at time ``at``; None: could not be read
        (an earlier sample of it stays)."""
        if uss_mb is not None and uss_mb > 0:
            self.uss[key] = float(uss_mb)
        if threads is not None and threads > 0:
            self.threads[key] = int(threads)
        self.sampled_at[key] = at

    def sampled_before(self, t: float) -> list[Hashable]:
        """The workers last measured before ``t``, oldest first: to measure again."""
        return sorted((key for key, at in self.sampled_at.items() if at < t), key=self.sampled_at.__getitem__)

    def forget(self, key: Hashable) -> None:
        """The worker is gone; keep its sample only while nothing else is known.

        A median over the workers alive follows an application whose cost
        changes with a reload; the last sample is kept so a crash of every
        worker does not reset the knowledge to "unknown" (and admit them all).
        """
        if len(self.uss) > 1:
            self.uss.pop(key, None)
        if len(self.threads) > 1:
            self.threads.pop(key, None)
        self.sampled_at.pop(key, None)  # a sample kept as the last one known is never re-measured

    @property
    def cost_mb(self) -> float | None:
        """The median sample, or the median of the fresh ones if that is more."""
        if not self.uss:
            return None
        fresh = [uss for key, uss in self.uss.items() if self.sampled_at.get(key, 0.0) >= self.fresh_since]
        return max(median(self.uss.values()), median(fresh) if fresh else 0.0)

    @property
    def threads_per_worker(self) -> int | None:
        return math.ceil(median(self.threads.values())) if self.threads else None

    # -- the answer -----------------------------------------------------------------

    def room(self, memory: MemoryView | None, pids: PidsView | None,
             booting: Iterable[tuple[float | None, int | None]] = (),
             reserved: tuple[float, int] = (0.0, 0)) -> Room:
        """How many more fit; ``booting`` gives (USS MiB, threads) so far of each booting worker;
        ``reserved`` (MiB, tasks) is promised to others (the other kind's boots and forks)."""
        rooms = []
        cost, threads = self.cost_mb, self.threads_per_worker
        pending_mb, pending_tasks = self.promised(booting)
        if memory is not None and cost is not None:
            count = memory_room(memory.available, memory.limit, cost, pending_mb + reserved[0], self.headroom)
            rooms.append(Room(count, "memory", cost, memory.limit))
        if pids is not None and threads is not None:
            count = pids_room(pids.limit, pids.current, threads, pending_tasks + reserved[1])
            rooms.append(Room(count, "pids", threads, pids.limit))
        if not rooms:
            return Room(None)
        return min(rooms, key=lambda r: r.count)

    def promised(self, booting: Iterable[tuple[float | None, int | None]] = (), forks: int = 0) -> tuple[float, int]:
        """(MiB, tasks) that ``booting`` workers will still take, growing to the cost, and that
        ``forks`` more would take: what this kind reserves while the other's room is computed.
        Nothing for what is not known yet."""
        cost, threads = self.cost_mb, self.threads_per_worker
        booting = list(booting)
        mb = 0.0 if cost is None else sum(max(0.0, cost - (uss or 0.0)) for uss, _ in booting) + forks * cost
        tasks = 0 if threads is None else sum(max(0, threads - (t or 0)) for _, t in booting) + forks * threads
        return mb, tasks


def memory_room(available_mb: float, limit_mb: float, cost_mb: float, pending_mb: float = 0.0,
                headroom: float = HEADROOM) -> int:
    """Workers of ``cost_mb`` that fit in ``available_mb``, keeping ``headroom`` x the limit free
    and ``pending_mb`` for workers still growing."""
    if cost_mb <= 0:
        raise ValueError("cost_mb must be > 0")
    left = available_mb - headroom * limit_mb - pending_mb
    return max(0, math.floor(left / cost_mb))


def pids_room(limit: int, current: int, per_worker: int, pending: int = 0) -> int:
    """Workers of ``per_worker`` tasks that fit under a pids limit, keeping a spare task."""
    if per_worker <= 0:
        raise ValueError("per_worker must be > 0")
    return max(0, (limit - current - pending - SPARE_TASKS) // per_worker)


@dataclass(frozen=True)
class Growing:
    """A booting worker as the guard sees it: MiB grown since its fork, and how fast (MiB/s)."""

    key: Hashable
    grown: float
    rate: float = 0.0


@dataclass(frozen=True)
class GuardVerdict:
    """What the guard decided: the workers to stop (youngest first) and the figures behind it."""

    stop: tuple
    left: float  # MiB available under the limit now
    need: float  # MiB the booting workers will still take, at least (estimated)
    floor: float  # MiB kept free (the headroom)


def guard(memory: MemoryView, booting: list[Growing], grown_cost: float | None = None,
          lookahead: float = 0.0, headroom: float = HEADROOM) -> GuardVerdict:
    """Which booting workers (``booting`` oldest first) to stop so that the others can
    finish booting with ``headroom`` x the limit still free.  ``grown_cost``: MiB a worker
    had grown by when it became ready, once one has; ``lookahead``: seconds to the next look."""
    largest = max([b.grown for b in booting] + [grown_cost or 0.0])
    need = {b.key: max(0.0, largest - b.grown, b.rate * max(0.0, lookahead)) for b in booting}
    floor = headroom * memory.limit
    left = memory.available - sum(need.values())
    stop = []
    for b in reversed(booting):  # the youngest first: the least boot time is lost
        if left >= floor or len(booting) - len(stop) <= 1:
            break
        stop.append(b.key)
        left += need[b.key] + b.grown  # what it would still take, and what it holds, come back
    return GuardVerdict(tuple(stop), memory.available, sum(need.values()), floor)


def guard_message(verdict: GuardVerdict, memory: MemoryView, booting: int) -> str:
    """The figures behind a stop, for the log and the hold: ``95 MiB left of 700 MiB, ...``."""
    where = "cgroup limit" if memory.source == "cgroup" else "MemTotal"
    return (f"{verdict.left:.0f} MiB left of {memory.limit:.0f} MiB ({where}), {booting} booting workers "
            f"need ~{verdict.need:.0f} MiB more, headroom {verdict.floor:.0f} MiB")


def admit(wanted: int, room: Room) -> int:
    """How many of ``wanted`` forks the room allows."""
    wanted = max(0, wanted)
    return wanted if room.count is None else min(wanted, room.count)


def hold_message(room: Room, workers: int, target: int, what: str = "workers") -> str:
    """Why the ramp holds, for the log, the status line and the status file:
    ``6 of 8 workers fit in 700 MiB (~200 MiB each)``."""
    fit = workers + (room.count or 0)
    if room.reason == "pids":
        return (f"{fit} of {target} {what} fit under the pids limit of {room.limit:.0f} tasks "
                f"(~{room.cost:.0f} threads each)")
    return f"{fit} of {target} {what} fit in {room.limit:.0f} MiB (~{room.cost:.0f} MiB each)"
