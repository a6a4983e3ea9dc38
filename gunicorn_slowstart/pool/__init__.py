"""The long-worker pool: background processes that share the HTTP workers' boot budget.

Theory of operation
-------------------
Many services run, beside their HTTP workers, a pool of background processes
(a job runner, a queue consumer).  Started all at once they add to the same
CPU storm as the HTTP workers, so here they are paced by the same policy, in
the same budget: the master's ``SlowStartPolicy`` counts HTTP and long
workers booting together, HTTP first.

Three kinds of process take part:

* the **master** holds the policy.  ``PoolLink`` is its side of the pool: the
  arbiter asks the policy how many long workers may start and ``grant``s them
  (getting their ``ProcKey``s back), and ``poll()`` / ``check_alive()``
  return what the pool reported as typed ``PoolEvent``s (spawned, ready,
  exited), which the arbiter feeds to the policy and the status reporter, as
  it does for HTTP workers: the link itself never calls either.
* the **pool manager**, forked from the master at the first ``pre_fork``
  (so the master keeps no thread and does no blocking work), forks long
  workers when granted, watches them, and reports over a datagram socket.  It
  never imports the target, so each fork imports fresh code (SIGHUP reloads).
* **long workers** import the target (the expensive part, like gunicorn's app
  load) and call it.  A long worker is ready when its target is called, or,
  for a target decorated with ``@reports_ready``, when it calls ``ready()``.

If the master dies, even by SIGKILL, the manager and its workers get a
parent-death signal (Linux) and the manager also checks its parent twice a
second, so nothing is orphaned.  Each long worker leads its own process
group, and every signal the pool sends goes to the group: a target's own
children stop with it (graceful stop, boot time-out, master SIGKILL), and
what is left of a group when its leader exits is killed.

Failures back off 1 s, doubling to 60 s, counted once per round (see the
policy); a pool never gives up: it retries every 60 s, because a broker or a
database that is down for a while is the usual cause.  A manager that dies
(a bug) is replaced at most ``MANAGER_RESTARTS`` times in a row; the count
starts again once a manager has been up ``MANAGER_STABLE`` seconds.

Layout
------
The package is split by what each part holds, so that a process imports only
what it runs (a config file or a long worker's code that calls ``ready()``
imports ``api`` alone):

* ``api.py``: what a user touches: ``LongWorkerPool`` (the declaration),
  ``ready()`` and ``@reports_ready`` (for a long worker's target);
* ``target.py``: finding a ``"package.module:function"`` target without
  importing it (the master's check) and loading it (in the long worker);
* ``link.py``: the master's side, ``PoolLink`` and its ``PoolEvent``s;
* ``manager.py``: the pool manager process;
* ``worker.py``: the long worker process's main;
* ``process.py``: process plumbing the three processes share (process
  groups, the parent-death signal, process titles).

Every name is also reachable from ``gunicorn_slowstart.pool`` (loaded on
first use), as it was when the pool was one module.
"""

from __future__ import annotations

import importlib
from typing import Any

from .api import READY_FD_ENV, LongWorkerPool, ready, reports_ready

__all__ = ["LongWorkerPool", "ready", "reports_ready", "READY_FD_ENV", "check_target", "load_target",
           "PoolLink", "PoolEvent", "SPAWNED", "READY", "EXITED", "MANAGER_RESTARTS", "MANAGER_STABLE",
           "STABLE_AFTER", "manager_restart"]

_HOMES = {"check_target": "target", "load_target": "target",
          "PoolLink": "link", "PoolEvent": "link", "SPAWNED": "link", "READY": "link", "EXITED": "link",
          "MANAGER_RESTARTS": "link", "MANAGER_STABLE": "link", "STABLE_AFTER": "link",
          "manager_restart": "link"}


def __getattr__(name: str) -> Any:
    """The master's side and the target checks, loaded on first use (see Layout)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_HOMES))
