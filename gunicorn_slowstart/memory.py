"""How much memory may this process still allocate before something kills it?

Theory
------
Forking another worker when memory is short trades a slow start for an OOM
kill, so the master holds the ramp while headroom is low.  Two ceilings
apply and the **smaller** one is the answer:

* the host's ``MemAvailable`` (``/proc/meminfo``): the kernel's own estimate
  of what can be allocated without swapping, page cache it can drop included;
* the cgroup memory limit minus the cgroup's usage (v2 ``memory.max`` minus
  ``memory.current``, v1 ``memory.limit_in_bytes`` minus
  ``memory.usage_in_bytes``), for our own cgroup and every ancestor, since the
  OOM killer acts on whichever level runs out first.  Usage counts page cache;
  its inactive file part (``inactive_file`` / ``total_inactive_file`` in
  ``memory.stat``) is reclaimed before anyone is killed, so it is subtracted,
  which is the "working set" that Kubernetes and ``docker stats`` use.

cgroup v1 has no "max": an unlimited cgroup reports a huge number
(``PAGE_COUNTER_MAX`` pages, about 2**63), so limits of 2**60 bytes or more,
or above ``MemTotal``, mean "no limit".

Unreadable or malformed files mean "no limit from that source" (DEBUG log);
nothing here raises.  MB means MiB (2**20 bytes), as in the settings.
"""

from __future__ import annotations

import logging
import os
import posixpath

import psutil

from .admission import MemoryView
from .cgroup import find_cgroup, parse_int, read_text

log = logging.getLogger("gunicorn_slowstart.memory")

MIB = 2**20
UNLIMITED = 2**60  # v1 limits at or above this are "no limit"


def available_memory_mb(root: str = "/") -> float | None:
    """MiB that can still be allocated: min(cgroup headroom, MemAvailable); None if unknown."""
    meminfo = _meminfo(root)
    candidates = [b for b in (_v2_headroom(root), _v1_headroom(root, meminfo.get("MemTotal")),
                              meminfo.get("MemAvailable")) if b is not None]
    return min(candidates) / MIB if candidates else None


def _meminfo(root: str) -> dict[str, int]:
    """The fields of /proc/meminfo in bytes (the file says kB, meaning KiB)."""
    text = read_text(os.path.join(root, "proc/meminfo"), log) or ""
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        value = rest.split()
        if value and value[0].isdigit():
            fields[name.strip()] = int(value[0]) * 1024
    return fields


def _v2_headroom(root: str) -> int | None:
    where = find_cgroup(root, None, log)
    if where is None:
        return None
    levels = [_headroom(path, "memory.max", "memory.current", ("inactive_file",), None)
              for path in where.ancestors()]
    return _smallest(levels)


def _v1_headroom(root: str, mem_total: int | None) -> int | None:
    where = find_cgroup(root, "memory", log)
    if where is None:
        return None
    names = ("total_inactive_file", "inactive_file")  # hierarchical first, like usage_in_bytes
    levels = [_headroom(path, "memory.limit_in_bytes", "memory.usage_in_bytes", names, mem_total)
              for path in where.ancestors()]
    return _smallest(levels)


def _headroom(path: str, limit_file: str, usage_file: str, inactive: tuple[str, ...],
              mem_total: int | None) -> int | None:
    """limit - (usage - inactive file cache) at one cgroup, never negative; None = no limit."""
    level = _level(path, limit_file, usage_file, inactive, mem_total)
    return None if level is None else level[0]


def _level(path: str, limit_file: str, usage_file: str, inactive: tuple[str, ...],
           mem_total: int | None) -> tuple[int, int] | None:
    """(headroom, limit) in bytes at one cgroup; None = no limit there."""
    limit = _read_bytes(posixpath.join(path, limit_file))
    if limit is None or limit < 0 or limit >= UNLIMITED or (mem_total is not None and limit > mem_total):
        return None
    usage = _read_bytes(posixpath.join(path, usage_file))
    if usage is None:
        log.debug("memory limit at %s but no readable usage; ignoring it", path)
        return None
    working_set = max(0, usage - _stat_field(posixpath.join(path, "memory.stat"), inactive))
    return max(0, limit - working_set), limit


def _read_bytes(path: str) -> int | None:
    """An integer file; "max" (v2 unlimited), missing or garbage -> None."""
    text = read_text(path, log)
    if text is not None and text.strip() == "max":
        return None
    return parse_int(text, path, log)


def _stat_field(path: str, names: tuple[str, ...]) -> int:
    """The first of ``names`` found in a memory.stat file, else 0 (subtract nothing)."""
    fields = {}
    for line in (read_text(path, log) or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            fields[parts[0]] = int(parts[1])
    return next((fields[n] for n in names if n in fields), 0)


def _smallest(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


# -- for admission: the tightest level with its limit, and one worker's cost ------------


def memory_view(root: str = "/") -> MemoryView | None:
    """Available MiB and the limit it belongs to, at the tightest level (a cgroup of ours or
    an ancestor, else the host's MemAvailable of MemTotal); None if nothing is readable."""
    meminfo = _meminfo(root)
    levels = []
    where = find_cgroup(root, None, log)
    if where is not None:
        levels += [(_level(p, "memory.max", "memory.current", ("inactive_file",), None), "cgroup")
                   for p in where.ancestors()]
    where = find_cgroup(root, "memory", log)
    if where is not None:
        names = ("total_inactive_file", "inactive_file")
        levels += [(_level(p, "memory.limit_in_bytes", "memory.usage_in_bytes", names,
                           meminfo.get("MemTotal")), "cgroup") for p in where.ancestors()]
    if "MemAvailable" in meminfo and "MemTotal" in meminfo:
        levels.append(((meminfo["MemAvailable"], meminfo["MemTotal"]), "host"))
    known = [(level, source) for level, source in levels if level is not None]
    if not known:
        return None
    (available, limit), source = min(known, key=lambda k: k[0][0])
    return MemoryView(available / MIB, limit / MIB, source)


def process_cost(pid: int) -> tuple[float | None, float | None, int | None]:
    """(USS MiB, PSS MiB, threads) of one process; None for what cannot be read.

    USS is what the process alone holds: what one more fork of it adds.  PSS
    (Linux) also counts its share of pages shared with others."""
    try:
        proc = psutil.Process(pid)
        threads = proc.num_threads()
        full = proc.memory_full_info()
    except (psutil.Error, OSError) as exc:
        log.debug("cannot measure process %s: %s", pid, exc)
        return None, None, None
    pss = getattr(full, "pss", None)
    return full.uss / MIB, None if pss is None else pss / MIB, threads


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def anon_resident_mb(pid: int, root: str = "/") -> float | None:
    """Resident memory not backed by a file (``/proc/PID/statm``: resident - shared), MiB.

    Tens of microseconds, where USS (``smaps_rollup``) takes milliseconds for a big
    process: cheap enough for the memory guard to read every booting worker every
    ramp tick.  A fork starts with the master's, so the difference is what it added.
    None if the process is gone or the file is unreadable."""
    try:
        with open(os.path.join(root, f"proc/{pid}/statm"), encoding="ascii") as f:
            fields = f.read().split()
        return (int(fields[1]) - int(fields[2])) * PAGE / MIB
    except (OSError, ValueError, IndexError):
        return None
