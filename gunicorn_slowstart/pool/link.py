"""The master's side of the long-worker pool: ``PoolLink`` and the ``PoolEvent``s it returns.

The arbiter ``grant``s long workers (the policy decided how many), and reads
what the manager reported with ``poll()`` / ``check_alive()`` as typed events
it feeds to the policy and the status reporter: the link never calls either,
and it does not record who is booting (the arbiter's ``Boots`` does).  It keeps
only what the wire protocol needs: ids granted but not reported forked yet
(``pending``), the current and the retiring generation, and pids.  See the
package's theory of operation (``pool/__init__.py``).

The manager's code is imported here, in the master, before any fork: a
manager replaced after it died runs the code the master runs, not whatever a
deploy has put on disk since (the long workers, in contrast, import their
target after their fork, on purpose).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..keys import ProcKey
from ..policy import LONG
from .api import LongWorkerPool
from .manager import Manager
from .process import signal_group

MANAGER_RESTARTS = 3  # a pool manager that keeps dying is a bug: stop replacing it
MANAGER_STABLE = 300.0  # ... unless it was up this long: then it is a rare event, start counting again
STABLE_AFTER = 60.0  # a long worker that ran this long before exiting did not crash-loop


@dataclass(frozen=True)
class PoolEvent:
    """What the pool reported about one long worker, for the arbiter to feed on.

    ``what`` is ``SPAWNED`` (``pid`` known now), ``READY`` or ``EXITED``
    (``expected``: the master or the manager stopped it; ``failed``: it
    crashed before it was stable).  ``pid`` is the OS pid where the pool knows
    it (None or 0 for an exit whose pid was never reported); the timeline and
    the status reporter key the process by ``key``, as the policy does."""

    what: str
    key: ProcKey
    pid: int | None = None
    expected: bool = False
    failed: bool | None = None
    code: int | None = None
    sig: int | None = None


SPAWNED, READY, EXITED = "spawned", "ready", "exited"


class PoolLink:
    """The master's handle on the pool manager: grants, reports, stop."""

    def __init__(self, pool: LongWorkerPool, size: int, log: Any) -> None:
        self.pool = pool
        self.size = size
        self.log = log
        self.pid = 0
        self.sock: socket.socket | None = None
        self.next_id = 0
        self.pending: set[int] = set()  # granted, not reported spawned yet (who is booting: the arbiter's Boots)
        self.current: set[int] = set()  # alive long workers of the current generation
        self.retiring: set[int] = set()
        self.pids: dict[int, int] = {}
        self.restarts = 0
        self.started_at = 0.0

    def start(self, master: Any) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        pid = os.fork()
        if pid == 0:
            ours.close()
            code = 1
            try:
                code = Manager(self.pool, theirs, master).run()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        self.pid, self.sock = pid, ours
        self.started_at = time.monotonic()
        self.log.info("slow start: long-worker pool %r (%d workers) managed by pid %s",
                      self.pool.name, self.size, pid)

    def wanted(self) -> int:
        if not self.pid:
            return 0
        return max(0, self.size - len(self.current) - len(self.pending))

    def grant(self, count: int) -> list[ProcKey]:
        """Ask the manager for ``count`` more long workers; their keys, booting from now."""
        ids = list(range(self.next_id, self.next_id + count))
        self.next_id += count
        self.pending.update(ids)
        self._send({"op": "spawn", "ids": ids})
        return [ProcKey(LONG, wid) for wid in ids]

    def kill(self, key: ProcKey) -> None:
        self._send({"op": "kill", "id": key.id})

    # -- queries for the arbiter --------------------------------------------------------

    def current_keys(self) -> list[ProcKey]:
        """Long workers of the current generation that the manager reported forked and
        not exited (booting or ready: the arbiter's ``Boots`` knows which)."""
        return [ProcKey(LONG, wid) for wid in sorted(self.current)]

    def fileno(self) -> int | None:
        """The manager's socket: readable when it reports (a datagram socket: its closing is
        not readable, the master learns of a dead manager from SIGCHLD and ``check_alive``)."""
        return None if self.sock is None else self.sock.fileno()

    def pid_of(self, key: ProcKey) -> int | None:
        return self.pids.get(key.id)

    def reload(self, pool: LongWorkerPool, size: int) -> None:
        """Rolling restart: the current workers become old; new ones are ramped."""
        self.pool, self.size = pool, size
        self.retiring |= self.current | self.pending  # a grant in flight was made for the old code
        self.current = set()
        self._send({"op": "reload", "target": _target_text(pool.target), "size": size})

    def poll(self) -> list[PoolEvent]:
        """Every report the manager sent since the last look, as events, in order."""
        events = []
        while self.sock is not None:
            try:
                message = json.loads(self.sock.recv(65536))
            except BlockingIOError:
                break
            except (OSError, ValueError):
                break
            event = self._handle(message)
            if event is not None:
                events.append(event)
        return events

    def _handle(self, msg: dict) -> PoolEvent | None:
        wid, op = msg.get("id"), msg.get("op")
        key = ProcKey(LONG, wid)
        if op == "spawned":
            self.pending.discard(wid)
            if wid not in self.retiring:
                self.current.add(wid)
            self.pids[wid] = msg["pid"]
            return PoolEvent(SPAWNED, key, msg["pid"])
        if op == "ready":
            return PoolEvent(READY, key, self.pids.get(wid, 0))
        if op == "exited":
            self.pending.discard(wid)
            self.current.discard(wid)
            self.retiring.discard(wid)
            crashed = not msg["requested"] and msg["uptime"] < STABLE_AFTER
            return PoolEvent(EXITED, key, self.pids.pop(wid, 0), expected=msg["requested"], failed=crashed,
                             code=msg.get("code"), sig=msg.get("signal"))
        return None

    def request_stop(self, graceful: bool, timeout: float) -> float:
        """Ask the manager to stop its workers; returns the deadline to wait for it."""
        if self.pid:
            self._send({"op": "stop", "graceful": graceful, "timeout": timeout})
        return time.monotonic() + (timeout if graceful else 1.0) + 1.0

    def wait_stopped(self, deadline: float) -> None:
        """Wait for the manager until ``deadline``, then make sure it is gone."""
        if not self.pid:
            return
        while time.monotonic() < deadline and _alive_child(self.pid):
            time.sleep(0.02)
        if _alive_child(self.pid):
            try:
                os.kill(self.pid, signal.SIGKILL)  # its workers follow by their parent-death signal
                os.waitpid(self.pid, 0)
            except OSError:
                pass
            for pid in self.pids.values():  # and their children with their process groups
                signal_group(pid, signal.SIGKILL)
        self.pid = 0

    def check_alive(self, master: Any, now: float) -> list[PoolEvent]:
        """A manager that died (it should not) is replaced; its workers died with it: their exits."""
        if not self.pid or _alive_child(self.pid):
            return []
        self.restarts, replace = manager_restart(self.restarts, now - self.started_at)
        for pid in self.pids.values():  # its workers died with it (parent-death signal); their children:
            signal_group(pid, signal.SIGKILL)
        self.log.error("slow start: the long-worker pool manager (pid %s) exited; %s", self.pid,
                       "starting a new one" if replace else "giving up on the pool")
        events = [PoolEvent(EXITED, ProcKey(LONG, wid), self.pids.pop(wid, None), expected=True,
                            sig=signal.SIGKILL)
                  for wid in self.pending | self.current | self.retiring]  # every granted id not reported exited
        self.pending, self.current, self.retiring = set(), set(), set()
        self.sock.close()
        self.pid, self.sock = 0, None
        if replace:
            self.start(master)
        return events

    def _send(self, message: dict) -> None:
        if self.sock is None:
            return
        try:
            self.sock.send(json.dumps(message).encode())
        except OSError as exc:
            self.log.warning("slow start: cannot reach the long-worker pool: %s", exc)


def manager_restart(restarts: int, up_for: float) -> tuple[int, bool]:
    """A manager died after ``up_for`` s: (the new count of restarts in a row, replace it?)."""
    restarts = 1 if up_for >= MANAGER_STABLE else restarts + 1
    return restarts, restarts <= MANAGER_RESTARTS


def _alive_child(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # already reaped (gunicorn's reap_workers reaps every child)
    return done == 0


def _target_text(target: str | Callable) -> str | None:
    return target if isinstance(target, str) else None
