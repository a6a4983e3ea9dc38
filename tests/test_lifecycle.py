"""A worker's whole life on real masters: memory admission in a memory cgroup, rolling
recycling by age and by memory, the status file and the probe."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from support import ROOT, get, wait_for

pytestmark = pytest.mark.slow

WORKER_MB = 60  # each worker holds this much (tests/apps/memory_app.py), ~67 MiB USS in all
LIMIT_MB = 320  # master ~40 MiB + 3 x 67 MiB + 10 % headroom: 3 of 8 fit; 8 would need ~580 MiB


def status(srv) -> dict:
    try:
        return json.loads((srv.tmp / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def probe(srv, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gunicorn_slowstart.probe", str(srv.tmp / "status.json"), *args],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


def status_env(extra: dict | None = None) -> dict:
    env = {"GUNICORN_SLOWSTART_STATUS_FILE": "status.json"}  # relative: the master's cwd is srv.tmp
    env.update(extra or {})
    return env


def client(port: int, until: float, results: list, retried: list | None = None) -> None:
    """Sequential requests until ``until`` (bounded: each has a 5 s time-out).

    A connection closed before any byte of a response is retried once, as browsers and
    urllib3 retry an idempotent request: uvicorn, told to stop, closes a connection it
    accepted but had not read yet (a race every rolling restart of uvicorn has, stock
    gunicorn's included); ``retried`` counts those."""
    while time.monotonic() < until:
        for attempt in range(2):
            try:
                results.append(get(port, timeout=5.0)[0])
            except http.client.RemoteDisconnected as exc:
                if attempt == 0 and retried is not None:
                    retried.append(repr(exc))
                    continue
                results.append(repr(exc))
            except OSError as exc:
                results.append(repr(exc))
            break
        time.sleep(0.02)


def test_workers_recycled_by_age_without_a_failed_request(server):
    srv = server(workers=3, boot_cpu=0.05, env=status_env({"GUNICORN_SLOWSTART_MAX_WORKER_AGE": "4"}))
    srv.wait_ready(60)
    results: list = []
    retried: list = []
    start = time.monotonic()
    thread = threading.Thread(target=client, args=(srv.port, start + 16, results, retried), daemon=True)
    thread.start()
    thread.join(40)
    assert not thread.is_alive()
    failed = [r for r in results if r != 200]
    assert not failed and len(results) > 50, (failed[:5], len(results))
    assert len(retried) <= 3, retried  # uvicorn's stop race: rare (about 1 in 700 requests here)
    http = [p for p in srv.timeline()["processes"] if p["kind"] == "http"]
    assert sum(1 for p in http if p["ready"] is not None) >= 9, srv.tail()
    assert srv.log().count("slow start: recycling worker") >= 6
    reasons = [p["stop"]["reason"] for p in http if p["stop"]]
    assert reasons.count("recycle") >= 3 and set(reasons) == {"recycle"}, reasons  # the file lags up to 1 s
    assert "max_worker_age" in srv.log()
    wait_for(lambda: status(srv).get("state") == "serving" and status(srv).get("ready") >= 3, 20, "serving")
    assert probe(srv, "--min-ready-fraction", "1", "--max-age", "30").returncode == 0


def test_a_worker_that_grows_past_max_worker_memory_is_replaced(server):
    srv = server(app="memory_app:app", workers=2,
                 env=status_env({"MEMAPP_MB": "10", "GUNICORN_SLOWSTART_MAX_WORKER_MEMORY": "80"}))
    srv.wait_ready(60)
    pid = int(get(srv.port, "/grow?mb=100")[1])
    wait_for(lambda: f"recycling worker {pid} (USS" in srv.log(), 20, "the memory recycle")
    wait_for(lambda: pid not in srv.workers(), 20, f"worker {pid} to be stopped")
    wait_for(lambda: status(srv).get("ready") == 2 and status(srv).get("booting") == 0, 20, "2 ready")
    assert "max_worker_memory 80 MiB" in srv.log()
    assert get(srv.port)[0] == 200
    srv.signal(signal.SIGHUP)
    wait_for(lambda: status(srv).get("generation") == 2 and status(srv).get("state") == "serving", 30,
             "generation 2 serving after SIGHUP")


def test_admission_measures_again_what_workers_cost_once_they_grew(server, tmp_path):
    """An app grows after it is ready (caches warm up): the cost sampled at readiness would
    admit too many workers.  A ramp that begins later measures the ready workers again."""
    import psutil

    grow = tmp_path / "grow"
    srv = server(app="memory_app:app", workers=2,
                 env={"MEMAPP_MB": "10", "MEMAPP_GROW_IF": str(grow), "MEMAPP_GROW_MB": "60"})
    srv.wait_ready(60)
    srv.signal(signal.SIGTTIN)  # a ramp: the two ready workers are measured (~18 MiB USS)
    wait_for(lambda: "memory admission: a worker costs" in srv.log(), 20, "the first cost")
    wait_for(lambda: len(srv.workers()) == 3 and srv.timeline()["processes"][-1]["ready"] is not None, 30,
             "3 ready")
    grow.write_text("")
    wait_for(lambda: all(psutil.Process(pid).memory_full_info().uss > 60 * 2**20 for pid in srv.workers()), 30,
             "every worker grown by 60 MiB")
    srv.signal(signal.SIGTTIN)  # a new ramp: the samples predate it
    wait_for(lambda: "memory admission: a worker now costs" in srv.log(), 20, "the cost measured again")
    line = next(x for x in srv.log().splitlines() if "a worker now costs" in x)
    assert float(line.split("now costs ~")[1].split()[0]) > 60, line


def test_a_replacement_that_fails_to_boot_cancels_the_recycle(server, tmp_path):
    """The old worker serves on and recycling pauses: a broken environment must not
    stop a serving master through max_boot_failures."""
    crash = tmp_path / "broken"
    srv = server(app="memory_app:app", workers=2,
                 env=status_env({"MEMAPP_MB": "1", "MEMAPP_CRASH_IF": str(crash),
                                 "GUNICORN_SLOWSTART_MAX_WORKER_AGE": "2",
                                 "GUNICORN_SLOWSTART_MAX_BOOT_FAILURES": "2"}))
    srv.wait_ready(60)
    crash.write_text("")
    wait_for(lambda: "failed to boot" in srv.log(), 30, "the cancelled recycle")
    assert "recycling paused for 60 s" in srv.log()
    assert srv.proc.poll() is None, srv.tail()
    wait_for(lambda: status(srv).get("ready") == 2 and status(srv).get("booting") == 0, 20, "2 serving")
    assert get(srv.port)[0] == 200
    assert "consecutive boot failures; last" not in srv.log()  # the halt reason
