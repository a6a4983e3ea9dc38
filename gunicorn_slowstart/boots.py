"""``Boots``: the master's one record of the processes that are booting.

Theory of operation
-------------------
A paced process boots from the moment the master starts it (an HTTP worker:
gunicorn's fork; a long worker: the arbiter's grant to the pool manager) until
it is ready or gone.  The arbiter needs that fact in many places: readiness
polling, the status counts, boot time-out and ready-timeout messages, the
boot-time histogram, memory admission (booting workers are not measured yet),
scale-down order and recycling.  Before this registry each of those read its
own copy (the arbiter's pid map, the pool link's set, the status reporter's
fork times); now the arbiter alone writes here, keyed by ``ProcKey`` for both
kinds, and everything else asks it.

The policy keeps its own ``booting`` map: it is the pure core that decides
and is told about the same events, it does not read the shell's records.

A ``Boot`` carries when the process was started and, for an HTTP worker, the
heartbeat file's mtime right after the fork (``baseline``) and the wall clock
then (``wall``): readiness is "the heartbeat moved away from its baseline"
(see ``_compat.has_notified``).  A long worker's start time is moved to the
moment the pool reports its fork (``forked``), so its boot time is measured
from the fork, as an HTTP worker's is.

No clock, no I/O: the arbiter passes every time in.
"""

from __future__ import annotations

from dataclasses import dataclass

from .keys import ProcKey


@dataclass
class Boot:
    """One booting process: started at ``forked_at`` (monotonic seconds)."""

    forked_at: float
    baseline: float = 0.0  # HTTP: heartbeat mtime right after the fork
    wall: float = 0.0  # HTTP: time.time() right after the fork


class Boots:
    """Booting processes of both kinds, keyed by ``ProcKey``, in the order they started."""

    def __init__(self) -> None:
        self._boots: dict[ProcKey, Boot] = {}

    def add(self, key: ProcKey, forked_at: float, baseline: float = 0.0, wall: float = 0.0) -> None:
        """``key`` starts booting (a pid reused after an exit replaces the old entry)."""
        self._boots[key] = Boot(forked_at, baseline, wall)

    def forked(self, key: ProcKey, now: float) -> None:
        """A long worker granted earlier was forked now: its boot counts from here."""
        boot = self._boots.get(key)
        if boot is not None:
            boot.forked_at = now

    def pop(self, key: ProcKey) -> Boot | None:
        """``key`` is ready or gone: no longer booting; its record, if it was."""
        return self._boots.pop(key, None)

    def get(self, key: ProcKey) -> Boot | None:
        return self._boots.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._boots

    def __len__(self) -> int:
        return len(self._boots)

    def keys(self, kind: str) -> list[ProcKey]:
        """The booting processes of ``kind``, oldest first (a copy: safe to change while iterating)."""
        return [key for key in self._boots if key.kind == kind]

    def items(self, kind: str) -> list[tuple[ProcKey, Boot]]:
        return [(key, boot) for key, boot in self._boots.items() if key.kind == kind]

    def ids(self, kind: str) -> set[int]:
        """The ids of the booting processes of ``kind`` (an HTTP worker's id is its pid)."""
        return {key.id for key in self._boots if key.kind == kind}

    def count(self, kind: str) -> int:
        return sum(1 for key in self._boots if key.kind == kind)

    def age(self, key: ProcKey, now: float) -> float | None:
        """Seconds since ``key`` started booting; None if it is not booting."""
        boot = self._boots.get(key)
        return None if boot is None else now - boot.forked_at
