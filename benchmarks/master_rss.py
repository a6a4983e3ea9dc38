"""A real master under a respawn flood: does its RSS stay flat?

Starts gunicorn (slow start, UvicornWorkers of ``examples/app.py``, ``-w 2``,
``--max-requests 10``, a timeline file) on 127.0.0.1, sends requests from one
client for ``--seconds`` (every worker is recycled after 10 requests, so the
master respawns several workers a second), and prints the master's RSS and
CPU time and the respawns so far every ``--every`` seconds::

    python -m benchmarks.master_rss --seconds 120

Everything it starts is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--every", type=float, default=10.0)
    args = parser.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(ROOT), EXAMPLE_BOOT_CPU="0.05",
                   GUNICORN_SLOWSTART_TIMELINE=os.path.join(tmp, "timeline.json"))
        log = open(os.path.join(tmp, "gunicorn.log"), "wb")
        master = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", "2",
             "-b", f"127.0.0.1:{port}", "--max-requests", "10", "-c", "python:gunicorn_slowstart.conf",
             "examples.app:app"], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
        proc = psutil.Process(master.pid)
        try:
            deadline = time.monotonic() + 60
            while not request(port) and time.monotonic() < deadline:
                time.sleep(0.2)
            start = time.monotonic()
            next_report, ok, failed = start, 0, 0
            while time.monotonic() - start < args.seconds:
                if request(port):
                    ok += 1
                else:
                    failed += 1
                if time.monotonic() >= next_report:
                    cpu = proc.cpu_times()
                    booted = Path(tmp, "gunicorn.log").read_text(errors="replace").count("Booting worker")
                    print(f"{time.monotonic() - start:6.0f} s: master RSS {proc.memory_info().rss / 2**20:6.1f} MiB"
                          f"  CPU {cpu.user + cpu.system:6.1f} s  workers booted {booted:6d}"
                          f"  requests ok {ok} failed {failed}", flush=True)
                    next_report += args.every
        finally:
            text = Path(tmp, "gunicorn.log").read_text(errors="replace")
            print(f"log: {text.count('flap')} flap lines, {text.count('before it was ready')} boot failures",
                  flush=True)
            children = proc.children(recursive=True)
            master.send_signal(signal.SIGTERM)
            try:
                master.wait(30)
            except subprocess.TimeoutExpired:
                master.kill()
                master.wait(5)
            for child in children:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
            log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
