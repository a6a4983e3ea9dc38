"""The slow-start master for real: gunicorn masters, forks and HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from support import GUNICORN_MAJOR, get, http_workers, peak_booting, ready_at, try_get, wait_for

pytestmark = pytest.mark.slow


def test_first_start_is_paced_by_readiness(server):
    srv = server(workers=6, boot_cpu=0.4, env={"GUNICORN_SLOWSTART_MAX_BATCH": "2",
                                               "GUNICORN_SLOWSTART_INITIAL": "1"})
    timeline = srv.wait_ready()
    procs = http_workers(timeline)
    assert len(procs) == 6
    assert all(p["ready"] is not None for p in procs)
    assert peak_booting(procs) <= 2
    assert min(p["ready"] for p in procs) < max(p["fork"] for p in procs)
    assert timeline["meta"]["cap"] == 2
    assert get(srv.port)[0] == 200
    log = srv.log()
    assert "slow start: spawned 1, booting 1, ready 0 of 6, window 1, cap 2" in log
    assert "slow start: 6/6 workers ready in" in log


def test_readiness_seen_from_the_first_heartbeat(server, tmp_path):
    """The master stamps readiness from the worker's first heartbeat, not on its next
    once-a-second main-loop pass: well under half a second later, even while the
    sibling workers burn CPU (an inotify watch wakes the master: about a millisecond;
    the bound is generous because the machine running the tests is shared)."""
    record = tmp_path / "notify"
    record.mkdir()
    srv = server(workers=3, worker_class="notify_record.RecordingWorker", boot_cpu=0.2,
                 env={"NOTIFY_RECORD_DIR": str(record)})
    timeline = srv.wait_ready()
    wall_t0 = timeline["wall_t0"]
    for proc in http_workers(timeline):
        first_notify = float((record / f"{proc['pid']}.notify").read_text())
        lag = wall_t0 + proc["ready"] - first_notify
        assert -0.01 <= lag <= 0.5, (proc, lag)


def test_worker_killed_mid_ramp_is_respawned_and_paced(server):
    srv = server(workers=6, boot_cpu=0.6, env={"GUNICORN_SLOWSTART_MAX_BATCH": "2"})
    wait_for(lambda: [p for p in srv.timeline().get("processes", []) if p["ready"]], 30, "a ready worker")
    victim = next(p["pid"] for p in srv.timeline()["processes"] if p["ready"])
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: srv.summary_done(), 60, "ramp done")
    wait_for(lambda: len(srv.workers()) == 6 and victim not in srv.workers(), 30, "6 workers again")
    timeline = wait_for(lambda: ready_count(srv) >= 6 and srv.timeline(), 30, "6 ready")
    procs = http_workers(timeline)
    assert len(procs) == 7
    assert any(p["pid"] == victim and p["exit_signal"] == signal.SIGKILL for p in procs)
    assert peak_booting(procs) <= 2


def ready_count(srv) -> int:
    procs = srv.timeline().get("processes", [])
    return sum(1 for p in procs if p["ready"] is not None and p["exit"] is None)


def test_ttin_and_ttou(server):
    srv = server(workers=2, boot_cpu=0.3)
    srv.wait_ready()
    for _ in range(3):
        srv.signal(signal.SIGTTIN)
        time.sleep(0.05)  # gunicorn coalesces identical pending signals; space them a little
    wait_for(lambda: ready_count(srv) == 5, 30, "5 ready workers after TTIN x3")
    srv.signal(signal.SIGTTOU)
    wait_for(lambda: len(srv.workers()) == 4 and ready_count(srv) == 4, 30, "4 workers after TTOU")
    meta = srv.timeline()["meta"]  # max_batch auto: a merged tail (< cap) and the background boot may join
    assert peak_booting(http_workers(srv.timeline())) <= 2 * meta["cap"] - 1 + meta["background"]


def test_sighup_is_a_rolling_reload(server):
    srv = server(workers=4, boot_cpu=0.3, env={"GUNICORN_SLOWSTART_MAX_BATCH": "2"})
    srv.wait_ready()
    before = set(srv.workers())
    results: list = []
    stop = threading.Event()

    def hammer():
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            results.append(try_get(srv.port, timeout=5))
            time.sleep(0.02)

    client = threading.Thread(target=hammer)
    client.start()
    try:
        wait_for(lambda: len(results) >= 5, 10, "requests before the reload")
        t_hup = time.time()
        srv.signal(signal.SIGHUP)
        wait_for(lambda: srv.summary_done(2), 60, "the reload ramp")
        wait_for(lambda: not (before & set(srv.workers())), 30, "old workers gone")
        n = len(results)
        wait_for(lambda: len(results) >= n + 5, 10, "requests after the reload")
    finally:
        stop.set()
        client.join(15)
    failed = [(i, r) for i, r in enumerate(results) if r is None or r[0] != 200]
    assert results and not failed, (failed, len(results), srv.tail(40))
    timeline = srv.timeline()
    procs = http_workers(timeline)
    assert len(procs) == 8
    t_rel = t_hup - timeline["wall_t0"]
    end = max(p["ready"] for p in procs)
    probes = [t_rel + i * 0.005 for i in range(int((end - t_rel) / 0.005) + 1)]
    assert min(ready_at(procs, t) for t in probes) >= 4, "fewer ready workers during the reload"
    assert "s, reload)" in srv.log()


def test_sigterm_mid_ramp_exits_cleanly(server):
    srv = server(workers=8, boot_cpu=1.0, env={"GUNICORN_SLOWSTART_MAX_BATCH": "1"})
    wait_for(lambda: srv.timeline().get("processes") or "spawned 1" in srv.log(), 30, "first fork")
    wait_for(lambda: srv.workers(), 10, "a worker process")
    srv.remember_children()
    start = time.monotonic()
    srv.signal(signal.SIGTERM)
    code = srv.wait_exit(5 + 1)
    assert code == 0
    assert time.monotonic() - start <= 6
    wait_for(lambda: not srv.leftovers(), 3, "no process left")


@pytest.mark.parametrize("app, codes", [("broken_import:app", (3, 4)), ("lifespan_fail:app", (3,))])
def test_broken_app_costs_one_fork(server, app, codes):
    srv = server(app=app, workers=8, env={"GUNICORN_SLOWSTART_INITIAL": "1"})  # auto: tests/test_first_step.py
    code = srv.wait_exit(30)
    assert code in codes, srv.tail()
    assert srv.log().count("Booting worker with pid") == 1, srv.tail()
    assert "Traceback" not in srv.log().split("Shutting down: Master")[-1]


@pytest.mark.parametrize("worker_class, extra", [
    ("sync", ()),
    ("gthread", ("--threads", "2")),
    ("sync", ("--preload",)),
    ("uvicorn.workers.UvicornWorker", ()),
])
def test_other_worker_classes(server, worker_class, extra):
    app = "wsgi_app:app" if worker_class in ("sync", "gthread") else "examples.app:app"
    srv = server(app=app, workers=4, worker_class=worker_class, args=extra, boot_cpu=0.2)
    timeline = srv.wait_ready()
    procs = http_workers(timeline)
    assert len(procs) == 4 and all(p["ready"] is not None for p in procs)
    meta = timeline["meta"]  # auto cap: a merged tail and the background boot may join
    assert peak_booting(procs) <= 2 * meta["cap"] - 1 + meta["background"]
    assert get(srv.port)[0] == 200


def test_user_config_file_with_hooks_before_and_after_install(server, tmp_path):
    marks = tmp_path / "marks"
    conf = tmp_path / "slowstart.conf.py"
    conf.write_text(f"""
