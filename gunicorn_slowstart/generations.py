"""Which template the workers fork from: the pure bookkeeping of ``fork_from = "template"``.

Theory of operation
-------------------
Templates are numbered by generation (1, 2, ...: one per start, SIGHUP or
replacement).  At most two exist at once: the **current** one (loaded; new
workers fork from it) and a **loading** one (importing the app).  This class
is told what happened ("started", "loaded", "failed", "unsafe", "lost",
"refused") and answers what to do: which generation to retire, whether the
failure stops the server, is a failed reload, or is retried later.  Like
``policy.py`` it does no I/O and reads no clock: ``template.py`` forks,
talks to the templates and passes the time in.

The rules:

* forks wait (``holds``) while a template is loading or none is loaded,
  unless a fork-safety refusal (``unsafe``) sends this generation back to
  forking from the master;
* the first template failing to load stops the server (exit 4, like a worker
  that cannot import the app); a SIGHUP template failing is a failed reload
  (the old template and workers stay); a replacement failing while no
  template is left is retried after a growing delay;
* a template that loads retires the previous one; a SIGHUP supersedes a
  template still loading.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # a replacement that fails to load: the next try after this
START, RELOAD, REPLACE = "start", "reload", "replace"
HALT, RELOAD_FAILED = "halt", "reload failed"


@dataclass(frozen=True)
class Failure:
    """What a failed load means: ``outcome`` is HALT, RELOAD_FAILED or None; ``retry_in``
    is set when no template is left and a new one is tried after that many seconds."""

    outcome: str | None
    retry_in: float | None


class Generations:
    """The current and loading template generations, and what their events mean."""

    def __init__(self) -> None:
        self.generation = 0
        self.current: int | None = None
        self.loading: int | None = None
        self.loading_reason = START
        self.unsafe: str | None = None  # forking from the master this generation, and why
        self.ever_loaded = False
        self.retry_at: float | None = None
        self.failures = 0

    # -- questions ------------------------------------------------------------------------

    def holds(self) -> bool:
        """Forks must wait: a template is loading (new code), or none is loaded yet (or any
        more), unless a fork-safety refusal sent this generation back to the master."""
        return self.unsafe is None and (self.loading is not None or self.current is None)

    def busy(self) -> bool:
        return self.loading is not None

    def active(self) -> bool:
        """Workers fork from the current template (else from the master)."""
        return self.unsafe is None and self.current is not None

    def due(self, now: float) -> str | None:
        """The reason to start a template now (none loaded or loading), or None."""
        if self.current is not None or self.loading is not None or self.unsafe is not None:
            return None
        if self.retry_at is not None and now < self.retry_at:
            return None
        return REPLACE if self.ever_loaded else START

    # -- events ---------------------------------------------------------------------------

    def started(self, reason: str) -> int:
        """A template was forked for ``reason``; returns its generation."""
        self.generation += 1
        self.loading, self.loading_reason, self.retry_at = self.generation, reason, None
        return self.generation

    def reload(self) -> tuple[int | None, str]:
        """SIGHUP: (a loading generation it supersedes, to stop; the reason for the new one)."""
        superseded, self.loading = self.loading, None
        self.unsafe = None  # the new code may be fork-safe
        self.retry_at = None
        first = not self.ever_loaded and self.current is None  # SIGHUP before the first load
        return superseded, START if first else RELOAD

    def loaded(self, generation: int) -> int | None:
        """It can fork now; returns the previous current generation, to retire."""
        old = self.current
        self.current, self.loading = generation, None
        self.ever_loaded, self.failures = True, 0
        return old

    def failed(self, generation: int, now: float) -> Failure:
        """The loading template could not load the app (or died, or hung)."""
        reason = self.loading_reason
        self.loading = None
        if reason == START:
            return Failure(HALT, None)
        retry_in = None
        if self.current is None:  # nothing to fork from: serving workers stay, try again later
            retry_in = RETRY_DELAYS[min(self.failures, len(RETRY_DELAYS) - 1)]
            self.failures += 1
            self.retry_at = now + retry_in
        return Failure(RELOAD_FAILED if reason == RELOAD else None, retry_in)

    def refused_to_load(self, reason: str) -> int | None:
        """The loading template found the app unsafe to fork: this generation forks from the
        master; returns the current generation, to retire."""
        self.loading = None
        return self.refused(reason)

    def refused(self, reason: str) -> int | None:
        """The current template refused a fork: fall back to the master; returns it, to retire."""
        old, self.current = self.current, None
        self.unsafe = reason
        return old

    def lost(self) -> None:
        """The current template died or stopped answering: ``due`` asks for a replacement."""
        self.current = None
