"""What the master tells the world about a ramp.

One object receives the arbiter's events and fans them out to the three
places a person or a supervisor looks: the startup timeline file (JSON, see
``timeline.py``), statsd gauges and a boot-time histogram (when gunicorn's
statsd logger is configured, under gunicorn's own prefix), and systemd's
``STATUS=`` line (when the master runs under ``Type=notify``).  Keeping this
here keeps the arbiter about pacing only.
"""

from __future__ import annotations

import os
from typing import Any

from ._compat import notify_systemd, send_metric
from .keys import ProcKey
from .timeline import Timeline

WRITE_EVERY = 1.0  # at most one timeline write a second while workers boot; at once otherwise
WRITE_BURST = 5  # ... but never more than this many writes a second: a respawn flood is not a write flood


class StatusReporter:
    def __init__(self, log: Any, t0: float, wall_t0: float) -> None:
        self.log = log
        self.meta: dict[str, Any] = {}
        self.timeline = Timeline(t0, wall_t0, self.meta)
        self.path: str | None = None
        self.last: tuple = ()  # (booting, ready) of the last step
        self.written_at = t0
        self.dirty = False
        self.write_problem: str | None = None  # the last failed write's reason, warned about once
        self.tokens = float(WRITE_BURST)  # token bucket: WRITE_BURST writes a second at most
        self.refilled_at = t0

    def configure(self, path: str | None, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta.update(meta)

    # -- events from the arbiter ----------------------------------------------------

    def ramp_started(self, now: float, target: int, reason: str) -> None:
        self.dirty = True
        self.timeline.ramp_started(now, target, reason)

    def spawned(self, key: ProcKey, now: float, pid: int | None = None) -> None:
        self.dirty = True
        self.timeline.spawned(key, now, pid)

    def background(self, key: ProcKey, now: float, raised: bool = False) -> None:
        """``key`` was lowered to boot in the background (``raised=False``), or raised from it."""
        self.dirty = True
        if raised:
            self.timeline.raised(key, now)
        else:
            self.timeline.background(key)

    def ready(self, key: ProcKey, now: float, boot_seconds: float | None = None) -> None:
        """``key`` is ready; ``boot_seconds`` (fork to ready, from the arbiter's record of
        booting processes) goes to the boot-time histogram."""
        self.timeline.ready(key, now)
        self.dirty = True
        if boot_seconds is not None:
            self._metric("histogram", "gunicorn.slowstart.boot_duration", round(boot_seconds * 1000, 3))

    def stopping(self, key: ProcKey, now: float, reason: str) -> None:
        """The master asked ``key`` to stop, for ``reason`` (``stops.REASONS``): the timeline
        keeps the first request, so its exit says why."""
        if self.timeline.stopped(key, now, reason):
            self.dirty = True  # a repeated request changes nothing: no write (and fsync) for it

    def exited(self, key: ProcKey, now: float, code: int | None, sig: int | None) -> None:
        self.dirty = True
        self.timeline.exited(key, now, code, sig)

    def step(self, now: float, window: int, cap: int, booting: int, ready: int) -> None:
        self.timeline.step(now, window, cap, booting, ready)
        if (booting, ready) != self.last:
            self._metric("gauge", "gunicorn.slowstart.booting", booting)
            self._metric("gauge", "gunicorn.slowstart.ready", ready)
            if booting:
                self._notify(f"ramp: {ready}/{self.meta.get('target', '?')} ready, {booting} booting")
        self.last = (booting, ready)
        if self.dirty and (not booting or now - self.written_at >= WRITE_EVERY) and self._may_write(now):
            self.write(now)

    def memory_held(self, now: float, held: bool, text: str) -> None:
        """Admission holds (or releases) the ramp: timeline, statsd, systemd status."""
        self.timeline.event(now, "memory held" if held else "memory released", text)
        self._metric("gauge", "gunicorn.slowstart.memory_held", 1 if held else 0)
        self._notify(f"memory held: {text}" if held else "memory released; ramp resumes")
        self.write(now)

    def long_memory_held(self, now: float, held: bool, text: str) -> None:
        """Admission holds (or releases) the long workers' forks: timeline and statsd."""
        self.dirty = True  # nothing else may change while they wait: the next step writes it
        self.timeline.event(now, "long workers held" if held else "long workers released", text)
        self._metric("gauge", "gunicorn.slowstart.long_memory_held", 1 if held else 0)

    def template_started(self, now: float, generation: int, pid: int, reason: str) -> None:
        """``fork_from = template``: a template was forked to import the app."""
        self.dirty = True
        self.timeline.template_started(generation, now, pid, reason)

    def template_loaded(self, now: float, generation: int, cpu: float | None) -> None:
        self.dirty = True
        self.timeline.template_loaded(generation, now, cpu)

    def template_ended(self, now: float, generation: int, outcome: str, error: str | None = None) -> None:
        self.dirty = True
        self.timeline.template_ended(generation, now, outcome, error)

    def ramp_done(self, now: float, ready: int, target: int) -> None:
        self.timeline.ramp_done(now)
        self._notify(f"{ready}/{target} workers ready")
        self.dirty = True
        if self._may_write(now):
            self.write(now)  # else the next step() writes it, within a second

    def _may_write(self, now: float) -> bool:
        """A write costs a file and an fsync; a master respawning workers non-stop writes at most
        ``WRITE_BURST`` a second, what is left unwritten goes out with the next step."""
        self.tokens = min(float(WRITE_BURST), self.tokens + (now - self.refilled_at) * WRITE_BURST)
        self.refilled_at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def reload_failed(self, now: float, generation: int, serving: int, cause: str) -> None:
        """A SIGHUP reload was abandoned: the previous generation keeps serving."""
        self.timeline.reload_failed(now, generation, serving, cause)
        self._metric("gauge", "gunicorn.slowstart.reload_failed", 1)
        self._metric("gauge", "gunicorn.slowstart.generation", serving)
        self._notify(f"reload failed, serving generation {serving}")
        self.write(now)

    def reload_done(self, generation: int) -> None:
        """A SIGHUP reload completed: its generation serves."""
        self._metric("gauge", "gunicorn.slowstart.reload_failed", 0)
        self._metric("gauge", "gunicorn.slowstart.generation", generation)

    def close(self, now: float) -> None:
        """The master stops (SIGINT and SIGQUIT stop twice: the second record is the complete one)."""
        self.write(now)

    # -- outputs --------------------------------------------------------------------

    def write(self, now: float) -> None:
        self.written_at = now
        self.dirty = False
        if not self.path:
            return
        try:
            self.timeline.write(self.path)
        except (OSError, ValueError) as exc:
            self._warn_unwritable(exc)
        else:
            self.write_problem = None

    def _warn_unwritable(self, exc: Exception) -> None:
        """Name the path the user gave (not the temporary file), once per problem, not per write."""
        problem = getattr(exc, "strerror", None) or str(exc)
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            problem = f"{problem} (the directory {directory} does not exist)"
        if problem != self.write_problem:
            self.write_problem = problem
            self.log.warning("slow start: cannot write timeline %s: %s; the server runs on, "
                             "this is logged again only if the problem changes", self.path, problem)

    def _metric(self, kind: str, name: str, value: float) -> None:
        send_metric(self.log, kind, name, value)

    def _notify(self, text: str) -> None:
        notify_systemd(text, self.log)