def on_starting(server):
    open({str(marks)!r}, "a").write("on_starting\\n")

from gunicorn_slowstart import install
install(globals(), max_batch=1)

def pre_fork(server, worker):
    open({str(marks)!r}, "a").write("pre_fork\\n")

slowstart_initial = 2
""")
    srv = server(workers=3, config=str(conf), boot_cpu=0.2)
    timeline = srv.wait_ready()
    assert timeline["meta"]["cap"] == 1
    assert marks.read_text().splitlines().count("pre_fork") == 3
    assert "on_starting" in marks.read_text()
    assert peak_booting(http_workers(timeline)) == 1


def test_console_script_flags(server):
    srv = server(workers=3, config="", command=("-m", "gunicorn_slowstart.cli"),
                 args=("--slowstart-max-batch", "1", "--slowstart-mode", "ready"), boot_cpu=0.2)
    timeline = srv.wait_ready()
    assert timeline["meta"]["cap"] == 1 and timeline["meta"]["mode"] == "ready"


@pytest.mark.parametrize("env, needle", [
    ({"GUNICORN_SLOWSTART_MAX_BATCH": "0"}, "GUNICORN_SLOWSTART_MAX_BATCH must be a whole number >= 1"),
    ({"GUNICORN_SLOWSTART_MODE": "fast"}, "GUNICORN_SLOWSTART_MODE must be one of"),
    ({"GUNICORN_SLOWSTART_DELAY": "soon"}, "GUNICORN_SLOWSTART_DELAY must be a number"),
    ({"GUNICORN_SLOWSTART_MAX_BACH": "2"}, "unknown slow-start setting GUNICORN_SLOWSTART_MAX_BACH"),
])
def test_invalid_setting_refused_before_any_fork(server, env, needle):
    srv = server(workers=4, env=env)
    code = srv.wait_exit(20)
    assert code != 0
    log = srv.log()
    assert needle in log
    assert "Booting worker" not in log and "Traceback" not in log


def test_invalid_flag_refused_by_console_script(server):
    srv = server(workers=2, config="", command=("-m", "gunicorn_slowstart.cli"),
                 args=("--slowstart-initial", "-1"))
    assert srv.wait_exit(20) != 0
    # the flag as typed
    assert "argument --slowstart-initial: must be a whole number >= 1 or 'auto', got '-1'" in srv.log()
    assert "Booting worker" not in srv.log()


def test_timer_mode_batches(server):
    srv = server(workers=4, boot_cpu=0.1, env={"GUNICORN_SLOWSTART_MODE": "timer",
                                               "GUNICORN_SLOWSTART_DELAY": "0.5",
                                               "GUNICORN_SLOWSTART_MAX_BATCH": "2"})
    timeline = srv.wait_ready()
    forks = sorted(p["fork"] for p in http_workers(timeline))
    # batches of 1, 2, then the last one (capped at 2), 0.5 s apart: a batch's forks are
    # close together, much closer than the batches are to each other
    assert forks[1] - forks[0] >= 0.45 and forks[3] - forks[1] >= 0.45
    assert forks[2] - forks[1] < 0.5 * (forks[1] - forks[0])


def test_off_mode_is_stock_gunicorn(server):
    srv = server(workers=4, boot_cpu=0.2, env={"GUNICORN_SLOWSTART_MODE": "off"})
    timeline = srv.wait_ready()
    forks = sorted(p["fork"] for p in http_workers(timeline))
    first_ready = min(p["ready"] for p in http_workers(timeline))
    assert forks[-1] < first_ready, timeline["processes"]  # all at once: nothing waits for a readiness
    assert "slow start: spawned" not in srv.log()


@pytest.mark.skipif(GUNICORN_MAJOR < 24, reason="gunicorn 23 has no control socket")
def test_control_socket_scale_up_is_paced(server):
    from gunicorn.ctl.client import ControlClient

    srv = server(workers=1, boot_cpu=0.4, env={"GUNICORN_SLOWSTART_MAX_BATCH": "2"})
    srv.wait_ready()
    wait_for(lambda: "Control socket listening" in srv.log(), 10, "the control socket")
    with ControlClient(str(srv.tmp / "ctl.sock"), timeout=10) as client:
        client.send_command("worker add 5")
    wait_for(lambda: ready_count(srv) == 6, 60, "6 ready workers")
    assert peak_booting(http_workers(srv.timeline())) <= 2
    wait_for(lambda: "6/6 workers ready in" in srv.log(), 10, "the scale-up summary")
    assert "s, scale)" in srv.log()


def test_console_script_reads_gunicorn_cmd_args(server):
    srv = server(workers=2, config="", command=("-m", "gunicorn_slowstart.cli"), boot_cpu=0.1,
                 env={"GUNICORN_CMD_ARGS": "--slowstart-max-batch 1 --slowstart-growth double"})
    timeline = srv.wait_ready()
    assert timeline["meta"]["cap"] == 1
