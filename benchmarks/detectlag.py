"""How long after a worker's first notify does the master record it ready?

    python -m benchmarks.detectlag                          # -w 16, 3 runs, ready mode
    python -m benchmarks.detectlag -w 8 --repeat 4 --modes off,ready --json out.json

This is the simulator's ``detect_lag`` (``benchmarks/simulate.py``), measured
on a real master: gunicorn with N workers of ``StampedWorker`` (a
UvicornWorker that notes the time of its first notify) serving
``examples/app.py`` on 127.0.0.1, slow start's defaults, the timeline on.

Two clocks are read, both ``time.monotonic()`` (one clock for every process
of the machine):

* **notify**: the worker, just before its first ``notify()`` (the heartbeat
  file's first touch, which the master reads as "ready"; uvicorn calls it once
  the lifespan startup is complete and the socket listens).
* **seen**: the master's ``ready`` time in its timeline (the start of the
  loop pass that found the touched file).  Timeline times are rounded to
  1 ms and relative to the master's start; they are put on the monotonic clock
  with the timeline's ``wall_t0`` and the wall-monotonic offset the worker
  read beside its stamp, so a lag here is good to about +-0.5 ms.
* **next fork**: ``StampedWorker.__init__`` runs in the master just before
  gunicorn forks it (``spawn_worker`` builds the worker, calls ``pre_fork``,
  then forks), so the first construction after a notify, in the ``ready``
  mode, is the master's reaction to it, at microsecond resolution: the whole
  ready -> detect -> decide gap the simulator models as ``detect_lag`` before
  its ``fork_cost``.  Counted only when it follows within
  ``REACTION_WINDOW`` (a notify that frees no place forks nothing) and not
  before the master saw the notify (less the timeline's rounding): a fork
  the master decided before it knew is a reaction to something else.

Each run starts one master, waits (bounded) until its timeline has N ready
workers and N stamps were written, then stops it (SIGTERM, SIGKILL after
``GRACEFUL_TIMEOUT``) and kills any worker pid it recorded that outlived it.
Wall-clock latencies depend on how busy the machine is: run it quiet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: import the project from here
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.startup import free_port, stop_master  # noqa: E402

try:
    from uvicorn_worker import UvicornWorker
except ImportError:  # uvicorn < 0.30 ships the worker itself
    from uvicorn.workers import UvicornWorker

ROOT = Path(__file__).resolve().parent.parent
STAMPS_ENV = "DETECTLAG_STAMPS"
WORKER_CLASS = "benchmarks.detectlag.StampedWorker"
APP = "examples.app:app"
GRACEFUL_TIMEOUT = 10.0
RUN_DEADLINE = 120.0  # seconds a run may take to get every worker ready
POLL = 0.05
REACTION_WINDOW = 0.1  # a fork this soon after a notify is the master's reaction to it
ROUNDING = 0.0005  # the timeline's times are rounded to 1 ms


class StampedWorker(UvicornWorker):
    """A UvicornWorker that appends one JSON line per process to ``$DETECTLAG_STAMPS``:
    its pid, when the master built it (``created``, just before the fork), when it first
    notified (``notify``, just before), and the wall-clock minus monotonic offset then."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._created = time.monotonic()  # in the master: gunicorn forks right after pre_fork
        self._stamped = False
        super().__init__(*args, **kwargs)

    def notify(self) -> None:
        if self._stamped:
            return super().notify()
        self._stamped = True
        at = time.monotonic()
        super().notify()
        offset = time.time() - time.monotonic()
        path = os.environ.get(STAMPS_ENV)
        if path:
            line = json.dumps({"pid": os.getpid(), "created": self._created, "notify": at, "offset": offset})
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode())  # one append: lines of several workers never mix
            finally:
                os.close(fd)


# -- analysis (plain values) ------------------------------------------------------


