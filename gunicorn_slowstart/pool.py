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
"""

from __future__ import annotations

import ast
import errno
import importlib
import importlib.machinery
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .escalation import Escalation
from .keys import ProcKey
from .policy import LONG
from .rollout import to_retire

READY_FD_ENV = "GUNICORN_SLOWSTART_READY_FD"
PARENT_CHECK = 0.5
MANAGER_RESTARTS = 3  # a pool manager that keeps dying is a bug: stop replacing it
MANAGER_STABLE = 300.0  # ... unless it was up this long: then it is a rare event, start counting again
STABLE_AFTER = 60.0  # a long worker that ran this long before exiting did not crash-loop


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


def check_target(target: str | Callable) -> None:
    """Refuse a target that cannot be found, without importing it in the master.

    Importing would run the expensive module in the master (and every fork
    would then inherit it); ``find_spec`` and a look at the module's source
    find a missing module or name before any fork.
    """
    if callable(target):
        return
    module_name, _, attr = target.partition(":")
    spec = _find_spec(module_name)
    if spec is None:
        raise ValueError(f"no module named {module_name!r}")
    source = _source(spec)
    if source is not None and not _defines(source, attr.split(".")[0]):
        raise ValueError(f"module {module_name!r} defines no {attr!r}")


def _find_spec(dotted: str):
    """``find_spec`` that does not import parent packages (the stdlib one does)."""
    parts = dotted.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name imports nothing
        for depth in range(1, len(parts)):
            locations = spec.submodule_search_locations if spec is not None else None
            if locations is None:
                return None
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: depth + 1]), list(locations))
    except (ImportError, ValueError):
        return None
    return spec


def _source(spec) -> str | None:
    try:
        return spec.loader.get_source(spec.name)
    except (AttributeError, ImportError, OSError):
        return None


def _defines(source: str, name: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return True  # the import in the worker will report it with its traceback
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Name,)) and node.id == name and isinstance(node.ctx, ast.Store):
            return True
        if isinstance(node, ast.alias) and (node.asname or node.name.split(".")[0]) == name:
            return True
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            return True
    return False


def load_target(target: str | Callable) -> Callable:
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj


# -- the master's side ------------------------------------------------------------------


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
        self.gave_up = False
        self.restarts = 0
        self.started_at = 0.0

    def start(self, master: Any) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        pid = os.fork()
        if pid == 0:
            ours.close()
            code = 1
            try:
                code = _Manager(self.pool, theirs, master).run()
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
        if self.gave_up or not self.pid:
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

    def pid_of(self, key: ProcKey) -> int | None:
        return self.pids.get(key.id)

    def give_up(self) -> bool:
        """Stop asking for long workers (until the next reload); True the first time."""
        first, self.gave_up = not self.gave_up, True
        return first

    def reload(self, pool: LongWorkerPool, size: int) -> None:
        """Rolling restart: the current workers become old; new ones are ramped."""
        self.pool, self.size, self.gave_up = pool, size, False
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
                _signal_group(pid, signal.SIGKILL)
        self.pid = 0

    def check_alive(self, master: Any, now: float) -> list[PoolEvent]:
        """A manager that died (it should not) is replaced; its workers died with it: their exits."""
        if not self.pid or _alive_child(self.pid):
            return []
        self.restarts, replace = manager_restart(self.restarts, now - self.started_at)
        for pid in self.pids.values():  # its workers died with it (parent-death signal); their children:
            _signal_group(pid, signal.SIGKILL)
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


# -- the pool manager process -----------------------------------------------------------


class _Child:
    def __init__(self, wid: int, slot: int, pid: int, ready_fd: int, generation: int) -> None:
        self.wid, self.slot, self.pid, self.ready_fd = wid, slot, pid, ready_fd
        self.generation = generation
        self.started = time.monotonic()
        self.ready = False
        self.requested = False
        self.escalation: Escalation | None = None  # being stopped: SIGKILL at its deadline


class _Manager:
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
        from ._compat import close_heartbeat

        for worker in list(getattr(master, "WORKERS", {}).values()):
            try:
                close_heartbeat(worker)
            except OSError:
                pass

    def run(self) -> int:
        _die_with_parent(signal.SIGINT)  # the master is gone: stop the workers at once
        _set_title(f"long worker manager [{self.pool.name}]")
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
                _drain(self.wake_r)
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
            _long_worker_main(self, slot, ready_w)
        _own_group(pid)  # also done in the child: whichever runs first, no signal misses the group
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
        _signal_group(child.pid, signal.SIGTERM)

    def _stop(self, graceful: bool, timeout: float) -> None:
        self.stopping = True
        for child in self.children.values():
            if graceful:
                self._terminate(child, timeout)
            else:
                child.requested = True
                _signal_group(child.pid, signal.SIGKILL)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            sig = child.escalation.due(now) if child.escalation is not None else None
            if sig is not None:
                _signal_group(child.pid, sig)

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
                _signal_group(pid, signal.SIGKILL)  # what the worker left behind: its group ends with it
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


def _long_worker_main(manager: _Manager, slot: int, ready_w: int) -> None:
    """The long worker process: import the target, call it, exit with its outcome."""
    code = 1
    try:
        _own_group(0)
        _die_with_parent(signal.SIGKILL)
        if os.getppid() != manager.pid:
            os._exit(1)  # the manager died before the parent-death signal was armed
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD,
                    signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
            signal.signal(sig, signal.SIG_DFL)
        manager.sock.close()
        os.close(manager.wake_r)
        for child in manager.children.values():
            if child.ready_fd >= 0:
                os.close(child.ready_fd)
        _set_title(f"long worker [{manager.pool.name}] #{slot}")
        os.environ[READY_FD_ENV] = str(ready_w)
        target = load_target(manager.target)
        if not getattr(target, "slowstart_reports_ready", False):
            ready()
        result = target(*manager.pool.args)
        code = result if isinstance(result, int) and not isinstance(result, bool) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def _own_group(pid: int) -> None:
    """Make ``pid`` (0: this process) the leader of its own process group."""
    try:
        os.setpgid(pid, 0)
    except OSError:
        pass  # the child already did it, or already exited


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads (a long worker and its children); the pid alone if
    it leads none (it has not called setpgid yet: the manager's setpgid makes that a short instant)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        _signal(pid, sig)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError, OSError):
        pass


def _die_with_parent(sig: int) -> None:
    """Linux: get ``sig`` when the parent dies (the manager also polls its parent)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _set_title(title: str) -> None:
    from ._compat import set_proctitle

    set_proctitle(title)
