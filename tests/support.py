"""Real gunicorn masters for tests: start one, wait on conditions, stop it by pid.

Every wait polls a condition until a deadline (never a bare sleep), every
server is stopped at the end of its test, and only processes a test started
are ever signalled.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import gunicorn
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
GUNICORN_MAJOR = int(gunicorn.__version__.split(".")[0])
UVICORN_WORKER = "uvicorn_worker.UvicornWorker"


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something true, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def hold(predicate: Callable[[], object], duration: float, what: str, interval: float = 0.05) -> None:
    """``predicate`` must stay true for ``duration`` s (polled); fail as soon as it is not."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(interval)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (exited, not yet reaped by its parent)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def running(pids: Iterable[int]) -> list[int]:
    """The ``pids`` that are still alive, in order."""
    return [pid for pid in pids if alive(pid)]


def http_workers(timeline: dict) -> list[dict]:
    """The HTTP workers' records of a timeline (none while it is not written yet)."""
    return [p for p in timeline.get("processes", []) if p["kind"] == "http"]


def recv_all(sock: socket.socket) -> list[str]:
    """Every line waiting on a non-blocking datagram socket (statsd, systemd notify)."""
    lines = []
    for _ in range(1000):  # bounded: a datagram at a time until none is waiting
        try:
            lines.extend(sock.recv(65536).decode().splitlines())
        except BlockingIOError:
            break
    return lines


def run_python(code: str, **popen: object) -> str:
    """Run ``code`` in a fresh interpreter that imports this project; return its stdout."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=30, check=True, **popen)
    return done.stdout


@contextlib.contextmanager
def cgroup(limit, what: str) -> Iterator:
    """Enter a ``benchmarks.cpulimit`` limit (CpuLimit, MemoryLimit) for the body, removing
    its cgroup afterwards; skip the test where such a cgroup cannot be made here."""
    from benchmarks.cpulimit import CpuLimitUnavailable

    try:
        entered = limit.__enter__()
    except CpuLimitUnavailable as exc:
        pytest.skip(f"no {what} cgroup here: {exc}")
    try:
        yield entered
    finally:
        limit.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def try_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, str] | None:
    try:
        return get(port, path, timeout)
    except (OSError, http.client.HTTPException):
        return None


class Server:
    """One gunicorn master started by a test."""

    def __init__(self, tmp_path: Path, app: str = "examples.app:app", workers: int = 6,
                 worker_class: str = UVICORN_WORKER, config: str = "python:gunicorn_slowstart.conf",
                 env: dict | None = None, args: tuple = (), boot_cpu: float = 0.3,
                 command: tuple = ("-m", "gunicorn"), preexec_fn=None) -> None:
        self.tmp = tmp_path
        self.port = free_port()
        self.timeline_path = tmp_path / "timeline.json"
        self.log_path = tmp_path / "gunicorn.log"
        self.cmd = [sys.executable, *command, "-k", worker_class, "-w", str(workers),
                    "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "5", *args]
        if GUNICORN_MAJOR >= 24:
            self.cmd += ["--control-socket", str(tmp_path / "ctl.sock")]
        if config:
            self.cmd += ["-c", config]
        self.cmd.append(app)
        self.env = dict(os.environ)
        self.env.update({
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(APPS)]),
            "EXAMPLE_BOOT_CPU": str(boot_cpu),
            "GUNICORN_SLOWSTART_TIMELINE": str(self.timeline_path),
        })
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.preexec_fn = preexec_fn  # e.g. CpuLimit(0.5).preexec_fn(): the container case
        self.known: set[int] = set()
        self.orphans_expected = False  # a test that SIGKILLs the master orphans its HTTP workers

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> Server:
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=self.tmp, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=subprocess.STDOUT, preexec_fn=self.preexec_fn)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"master {self.pid} still running after {timeout} s") from None

    def stop(self) -> list[int]:
        """SIGTERM the master, then SIGKILL whatever this test started that is left.

        Returns the processes that were still running once the master was gone.
        """
        if self.proc is None:
            return []
        self.remember_children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        left = self.leftovers()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not self.leftovers(), 10, f"leftover processes {left} to die")
        self.log_file.close()
        return left

    # -- what the master did --------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def timeline(self) -> dict:
        try:
            return json.loads(self.timeline_path.read_text())
        except (OSError, ValueError):
            return {}

    def children(self) -> list[psutil.Process]:
        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.known.update(p.pid for p in kids)
        return kids

    def remember_children(self) -> None:
        self.children()

    def leftovers(self) -> list[int]:
        """Processes this test started that are still running."""
        left = running(sorted(self.known))
        if self.proc.poll() is None:
            left.append(self.pid)
        return left

    def workers(self) -> list[int]:
        return sorted(p.pid for p in self.children())

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def summary_done(self, count: int = 1) -> bool:
        return self.log().count("workers ready in") >= count

    def wait_ready(self, timeout: float = 60.0, count: int = 1) -> dict:
        wait_for(lambda: self.summary_done(count), timeout, f"ramp summary #{count} in the log")
        return wait_for(lambda: self.timeline().get("ramps") and self.timeline(), 5, "timeline file")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def peak_booting(processes: list[dict], kind: str | None = None) -> int:
    """Most processes booting at once, from the timeline's fork/ready/exit times."""
    events = []
    for proc in processes:
        if kind and proc["kind"] != kind:
            continue
        end = proc["ready"] if proc["ready"] is not None else proc["exit"]
        events.append((proc["fork"], 1))
        if end is not None:
            events.append((end, -1))
    peak = now = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        now += delta
        peak = max(peak, now)
    return peak


def ready_at(processes: list[dict], t: float) -> int:
    return sum(1 for p in processes if p["ready"] is not None and p["ready"] <= t
               and (p["exit"] is None or p["exit"] > t))
