"""Does the simulator predict this machine?  Real runs against ``simulate()``, same configs.

    python -m benchmarks.crosscheck                 # 2 cores: quota none, 1, 0.5; N = 2, 4, 8, 16
    python -m benchmarks.crosscheck --quotas none --workers 2,4 --repeat 1

The simulator (``benchmarks/simulate.py``) drives the real policy through a
processor-sharing model of the CPU.  Before its grid of 16- to 128-core
machines can be trusted, it has to reproduce the machines we can run.  This
script runs ``benchmarks.startup`` (real gunicorn masters, off and ready mode,
interleaved) for each CPU quota, then asks the simulator for the same
configurations and prints both, with the relative difference.

One number calibrates the model: the boot CPU of one worker, taken from the
benchmark's own lone-worker run (one worker alone boots without contention,
so its wall time is its CPU time; it includes the interpreter's fork and
uvicorn's import, which ``--boot-cpu`` does not).  Everything else, the
contention, the pacing and the quota, is predicted.  Both sides run the
product's defaults (``initial = auto``, idle growth, the tail merge: the
simulator takes them from ``gunicorn_slowstart.policy``; background boots as
the real master ran them, from its timeline); ``--overhead``
adds the simulator's contention cost (see ``benchmarks/simulate.py``).

Times are measured from the master's first fork (the simulator's t = 0), not
from the command's start, so interpreter start-up is left out of both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python benchmarks/crosscheck.py): import the project from here
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.simulate import CONTENTION, simulate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODES = ("off", "ready")
TOLERANCE = 0.15


def ramp_times(run: dict, n: int) -> tuple[float, float] | None:
    """First ready and all ready, from the first fork, out of a run's timeline."""
    procs = [p for p in (run.get("timeline") or {}).get("processes", []) if p["kind"] == "http"]
    if len(procs) < n or not run.get("ok"):
        return None
    procs.sort(key=lambda p: p["fork"])
    start = procs[0]["fork"]
    ready = sorted(p["ready"] for p in procs[:n] if p["ready"] is not None)
    if len(ready) < n:
        return None
    return ready[0] - start, ready[-1] - start


def run_real(quota: float | None, workers: list[int], boot_cpu: float, repeat: int) -> dict:
    """``benchmarks.startup`` for one quota; returns its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "real.json"
        cmd = [sys.executable, "-m", "benchmarks.startup", "-w", ",".join(map(str, workers)),
               "--modes", ",".join(MODES), "--boot-cpu", str(boot_cpu), "--repeat", str(repeat),
               "--json", str(out)]
        if quota is not None:
            cmd += ["--cpu-quota", str(quota)]
        done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, timeout=3600)
        if done.returncode not in (0, 1) or not out.exists():
            raise SystemExit(f"crosscheck: the benchmark failed (exit {done.returncode}) for quota {quota}")
        return json.loads(out.read_text())


def lone_boot(data: dict) -> float:
    """The calibration: one worker alone, fork to ready."""
    times = [ramp_times(run, 1) for run in data["runs"] if run["role"] == "lone"]
    times = [t[1] for t in times if t]
    if not times:
        raise SystemExit("crosscheck: no lone-worker run to calibrate from")
    return statistics.median(times)


def background_of(data: dict) -> int:
    """The real master's background boots (its timeline's meta): the simulator runs the same."""
    for run in data["runs"]:
        meta = (run.get("timeline") or {}).get("meta") or {}
        if run.get("mode") == "ready" and "background" in meta:
            return int(meta["background"])
    return 0


def compare(data: dict, quota: float | None, boot: float, cores: int, overhead: float = 0.0) -> list[dict]:
    rows = []
    background = background_of(data)
    for n in sorted({run["n"] for run in data["runs"] if run["role"] == "bench"}):
        for mode in MODES:
            real = [ramp_times(run, n) for run in data["runs"]
                    if run["role"] == "bench" and run["n"] == n and run["mode"] == mode]
            real = [t for t in real if t]
            if not real:
                continue
            sim = simulate(mode, n, cores, quota=quota, boot_cpu=boot, overhead=overhead,  # the product's defaults
                           background=background)
            rows.append({
                "quota": quota, "n": n, "mode": mode,
                "real_first": statistics.median(t[0] for t in real),
                "real_all": statistics.median(t[1] for t in real),
                "sim_first": sim.first_ready, "sim_all": sim.all_ready,
            })
    for row in rows:
        row["d_first"] = row["sim_first"] / row["real_first"] - 1
        row["d_all"] = row["sim_all"] / row["real_all"] - 1
    return rows


def render(rows: list[dict], boot: dict) -> str:
    lines = ["quota  N  mode   real 1st  sim 1st   diff   real all  sim all   diff",
             "-----  -- -----  --------  -------  ------  --------  -------  ------"]
    for r in rows:
        quota = "none" if r["quota"] is None else f"{r['quota']:g}"
        lines.append(f"{quota:>5} {r['n']:>3} {r['mode']:<5}  {r['real_first']:8.2f}  {r['sim_first']:7.2f}  "
                     f"{r['d_first']:+6.0%}  {r['real_all']:8.2f}  {r['sim_all']:7.2f}  {r['d_all']:+6.0%}")
    within = sum(abs(r["d_first"]) <= TOLERANCE and abs(r["d_all"]) <= TOLERANCE for r in rows)
    lines.append(f"\n{within}/{len(rows)} rows agree within {TOLERANCE:.0%} on both figures; "
                 f"calibration (lone boot, s): " + ", ".join(f"{k}: {v:.2f}" for k, v in boot.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quotas", default="none,1,0.5", help="comma list; 'none' = no cgroup quota")
    parser.add_argument("--workers", default="2,4,8,16")
    parser.add_argument("--boot-cpu", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--overhead", type=float, default=0.0,
                        help=f"the simulator's contention cost, a sensitivity (default 0; {CONTENTION}: "
                             "16 boots on 2 cores cost 8 %% more each)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    quotas = [None if q == "none" else float(q) for q in args.quotas.split(",")]
    workers = [int(n) for n in args.workers.split(",")]
    cores = os.cpu_count() or 1
    rows, boots = [], {}
    for quota in quotas:
        data = run_real(quota, workers, args.boot_cpu, args.repeat)
        boot = lone_boot(data) if quota is None else boots.get("none") or lone_boot(data) * min(1.0, quota)
        boots["none" if quota is None else f"{quota:g}"] = boot
        rows += compare(data, quota, boot, cores, args.overhead)
        print(render(rows, boots), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "calibration": boots}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
