"""Startup benchmark: real gunicorn masters, stock (``off``) vs ``timer`` vs ``ready`` pacing.

    python -m benchmarks.startup -w 16 --boot-cpu 1.0 --repeat 3
    python -m benchmarks.startup -w 4,16 --cpu-quota 0.5 --reload --json out.json --timelines charts/
    python -m benchmarks.startup --quick          # CI smoke: -w 2 --boot-cpu 0.2 --repeat 1

Each run starts a real ``gunicorn -k uvicorn_worker.UvicornWorker -w N -c
python:gunicorn_slowstart.conf examples.app:app`` on 127.0.0.1 with
``GUNICORN_SLOWSTART_MODE`` set to the mode under test, and stops it again.

What is measured, per run (all times in seconds from ``t0``, taken just before ``Popen``)
------------------------------------------------------------------------------------------
* **first response**: a client thread sends ``GET /`` every 50 ms (one new
  connection per request, 1 s time-out, like a load balancer's health check)
  and records every request's start, end and outcome.  This is when the first
  ``200`` came back: what a user or a load balancer waits for.
* **all ready**: when the N-th HTTP worker became ready, from the master's
  own timeline (``GUNICORN_SLOWSTART_TIMELINE``; the master stamps readiness
  within milliseconds of a worker's first heartbeat: median 0.6 ms,
  ``benchmarks/detectlag.py``; within 25 ms where it must poll).  Timeline times are relative to
  the master's start; they are moved onto our clock with the timeline's
  ``wall_t0`` and our wall-clock time at ``t0``.  The time is the first ramp's
  ``first_ready`` / ``all_ready``, which count HTTP workers against the HTTP
  target; with ``--long-workers K`` the K-th long worker's ready time is
  reported apart (``long s``) and a run waits for both.  The ramp's ``end`` is kept in the JSON as a cross-check.
* **failed / p50 / p99**: the requests *sent* before all workers were ready.
  ``failed`` counts time-outs, resets and non-200 answers.  Refused
  connections are counted apart (``refused`` in the JSON): they happen only
  before the master has bound its socket, which takes the same interpreter
  start-up time in every mode, so they say nothing about pacing.  The
  latencies are those of the successful requests.
* **peak booting**: the most workers booting (forked, not yet ready) at once,
  from the timeline.
* **master CPU**: user + system CPU seconds of the master process (not its
  children), read just before it is stopped: the cost of the pacing itself.
* **peak RSS**: the largest sum of RSS over the master and all its
  descendants, sampled every 100 ms while starting (shared pages are counted
  once per process; the same way in every mode).

Fork source, ``--preload`` and memory
-------------------------------------
``--fork-from master,template`` runs each paced mode (timer, ready) once per
source; a template row is labelled ``ready-template``: its workers fork from
a template process that imported the app once (``GUNICORN_SLOWSTART_FORK_FROM``).
The mode ``preload`` is stock gunicorn with ``--preload`` (the master imports
the app).  ``--memory`` measures, the moment all workers are ready, the sum
of the workers' USS and PSS and the PSS of the whole tree, via psutil's
``memory_full_info()``; ``--app examples.heavy:app`` serves an app whose
import holds ~100 MiB, so the difference shows.

With ``--reload``, once a server is fully up it gets a SIGHUP while the client
polls every 20 ms; the reload is over when every worker alive at the signal
has exited and N workers forked after it are ready (from the timeline, in
every mode: stock gunicorn records no reload ramp).  Reported: its duration,
the failed requests and the latency of the others meanwhile, and the peak
process count and RSS (stock gunicorn runs both generations at once).

Two lower bounds for "all ready" on this machine are measured or computed:
``lone`` is the all-ready time of a server with one worker (run once per
repeat, ready mode), and ``N x boot CPU / CPUs`` is the CPU work of the boots
spread perfectly over the usable CPUs (``usable_cpus()``; with ``--cpu-quota
Q``, the smaller of Q and that).  No pacing can beat either.

Why CPU time, not wall time
---------------------------
The example app burns ``--boot-cpu`` seconds of *CPU time* at import
(``EXAMPLE_BOOT_CPU``), not a sleep.  Slow start exists because boots
compete for the CPU: 16 workers that each need 1 s of CPU on 2 CPUs need 8 s
whatever the order, but forked all at once every one of them is slowed down
by the other 15 and the first is ready only near the end.  A boot that merely
sleeps would make "all at once" free and pacing could only lose, so it would
measure nothing real.  For the same reason the master's overhead is reported
as CPU time: its wall-clock time is mostly spent waiting.

Why interleaved, why medians
----------------------------
The runs go off, timer, ready, off, timer, ready, ... (and one single-worker
run per repeat), never all the runs of one mode in a row: other load on the
machine, frequency scaling and caches drift over minutes, and interleaving
spreads that drift over all modes alike instead of charging it to one.  Each
figure is the median over the repeats, which one disturbed run cannot move.

Safety
------
Every wait is bounded: a run has a deadline (``--deadline``, 120 s), and a
server that does not come up by then is a failed run, not a hang.  Every
server is stopped with SIGTERM, then SIGKILL if it has not exited after the
graceful time-out; afterwards every descendant recorded during the run that
still exists is reported as a LEFTOVER (and killed).  Only the processes this
benchmark started are ever signalled, and traffic only goes to 127.0.0.1.

Exit status: 0 when every run succeeded and nothing was left behind, 1
otherwise, 2 when the benchmark cannot run here (``--cpu-quota`` without
cgroup rights, bad options).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gunicorn
import psutil

if __package__ in (None, ""):  # run as a file (python benchmarks/startup.py): import the project from here
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.cpulimit import CpuLimit, CpuLimitUnavailable  # noqa: E402
from gunicorn_slowstart import timeline as tl  # noqa: E402
from gunicorn_slowstart.cpus import usable_cpus  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODES = ("off", "preload", "timer", "ready")  # preload: stock gunicorn with --preload
DEFAULT_MODES = ("off", "timer", "ready")
PACED = ("timer", "ready")  # the modes --fork-from applies to
FORK_SOURCES = ("master", "template")
APP = "examples.app:app"
WORKER_CLASS = "uvicorn_worker.UvicornWorker"
LONG_WORKER_TARGET = "examples.jobs:run"
GRACEFUL_TIMEOUT = 5.0

STARTUP_INTERVAL = 0.05     # the client's request period while the server starts
RELOAD_INTERVAL = 0.02      # ... and during a SIGHUP reload
REQUEST_TIMEOUT = 1.0       # per socket operation of one request
SAMPLE_INTERVAL = 0.1       # process-tree RSS sampling
TIMELINE_POLL = 0.1         # how often the timeline file is re-read while waiting
FIRST_RESPONSE_GRACE = 5.0  # all ready, but no 200 yet: give up after this long
LONG_SPAWN_GRACE = 10.0     # all HTTP workers ready, no long worker forked yet: give up
LEFTOVER_GRACE = 2.0        # time for the workers of a stopped master to disappear

QUICK = {"workers": "2", "boot_cpu": 0.2, "repeat": 1}
DEFAULTS = {"workers": "16", "boot_cpu": 1.0, "repeat": 3}

EXIT_OK, EXIT_FAILED, EXIT_UNAVAILABLE = 0, 1, 2


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived: stop the current server and report what we have."""


