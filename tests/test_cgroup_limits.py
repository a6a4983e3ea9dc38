"""Tests that need a real cgroup limit: the limit tool itself (``benchmarks/cpulimit.py``)
and real masters run inside a CPU quota, a memory limit or a pids limit.

They need root and writable cgroup controllers (``cpu``, ``memory``, ``pids``); where a
cgroup cannot be made each test skips.  Every cgroup is removed when its test ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, cgroup, get, http_workers, peak_booting, recv_all, run_python, wait_for
from test_lifecycle import LIMIT_MB, WORKER_MB, probe, status, status_env

from benchmarks.cpulimit import CpuLimit, CpuLimitUnavailable, MemoryLimit, main

# -- the limit tool --------------------------------------------------------------------


_PROBE: list[str | None] = []


@pytest.fixture
def cgroups() -> None:
    """Skip unless a CPU-limited cgroup can really be made here (probed once)."""
    if not _PROBE:
        try:
            with CpuLimit(0.5):
                _PROBE.append(None)
        except CpuLimitUnavailable as exc:
            _PROBE.append(str(exc))
    if _PROBE[0] is not None:
        pytest.skip(f"cannot create a CPU-limited cgroup: {_PROBE[0]}")


REPORT = ("from gunicorn_slowstart.cpus import usable_cpus, cpu_report\n"
          "print(usable_cpus()); print(cpu_report().source)")


@pytest.mark.parametrize("cpus,quota", [(0.5, "0.50"), (1.5, "1.50")])
def test_real_cgroup_quota(cgroups: None, cpus: float, quota: str) -> None:
    with CpuLimit(cpus) as limit:
        assert limit.path and os.path.isdir(limit.path)
        usable, source = run_python(REPORT, preexec_fn=limit.preexec_fn()).splitlines()
    assert usable == "1"
    assert source == f"cgroup v{limit.version} quota {quota} CPU at {limit.path}"
    assert not os.path.exists(limit.path)


def test_real_cgroup_add_and_pids(cgroups: None) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        with CpuLimit(0.5) as limit:
            assert limit.pids() == []
            limit.add(child.pid)
            assert limit.pids() == [child.pid]
        assert child.poll() is None  # moved back out, not killed
        assert not os.path.exists(limit.path)
    finally:
        child.communicate(b"", timeout=10)


def test_real_cgroup_removed_when_the_body_raises(cgroups: None) -> None:
    code = "import sys; sys.stdin.read()"  # lives until we close its stdin
    limit = CpuLimit(0.5)
    child = None
    try:
        with pytest.raises(ZeroDivisionError), limit:
            child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     preexec_fn=limit.preexec_fn())
            assert child.pid in limit.pids()
            1 / 0  # noqa: B018
        assert limit.path and not os.path.exists(limit.path)
        assert child.poll() is None  # never killed: it went back to the parent cgroup
        assert not any(limit.path.rsplit("/", 1)[1] in line
                       for line in Path(f"/proc/{child.pid}/cgroup").read_text().splitlines())
    finally:
        if child is not None:
            child.communicate(b"", timeout=10)


def test_real_cgroup_cli(cgroups: None, capfd: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    code = "from gunicorn_slowstart.cpus import usable_cpus; print(usable_cpus()); raise SystemExit(3)"
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    assert main(["0.5", "--", sys.executable, "-c", code]) == 3
    out, err = capfd.readouterr()
    assert out.strip() == "1"
    assert "cpulimit: 0.5 CPU in cgroup" in err


def test_not_root_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(CpuLimitUnavailable, match="not root"), CpuLimit(0.5):
        pass


def test_cli_reports_unavailable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["0.5", "--", "true"]) == 2
    assert "unavailable: not root" in capsys.readouterr().err


def test_cli_needs_a_command() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["0.5", "--"])
    assert exited.value.code == 2


def test_too_small_a_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        CpuLimit(0.001)


SAMPLE_BUSY_THEN_IDLE = """
import time
from gunicorn_slowstart.cpus import IdleCpuSampler
sampler = IdleCpuSampler()
print(sampler.mode)
sampler.sample(time.monotonic())
start = time.monotonic()
while time.monotonic() - start < 0.4:  # spin: the quota caps this at half a CPU
    pass
