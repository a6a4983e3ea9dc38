"""``ProcKey``: the one key type for every process the master paces.

Theory of operation
-------------------
The master paces two kinds of process: HTTP workers, which gunicorn forks and
knows by pid, and long workers, which the pool manager forks and the master
knows by the id it granted them (their pid comes later, in a report).  The
policy (``policy.py``), its ``Decision.kill`` / ``stale`` lists, the
pool's events (``pool/link.py``), the arbiter's record of who is booting
(``boots.py``), the timeline and the status reporter all key a process by
``ProcKey(kind, id)``: the kind says which of the two it is, so no caller has
to guess it from the key's shape.  The OS pid is a value recorded beside the
key where it is known.  The policy itself accepts any hashable key (its tests use plain
values); the master always uses this one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ProcKey:
    """A paced process: ``kind`` is ``policy.HTTP`` (``id`` = pid) or ``policy.LONG`` (``id`` = granted id)."""

    kind: str
    id: int
