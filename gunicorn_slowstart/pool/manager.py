"""The pool manager process: forks long workers when the master grants them, watches
them, reports over a datagram socket, stops them on request.

Forked from the master at its first ``pre_fork``, so the master keeps no
thread and does no blocking work.  It never imports the target: each long
worker does, after its fork, so every fork runs fresh code (SIGHUP reloads).
A rolling reload keeps old workers only until new ones are ready
(``rollout.to_retire``, the rule the arbiter uses); stopping one is a
SIGTERM to its process group, then SIGKILL at its deadline (``escalation``).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time
from typing import Any

from ..escalation import Escalation
from ..rollout import to_retire
from .api import LongWorkerPool
from .process import die_with_parent, drain, own_group, set_title, signal_group
from .worker import long_worker_main

PARENT_CHECK = 0.5


class _Child:
    def __init__(self, wid: int, slot: int, pid: int, ready_fd: int, generation: int) -> None:
        self.wid, self.slot, self.pid, self.ready_fd = wid, slot, pid, ready_fd
        self.generation = generation
        self.started = time.monotonic()
        self.ready = False
        self.requested = False
        self.escalation: Escalation | None = None  # being stopped: SIGKILL at its deadline


class Manager:
    """Forks long workers when the master grants it, reports, stops them on request."""

    def __init__(self, pool: LongWorkerPool, sock: socket.socket, master: Any) -> None:
        self.pool = pool
        self.target = pool.target
        self.sock = sock
        self.pid = os.getpid()
        self.master_pid = master.pid
        self.log = master.log
        self.graceful_timeout = master.cfg.graceful_timeout
        self.children: dict[int, _Child] = {}
        self.size = master.pool_size
        self.generation = 0
        self.stopping = False
        self.stop_deadline = float("inf")
        self._close_inherited(master)

    def _close_inherited(self, master: Any) -> None:
        """Do not hold the master's listening sockets or the HTTP workers' heartbeat files."""
        for listener in getattr(master, "LISTENERS", []):
            try:
                listener.close()
            except OSError:
                pass
        from .._compat import close_heartbeat

        for worker in list(getattr(master, "WORKERS", {}).values()):
            try:
                close_heartbeat(worker)
            except OSError:
                pass

    def run(self) -> int:
        die_with_parent(signal.SIGINT)  # the master is gone: stop the workers at once
        set_title(f"long worker manager [{self.pool.name}]")
        self.sock.setblocking(False)
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2,
                    signal.SIGWINCH):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self._stop(True, self.graceful_timeout))
        signal.signal(signal.SIGINT, lambda *_: self._stop(False, 0))
        signal.signal(signal.SIGQUIT, lambda *_: self._stop(False, 0))
        while not (self.stopping and not self.children):
            self._loop_once()
        return 0

    def _loop_once(self) -> None:
        fds = [self.sock, self.wake_r] + [c.ready_fd for c in self.children.values() if not c.ready]
        try:
            readable, _, _ = select.select(fds, [], [], PARENT_CHECK)
        except InterruptedError:
            readable = []
        for fd in readable:
            if fd is self.sock:
                self._receive()
            elif fd == self.wake_r:
                drain(self.wake_r)
            else:
                self._ready_fd(fd)
        self._reap()
        self._enforce_deadlines()
        if os.getppid() != self.master_pid and not self.stopping:
            self._stop(False, 0)  # the master is gone and no parent-death signal came

    def _receive(self) -> None:
        while True:
            try:
                msg = json.loads(self.sock.recv(65536))
            except (BlockingIOError, InterruptedError):
                return
            except (OSError, ValueError):
                return
            op = msg.get("op")
            if op == "spawn":
                for wid in msg["ids"]:
                    if self.stopping:
                        self._report({"op": "exited", "id": wid, "pid": 0, "uptime": 0.0,
                                      "requested": True, "code": None, "signal": None})
                    else:
                        self._spawn(wid)
            elif op == "kill":
                self._kill(msg["id"])
            elif op == "reload":
                self.target = msg.get("target") or self.target
                self.size = msg.get("size", self.size)
                self.generation += 1
                self._retire_old()
            elif op == "stop":
                self._stop(msg.get("graceful", True), msg.get("timeout", self.graceful_timeout))

    def _spawn(self, wid: int) -> None:
        slot = self._free_slot()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            long_worker_main(self, slot, ready_w)
        own_group(pid)  # also done in the child: whichever runs first, no signal misses the group
        os.close(ready_w)
        child = self.children[pid] = _Child(wid, slot, pid, ready_r, self.generation)
        self._report({"op": "spawned", "id": wid, "pid": pid})
        if self.stopping:  # a stop signal was handled while we forked
            self._terminate(child, 0.0)

    def _free_slot(self) -> int:
        used = {c.slot for c in self.children.values() if c.generation == self.generation}
        return next(k for k in range(1, len(used) + 2) if k not in used)

    def _ready_fd(self, fd: int) -> None:
        child = next((c for c in self.children.values() if c.ready_fd == fd), None)
        if child is None:
            return
        try:
            data = os.read(fd, 1)
        except OSError:
            data = b""
        os.close(fd)
        child.ready_fd = -1
        if not data:
            child.ready = True  # closed without a word: the exit report will follow
            return
        child.ready = True
        self._report({"op": "ready", "id": child.wid})
        self._retire_old()

    def _retire_old(self) -> None:
        """Rolling reload: keep old workers only while new ones are not ready to replace them."""
        old = sorted((c for c in self.children.values() if c.generation < self.generation and not c.requested),
                     key=lambda c: c.started)
        new_ready = sum(1 for c in self.children.values() if c.generation == self.generation and c.ready)
        for child in to_retire(old, self.size, new_ready):
            self._terminate(child, self.graceful_timeout)

    def _kill(self, wid: int) -> None:
        for child in self.children.values():
            if child.wid == wid:
                self._terminate(child, 5.0)
                child.requested = False  # a boot time-out is a failure, not a request

    def _terminate(self, child: _Child, grace: float) -> None:
        child.requested = True
        child.escalation = Escalation.begin(time.monotonic(), grace)  # no re-send: see escalation.py
        signal_group(child.pid, signal.SIGTERM)

    def _stop(self, graceful: bool, timeout: float) -> None:
        self.stopping = True
        for child in self.children.values():
            if graceful:
                self._terminate(child, timeout)
            else:
                child.requested = True
                signal_group(child.pid, signal.SIGKILL)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            sig = child.escalation.due(now) if child.escalation is not None else None
            if sig is not None:
                signal_group(child.pid, sig)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                signal_group(pid, signal.SIGKILL)  # what the worker left behind: its group ends with it
                self._exited(child, status)

    def _exited(self, child: _Child, status: int) -> None:
        uptime = time.monotonic() - child.started
        code = os.waitstatus_to_exitcode(status)
        how = f"signal {-code}" if code < 0 else f"code {code}"
        log = self.log.info if child.requested or code == 0 else self.log.error
        log("long worker [%s] #%d (pid %s) exited with %s after %.1f s",
            self.pool.name, child.slot, child.pid, how, uptime)
        if child.ready_fd >= 0:
            os.close(child.ready_fd)
        self._report({"op": "exited", "id": child.wid, "pid": child.pid, "uptime": uptime,
                      "requested": child.requested,
                      "code": code if code >= 0 else None, "signal": -code if code < 0 else None})

    def _report(self, message: dict) -> None:
        try:
            self.sock.send(json.dumps(message).encode())
        except OSError:
            pass  # the master is gone; the parent check will stop us
