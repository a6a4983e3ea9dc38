"""Generations of HTTP workers: reloads that roll back, boot errors that do not halt.

Theory of operation
-------------------
Like ``policy.py`` this is a sans-I/O state machine: no clock, no process
table, no gunicorn.  The arbiter tells it what happened and asks two
questions.

Every HTTP worker belongs to a *generation*.  The first start is generation
1; each SIGHUP reload begins the next one (``begin_reload``), and the workers
forked from then on belong to it.  The generation that *serves* is the last
one whose reload completed (``reload_done``); while a reload runs, the
previous generation keeps serving and is retired one worker per new ready
worker (the arbiter's rolling reload).

1. *Does a boot failure abandon the reload?*  ``boot_failed(pid)`` counts the
   failures of the reload's generation; at ``max_failures`` (by default the
   size of the first step, so the probe) it answers True once: the arbiter
   stops the new generation's booting workers, forks nothing more of it and
   keeps the old generation serving.  ``reload_failed`` then holds the
   failed generation until the next SIGHUP tries again.

2. *Does gunicorn's halt on exit 3 / 4 apply to this worker?*  gunicorn stops
   the whole server when a worker exits with a boot error.  That fail-fast is
   right for a first start (a broken application should not be forked N
   times) and wrong once the server has served: a broken deploy or a
   database that is down for a moment in lifespan start-up must not take
   down workers that serve.  So the halt applies only before any worker was
   ever ready, to a worker that is not part of a reload, and not with
   ``max_boot_failures = 0`` ("never give up").  Every other boot error is
   an ordinary boot failure: back-off, and a halt only when no worker serves
   and ``max_boot_failures`` is reached (``policy.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Reload:
    """One SIGHUP reload in progress."""

    generation: int
    max_failures: int  # 0: never abandon
    target: int | None = None  # the serving generation's worker count when the reload began
    failures: int = 0
    ready: int = 0
    last_failure: str = ""


class Rollout:
    """The generations of HTTP workers; see the module docstring."""

    def __init__(self) -> None:
        self.generation = 1  # the newest generation begun
        self.serving = 1  # the generation that serves (the last completed one)
        self.reload: Reload | None = None  # in progress
        self.reload_failed: int | None = None  # the generation of the last abandoned reload
        self.ever_served = False
        self.of: dict[int, int] = {}  # pid -> generation

    # -- events -----------------------------------------------------------------

    def begin_reload(self, max_failures: int, target: int | None = None) -> int:
        """SIGHUP: a new generation; a reload still running is superseded by it."""
        self.generation += 1
        self.reload = Reload(self.generation, max_failures, target)
        return self.generation

    def spawned(self, pid: int) -> None:
        self.of[pid] = self.generation

    def ready(self, pid: int) -> None:
        self.ever_served = True
        if self.reload is not None and self.of.get(pid) == self.reload.generation:
            self.reload.ready += 1

    def exited(self, pid: int) -> None:
        self.of.pop(pid, None)

    def boot_failed(self, pid: int, description: str) -> bool:
        """A worker died before it was ready.  True: abandon the reload now."""
        reload = self.reload
        if reload is None or self.of.get(pid) != reload.generation:
            return False
        reload.failures += 1
        reload.last_failure = description
        return bool(reload.max_failures) and reload.failures >= reload.max_failures

    def abandon(self) -> Reload:
        """The reload is given up: the serving generation stays."""
        reload, self.reload = self.reload, None
        self.reload_failed = reload.generation
        return reload

    def reload_done(self) -> None:
        """Every worker of the reload's generation is ready: it serves now."""
        if self.reload is not None:
            self.serving = self.reload.generation
            self.reload = None
            self.reload_failed = None

    # -- queries ----------------------------------------------------------------

    def in_reload(self, pid: int) -> bool:
        """Is this worker part of the reload in progress?"""
        return self.reload is not None and self.of.get(pid) == self.reload.generation

    def halts(self, pid: int, never_give_up: bool) -> bool:
        """Does gunicorn's halt on a boot error (exit 3 / 4) apply to this worker?"""
        return not (never_give_up or self.ever_served or self.in_reload(pid))


def to_retire(old: list, target: int, ready_new: int) -> list:
    """The rolling-retire rule, for HTTP workers (the arbiter) and long workers (the pool
    manager) alike: of the ``old`` processes still serving, oldest first, the ones to stop
    now, so that old and ready new ones together never fall below ``target``."""
    keep = max(0, target - ready_new)
    return old[: max(0, len(old) - keep)]
