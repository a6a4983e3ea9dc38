"""The long-worker pool for real: a master, its HTTP workers, a pool manager, long workers."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from support import get, peak_booting, ready_at, wait_for

pytestmark = pytest.mark.slow

POOL = {"GUNICORN_SLOWSTART_LONG_WORKER": "examples.jobs:run"}


def long_workers(srv) -> list[dict]:
    return [p for p in srv.timeline().get("processes", []) if p["kind"] == "long"]


def alive_long(srv) -> list[dict]:
    return [p for p in long_workers(srv) if p["exit"] is None]


def pool_processes(srv) -> list[psutil.Process]:
    procs = []
    for proc in srv.children():
        try:
            if "long worker" in " ".join(proc.cmdline()):
                procs.append(proc)
        except psutil.NoSuchProcess:
            pass
    return procs


def test_one_boot_budget_for_http_and_long_workers(server):
    srv = server(workers=4, boot_cpu=0.3, env={**POOL, "GUNICORN_SLOWSTART_LONG_WORKERS": "6",
                                               "GUNICORN_SLOWSTART_MAX_BATCH": "2"})
    srv.wait_ready()
    wait_for(lambda: len([p for p in alive_long(srv) if p["ready"]]) == 6, 60, "6 ready long workers")
    procs = srv.timeline()["processes"]
    assert len(procs) == 10 and all(p["ready"] is not None for p in procs)
    assert peak_booting(procs) <= 2
    first_long = min(p["fork"] for p in procs if p["kind"] == "long")
    assert first_long >= min(p["ready"] for p in procs if p["kind"] == "http"), "HTTP workers go first"
    assert get(srv.port)[0] == 200
    titles = sorted(" ".join(p.cmdline()).strip() for p in pool_processes(srv))
    assert "gunicorn: long worker [examples.jobs:run] #1" in titles
    assert any(t.startswith("gunicorn: long worker manager") for t in titles)


def test_long_worker_killed_comes_back(server):
    srv = server(workers=1, boot_cpu=0.2, env={**POOL, "GUNICORN_SLOWSTART_LONG_WORKERS": "2"})
    wait_for(lambda: len([p for p in alive_long(srv) if p["ready"]]) == 2, 60, "2 ready long workers")
    victim = alive_long(srv)[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len([p for p in alive_long(srv) if p["ready"]]) == 2
             and victim not in [p["pid"] for p in alive_long(srv)], 30, "the long worker replaced")
    assert "exited with signal 9" in srv.log()


def test_crash_looping_target_backs_off_and_keeps_retrying(server):
    srv = server(workers=1, boot_cpu=0.1, env={"GUNICORN_SLOWSTART_LONG_WORKER": "pool_broken:run",
                                               "GUNICORN_SLOWSTART_LONG_WORKERS": "1"})
    wait_for(lambda: len(long_workers(srv)) >= 5, 60, "five forks of the crashing long worker")
    forks = sorted(p["fork"] for p in long_workers(srv))[:5]
    assert "no longer restarting" not in srv.log(), "a pool never gives up (it retries every 60 s at most)"
    gaps = [b - a for a, b in zip(forks, forks[1:], strict=False)]
    assert all(later > earlier * 1.5 for earlier, later in zip(gaps, gaps[1:], strict=False)), gaps
    assert "RuntimeError: job queue unreachable" in srv.log()
    assert get(srv.port)[0] == 200  # the HTTP server keeps serving


def test_sigterm_stops_everything(server):
    srv = server(workers=2, boot_cpu=0.2, env={**POOL, "GUNICORN_SLOWSTART_LONG_WORKERS": "3"})
    wait_for(lambda: len(alive_long(srv)) == 3, 60, "3 long workers")
    srv.remember_children()
    start = time.monotonic()
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(5 + 1) == 0
    assert time.monotonic() - start <= 6
    procs = srv.timeline()["processes"]
    assert [p["stop"]["reason"] for p in procs if p["kind"] == "long"] == ["shutdown"] * 3, procs
    wait_for(lambda: not srv.leftovers(), 2, "no process left")


def test_sigkill_of_master_leaves_no_orphan(server):
    srv = server(workers=2, boot_cpu=0.2, env={**POOL, "GUNICORN_SLOWSTART_LONG_WORKERS": "3"})
    wait_for(lambda: len(pool_processes(srv)) == 4, 60, "a manager and 3 long workers")
    pool = [p.pid for p in pool_processes(srv)]
    srv.remember_children()
    srv.orphans_expected = True  # its uvicorn HTTP workers, as with stock gunicorn
    srv.signal(signal.SIGKILL)
    srv.wait_exit(5)

    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def gone():
        return not [pid for pid in pool if running(pid)]

    wait_for(gone, 3, "every pool process to exit by itself")


def test_sighup_rolls_the_long_workers(server):
    srv = server(workers=1, boot_cpu=0.2, env={**POOL, "GUNICORN_SLOWSTART_LONG_WORKERS": "3",
                                               "GUNICORN_SLOWSTART_MAX_BATCH": "1"})
    wait_for(lambda: len([p for p in alive_long(srv) if p["ready"]]) == 3, 60, "3 ready long workers")
    old = {p["pid"] for p in alive_long(srv)}
    t_hup = time.time()
    srv.signal(signal.SIGHUP)
    wait_for(lambda: len([p for p in alive_long(srv) if p["ready"] and p["pid"] not in old]) == 3
             and not old & {p["pid"] for p in alive_long(srv)}, 60, "3 new long workers, old ones gone")
    timeline = srv.timeline()
    procs = [p for p in timeline["processes"] if p["kind"] == "long"]
    t0 = t_hup - timeline["wall_t0"]
    for proc in procs:
        if proc["pid"] in old:
            assert proc["exit_signal"] == signal.SIGTERM or proc["exit_code"] is not None
            assert proc["stop"]["reason"] == "reload", proc
            assert ready_at(procs, proc["exit"] - 0.001) >= 3, "an old one stopped before a new one was ready"
    assert all(p["fork"] >= t0 - 0.05 for p in procs if p["pid"] not in old)


def test_install_with_a_pool_object(server, tmp_path):
    conf = tmp_path / "pool.conf.py"
    conf.write_text("from gunicorn_slowstart import install, LongWorkerPool\n"
                    "pool = LongWorkerPool('examples.jobs:run_with_setup', size=2)\n"
                    "install(globals(), long_workers=pool)\n")
    srv = server(workers=1, boot_cpu=0.1, config=str(conf))
    wait_for(lambda: len([p for p in alive_long(srv) if p["ready"]]) == 2, 60, "2 ready long workers")
    for proc in long_workers(srv):
        assert proc["ready"] - proc["fork"] >= 0.2  # ready() is called after its own set-up


@pytest.mark.parametrize("target, needle", [
    ("no_such_module:run", "no module named 'no_such_module'"),
    ("examples.jobs:nope", "defines no 'nope'"),
    ("examples.jobs", "must be 'package.module:function'"),
])
def test_unimportable_target_refused_before_any_fork(server, target, needle):
    srv = server(workers=2, env={"GUNICORN_SLOWSTART_LONG_WORKER": target,
                                 "GUNICORN_SLOWSTART_LONG_WORKERS": "2"})
    assert srv.wait_exit(20) != 0
    assert needle in srv.log()
    assert "Booting worker" not in srv.log() and "Traceback" not in srv.log()


def test_off_mode_starts_the_long_workers_at_once(server):
    srv = server(workers=2, boot_cpu=0.1, env={**POOL, "GUNICORN_SLOWSTART_LONG_WORKERS": "3",
                                               "GUNICORN_SLOWSTART_MODE": "off"})
    wait_for(lambda: len([p for p in alive_long(srv) if p["ready"]]) == 3, 60, "3 ready long workers")
    forks = [p["fork"] for p in long_workers(srv)]
    assert max(forks) - min(forks) < 0.5


def test_sighup_to_a_smaller_pool_stops_the_surplus(server, tmp_path):
    conf = tmp_path / "size.conf.py"
    size = tmp_path / "size"
    size.write_text("3")
    conf.write_text("from gunicorn_slowstart import install\ninstall(globals())\n"
                    f"slowstart_long_workers = int(open({str(size)!r}).read())\n"
                    "slowstart_long_worker = 'examples.jobs:run'\n")
    srv = server(workers=1, boot_cpu=0.1, config=str(conf))
    wait_for(lambda: len([p for p in alive_long(srv) if p["ready"]]) == 3, 60, "3 ready long workers")
    old = {p["pid"] for p in alive_long(srv)}
    size.write_text("1")
    srv.signal(signal.SIGHUP)
    wait_for(lambda: len(alive_long(srv)) == 1 and not old & {p["pid"] for p in alive_long(srv)}
             and alive_long(srv)[0]["ready"], 60, "one new long worker, the old ones gone")


def test_sighup_restarts_a_backing_off_pool_at_once(server, tmp_path):
    pkg = tmp_path / "jobpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "job.py").write_text("raise RuntimeError('broken release')\ndef run():\n    pass\n")
    srv = server(workers=1, boot_cpu=0.1, env={"PYTHONPATH": f"{tmp_path}:{srv_path()}",
                                               "GUNICORN_SLOWSTART_LONG_WORKER": "jobpkg.job:run",
                                               "GUNICORN_SLOWSTART_LONG_WORKERS": "1"})
    wait_for(lambda: len([p for p in long_workers(srv) if p["exit"] is not None]) >= 3, 60,
             "three failures: the pool backs off 4 s now")
    (pkg / "job.py").write_text("import time\ndef run():\n    while True:\n        time.sleep(0.5)\n")
    srv.signal(signal.SIGHUP)
    wait_for(lambda: [p for p in alive_long(srv) if p["ready"]], 30, "the fixed long worker running")


def srv_path() -> str:
    from support import APPS, ROOT

    return f"{ROOT}:{APPS}"


def test_check_target_does_not_import_the_package(tmp_path, monkeypatch):
    """The master must not run a heavy package __init__ just to check a target exists."""
    import sys

    from gunicorn_slowstart.pool import check_target

    pkg = tmp_path / "heavypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('imported in the master')\n")
    (pkg / "jobs.py").write_text("def run():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    check_target("heavypkg.jobs:run")
    assert "heavypkg" not in sys.modules
    with pytest.raises(ValueError, match="no module named 'heavypkg.nope'"):
        check_target("heavypkg.nope:run")