print(sampler.sample(time.monotonic()))
time.sleep(0.3)
print(sampler.sample(time.monotonic()))
"""


def test_real_sampler_inside_a_quota(cgroups: None) -> None:
    with CpuLimit(0.5) as limit:
        mode, busy, idle = run_python(SAMPLE_BUSY_THEN_IDLE, preexec_fn=limit.preexec_fn()).split()
    if mode != "cgroup":
        pytest.skip("the cgroup's CPU usage is not measurable here (cpuacct not mirrored)")
    assert 0.4 < float(idle) <= 0.5
    assert 0.0 <= float(busy) < float(idle) - 0.1


# -- real masters inside a limit ------------------------------------------------------


@pytest.mark.slow
def test_cap_follows_the_cgroup_cpu_quota(server):
    """The container case: the host shows every CPU, a cgroup quota of 0.5 CPU allows one."""
    with cgroup(CpuLimit(0.5), "CPU") as limit:
        srv = server(workers=3, boot_cpu=0.2, preexec_fn=limit.preexec_fn())
        timeline = srv.wait_ready(60)
        assert timeline["meta"]["cpus"] == 1 and timeline["meta"]["cap"] == 1
        assert peak_booting(http_workers(timeline)) == 1 + timeline["meta"]["background"]  # + 1 at SCHED_IDLE
        assert get(srv.port)[0] == 200
        srv.stop()


@pytest.mark.slow
def test_workers_that_do_not_fit_in_the_memory_limit_are_not_forked(server):
    """-w 8 x 60 MiB in a 320 MiB cgroup: stock (and paced) forking OOM-crash-loops here."""
    with cgroup(MemoryLimit(LIMIT_MB), "memory") as limit, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as statsd:
        statsd.bind(("127.0.0.1", 0))
        statsd.setblocking(False)
        srv = server(app="memory_app:app", workers=8, preexec_fn=limit.preexec_fn(),
                     env=status_env({"MEMAPP_MB": str(WORKER_MB)}),
                     args=("--statsd-host", f"127.0.0.1:{statsd.getsockname()[1]}"))
        wait_for(lambda: status(srv).get("state") == "memory held", 60, "the ramp held for memory")
        # on a busy machine the memory guard may hold the first step before admission does
        wait_for(lambda: status(srv).get("booting") == 0 and "workers fit in" in status(srv).get("detail", ""),
                 30, "the admitted workers ready, held by admission")
        record = status(srv)
        assert 2 <= record["ready"] <= 4, record
        assert record["target"] == 8 and record["pid"] == srv.pid
        assert f"workers fit in {LIMIT_MB} MiB" in record["detail"], record
        log = srv.log()
        assert log.count(f"slow start: holding the ramp: {record['ready']} of 8 workers fit in {LIMIT_MB} MiB") == 1
        assert get(srv.port)[0] == 200
        # the probe: enough for 2, not for all 8, and it says why
        assert probe(srv, "--min-ready", "2", "--max-age", "30").returncode == 0
        full = probe(srv, "--min-ready-fraction", "1")
        assert full.returncode == 1 and "memory held" in full.stderr and "need 8" in full.stderr, full
        events = wait_for(lambda: srv.timeline().get("events"), 10, "the hold in the timeline")
        assert any(e[1] == "memory held" and "fit in" in e[2] for e in events), events  # the guard's may come first
        assert limit.oom_kills() == 0, "the kernel OOM-killed a worker"
        log = srv.log()  # gunicorn's SIGKILL line is only for the booting workers the memory guard stopped
        assert srv.proc.poll() is None and log.count("Perhaps out of memory") == log.count("memory guard: stopping")
        seen: list[str] = []
        wait_for(lambda: seen.extend(recv_all(statsd)) or "gunicorn.slowstart.memory_held:1|g" in seen, 10,
                 "the memory_held gauge")
        # memory frees (here: the pod's limit is raised): the ramp resumes to all 8
        limit.set_memory(1024)
        wait_for(lambda: status(srv).get("ready") == 8 and status(srv).get("state") == "serving", 60,
                 "all 8 ready after the limit was raised")
        assert "memory recovered, ramp resumes" in srv.log()
        wait_for(lambda: seen.extend(recv_all(statsd)) or "gunicorn.slowstart.memory_held:0|g" in seen, 10,
                 "the memory_held gauge back at 0")
        srv.stop()
        assert status(srv)["state"] == "stopping"
        assert probe(srv).returncode == 1
        assert limit.oom_kills() == 0


@pytest.mark.slow
def test_long_workers_that_do_not_fit_in_the_memory_limit_are_not_forked(server):
    """6 long workers x 60 MiB beside an HTTP worker in a 320 MiB cgroup: they have a cost of
    their own, learnt from the first ones ready; the rest wait, HTTP serves, nothing is OOM-killed."""
    with cgroup(MemoryLimit(LIMIT_MB), "memory") as limit:
        srv = server(app="memory_app:app", workers=1, preexec_fn=limit.preexec_fn(),
                     env=status_env({"MEMAPP_MB": "1", "MEMJOB_MB": str(WORKER_MB),
                                     "GUNICORN_SLOWSTART_LONG_WORKER": "memory_job:run",
                                     "GUNICORN_SLOWSTART_LONG_WORKERS": "6"}))
        wait_for(lambda: "slow start: holding the long workers: " in srv.log(), 60, "the long workers held")
        log = srv.log()
        assert "memory admission: a long worker costs" in log
        held = next(x for x in log.splitlines() if "holding the long workers" in x)
        assert "of 6 long workers fit in 320 MiB" in held, held
        assert "holding the ramp" not in log, "HTTP workers are not held by the long workers' room"
        long_alive = lambda: [p for p in srv.timeline()["processes"] if p["kind"] == "long" and p["exit"] is None]  # noqa: E731
        wait_for(lambda: long_alive() and all(p["ready"] is not None for p in long_alive()), 30,
                 "the admitted long workers ready")
        assert 2 <= len(long_alive()) <= 4, long_alive()
        assert get(srv.port)[0] == 200
        assert limit.oom_kills() == 0, "the kernel OOM-killed a process"
        events = [e[1] for e in srv.timeline().get("events", [])]
        assert "long workers held" in events
        limit.set_memory(1024)  # memory frees: the rest come
        wait_for(lambda: len(long_alive()) == 6 and all(p["ready"] is not None for p in long_alive()), 60,
                 "all 6 long workers after the limit was raised")
        assert "long workers: memory recovered, they resume" in srv.log()
        assert limit.oom_kills() == 0 and srv.proc.poll() is None
        srv.stop()


@pytest.mark.slow
def test_workers_that_do_not_fit_under_the_pids_limit_are_not_forked(server):
    """8 tasks for the whole server: stock gunicorn's fork fails with EAGAIN and the master dies."""
    with cgroup(MemoryLimit(pids=8), "pids") as limit:
        srv = server(app="memory_app:app", workers=8, preexec_fn=limit.preexec_fn(),
                     env=status_env({"MEMAPP_MB": "1"}))
        wait_for(lambda: status(srv).get("state") == "memory held", 60, "the ramp held for the pids limit")
        wait_for(lambda: status(srv).get("booting") == 0, 30, "the admitted workers to be ready")
        record = status(srv)
        assert 3 <= record["ready"] <= 7 and "under the pids limit of 8 tasks" in record["detail"], record
        assert get(srv.port)[0] == 200
        assert srv.proc.poll() is None
        assert "cannot fork" not in srv.log() and "Traceback" not in srv.log()
        srv.stop()


@pytest.mark.slow
def test_a_recycle_without_room_for_the_replacement_is_cancelled(server):
    """3 workers fill the memory cgroup: make before break has no room, so the old one serves on."""
    with cgroup(MemoryLimit(LIMIT_MB), "memory") as limit:
        srv = server(app="memory_app:app", workers=3, preexec_fn=limit.preexec_fn(),
                     env=status_env({"MEMAPP_MB": str(WORKER_MB), "GUNICORN_SLOWSTART_MAX_WORKER_AGE": "2"}))
        srv.wait_ready(60)
        wait_for(lambda: "does not fit" in srv.log(), 30, "the cancelled recycle")
        assert "recycling paused for 60 s" in srv.log()
        wait_for(lambda: status(srv).get("state") == "serving" and status(srv).get("ready") == 3, 20, "3 serving")
        assert get(srv.port)[0] == 200
        assert limit.oom_kills() == 0 and srv.proc.poll() is None
        srv.stop()
