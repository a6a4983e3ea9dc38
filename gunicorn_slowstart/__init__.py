"""gunicorn-slowstart: start gunicorn workers in readiness-paced, CPU-capped steps.

    # slowstart.conf.py
    from gunicorn_slowstart import install
    install(globals(), max_batch=4)

See the README for the settings and how readiness is detected.

Importing the package (or ``policy``, ``timeline``) has no side effect and does
not import gunicorn: the names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["install", "LongWorkerPool", "ready", "reports_ready", "PolicyConfig", "SlowStartPolicy"]
__version__ = "0.1.0"

_HOMES = {"install": "hooks", "LongWorkerPool": "pool", "ready": "pool", "reports_ready": "pool",
          "PolicyConfig": "policy", "SlowStartPolicy": "policy"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_HOMES))