# --------------------------------------------------------------------------- small helpers


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_timeline(path: Path) -> dict | None:
    """The master's timeline, or None while it does not exist (it is written atomically)."""
    try:
        return tl.load(str(path))
    except tl.TimelineError:
        return None


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    | " + line for line in text.splitlines()[-lines:])


def say(text: str) -> None:
    """Progress and warnings go to stderr; the report goes to stdout."""
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the client


@dataclass
class Request:
    start: float            # seconds from t0
    end: float
    status: int | None      # HTTP status, None when the request failed
    error: str | None       # "refused", "timeout", "reset", "disconnected" or an exception name

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def latency(self) -> float:
        return self.end - self.start

    def to_row(self) -> list:
        return [round(self.start, 4), round(self.end, 4), self.status, self.error]


def probe(port: int, timeout: float) -> tuple[int | None, str | None]:
    """One ``GET /`` on a new connection to 127.0.0.1: (status, None) or (None, what failed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status, None
    except ConnectionRefusedError:
        return None, "refused"
    except TimeoutError:
        return None, "timeout"
    except http.client.RemoteDisconnected:
        return None, "disconnected"
    except ConnectionResetError:
        return None, "reset"
    except (OSError, http.client.HTTPException) as exc:
        return None, type(exc).__name__
    finally:
        conn.close()


class Poller:
    """A thread sending ``GET /`` every ``interval`` s (start to start; late ticks are
    skipped, not bunched) until stopped or until its deadline."""

    def __init__(self, port: int, t0: float, interval: float, deadline: float,
                 served_interval: float | None = None) -> None:
        self.port, self.t0, self.interval, self.deadline = port, t0, interval, deadline
        self.served_interval = interval if served_interval is None else served_interval  # after the first 200
        self.requests: list[Request] = []
        self.first_ok: float | None = None  # end of the first 200, from t0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def start(self) -> Poller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(REQUEST_TIMEOUT * 3 + 1)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._halt.is_set() and time.monotonic() < self.deadline:
            start = time.monotonic()
            status, error = probe(self.port, REQUEST_TIMEOUT)
            end = time.monotonic()
            request = Request(start - self.t0, end - self.t0, status, error)
            self.requests.append(request)
            if request.ok and self.first_ok is None:
                self.first_ok = request.end
            next_at += self.interval if self.first_ok is None else self.served_interval
            now = time.monotonic()
            if next_at < now:
                next_at = now
            self._halt.wait(next_at - now)


# --------------------------------------------------------------------------- the process tree


class TreeSampler:
    """A thread that records the master's descendants and their total RSS every 100 ms.

    Every process seen is kept (as a ``psutil.Process``, which remembers its
    creation time, so a reused pid is not mistaken for it) for the leftover check.
    """

    def __init__(self, pid: int, t0: float) -> None:
        self.pid, self.t0 = pid, t0
        self.samples: list[tuple[float, int, int]] = []  # (t from t0, RSS bytes, processes)
        self.seen: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        try:
            self._master: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self._master = None

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._halt.is_set():
            if not self.sample():
                return
            self._halt.wait(SAMPLE_INTERVAL)

    def sample(self) -> bool:
        """Take one sample; False once the master is gone."""
        master = self._master
        if master is None:
            return False
        try:
            children = master.children(recursive=True)
            rss = master.memory_info().rss
        except psutil.NoSuchProcess:
            return False
        count = 1
        with self._lock:
            for child in children:
                self.seen.setdefault(child.pid, child)
                try:
                    rss += child.memory_info().rss
                    count += 1
                except psutil.NoSuchProcess:
                    pass
            self.samples.append((time.monotonic() - self.t0, rss, count))
        return True

    def peak(self, start: float = -math.inf, stop: float = math.inf) -> tuple[int | None, int | None]:
        """(peak RSS bytes, peak process count) of the samples taken in [start, stop]."""
        with self._lock:
            window = [s for s in self.samples if start <= s[0] <= stop]
        if not window:
            return None, None
        return max(s[1] for s in window), max(s[2] for s in window)

    def master_cpu(self) -> float | None:
        try:
            times = psutil.Process(self.pid).cpu_times()
        except psutil.NoSuchProcess:
            return None
        return times.user + times.system

    def children_cpu(self) -> float | None:
        """CPU seconds used so far by the live descendants (the workers' boots, mostly)."""
        if self._master is None:
            return None
        total = 0.0
        try:
            children = self._master.children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        for child in children:
            try:
                times = child.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total


@dataclass(frozen=True)
class Memory:
    """The memory a fully started server uses, in MiB (None: not measurable)."""

    workers_uss_mib: float | None = None
    workers_pss_mib: float | None = None
    tree_pss_mib: float | None = None


def memory_use(master_pid: int, worker_pids: Iterable[int]) -> Memory:
    """Once all are ready: the workers' summed USS and PSS, and the PSS of the whole tree
    (master, template, workers), in MiB.  PSS charges each shared page to its sharers in
    equal parts, so the tree's PSS is what the server really costs the machine."""
    workers = set(worker_pids)
    try:
        master = psutil.Process(master_pid)
        tree = [master] + master.children(recursive=True)
    except psutil.NoSuchProcess:
        return Memory()
    uss = pss = tree_pss = 0
    for proc in tree:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        tree_pss += info.pss
        if proc.pid in workers:
            uss += info.uss
            pss += info.pss
    return Memory(workers_uss_mib=round(uss / 2**20, 1), workers_pss_mib=round(pss / 2**20, 1),
                  tree_pss_mib=round(tree_pss / 2**20, 1))


def still_running(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.NoSuchProcess:
            pass
    return left


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    left = still_running(procs)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = still_running(left)
    return left


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class RunSpec:
    n: int
    mode: str
    repeat: int
    role: str = "bench"  # "bench", or "lone": the single-worker lower bound


@dataclass
class Options:
    workers: list[int]
    modes: list[str]
    boot_cpu: float
    repeat: int
    deadline: float
    reload: bool
    long_workers: int | None
    cpu_quota: float | None
    timelines: Path | None
    json_path: Path | None
    app: str = APP
    memory: bool = False
    served_interval: float | None = None  # the client's period after its first 200 (None: STARTUP_INTERVAL)


@dataclass
class Server:
    """One gunicorn master this benchmark started, and everything needed to stop it."""

    proc: subprocess.Popen
    port: int
    t0: float            # monotonic, just before Popen
    t0_wall: float       # time.time() at t0
    rundir: Path
    sampler: TreeSampler
    log_path: Path
    log_file: Any = None

    @property
    def timeline_path(self) -> Path:
        return self.rundir / "timeline.json"

    def to_t0(self, data: dict, t: float | None) -> float | None:
        """A timeline time (seconds from the master's start) on our clock (seconds from t0)."""
        return None if t is None else data["wall_t0"] + t - self.t0_wall


def mode_label(mode: str, source: str) -> str:
    """A row's mode: the pacing mode, with ``-template`` when its workers fork from a template."""
    return mode if source == "master" else f"{mode}-{source}"


def split_label(label: str) -> tuple[str, str, bool]:
    """(slow-start mode, fork source, --preload) of a row's mode label."""
    if label == "preload":
        return "off", "master", True
    mode, _, source = label.partition("-")
    return mode, source or "master", False


def server_command(n: int, port: int, rundir: Path, app: str = APP, preload: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "gunicorn", "-k", WORKER_CLASS, "-w", str(n),
           "-b", f"127.0.0.1:{port}", "--graceful-timeout", str(int(GRACEFUL_TIMEOUT))]
    if int(gunicorn.__version__.split(".")[0]) >= 24:
        cmd += ["--control-socket", str(rundir / "ctl.sock")]
    if preload:
        cmd.append("--preload")
    return cmd + ["-c", "python:gunicorn_slowstart.conf", app]


def server_env(spec: RunSpec, opts: Options, timeline_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["EXAMPLE_BOOT_CPU"] = repr(opts.boot_cpu)
    mode, source, _ = split_label(spec.mode)
    env["GUNICORN_SLOWSTART_MODE"] = mode
    env["GUNICORN_SLOWSTART_FORK_FROM"] = source
    env["GUNICORN_SLOWSTART_TIMELINE"] = str(timeline_path)
    if opts.long_workers is not None and spec.role == "bench":
        env["GUNICORN_SLOWSTART_LONG_WORKERS"] = str(opts.long_workers)
        env["GUNICORN_SLOWSTART_LONG_WORKER"] = LONG_WORKER_TARGET
    return env


def start_server(spec: RunSpec, opts: Options, limit: CpuLimit | None, workdir: Path) -> Server:
    rundir = Path(tempfile.mkdtemp(prefix=f"r{spec.repeat}-n{spec.n}-{spec.mode}-", dir=workdir))
    port = free_port()
    log_path = rundir / "gunicorn.log"
    log_file = open(log_path, "wb")  # closed by stop_server
    env = server_env(spec, opts, rundir / "timeline.json")
    cmd = server_command(spec.n, port, rundir, opts.app, preload=split_label(spec.mode)[2])
    t0, t0_wall = time.monotonic(), time.time()
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=limit.preexec_fn() if limit is not None else None)
    except BaseException:
        log_file.close()
        raise
    sampler = TreeSampler(proc.pid, t0).start()
    return Server(proc, port, t0, t0_wall, rundir, sampler, log_path, log_file)


def stop_server(server: Server, limit: CpuLimit | None) -> list[dict]:
    """SIGTERM the master, SIGKILL it if it outlives the graceful time-out, then report
    (and kill) any descendant recorded during the run that is still there.

    SIGINT and SIGTERM are held off meanwhile (delivered afterwards), so a second
    Ctrl-C cannot leave a server behind."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        return _stop_server(server, limit)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def stop_master(proc: subprocess.Popen, graceful: float, say=None) -> None:
    """SIGTERM a master we started; SIGKILL it if it outlives its graceful time-out (+5 s)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(graceful + 5)
    except subprocess.TimeoutExpired:
        if say is not None:
            say(f"  master {proc.pid} still running {graceful + 5:.0f} s after SIGTERM: SIGKILL")
        proc.kill()
        proc.wait(10)


def _stop_server(server: Server, limit: CpuLimit | None) -> list[dict]:
    server.sampler.stop()
    server.sampler.sample()  # a last look at the tree, from this thread
    stop_master(server.proc, GRACEFUL_TIMEOUT, say)
    if server.log_file is not None:
        server.log_file.close()
    left = wait_gone(list(server.sampler.seen.values()), LEFTOVER_GRACE)
    if limit is not None:  # anything still in our cgroup is ours too, recorded or not
        known = {p.pid for p in left}
        for pid in limit.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                if pid not in known:
                    left.append(psutil.Process(pid))
    report = []
    for leftover in left:
        try:
            report.append({"pid": leftover.pid, "cmdline": " ".join(" ".join(leftover.cmdline()).split())[:200]})
            leftover.kill()
        except psutil.NoSuchProcess:
            pass
    for item in report:
        say(f"    !!! LEFTOVER: process {item['pid']} ({item['cmdline']}) outlived master "
            f"{server.proc.pid}: killed")
    return report


@dataclass(frozen=True)
class Readiness:
    """Timeline times (seconds from the master's start) of the first ramp; None: not yet."""

    first: float | None     # the first HTTP worker ready
    all: float | None       # the N-th HTTP worker ready
    long: float | None      # the K-th long worker ready (None with no long workers)
    ramp_end: float | None  # the ramp's end, kept as a cross-check

    def started(self, long: int) -> bool:
        """All N HTTP workers ready, and the K long workers if there are any."""
        return self.all is not None and (long == 0 or self.long is not None)


NOT_READY = Readiness(None, None, None, None)


def readiness(data: dict, n: int, long: int) -> Readiness:
    """Timeline times of the first ramp: first HTTP worker ready, N-th HTTP worker ready
    (the ramp's own ``first_ready`` / ``all_ready``, HTTP workers against the HTTP target),
    K-th long worker ready (None: not yet; 0 long workers: None), and the ramp's end."""
    ramps = data["ramps"]
    if not ramps:
        return NOT_READY
    ramp = ramps[0]
    members = tl.ramp_members(data["processes"], ramps, 0)
    longs = sorted(p["ready"] for p in members if p["kind"] == "long" and p["ready"] is not None)
    return Readiness(first=ramp["first_ready"], all=ramp["all_ready"],
                     long=longs[long - 1] if 0 < long <= len(longs) else None, ramp_end=ramp["end"])


@dataclass(frozen=True)
class StartupStats:
    """The client's requests sent before all workers were ready (see the module docstring)."""

    requests: int
    ok_requests: int
    failed: int              # time-outs, resets and non-200 answers
    refused: int             # before the master bound its socket: not failures
    timeouts: int
    p50_ms: float | None     # latency of the successful ones
    p99_ms: float | None
    listening: float | None  # the first request not refused, from t0


def startup_stats(requests: list[Request], until: float | None) -> StartupStats:
    """Figures of the requests sent before ``until`` (all ready)."""
    sent = [r for r in requests if until is None or r.start < until]
    refused = [r for r in sent if r.error == "refused"]
    failed = [r for r in sent if not r.ok and r.error != "refused"]
    latencies = [r.latency for r in sent if r.ok]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return StartupStats(requests=len(sent), ok_requests=len(latencies), failed=len(failed),
                        refused=len(refused),
                        timeouts=sum(1 for r in failed if r.error == "timeout"),
                        p50_ms=rounded(p50 * 1000 if p50 is not None else None, 1),
                        p99_ms=rounded(p99 * 1000 if p99 is not None else None, 1),
                        listening=rounded(min((r.start for r in sent if r.error != "refused"), default=None)))


def wait_started(server: Server, poller: Poller, deadline: float, n: int,
                 long: int) -> tuple[dict | None, str | None]:
    """Wait until the timeline says all workers (and long workers) are ready and the
    client had a 200.

    Returns (the timeline at that moment, None) or (the last timeline, why the run failed)."""
    data: dict | None = None
    ready_seen: float | None = None
    http_seen: float | None = None  # all HTTP workers ready (long workers may still boot)
    next_read = 0.0
    while True:
        now = time.monotonic()
        code = server.proc.poll()
        if code is not None:
            return data, f"master exited with status {code} before all workers were ready"
        if now >= deadline:
            what = "all workers ready" if ready_seen is None else "successful response"
            return data, f"deadline: {what} not seen after {now - server.t0:.1f} s"
        if ready_seen is None and now >= next_read:
            next_read = now + TIMELINE_POLL
            data = read_timeline(server.timeline_path) or data
            times = readiness(data, n, long) if data is not None else None
            if times is not None and times.started(long):
                ready_seen = now
            elif times is not None and times.all is not None:
                http_seen = http_seen or now
                if now - http_seen > LONG_SPAWN_GRACE and not any(
                        p["kind"] == "long" for p in data["processes"]):
                    return data, (f"all HTTP workers ready, but no long worker was started "
                                  f"{LONG_SPAWN_GRACE:.0f} s later")
        if ready_seen is not None:
            if poller.first_ok is not None:
                return data, None
            if now - ready_seen > FIRST_RESPONSE_GRACE:
                return data, f"all workers ready, but no 200 within {FIRST_RESPONSE_GRACE:.0f} s"
        time.sleep(0.02)


def reload_done_at(data: dict, hup: float, n: int) -> float | None:
    """When a SIGHUP at timeline time ``hup`` was over: every worker that was alive at
    the signal has exited and ``n`` workers forked after it are ready.  None: not yet."""
    http = [p for p in data["processes"] if p["kind"] == "http"]
    old = [p for p in http if p["fork"] < hup and (p["exit"] is None or p["exit"] >= hup)]
    if any(p["exit"] is None for p in old):
        return None
    ready = sorted(p["ready"] for p in http
                   if p["fork"] >= hup and p["ready"] is not None and p["exit"] is None)
    if len(ready) < n:
        return None
    return max([ready[n - 1]] + [p["exit"] for p in old])


@dataclass(frozen=True)
class ReloadResult:
    """One SIGHUP of a fully started server (times in seconds from t0; see the module docstring)."""

    ok: bool
    error: str | None
    hup: float
    duration: float | None      # until every old worker had exited and N new ones were ready
    requests: int               # sent meanwhile
    failed: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    peak_rss_mib: float | None  # of the tree, from the signal on
    peak_processes: int | None
    ramp: dict | None           # the timeline's reload ramp
    raw: list[list]             # every request: [start, end, status, error]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def measure_reload(server: Server, n: int, deadline_s: float) -> ReloadResult:
    """SIGHUP a fully started server and poll every 20 ms until the new generation is in."""
    deadline = time.monotonic() + deadline_s
    poller = Poller(server.port, server.t0, RELOAD_INTERVAL, deadline).start()
    error: str | None = None
    try:
        time.sleep(0.2)  # some requests before the signal: the baseline latency
        hup_wall = time.time()
        hup = hup_wall - server.t0_wall
        os.kill(server.proc.pid, signal.SIGHUP)
        data, done = None, None
        while done is None:
            if server.proc.poll() is not None:
                error = f"master exited with status {server.proc.returncode} during the reload"
                break
            if time.monotonic() >= deadline:
                error = f"deadline: reload not over after {deadline_s:.0f} s"
                break
            time.sleep(TIMELINE_POLL)
            data = read_timeline(server.timeline_path) or data
            if data is not None:
                done = reload_done_at(data, hup_wall - data["wall_t0"], n)
        time.sleep(0.1)
    finally:
        poller.stop()
    end = server.to_t0(data, done) if data is not None and done is not None else None
    during = [r for r in poller.requests if r.start >= hup and (end is None or r.start <= end)]
    latencies = [r.latency for r in during if r.ok]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    ramp = data["ramps"][1] if data is not None and len(data["ramps"]) > 1 else None
    rss, processes = server.sampler.peak(start=hup)
    return ReloadResult(ok=error is None, error=error, hup=round(hup, 3),
                        duration=rounded(end - hup if end is not None else None),
                        requests=len(during), failed=sum(1 for r in during if not r.ok),
                        p50_ms=rounded(p50 * 1000 if p50 is not None else None, 1),
                        p99_ms=rounded(p99 * 1000 if p99 is not None else None, 1),
                        max_ms=rounded(max(latencies) * 1000 if latencies else None, 1),
                        peak_rss_mib=rounded(rss / 2**20 if rss is not None else None, 1),
                        peak_processes=processes, ramp=ramp, raw=[r.to_row() for r in poller.requests])


@dataclass(frozen=True)
class RunResult:
    """One server's start (and reload), measured; times in seconds from t0 (module docstring)."""

    n: int
    mode: str
    repeat: int
    role: str
    pid: int
    port: int
    memory: Memory | None               # with --memory, once all were ready
    log_tail: str | None                # the server's last log lines, when the run failed
    ok: bool                            # no error and nothing left behind
    error: str | None
    first_response: float | None        # the client's first 200
    first_ready: float | None           # from the master's timeline, like the next three
    all_ready: float | None
    long_ready: float | None
    ramp_end: float | None
    startup: StartupStats               # the requests sent before all were ready
    peak_booting: int | None
    boot: dict | None                   # the timeline summary's boot-time figures
    master_cpu: float | None            # CPU seconds at stop
    master_cpu_at_ready: float | None
    workers_cpu: float | None
    peak_rss_mib: float | None          # of the tree, while starting
    peak_processes: int | None
    server_meta: dict | None            # the timeline's meta: the server's cpus, cap, ...
    leftovers: list[dict]               # {"pid", "cmdline"} of processes that outlived the master
    reload: ReloadResult | None
    wall: float                         # this run's own wall time
    requests_raw: list[list]            # every request: [start, end, status, error]
    timeline: dict | None

    def metrics(self) -> dict[str, float | int | None]:
        """The figures the report takes medians of (``METRICS``), by name."""
        memory = self.memory or Memory()
        return {"first_response": self.first_response, "first_ready": self.first_ready,
                "all_ready": self.all_ready, "long_ready": self.long_ready, "ramp_end": self.ramp_end,
                "failed": self.startup.failed, "refused": self.startup.refused,
                "p50_ms": self.startup.p50_ms, "p99_ms": self.startup.p99_ms,
                "peak_booting": self.peak_booting, "master_cpu": self.master_cpu,
                "master_cpu_at_ready": self.master_cpu_at_ready, "workers_cpu": self.workers_cpu,
                "peak_rss_mib": self.peak_rss_mib, "peak_processes": self.peak_processes,
                "workers_uss_mib": memory.workers_uss_mib, "workers_pss_mib": memory.workers_pss_mib,
                "tree_pss_mib": memory.tree_pss_mib}

    def to_json(self) -> dict[str, Any]:
        """The JSON record: flat, the memory and log tail only where there are some."""
        out: dict[str, Any] = {"n": self.n, "mode": self.mode, "repeat": self.repeat, "role": self.role,
                               "pid": self.pid, "port": self.port}
        if self.memory is not None:
            out.update(asdict(self.memory))
        if self.log_tail is not None:
            out["log_tail"] = self.log_tail
        out.update(ok=self.ok, error=self.error, first_response=self.first_response,
                   first_ready=self.first_ready, all_ready=self.all_ready, long_ready=self.long_ready,
                   ramp_end=self.ramp_end, **asdict(self.startup), peak_booting=self.peak_booting,
                   boot=self.boot, master_cpu=self.master_cpu, master_cpu_at_ready=self.master_cpu_at_ready,
                   workers_cpu=self.workers_cpu, peak_rss_mib=self.peak_rss_mib,
                   peak_processes=self.peak_processes, server_meta=self.server_meta, leftovers=self.leftovers,
                   reload=self.reload.to_json() if self.reload is not None else None, wall=self.wall,
                   requests_raw=self.requests_raw, timeline=self.timeline)
        return out


def run_once(spec: RunSpec, opts: Options, limit: CpuLimit | None, workdir: Path) -> RunResult:
    """Start one server, measure its start (and reload), stop it."""
    began = time.monotonic()
    server = start_server(spec, opts, limit, workdir)
    deadline = server.t0 + opts.deadline
    poller = Poller(server.port, server.t0, STARTUP_INTERVAL, deadline, opts.served_interval).start()
    memory: Memory | None = None
    reload: ReloadResult | None = None
    long = (opts.long_workers or 0) if spec.role == "bench" else 0
    master_cpu_ready = master_cpu = workers_cpu = None
    try:
        data, error = wait_started(server, poller, deadline, spec.n, long)
        startup_end = time.monotonic() - server.t0
        poller.stop()
        if error is None and opts.memory:
            alive = [p["pid"] for p in data["processes"] if p["kind"] == "http" and p["exit"] is None]
            memory = memory_use(server.proc.pid, alive)
        master_cpu_ready = server.sampler.master_cpu()
        if error is None and opts.reload and spec.role == "bench":
            reload = measure_reload(server, spec.n, opts.deadline)
        master_cpu = server.sampler.master_cpu()
        workers_cpu = server.sampler.children_cpu()
    finally:
        poller.stop()
        leftovers = stop_server(server, limit)
    final = read_timeline(server.timeline_path) or data
    times = readiness(final, spec.n, long) if final else NOT_READY
    all_ready = server.to_t0(final, times.all) if final else None
    summary = tl.summarize(final) if final else None
    rss, processes = server.sampler.peak(stop=startup_end)
    ok = error is None and not leftovers
    tail = log_tail(server.log_path) if error is not None else None
    if error is None and leftovers:
        error = f"{len(leftovers)} leftover process(es)"
    result = RunResult(
        n=spec.n, mode=spec.mode, repeat=spec.repeat, role=spec.role, pid=server.proc.pid, port=server.port,
        memory=memory, log_tail=tail,
        ok=ok, error=error,
        first_response=rounded(poller.first_ok),
        first_ready=rounded(server.to_t0(final, times.first)) if final else None,
        all_ready=rounded(all_ready),
        long_ready=rounded(server.to_t0(final, times.long)) if final else None,
        ramp_end=rounded(server.to_t0(final, times.ramp_end)) if final else None,
        startup=startup_stats(poller.requests, all_ready),
        peak_booting=summary["peak_booting"] if summary else None,
        boot=summary["boot"] if summary else None,
        master_cpu=rounded(master_cpu), master_cpu_at_ready=rounded(master_cpu_ready),
        workers_cpu=rounded(workers_cpu),
        peak_rss_mib=rounded(rss / 2**20 if rss is not None else None, 1), peak_processes=processes,
        server_meta=final.get("meta") if final else None,
        leftovers=leftovers, reload=reload, wall=round(time.monotonic() - began, 2),
        requests_raw=[r.to_row() for r in poller.requests], timeline=final,
    )
    shutil.rmtree(server.rundir, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- the plan and the report


def plan(opts: Options) -> list[RunSpec]:
    """Interleaved: per repeat, the lone run, then every mode for every N in turn."""
    runs = []
    for repeat in range(opts.repeat):
        runs.append(RunSpec(1, "ready", repeat, "lone"))
        for n in opts.workers:
            runs.extend(RunSpec(n, mode, repeat) for mode in opts.modes)
    return runs


def describe(run: RunResult) -> str:
    if run.error:
        return f"FAILED: {run.error} ({run.wall:.1f} s)"
    text = (f"first response {run.first_response:.2f} s, all ready {run.all_ready:.2f} s, "
            f"failed {run.startup.failed}, peak booting {run.peak_booting}")
    if run.reload is not None:
        rl = run.reload
        text += (f"; reload {rl.duration} s, failed {rl.failed}" if rl.ok
                 else f"; reload FAILED: {rl.error}")
    return text + f" ({run.wall:.1f} s)"


def cpu_capacity(quota: float | None) -> float:
    cpus = float(usable_cpus())
    return cpus if quota is None else min(quota, cpus)


METRICS = ("first_response", "first_ready", "all_ready", "long_ready", "ramp_end", "failed", "refused",
           "p50_ms", "p99_ms", "peak_booting", "master_cpu", "master_cpu_at_ready", "workers_cpu",
           "peak_rss_mib", "peak_processes", "workers_uss_mib", "workers_pss_mib", "tree_pss_mib")
RELOAD_METRICS = ("duration", "failed", "p50_ms", "p99_ms", "max_ms", "peak_rss_mib", "peak_processes")
READY_ROWS = ("ready", "ready-template")  # the rows that carry ratios against off and timer


@dataclass(frozen=True)
class ReloadRow:
    """Medians of the successful reloads of one (N, mode)."""

    duration: float | None
    failed: float | None
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    peak_rss_mib: float | None
    peak_processes: float | None
    runs: int
    ok_runs: int


@dataclass(frozen=True)
class Row:
    """One (N, mode) of the report: medians of its successful runs (``METRICS``), the
    server's CPUs and cap, the lower bounds and, on the ready rows, the ratios."""

    n: int
    mode: str
    runs: int
    ok_runs: int
    first_response: float | None
    first_ready: float | None
    all_ready: float | None
    long_ready: float | None
    ramp_end: float | None
    failed: float | None
    refused: float | None
    p50_ms: float | None
    p99_ms: float | None
    peak_booting: float | None
    master_cpu: float | None
    master_cpu_at_ready: float | None
    workers_cpu: float | None
    peak_rss_mib: float | None
    peak_processes: float | None
    workers_uss_mib: float | None
    workers_pss_mib: float | None
    tree_pss_mib: float | None
    server_cpus: int | None
    server_cap: int | None
    lone: float | None
    cpu_bound: float
    all_vs_bound: float | None
    reload: ReloadRow | None
    first_vs_off: float | None = None    # the ready rows only, like the next three
    all_vs_off: float | None = None
    first_vs_timer: float | None = None
    all_vs_timer: float | None = None
    pss_vs_ready: float | None = None    # the ready-template row only

    def to_json(self) -> dict[str, Any]:
        """The JSON record: the ratios only on the rows they belong to."""
        out = asdict(self)
        if self.mode not in READY_ROWS:
            for key in ("first_vs_off", "all_vs_off", "first_vs_timer", "all_vs_timer"):
                del out[key]
        if self.mode == "ready" or self.mode not in READY_ROWS:
            del out["pss_vs_ready"]
        return out


@dataclass(frozen=True)
class Bounds:
    """The lower bounds of "all ready": one lone worker's, and N boots' CPU over the capacity."""

    lone: float | None
    capacity_cpus: float
    cpu: dict[int, float]  # per N

    def to_json(self) -> dict[str, Any]:
        return {"lone": self.lone, "capacity_cpus": self.capacity_cpus,
                "per_n": {str(n): {"lone": self.lone, "cpu": cpu} for n, cpu in self.cpu.items()}}


def reload_row(good: list[RunResult]) -> ReloadRow:
    reloads = [r.reload for r in good if r.reload is not None and r.reload.ok]
    medians = {key: rounded(median(getattr(rl, key) for rl in reloads)) for key in RELOAD_METRICS}
    return ReloadRow(**medians, runs=len([r for r in good if r.reload is not None]), ok_runs=len(reloads))


def median_row(n: int, mode: str, runs: list[RunResult], opts: Options, lone: float | None,
               cpu_bound: float) -> Row:
    """The medians of one (N, mode), without the ratios to the other modes."""
    mine = [r for r in runs if r.role == "bench" and r.n == n and r.mode == mode]
    good = [r for r in mine if r.error is None]
    medians = {key: rounded(median(r.metrics()[key] for r in good)) for key in METRICS}
    meta = next((r.server_meta for r in good if r.server_meta), None) or {}
    bound = max(b for b in (lone, cpu_bound) if b is not None)
    return Row(n=n, mode=mode, runs=len(mine), ok_runs=len(good), **medians,
               server_cpus=meta.get("cpus"), server_cap=meta.get("cap"),
               lone=rounded(lone), cpu_bound=round(cpu_bound, 3),
               all_vs_bound=rounded(ratio(medians["all_ready"], bound)),
               reload=reload_row(good) if opts.reload else None)


def with_ratios(row: Row, group: dict[str, Row]) -> Row:
    """A ready row with its first response and all-ready over off's and timer's (and, for
    the template row, its tree PSS over ready's)."""
    ratios = {}
    for other in ("off", "timer"):
        base = group.get(other)
        ratios[f"first_vs_{other}"] = rounded(ratio(row.first_response, base.first_response if base else None))
        ratios[f"all_vs_{other}"] = rounded(ratio(row.all_ready, base.all_ready if base else None))
    master = group.get("ready")
    if row.mode != "ready" and master is not None:
        ratios["pss_vs_ready"] = rounded(ratio(row.tree_pss_mib, master.tree_pss_mib))
    return replace(row, **ratios)


def summarize_runs(runs: list[RunResult], opts: Options) -> tuple[list[Row], Bounds]:
    """Median rows per (N, mode), with the bounds and the ready/off, ready/timer ratios."""
    lone = median(r.all_ready for r in runs if r.error is None and r.role == "lone")
    capacity = cpu_capacity(opts.cpu_quota)
    cpu_bounds = {n: round(n * opts.boot_cpu / capacity, 3) for n in opts.workers}
    rows = []
    for n in opts.workers:
        group = {mode: median_row(n, mode, runs, opts, lone, n * opts.boot_cpu / capacity) for mode in opts.modes}
        rows += [with_ratios(row, group) if row.mode in READY_ROWS else row for row in group.values()]
    return rows, Bounds(lone=rounded(lone), capacity_cpus=capacity, cpu=cpu_bounds)


Column = tuple[str, int, Callable[[Row], str]]


def _num(key: str, fmt: str = "{:.2f}") -> Callable[[Row], str]:
    return lambda row: "-" if getattr(row, key) is None else fmt.format(getattr(row, key))


def _x(key: str) -> Callable[[Row], str]:
    return lambda row: "-" if getattr(row, key) is None else f"{getattr(row, key):.2f}x"


def _sub(key: str, fmt: str = "{:.2f}") -> Callable[[Row], str]:
    """A figure of the row's reload medians."""
    return lambda row: ("-" if row.reload is None or getattr(row.reload, key) is None
                        else fmt.format(getattr(row.reload, key)))


STARTUP_COLUMNS: list[Column] = [
    ("N", 3, lambda r: str(r.n)),
    ("mode", 14, lambda r: r.mode),
    ("ok", 3, lambda r: f"{r.ok_runs}/{r.runs}"),
    ("first s", 7, _num("first_response")),
    ("ready s", 7, _num("all_ready")),
    ("fail", 4, _num("failed", "{:.0f}")),
    ("p50 ms", 7, _num("p50_ms", "{:.0f}")),
    ("p99 ms", 7, _num("p99_ms", "{:.0f}")),
    ("peak", 4, _num("peak_booting", "{:.0f}")),
    ("cap", 3, _num("server_cap", "{:.0f}")),
    ("mCPU s", 6, _num("master_cpu")),
    ("RSS MiB", 7, _num("peak_rss_mib", "{:.0f}")),
    ("lone s", 6, _num("lone")),
    ("cpu s", 6, _num("cpu_bound")),
    ("rdy/bnd", 7, _x("all_vs_bound")),
    ("1st/off", 7, _x("first_vs_off")),
    ("rdy/off", 7, _x("all_vs_off")),
    ("1st/tmr", 7, _x("first_vs_timer")),
    ("rdy/tmr", 7, _x("all_vs_timer")),
]

MEMORY_COLUMNS: list[Column] = [
    ("wUSS MiB", 8, _num("workers_uss_mib", "{:.0f}")),
    ("wPSS MiB", 8, _num("workers_pss_mib", "{:.0f}")),
    ("tree PSS", 8, _num("tree_pss_mib", "{:.0f}")),
    ("PSS/rdy", 7, _x("pss_vs_ready")),
]

RELOAD_COLUMNS: list[Column] = [
    ("N", 3, lambda r: str(r.n)),
    ("mode", 14, lambda r: r.mode),
    ("ok", 3, lambda r: f"{r.reload.ok_runs}/{r.reload.runs}"),
    ("reload s", 8, _sub("duration")),
    ("fail", 4, _sub("failed", "{:.0f}")),
    ("p50 ms", 7, _sub("p50_ms", "{:.0f}")),
    ("p99 ms", 7, _sub("p99_ms", "{:.0f}")),
    ("max ms", 7, _sub("max_ms", "{:.0f}")),
    ("procs", 5, _sub("peak_processes", "{:.0f}")),
    ("RSS MiB", 7, _sub("peak_rss_mib", "{:.0f}")),
]


def table(rows: list[Row], columns: list[Column]) -> str:
    widths = [max(width, len(head)) for head, width, _ in columns]
    lines = ["  ".join(head.rjust(w) for (head, _, _), w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    previous_n = None
    for row in rows:
        if previous_n is not None and row.n != previous_n:
            lines.append("")
        previous_n = row.n
        lines.append("  ".join(fmt(row).rjust(w) for (_, _, fmt), w in zip(columns, widths, strict=True)))
    return "\n".join(lines)


LEGEND = """\
first s   time to the first 200 (client, from Popen)      ready s  all N workers ready (master timeline)
fail      failed requests sent before all were ready      p50/p99  latency of the successful ones
peak/cap  most booting at once / server's cap (not off)   mCPU s   master CPU time (user+sys) at stop
RSS MiB   peak RSS sum of master + descendants            lone s   all-ready time of a 1-worker server
cpu s     N x boot CPU / usable CPUs (lower bound)        rdy/bnd  ready s / max(lone s, cpu s)
1st/off, rdy/off, 1st/tmr, rdy/tmr: ready mode's first response and all-ready, over off's and timer's
(medians over the repeats; refused connections, before the master bound its socket, are not failures)"""


MEMORY_LEGEND = """\
wUSS/wPSS sum of the HTTP workers' USS / PSS once all were ready (psutil, /proc/<pid>/smaps)
tree PSS  PSS of master + template + workers (what the server costs); PSS/rdy: over ready's (from the master)"""


def report(rows: list[Row], bounds: Bounds, runs: list[RunResult], opts: Options, header: str) -> str:
    seen = sorted({str(r.server_cpus) for r in rows if r.server_cpus is not None})
    columns = list(STARTUP_COLUMNS)
    if opts.long_workers is not None:  # after "ready s"
        columns.insert(5, ("long s", 6, _num("long_ready")))
    if opts.memory:
        columns += MEMORY_COLUMNS
    parts = [header, f"usable CPUs detected by the servers: {', '.join(seen) or '?'}; "
                     f"CPU capacity for the lower bound: {bounds.capacity_cpus:g}",
             "", table(rows, columns), "", LEGEND]
    if opts.long_workers is not None:
        parts.append(f"long s    all {opts.long_workers} long workers ready (peak counts both kinds)")
    if opts.memory:
        parts.append(MEMORY_LEGEND)
    if opts.reload:
        parts += ["", "SIGHUP reload, once the server was fully up (requests every 20 ms):", "",
                  table(rows, RELOAD_COLUMNS),
                  "reload s: from SIGHUP until every old worker had exited and N new ones were ready"]
    failed = [(r, r.error) for r in runs if r.error]
    failed += [(r, f"reload: {r.reload.error}") for r in runs if r.reload is not None and r.reload.error]
    if failed:
        parts += ["", f"FAILED RUNS: {len(failed)}"]
        parts += [f"  N={r.n} {r.mode} repeat {r.repeat + 1} ({r.role}): {error}"
                  for r, error in failed]
    leftovers = [(r, p) for r in runs for p in r.leftovers]
    if leftovers:
        parts += ["", f"!!! LEFTOVER PROCESSES: {len(leftovers)} still running after their server was "
                      "stopped (killed now) !!!"]
        parts += [f"  N={r.n} {r.mode} repeat {r.repeat + 1}: pid {p['pid']} {p['cmdline']}"
                  for r, p in leftovers]
    else:
        parts += ["", "no leftover processes"]
    return "\n".join(parts)


def keep_timelines(runs: list[RunResult], opts: Options) -> list[str]:
    """``DIR/<N>-<mode>.json`` of the last successful repeat, and ``DIR/<N>-off-vs-ready.png``."""
    assert opts.timelines is not None
    opts.timelines.mkdir(parents=True, exist_ok=True)
    notes = []
    for n in opts.workers:
        kept: dict[str, dict] = {}
        for mode in opts.modes:
            good = [r for r in runs if r.role == "bench" and r.n == n and r.mode == mode
                    and r.error is None and r.timeline]
            if good:
                kept[mode] = good[-1].timeline
                path = opts.timelines / f"{n}-{mode}.json"
                tl.write_atomic(str(path), tl.dumps(kept[mode]))
                notes.append(str(path))
        pairs = [(a, b) for a, b in (("off", "ready"), ("ready", "ready-template")) if a in kept and b in kept]
        for first, second in pairs:
            chart = opts.timelines / f"{n}-{first}-vs-{second}.png"
            try:
                tl.render_compare(kept[first], kept[second], str(chart),
                                  title=f"{n} workers, {opts.boot_cpu:g} s boot CPU each: {first} vs {second}",
                                  labels=(first, second))
                notes.append(str(chart))
            except (tl.MissingMatplotlib, OSError) as exc:
                notes.append(f"no chart {chart}: {exc}")
        if not pairs:
            notes.append(f"no chart for N={n}: needs a successful off and ready (or ready and ready-template) run")
    return notes


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.startup",
        description="Start real gunicorn servers in each slow-start mode, interleaved, and report medians.")
    parser.add_argument("-w", "--workers", help="worker counts, comma separated (default 16)")
    parser.add_argument("--boot-cpu", type=float,
                        help="CPU seconds each worker burns at import (default 1.0)")
    parser.add_argument("--repeat", type=int, help="runs per (N, mode) (default 3)")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES),
                        help="modes to compare among off, preload (stock with --preload), timer, ready "
                             "(default off,timer,ready)")
    parser.add_argument("--fork-from", default="master", metavar="SOURCES",
                        help="run the paced modes (timer, ready) forking from each of these: master, template "
                             "(comma separated; a template row is labelled e.g. ready-template)")
    parser.add_argument("--app", default=APP, help=f"the app to serve (default {APP}; examples.heavy:app "
                                                   "holds ~100 MiB, for --memory)")
    parser.add_argument("--memory", action="store_true",
                        help="once all are ready, measure the workers' USS and PSS and the tree's PSS")
    parser.add_argument("--cpu-quota", type=float, metavar="Q",
                        help="run the servers in a cgroup limited to Q CPUs (needs root)")
    parser.add_argument("--long-workers", type=int, metavar="K",
                        help=f"also start K long workers ({LONG_WORKER_TARGET})")
    parser.add_argument("--reload", action="store_true", help="also measure a SIGHUP reload per run")
    parser.add_argument("--timelines", type=Path, metavar="DIR",
                        help="keep the last repeat's timelines as DIR/<N>-<mode>.json, chart off vs ready")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every run and the medians here")
    parser.add_argument("--served-interval", type=float, metavar="S",
                        help=f"the client's request period once it had a 200 (default {STARTUP_INTERVAL:g} s, as "
                             "before it): the requests a server answers while it still boots workers cost CPU "
                             "that one answering none does not pay")
    parser.add_argument("--deadline", type=float, default=120.0,
                        help="seconds a server may take to start (and, with --reload, to reload)")
    parser.add_argument("--quick", action="store_true", help="CI smoke: -w 2 --boot-cpu 0.2 --repeat 1")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    workers_text = args.workers if args.workers is not None else preset["workers"]
    try:
        workers = [int(w) for w in workers_text.split(",") if w.strip()]
    except ValueError:
        parser.error(f"-w must be comma-separated whole numbers, not {workers_text!r}")
    if not workers or min(workers) < 1:
        parser.error("-w needs worker counts >= 1")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        parser.error(f"--modes must be distinct names among {', '.join(MODES)}")
    sources = [s.strip() for s in args.fork_from.split(",") if s.strip()]
    if not sources or any(s not in FORK_SOURCES for s in sources) or len(set(sources)) != len(sources):
        parser.error(f"--fork-from must be distinct names among {', '.join(FORK_SOURCES)}")
    modes = [mode_label(m, s) for m in modes for s in (sources if m in PACED else ["master"])]
    boot_cpu = args.boot_cpu if args.boot_cpu is not None else preset["boot_cpu"]
    repeat = args.repeat if args.repeat is not None else preset["repeat"]
    if boot_cpu < 0 or repeat < 1 or args.deadline <= 0:
        parser.error("--boot-cpu must be >= 0, --repeat >= 1, --deadline > 0")
    if args.cpu_quota is not None and not args.cpu_quota >= 0.01:
        parser.error("--cpu-quota must be at least 0.01")
    if args.long_workers is not None and args.long_workers < 0:
        parser.error("--long-workers must be >= 0")
    if args.served_interval is not None and not args.served_interval >= 0.01:
        parser.error("--served-interval must be at least 0.01 s")
    return Options(workers=list(dict.fromkeys(workers)), modes=modes, boot_cpu=boot_cpu, repeat=repeat,
                   deadline=args.deadline, reload=args.reload, long_workers=args.long_workers,
                   cpu_quota=args.cpu_quota, timelines=args.timelines, json_path=args.json,
                   app=args.app, memory=args.memory, served_interval=args.served_interval)


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """SIGTERM / SIGINT raise ``Interrupted`` in the main thread, so servers get stopped."""
    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def header_text(opts: Options, limit: CpuLimit | None, elapsed: float | None = None) -> str:
    host = f"{os.cpu_count()} CPUs on the host, usable_cpus() = {usable_cpus()}"
    quota = (f"; servers in cgroup v{limit.version} {limit.path} with a quota of {opts.cpu_quota:g} CPU"
             if limit is not None else "")
    extra = {k: v for k, v in os.environ.items()
             if k.startswith("GUNICORN_SLOWSTART_") or k == "GUNICORN_CMD_ARGS"}
    lines = [f"gunicorn-slowstart startup benchmark: N={','.join(map(str, opts.workers))}, "
             f"boot CPU {opts.boot_cpu:g} s/worker, {opts.repeat} repeat(s), modes {','.join(opts.modes)}"
             + (f", {opts.long_workers} long workers" if opts.long_workers is not None else "")
             + (f", client every {opts.served_interval:g} s after its first 200"
                if opts.served_interval is not None else ""),
             f"{host}{quota}; gunicorn {gunicorn.__version__}, Python {platform.python_version()}"]
    if extra:
        lines.append(f"inherited environment: {extra}")
    if elapsed is not None:
        lines.append(f"total wall time {elapsed:.0f} s")
    return "\n".join(lines)


def run_all(opts: Options, limit: CpuLimit | None) -> tuple[list[RunResult], bool]:
    """Every planned run, in order; (runs, interrupted)."""
    runs: list[RunResult] = []
    todo = plan(opts)
    workdir = Path(tempfile.mkdtemp(prefix="slowstart-bench-"))
    try:
        for index, spec in enumerate(todo, 1):
            what = "lone worker (bound)" if spec.role == "lone" else f"N={spec.n} {spec.mode}"
            say(f"[{index}/{len(todo)}] repeat {spec.repeat + 1}/{opts.repeat}: {what} ...")
            run = run_once(spec, opts, limit, workdir)
            runs.append(run)
            say(f"    {describe(run)}")
            if run.error and run.log_tail:
                say(run.log_tail)
    except Interrupted as exc:
        say(f"interrupted ({exc}); the current server was stopped")
        return runs, True
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return runs, False


def compile_bytecode() -> None:
    """Byte-compile the code every server imports, as ``pip install`` does.

    Run from a source checkout with ``PYTHONDONTWRITEBYTECODE=1`` (tox sets it),
    every master would otherwise compile the plugin again before its first fork
    (about 35 ms on the project's machine), which no installed server pays."""
    import compileall

    for package in ("gunicorn_slowstart", "examples"):
        compileall.compile_dir(str(ROOT / package), quiet=1)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    compile_bytecode()
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        limit = None
        if opts.cpu_quota is not None:
            try:
                limit = stack.enter_context(CpuLimit(opts.cpu_quota, prefix="slowstart-bench-"))
            except CpuLimitUnavailable as exc:
                say(f"--cpu-quota {opts.cpu_quota:g} is not possible here: {exc}")
                return EXIT_UNAVAILABLE
        say(header_text(opts, limit))
        with interrupts_as_exceptions():
            runs, interrupted = run_all(opts, limit)
        header = header_text(opts, limit, time.monotonic() - began)
    rows, bounds = summarize_runs(runs, opts)
    print(report(rows, bounds, runs, opts, header), flush=True)
    if opts.timelines is not None:
        for note in keep_timelines(runs, opts):
            print(f"timeline: {note}")
    if opts.json_path is not None:
        out = {"version": 1, "argv": sys.argv if argv is None else argv, "options": _options_dict(opts),
               "host": {"cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
                        "gunicorn": gunicorn.__version__, "python": platform.python_version()},
               "interrupted": interrupted, "wall": round(time.monotonic() - began, 1),
               "bounds": bounds.to_json(), "medians": [row.to_json() for row in rows],
               "runs": [run.to_json() for run in runs]}
        opts.json_path.parent.mkdir(parents=True, exist_ok=True)
        opts.json_path.write_text(json.dumps(out, indent=1, default=str) + "\n")
        print(f"json: {opts.json_path}")
    if interrupted:
        return 130
    bad = any(r.error or (r.reload is not None and r.reload.error) for r in runs)
    return EXIT_FAILED if bad else EXIT_OK


def _options_dict(opts: Options) -> dict[str, Any]:
    return {"workers": opts.workers, "modes": opts.modes, "boot_cpu": opts.boot_cpu, "repeat": opts.repeat,
            "deadline": opts.deadline, "reload": opts.reload, "long_workers": opts.long_workers,
            "cpu_quota": opts.cpu_quota, "timelines": str(opts.timelines) if opts.timelines else None,
            "app": opts.app, "memory": opts.memory}


if __name__ == "__main__":
    sys.exit(main())
