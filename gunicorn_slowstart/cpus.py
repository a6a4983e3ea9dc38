"""How many CPUs this process may really use, and how many stand idle.

Theory
------
``os.cpu_count()`` answers the wrong question: it counts the host's CPUs, not
the ones we may run on.  A worker pool sized from it in a container that gets
half a CPU forks (say) 8 workers that then fight over 50 ms of CPU time every
100 ms, and every boot is slowed down by all the others.  Several independent
mechanisms cap what we really get, and each one is a hard ceiling, so the
usable count is the **minimum** of all of them:

* the host CPU count (``os.cpu_count()``);
* the scheduler affinity mask (``taskset``, ``cpuset`` cgroups, ``docker
  --cpuset-cpus``): we cannot run on CPUs outside it;
* CFS bandwidth quotas, which is how ``docker --cpus``, Kubernetes CPU limits
  and systemd ``CPUQuota=`` work: cgroup v2 ``cpu.max`` (``"quota period"``),
  cgroup v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``.  A quota set on any
  *ancestor* of our cgroup throttles us too, so the whole chain up to the mount
  is read and the smallest quota wins.

A fractional quota is rounded **down** (2.7 CPUs of time is 2 CPUs' worth of
parallel workers plus some slack), but never below 1: a process may always run.

``cpu.shares`` (v1) and ``cpu.weight`` (v2) are ignored.  They are relative
weights that only matter under contention, between siblings: a cgroup with a
small weight on an idle machine still gets every CPU.  They are not a limit,
and treating them as one (as old JVMs did) starves containers on idle hosts.

Any file that is missing, unreadable or malformed means "no limit from that
source" (logged at DEBUG): detection must never stop a server from starting.

``IdleCpuSampler`` measures how much of that capacity stands idle.  Inside a
quota the machine's idle time is meaningless (the host may be idle while our
cgroup is throttled), so there it is ``quota - our cgroup's usage rate``;
without a quota it is the idle share of ``/proc/stat`` times the usable count.
With ``exclude_self`` the sampling process's own CPU time over the interval
counts as idle: the master measures how much the machine can take *besides*
itself, and its own start-up work (config, imports) ends when it forks.  That
is what lets the master measure at start without waiting: its first sample
is taken in ``setup()``, the second just before the first fork, and gunicorn's
own set-up between the two (importing the worker class) is the interval.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .cgroup import CgroupDir, find_cgroup, parse_int, read_text

log = logging.getLogger("gunicorn_slowstart.cpus")


@dataclass(frozen=True)
class CpuReport:
    """Each source of the usable CPU count, and which one decided it."""

    host: int
    affinity: int | None  # None where the platform has no affinity mask
    cgroup_quota: float | None  # smallest CFS quota found, in CPUs; None = no quota
    usable: int
    source: str


@dataclass(frozen=True)
class _Quota:
    """A CFS quota found at one cgroup directory."""

    quota: int  # microseconds per period
    period: int
    version: int
    path: str  # the directory that holds the quota
    where: CgroupDir  # the process's own cgroup in that hierarchy

    @property
    def cpus(self) -> float:
        return self.quota / self.period

    @property
    def whole(self) -> int:
        """Whole CPUs: rounded down (integer division, no float error), at least 1."""
        return max(1, self.quota // self.period)


def usable_cpus(root: str = "/", *, host_count: int | None = None, affinity: int | None = None) -> int:
    """The number of CPUs this process may really use in parallel (see the module docstring)."""
    return cpu_report(root, host_count=host_count, affinity=affinity).usable


def cpu_report(root: str = "/", *, host_count: int | None = None,
               affinity: int | None = None) -> CpuReport:
    """Every source, the minimum of them and which one set it (for logs and the timeline)."""
    host = host_count if host_count is not None else (os.cpu_count() or 1)
    mask = affinity if affinity is not None else _affinity()
    quota = _smallest_quota(root)
    candidates = []  # (count, source); on a tie the first listed is named: a quota, then the host
    if quota is not None:
        described = f"cgroup v{quota.version} quota {quota.cpus:.2f} CPU at {quota.path}"
        candidates.append((quota.whole, described))
    candidates.append((max(1, host), f"host CPU count {host}"))
    if mask is not None:
        candidates.append((max(1, mask), f"affinity mask of {mask} CPU"))
    usable, source = min(candidates, key=lambda c: c[0])
    return CpuReport(host=host, affinity=mask, cgroup_quota=quota.cpus if quota else None,
                     usable=usable, source=source)


def _affinity() -> int | None:
    if not hasattr(os, "sched_getaffinity"):
        return None
    try:
        return len(os.sched_getaffinity(0))
    except OSError as exc:
        log.debug("sched_getaffinity failed: %s", exc)
        return None


def _smallest_quota(root: str = "/") -> _Quota | None:
    """The tightest CFS quota over our v2 and v1 cgroups and all their ancestors."""
    quotas = _v2_quotas(root) + _v1_quotas(root)
    return min(quotas, key=lambda q: q.cpus) if quotas else None


def _v2_quotas(root: str) -> list[_Quota]:
    where = find_cgroup(root, None, log)
    if where is None:
        return []
    found = []
    for path in where.ancestors():
        pair = _parse_cpu_max(read_text(posixpath.join(path, "cpu.max"), log), path)
        if pair:
            found.append(_Quota(pair[0], pair[1], 2, path, where))
    return found


def _v1_quotas(root: str) -> list[_Quota]:
    where = find_cgroup(root, "cpu", log)
    if where is None:
        return []
    found = []
    for path in where.ancestors():
        quota = parse_int(read_text(posixpath.join(path, "cpu.cfs_quota_us"), log), path, log)
        period = parse_int(read_text(posixpath.join(path, "cpu.cfs_period_us"), log), path, log)
        pair = _checked(quota, period, path)
        if pair:
            found.append(_Quota(pair[0], pair[1], 1, path, where))
    return found


def _parse_cpu_max(text: str | None, path: str) -> tuple[int, int] | None:
    """``"max 100000"`` -> None (no limit); ``"150000 100000"`` -> (150000, 100000)."""
    if text is None:
        return None
    fields = text.split()
    if len(fields) != 2:
        log.debug("malformed cpu.max at %s: %r", path, text)
        return None
    if fields[0] == "max":
        return None
    return _checked(parse_int(fields[0], path, log), parse_int(fields[1], path, log), path)


def _checked(quota: int | None, period: int | None, path: str) -> tuple[int, int] | None:
    """A usable (quota, period) pair, or None: -1 means unlimited, anything odd is ignored."""
    if quota is None or period is None or quota == -1:
        return None
    if quota <= 0 or period <= 0:
        log.debug("ignoring CFS quota %s / period %s at %s", quota, period, path)
        return None
    return quota, period


class IdleCpuSampler:
    """How many CPUs stood idle, on average, between two calls of ``sample``.

    Cheap and passive (no thread): each call reads one or two small files.  The
    cgroup and quota are resolved once, at construction, because they do not
    change under a running server and re-resolving them costs several reads.
    """

    def __init__(self, root: str = "/", *, usable: int | None = None, exclude_self: bool = False,
                 own_cpu=time.process_time) -> None:
        self._root = root
        quota = _smallest_quota(root)
        self._quota = quota.cpus if quota else None
        self._usage_file = _usage_file(quota, root) if quota else None
        self._usable = usable if usable is not None else usable_cpus(root)
        self._own_cpu = own_cpu if exclude_self else None
        self._prev: tuple[float, float, float, float] | None = None  # (now, a, b, own CPU s) of the last sample

    @property
    def mode(self) -> str:
        """``"cgroup"`` when usage is measured against the quota, else ``"proc"``."""
        return "cgroup" if self._usage_file else "proc"

    def sample(self, now: float) -> float | None:
        """Idle CPUs since the previous call; None on the first call or when unreadable."""
        current = self._read()
        own = self._own_cpu() if self._own_cpu is not None else 0.0
        prev, self._prev = self._prev, (None if current is None else (now, *current, own))
        if prev is None or current is None or now <= prev[0]:
            return None
        wall, own_share = now - prev[0], max(0.0, own - prev[3]) / (now - prev[0])
        if self._usage_file:
            idle = self._cgroup_idle(current[0] - prev[1], wall, own_share)
        else:
            idle = self._proc_idle(current[0] - prev[1], current[1] - prev[2], own_share)
        return idle

    def _read(self) -> tuple[float, float] | None:
        if self._usage_file:
            used = _read_usage(self._usage_file)
            return None if used is None else (used, 0.0)
        return _read_proc_stat(os.path.join(self._root, "proc/stat"))

    def _cgroup_idle(self, used_seconds: float, wall: float, own_share: float = 0.0) -> float:
        assert self._quota is not None
        return min(self._quota, max(0.0, self._quota - used_seconds / wall + own_share))

    def _proc_idle(self, idle: float, total: float, own_share: float = 0.0) -> float | None:
        if total <= 0:
            return None
        cap = self._usable if self._quota is None else min(self._usable, self._quota)
        return min(cap, max(0.0, idle / total * self._usable + own_share))


def _usage_file(quota: _Quota, root: str) -> str | None:
    """The file holding the CPU time used by the cgroup that carries the quota.

    v2: ``cpu.stat`` (``usage_usec``) sits in every cgroup.  v1: ``cpuacct.usage``
    lives in the cpuacct hierarchy, co-mounted with cpu or separate.  A separate
    hierarchy is used only when it mirrors the cpu one (our path is the same in
    both, as systemd, Docker and ``CpuLimit`` arrange): otherwise the same path
    there may hold other processes, and ``/proc/stat`` is the honest fallback."""
    if quota.version == 2:
        path = posixpath.join(quota.path, "cpu.stat")
    else:
        acct = find_cgroup(root, "cpuacct", log)
        if acct is None or acct.rel != quota.where.rel:
            return None
        path = posixpath.join(acct.mount, posixpath.relpath(quota.path, quota.where.mount), "cpuacct.usage")
        path = posixpath.normpath(path)
    return path if _read_usage(path) is not None else None


def _read_usage(path: str) -> float | None:
    """CPU seconds used, from v2 ``cpu.stat`` (usage_usec) or v1 ``cpuacct.usage`` (ns)."""
    text = read_text(path, log)
    if text is None:
        return None
    try:
        if path.endswith("cpu.stat"):
            fields = dict(line.split() for line in text.splitlines() if line.strip())
            return int(fields["usage_usec"]) / 1e6
        return int(text.strip()) / 1e9
    except (ValueError, KeyError) as exc:
        log.debug("malformed CPU usage at %s: %s", path, exc)
        return None


def _read_proc_stat(path: str) -> tuple[float, float] | None:
    """(idle + iowait, total) jiffies from the aggregate ``cpu`` line of /proc/stat."""
    for name, idle, total in _cpu_lines(read_text(path, log) or ""):
        if name == "cpu":
            return idle, total
    log.debug("no usable aggregate cpu line in %s", path)
    return None


def per_cpu_idle(root: str = "/") -> dict[int, float]:
    """Idle + iowait jiffies of each CPU (the ``cpuN`` lines of /proc/stat); {} where unreadable.
    Two readings tell which CPUs stood idlest in between (``priority.confinement``)."""
    text = read_text(os.path.join(root, "proc/stat"), log) or ""
    return {int(name[3:]): idle for name, idle, _ in _cpu_lines(text) if name[3:].isdigit()}


def _cpu_lines(text: str) -> Iterator[tuple[str, float, float]]:
    """(name, idle + iowait, total) of every well-formed ``cpu`` / ``cpuN`` line of /proc/stat.

    The total is the first eight fields: guest time is already counted in user."""
    for line in text.splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith("cpu"):
            continue
        try:
            values = [int(v) for v in fields[1:9]]
            yield fields[0], float(values[3] + values[4]), float(sum(values))
        except (ValueError, IndexError):
            continue
