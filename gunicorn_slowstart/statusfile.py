"""The master's view in a small JSON file, for probes and load balancers.

Theory of operation
-------------------
A Kubernetes probe or a load balancer health check that goes through the
listen socket asks a busy worker, and learns nothing about the rest: "3 of 8
ready", "ramping", "memory held", "reload failed".  The master knows all of
that.  With ``slowstart_status_file = PATH`` it rewrites a small JSON file on
every change (and at least every ``HEARTBEAT`` seconds, so a reader can tell a
live master from a stale file)::

    {"ready": 6, "booting": 1, "target": 8, "state": "serving",
     "generation": 2, "pid": 4242, "updated_at": 1790000000.1, "detail": ""}

``state`` is one of ``starting`` (no ramp has completed yet), ``serving``,
``reloading`` (a SIGHUP generation is being rolled in), ``reload failed``,
``memory held`` (admission, or the memory guard of the first step, holds the
ramp; ``detail`` says why) and
``stopping``.  ``generation`` is the generation that serves (1 at start, one more per completed SIGHUP reload).
``updated_at`` is wall-clock time (``time.time()``), comparable across
processes.  ``python -m gunicorn_slowstart.probe`` reads it.

The file is written by ``files.write_atomic``, as everything the project
writes: atomically, and only where the path is absent or a regular file.

``status_state`` and ``StatusFile.update`` take plain values; only ``write``
touches the file system.
"""

from __future__ import annotations

import json
from typing import Any

from .files import write_atomic

HEARTBEAT = 2.0  # seconds: rewrite at least this often, so --max-age can spot a dead master
STATES = ("starting", "serving", "reloading", "reload failed", "memory held", "stopping")
FIELDS = ("ready", "booting", "target", "state", "generation", "pid", "updated_at", "detail")


def status_state(*, stopping: bool, reload_failed: bool, held: bool, reloading: bool, started: bool) -> str:
    """One word for the master's situation, the most important first."""
    if stopping:
        return "stopping"
    if reload_failed:
        return "reload failed"
    if held:
        return "memory held"
    if reloading:
        return "reloading"
    return "serving" if started else "starting"


class StatusFile:
    """Holds the last written record; writes when it changed or the heartbeat is due."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.last: dict[str, Any] = {}
        self.written_at = float("-inf")  # monotonic

    def update(self, now: float, wall: float, **record: Any) -> bool:
        """Write if the record changed or ``HEARTBEAT`` passed; True if it was written.
        Raises OSError (the caller logs it)."""
        if not self.path or (record == self.last and now - self.written_at < HEARTBEAT):
            return False
        self.last = dict(record)
        self.written_at = now
        write_atomic(self.path, json.dumps({**record, "updated_at": round(wall, 3)}, sort_keys=True) + "\n")
        return True


def read(path: str) -> dict[str, Any]:
    """The record in ``path``; ValueError (with the reason) when it is not one."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [name for name in ("ready", "target", "state", "pid", "updated_at") if name not in data]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    return data
