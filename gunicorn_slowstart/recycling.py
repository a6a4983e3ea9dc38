"""Which worker to recycle next, make before break (pure logic).

Theory of operation
-------------------
Workers that live forever leak; gunicorn's ``max_requests`` makes them exit
on their own, often several at once, and each exit leaves a hole until the
respawn is ready.  Here the master recycles instead, the way the rolling
reload replaces a generation:

* a worker is **due** when it is older than its age limit
  (``max_worker_age`` plus a per-worker jitter of up to 10 %, drawn once, so
  workers started together do not all come due together) or its USS is above
  ``max_worker_memory``;
* the master marks **one** due worker as retiring at a time, and only while
  no other worker boots (no ramp, no other recycle): the retiring worker
  keeps serving, a replacement is forked through the pacing policy, and the
  old one is stopped only once the replacement is ready, so the ready count
  never drops below the target;
* memory first (a leaking worker is closer to the OOM killer), then the
  oldest.

The arbiter gives plain numbers (ages in seconds, USS in MiB); nothing here
reads a clock or a process.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

JITTER = 0.10  # age limits are spread over [max_age, max_age * 1.1)


@dataclass(frozen=True)
class Due:
    key: Hashable
    reason: str  # "age" or "memory"
    text: str  # for the log: "age 4.2 s > max_worker_age 4 s"


def age_limit(max_age: float, draw: float) -> float:
    """This worker's age limit; ``draw`` is a uniform random number in [0, 1)."""
    if not 0 <= draw < 1:
        raise ValueError("draw must be in [0, 1)")
    return max_age * (1 + JITTER * draw)


def due(ages: Mapping[Hashable, float], limits: Mapping[Hashable, float],
        uss_mb: Mapping[Hashable, float], max_memory_mb: float) -> list[Due]:
    """Ready workers past their age limit or memory limit, the most urgent first.

    ``ages``: ready workers and their age (s); ``limits``: each one's age
    limit (absent: no age limit); ``uss_mb``: latest USS samples;
    ``max_memory_mb``: 0 means no memory limit.
    """
    found = []
    for key in sorted(ages, key=lambda k: -ages[k]):
        uss = uss_mb.get(key)
        if max_memory_mb and uss is not None and uss > max_memory_mb:
            found.append((0, -uss, Due(key, "memory", f"USS {uss:.0f} MiB > max_worker_memory "
                                                      f"{max_memory_mb:g} MiB")))
        elif key in limits and ages[key] >= limits[key]:
            found.append((1, -ages[key], Due(key, "age", f"age {ages[key]:.1f} s > max_worker_age "
                                                         f"{limits[key]:.1f} s")))
    return [d for *_, d in sorted(found, key=lambda f: (f[0], f[1]))]


def next_recycle(candidates: list[Due], retiring: int, booting: int, ramping: bool) -> Due | None:
    """The one worker to recycle now, or None: one at a time, never during a ramp."""
    if retiring or booting or ramping or not candidates:
        return None
    return candidates[0]