def read_stamps(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def worker_lags(stamps: list[dict], timeline: dict) -> list[dict]:
    """Per stamped worker: ``seen`` (the timeline's ready minus its notify, seconds) and
    ``reaction`` (the next worker built once the master saw it, minus the notify; None when
    none came within ``REACTION_WINDOW``).  Workers the timeline does not know are left out."""
    if not stamps:
        return []
    offset = statistics.median(s["offset"] for s in stamps)
    t0 = timeline["wall_t0"] - offset  # the master's start on the monotonic clock
    ready = {p["pid"]: p["ready"] for p in timeline["processes"] if p["kind"] == "http"}
    created = sorted(s["created"] for s in stamps)
    rows = []
    for s in sorted(stamps, key=lambda s: s["notify"]):
        if ready.get(s["pid"]) is None:
            continue
        seen = t0 + ready[s["pid"]] - s["notify"]
        after = [c - s["notify"] for c in created if c > s["notify"] and c - s["notify"] >= seen - ROUNDING]
        reaction = after[0] if after and after[0] <= REACTION_WINDOW else None
        rows.append({"pid": s["pid"], "seen": seen, "reaction": reaction})
    return rows


def describe(values: list[float]) -> dict | None:
    """count, median, max and min, in milliseconds."""
    if not values:
        return None
    ms = [v * 1000 for v in values]
    return {"count": len(ms), "median_ms": round(statistics.median(ms), 2), "max_ms": round(max(ms), 2),
            "min_ms": round(min(ms), 2)}


def summarize(rows: list[dict]) -> dict:
    return {"seen": describe([r["seen"] for r in rows]),
            "reaction": describe([r["reaction"] for r in rows if r["reaction"] is not None])}


# -- one real master --------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not written yet (the master writes it atomically)


def run_once(n: int, mode: str, boot_cpu: float, workdir: Path) -> tuple[list[dict], dict | None, str | None]:
    """One master with ``n`` workers: (stamps, timeline, error or None)."""
    rundir = Path(tempfile.mkdtemp(prefix=f"{mode}-n{n}-", dir=workdir))
    stamps_path, timeline_path = rundir / "stamps.jsonl", rundir / "timeline.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update({"EXAMPLE_BOOT_CPU": repr(boot_cpu), "GUNICORN_SLOWSTART_MODE": mode,
                "GUNICORN_SLOWSTART_TIMELINE": str(timeline_path), STAMPS_ENV: str(stamps_path)})
    cmd = [sys.executable, "-m", "gunicorn", "-k", WORKER_CLASS, "-w", str(n), "-b", f"127.0.0.1:{free_port()}",
           "--graceful-timeout", str(int(GRACEFUL_TIMEOUT)), "-c", "python:gunicorn_slowstart.conf", APP]
    with open(rundir / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    error, timeline, stamps = None, None, []
    try:
        deadline = time.monotonic() + RUN_DEADLINE
        while True:
            if proc.poll() is not None:
                error = f"master exited with status {proc.returncode} (log: {rundir / 'gunicorn.log'})"
                break
            stamps = read_stamps(stamps_path.read_text()) if stamps_path.exists() else []
            timeline = read_json(timeline_path)
            ready = [p for p in (timeline or {}).get("processes", []) if p["kind"] == "http" and p["ready"]]
            if len(stamps) >= n and len(ready) >= n:
                break
            if time.monotonic() > deadline:
                error = f"{len(ready)} of {n} workers ready after {RUN_DEADLINE:.0f} s"
                break
            time.sleep(POLL)
    finally:
        stop(proc, [s["pid"] for s in stamps])
    return stamps, read_json(timeline_path) or timeline, error


def stop(proc: subprocess.Popen, workers: list[int]) -> None:
    """SIGTERM our master, SIGKILL it if it outlives the graceful time-out, then any of the
    worker pids it forked for us that is still there."""
    stop_master(proc, GRACEFUL_TIMEOUT)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)  # the master is gone; a pid of ours still alive is its orphan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.detectlag",
                                     description="Measure how late a real master sees a worker's first notify.")
    parser.add_argument("-w", "--workers", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default="ready", help="comma-separated slow-start modes (default ready)")
    parser.add_argument("--boot-cpu", type=float, default=0.3, help="CPU seconds each worker's import burns")
    parser.add_argument("--json", metavar="PATH", help="write every worker's lags and the summary here")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.repeat < 1 or args.boot_cpu < 0:
        parser.error("--workers and --repeat must be >= 1, --boot-cpu >= 0")
    modes = [m for m in args.modes.split(",") if m]
    rows: dict[str, list[dict]] = {m: [] for m in modes}
    errors: list[str] = []
    raw: list[dict] = []  # every run's stamps and timeline, to analyse again
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="detectlag-") as tmp:
        for repeat in range(args.repeat):
            for mode in modes:
                stamps, timeline, error = run_once(args.workers, mode, args.boot_cpu, Path(tmp))
                if error or timeline is None:
                    errors.append(f"run {repeat + 1} {mode}: {error or 'no timeline'}")
                    print(f"run {repeat + 1} {mode}: FAILED: {errors[-1]}", flush=True)
                    continue
                mine = worker_lags(stamps, timeline)
                rows[mode] += [dict(r, run=repeat + 1) for r in mine]
                raw.append({"mode": mode, "run": repeat + 1, "stamps": stamps, "timeline": timeline})
                print(f"run {repeat + 1} {mode}: {len(mine)} workers, {json.dumps(summarize(mine))}", flush=True)
    summary = {m: summarize(r) for m, r in rows.items()}
    for mode, s in summary.items():
        print(f"{mode}: notify -> seen {s['seen']}; notify -> next fork {s['reaction']}")
    print(f"({time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"options": vars(args), "summary": summary, "rows": rows,
                                               "errors": errors, "runs": raw}, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
