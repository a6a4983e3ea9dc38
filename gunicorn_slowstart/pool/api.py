"""What a user's code touches: the pool as a config file declares it, and what a
long worker's target may call (``ready``, ``@reports_ready``).

A config file and a long worker import this module alone (``gunicorn_slowstart.pool``
loads nothing else until asked): it is small and imports nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

READY_FD_ENV = "GUNICORN_SLOWSTART_READY_FD"


# -- what a long worker's code may call -------------------------------------------------


def ready() -> None:
    """Tell the pool this long worker is ready (for targets decorated ``@reports_ready``).

    A no-op outside a long worker, and after the first call.
    """
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"r")
        os.close(int(fd))
    except (OSError, ValueError):
        pass


def reports_ready(target: Callable) -> Callable:
    """Mark a target that calls ``ready()`` itself after its heavy set-up."""
    target.slowstart_reports_ready = True
    return target


# -- the pool, as a user declares it ----------------------------------------------------


class LongWorkerPool:
    """``size`` long workers running ``target`` ("package.module:function" or a callable)."""

    def __init__(self, target: str | Callable, size: int | str = 0, name: str | None = None,
                 args: tuple = ()) -> None:
        self.target = target
        self.size = size
        self.name = name or (target if isinstance(target, str) else getattr(target, "__name__", "pool"))
        self.args = tuple(args)

    def pre_fork(self, server: Any, worker: Any) -> None:
        """The first ``pre_fork`` of the master starts the pool (once)."""
        start = getattr(server, "start_long_workers", None)
        if start is None:
            raise RuntimeError("the long-worker pool needs the slow-start master: use install()")
        start()
