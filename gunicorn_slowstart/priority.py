"""Background boots: a booting worker at idle CPU priority, raised when its turn comes.

Theory of operation
-------------------
The policy (``policy.py``, ``background``) may let a worker boot beyond the
window "in the background": it should get only the CPU that nobody else
wants, so it soaks up what the foreground boots leave idle (the gap between
one worker's readiness and the next fork, the second CPU while the first
response boots) without slowing them.  Linux's ``SCHED_IDLE`` policy is
exactly that: a ``SCHED_IDLE`` thread runs only on a CPU no normal thread
wants (its weight is 3 against a normal thread's 1024).

``SCHED_IDLE`` yields only to normal threads *on the same CPU*.  Under a
cgroup CPU quota smaller than the CPUs the workers may run on (the container
case: 1 CPU of quota on a 2-core host), a background boot would run freely on
an otherwise idle core and spend the cgroup's quota there, so the foreground
boot is throttled: measured, the first response took 2.1 s instead of 1.2 s.
There every booting worker, foreground and background, is *confined* to as
many CPUs as the quota holds whole (``confinement``: at least one, the ones
that stood idlest since the master's setup): on those CPUs the foreground
boots use no more than the quota, and the background boot gets only what they
leave.  A worker gets the master's whole affinity mask back when it is ready
(``Priorities.ready``), so serving workers are never confined.

Lowering a process is always allowed; raising it back to ``SCHED_OTHER`` is
not: the kernel treats ``SCHED_IDLE`` as nice 20 and lets a process leave it
only with ``CAP_SYS_NICE`` or an ``RLIMIT_NICE`` that allows nice 0.  A worker
left at ``SCHED_IDLE`` would serve at idle priority forever, so background
boots are used only where the master may raise them (``unavailable()`` says
why not), and a raise that fails anyway stops background boots for the rest
of the master's life and has the caller replace the worker.

A thread inherits its creator's policy, and so does a forked process, so
threads and processes an application starts at import (thread pools, BLAS,
a multiprocessing pool) are ``SCHED_IDLE`` too: raising a worker raises every
thread in ``/proc/<pid>/task`` of it and of its descendants, twice over (a
thread created while the first pass ran is caught by the second), and the
arbiter raises it again when it becomes ready.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Mapping

CAP_SYS_NICE = 23
NICE_ZERO_RLIMIT = 20  # RLIMIT_NICE value that allows nice 0: 20 - nice


def unavailable(quota: float | None = None, cores: int | None = None) -> str | None:
    """Why this master cannot run background boots, or None if it can.

    ``quota``: the cgroup CPU quota in CPUs (None: none); ``cores``: the CPUs the workers
    may run on (host count or affinity mask).  A quota below the cores needs the booting
    workers confined to fewer CPUs (``confinement``), hence an affinity mask to set."""
    if not hasattr(os, "SCHED_IDLE") or not hasattr(os, "sched_setscheduler"):
        return "this platform has no SCHED_IDLE"
    if quota is not None and cores is not None and quota < cores and not hasattr(os, "sched_setaffinity"):
        return (f"a cgroup CPU quota ({quota:g} CPU) below the {cores} CPUs the workers run on, and no "
                "affinity mask to confine the booting workers with")
    if _has_cap_sys_nice() or _nice_rlimit() >= NICE_ZERO_RLIMIT:
        return None
    return "the master may not raise a worker's priority back (it needs CAP_SYS_NICE or RLIMIT_NICE >= 20)"


def confinement(quota: float | None, allowed: Collection[int],
                idle: Mapping[int, float] | None = None) -> tuple[int, ...] | None:
    """The CPUs every booting worker is confined to, or None where no quota is below the
    CPUs in ``allowed`` (the master's affinity mask).

    As many CPUs as the quota holds whole (at least one), the idlest first by ``idle``
    (idle time per CPU since the master's setup; ties, and CPUs it lacks, by number)."""
    if quota is None or quota >= len(allowed):
        return None
    k = max(1, int(quota))
    idle = idle or {}
    return tuple(sorted(sorted(allowed, key=lambda cpu: (-idle.get(cpu, 0.0), cpu))[:k]))


def _has_cap_sys_nice() -> bool:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _nice_rlimit() -> int:
    try:
        import resource

        return resource.getrlimit(resource.RLIMIT_NICE)[0]
    except (ImportError, AttributeError, OSError, ValueError):
        return 0


def policy_of(tid: int) -> int | None:
    """The scheduling policy of a thread (or process), None if it is gone."""
    try:
        return os.sched_getscheduler(tid)
    except OSError:
        return None


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (what it forked while it booted in the background).

    ``/proc/<pid>/task/<tid>/children`` where the kernel has it (the worker's own tree),
    else psutil's scan of the process table (one per raise: cheap in a container's pid
    namespace, tens of milliseconds on a host with thousands of processes)."""
    found, queue, direct = [], [pid], True
    while queue and direct:
        proc = queue.pop()
        found.append(proc)
        for tid in threads(proc):
            try:
                with open(f"/proc/{proc}/task/{tid}/children") as children:
                    queue.extend(int(child) for child in children.read().split())
            except FileNotFoundError:
                direct = not os.path.exists(f"/proc/{proc}")  # it lives, no such file: the kernel lacks it
                break
            except (OSError, ValueError):
                continue
    if direct:
        return found
    try:
        import psutil

        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except Exception:  # psutil.Error: the worker is gone; ImportError: not installed
        return [pid]


def threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except (OSError, ValueError):
        return [pid]


class Priorities:
    """The workers this master lowered or confined, and giving them back what they had."""

    def __init__(self) -> None:
        self.lowered: set[int] = set()
        self.broken: str | None = None  # set when a raise failed: no more background boots
        self.confine_to: tuple[int, ...] | None = None  # set by the arbiter (``confinement``)
        self.home: set[int] = set()  # the mask a worker gets back: the master's own
        self.confined: dict[int, tuple[int, ...]] = {}  # pid: the CPUs it was confined to

    def confine(self, pid: int) -> bool:
        """Boot ``pid`` on ``confine_to`` (a worker just forked: it has one thread, the ones it
        starts inherit the mask); True where there is nothing to confine."""
        if self.confine_to is None:
            return True
        try:
            if self.home and set(os.sched_getaffinity(pid)) != self.home:
                return True  # the worker chose its CPUs itself (a post_fork hook pinning it): its choice
            os.sched_setaffinity(pid, self.confine_to)
        except ProcessLookupError:
            return True  # it died (and was reaped) already: nothing boots, nothing to confine
        except OSError as exc:
            self.broken = f"cannot confine worker {pid} to CPUs {cpu_list(self.confine_to)}: {exc.strerror or exc}"
            return False
        self.confined[pid] = self.confine_to
        return True

    def release(self, pid: int) -> None:
        """Every thread of ``pid`` and of what it started back on the master's CPUs (a worker
        left confined would serve on fewer CPUs: slower, never wrong, so failures pass)."""
        mask = self.confined.pop(pid, None)
        if mask is None:
            return
        procs = tree(pid)
        for _ in range(2):  # as raise_: a thread started during the first pass inherited the confinement
            for tid in (tid for proc in procs for tid in threads(proc)):
                with contextlib.suppress(OSError):
                    if set(os.sched_getaffinity(tid)) == set(mask):  # another mask: the worker set it itself
                        os.sched_setaffinity(tid, self.home)

    def lower(self, pid: int) -> bool:
        """Boot ``pid`` in the background; False if that did not work (it boots normally)."""
        try:
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            return False
        self.lowered.add(pid)
        return True

    def raise_(self, pid: int) -> bool:
        """Every thread of ``pid`` back to ``SCHED_OTHER``; False if the kernel refused."""
        if pid not in self.lowered:
            return True
        procs = tree(pid)
        for _ in range(2):
            for tid in (tid for proc in procs for tid in threads(proc)):
                try:
                    if os.sched_getscheduler(tid) == os.SCHED_IDLE:
                        os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                except ProcessLookupError:
                    continue  # the thread (or the worker) is gone
                except OSError as exc:
                    self.broken = f"cannot raise worker {pid}'s priority: {exc.strerror or exc}"
                    return False
        return True

    def ready(self, pid: int) -> bool:
        """The worker is ready: raised (again, for threads started since), no longer ours to watch."""
        done = self.raise_(pid)
        self.lowered.discard(pid)
        self.release(pid)
        return done

    def forget(self, pid: int) -> None:
        self.lowered.discard(pid)
        self.confined.pop(pid, None)


def cpu_list(cpus: Collection[int]) -> str:
    """``0,1,3``: CPUs as ``taskset -c`` writes them."""
    return ",".join(str(cpu) for cpu in sorted(cpus))
