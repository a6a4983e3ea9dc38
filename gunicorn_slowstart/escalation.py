"""Stopping a process: SIGTERM, SIGTERM again, then SIGKILL at a deadline.

Theory of operation
-------------------
The master stops HTTP workers (scale-down, a rolling reload, a boot time-out)
and the long-worker pool manager stops long workers the same way: SIGTERM
now, SIGKILL once ``grace`` seconds have passed without an exit.  The master
also re-sends SIGTERM every ``resend`` seconds: a worker forked a moment ago
may still run the master's signal handler, which only queues the signal in
its own copy of the master, so a single SIGTERM can be lost.  The pool
manager's children install no such handler and do not re-send
(``resend=None``).

``Escalation`` is the per-process record, pure: the caller asks it which
signal is due at ``now`` and sends it, to a pid or a process group; it never
reads a clock or signals anything itself.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

NEVER = float("inf")


@dataclass
class Escalation:
    """One process being stopped; ``begin()`` makes one (the caller sends the first SIGTERM)."""

    kill_at: float
    resend_at: float = NEVER
    resend: float | None = None

    @classmethod
    def begin(cls, now: float, grace: float, resend: float | None = None) -> Escalation:
        return cls(now + grace, NEVER if resend is None else now + resend, resend)

    def due(self, now: float) -> signal.Signals | None:
        """The signal to send now, if any: SIGKILL once at the deadline, else a re-sent SIGTERM."""
        if now >= self.kill_at:
            self.kill_at = self.resend_at = NEVER
            return signal.SIGKILL
        if now >= self.resend_at:
            self.resend_at = now + self.resend
            return signal.SIGTERM
        return None

    def next_at(self) -> float:
        """When ``due()`` may next return a signal (``NEVER`` once SIGKILL went out)."""
        return min(self.kill_at, self.resend_at)
