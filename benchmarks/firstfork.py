"""The master's own delay: time from ``exec`` of gunicorn to its first fork.

    python -m benchmarks.firstfork --repeat 15

Slow start must not make the first worker start later than stock gunicorn
does.  Everything the master does before its first fork (reading settings,
detecting CPUs, the idle-CPU sample of ``initial = auto``, importing the
plugin) delays the first response by as much.  This measures it directly:
each run starts a real ``gunicorn -k uvicorn_worker.UvicornWorker -w 1`` on
127.0.0.1 (an ephemeral port) with a config file whose ``pre_fork`` hook
stamps the wall-clock time once, and reports ``pre_fork - Popen``.  Three
variants, interleaved (stock, off, ready, stock, off, ready, ...), medians:

* ``stock``: gunicorn alone, the plugin not imported;
* ``off``: the plugin installed, ``mode = off`` (what ``benchmarks.startup``
  calls stock: it pays the plugin's import too);
* ``ready``: the plugin with its defaults.

The app's import burns no CPU here (``EXAMPLE_BOOT_CPU=0``): only the master
is measured.  The code is byte-compiled first, as ``pip install`` does (see
``benchmarks.startup.compile_bytecode``); ``--no-compile`` leaves it as it is.

Every server is stopped (SIGTERM, SIGKILL after 10 s) before the next starts;
only processes this script started are signalled.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python benchmarks/firstfork.py): import the project from here
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.startup import ROOT, compile_bytecode  # noqa: E402

VARIANTS = ("stock", "off", "ready")
WAIT = 30.0  # seconds a master may take to its first fork
POLL = 0.002

HOOK = '''
import os, time

def pre_fork(server, worker):
    path = os.environ["FIRSTFORK_OUT"]
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(repr(time.time()))
'''
PLUGIN = "from gunicorn_slowstart import install\ninstall(globals())\n"


def write_configs(directory: Path) -> dict[str, Path]:
    stock, plugin = directory / "stock_conf.py", directory / "plugin_conf.py"
    stock.write_text(HOOK)
    plugin.write_text(PLUGIN + HOOK)
    return {"stock": stock, "off": plugin, "ready": plugin}


def one_run(variant: str, config: Path, workdir: Path) -> float | None:
    """Seconds from Popen to the first pre_fork; None when the master never got there."""
    out = workdir / f"{variant}.stamp"
    out.unlink(missing_ok=True)
    env = dict(os.environ, FIRSTFORK_OUT=str(out), EXAMPLE_BOOT_CPU="0",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    env = {k: v for k, v in env.items() if not k.startswith("GUNICORN_SLOWSTART_") and k != "GUNICORN_CMD_ARGS"}
    if variant == "off":
        env["GUNICORN_SLOWSTART_MODE"] = "off"
    cmd = [sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", "1",
           "-b", "127.0.0.1:0", "--graceful-timeout", "1", "-c", str(config), "examples.app:app"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    stamp = None
    try:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and proc.poll() is None:
            text = out.read_text() if out.exists() else ""
            if text:
                stamp = float(text) - t0
                break
            time.sleep(POLL)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return stamp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.firstfork", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs per variant (default 15)")
    parser.add_argument("--no-compile", action="store_true", help="do not byte-compile the plugin first")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if not args.no_compile:
        compile_bytecode()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="slowstart-firstfork-") as tmp:
        configs = write_configs(Path(tmp))
        for _ in range(args.repeat):
            for variant in VARIANTS:
                stamp = one_run(variant, configs[variant], Path(tmp))
                if stamp is None:
                    failed += 1
                else:
                    times[variant].append(stamp)
    print(f"exec -> first pre_fork, {args.repeat} interleaved runs per variant "
          f"({'source as is' if args.no_compile else 'byte-compiled'}), seconds:")
    medians = {}
    for variant, values in times.items():
        if not values:
            print(f"  {variant:>5}: no run reached its first fork")
            continue
        medians[variant] = statistics.median(values)
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        print(f"  {variant:>5}: median {medians[variant]:.3f}  (quartiles {quartiles[0]:.3f} .. "
              f"{quartiles[2]:.3f}, min {min(values):.3f})")
    if {"stock", "off", "ready"} <= set(medians):
        print(f"  plugin imported (off - stock): {1000 * (medians['off'] - medians['stock']):+.0f} ms; "
              f"pacing set-up (ready - off): {1000 * (medians['ready'] - medians['off']):+.0f} ms; "
              f"ready / stock {medians['ready'] / medians['stock']:.3f}x")
    if failed:
        print(f"FAILED RUNS: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
