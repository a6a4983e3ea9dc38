"""Hardening from an adversarial trial (issue #11), with real gunicorn masters.

Each test failed before its fix: a timeline path that is a device or a FIFO
was replaced by a file; hung long workers held back an HTTP respawn until
``ready_timeout``; a worker dying right after ready was respawned at once,
forever; a pool gave up after 5 crashed processes; a long worker's own
children outlived it; odd numbers were accepted; reload step lines said
"ready 0 of N" while N old workers served.
"""

from __future__ import annotations

import os
import signal
import stat

import pytest
from support import alive, get, http_workers, try_get, wait_for

pytestmark = pytest.mark.slow


def fault_dir(tmp_path):
    path = tmp_path / "fault"
    path.mkdir()
    return path


# -- 1. the timeline writes only where the path is absent or a regular file -------------


def test_timeline_leaves_a_char_device_and_a_fifo_as_they_are(server, tmp_path):
    device, fifo = tmp_path / "null", tmp_path / "pipe"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null of our own
    os.mkfifo(fifo)
    servers = [server(workers=2, boot_cpu=0.1, env={"GUNICORN_SLOWSTART_TIMELINE": str(path)})
               for path in (device, fifo)]
    for srv in servers:
        wait_for(lambda srv=srv: srv.summary_done(), 60, "the ramp summary")
        assert get(srv.port)[0] == 200, "the server serves"
    assert stat.S_ISCHR(os.lstat(device).st_mode) and os.lstat(device).st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    for srv, what in zip(servers, ("a character device", "a FIFO"), strict=True):
        warnings = [line for line in srv.log().splitlines() if "cannot write timeline" in line]
        assert len(warnings) == 1 and f"it is {what}, not a regular file" in warnings[0], srv.tail()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".slowstart-")], "no temp file left"


# -- 3. hung long workers never delay an HTTP respawn -----------------------------------


def test_long_workers_hanging_at_import_do_not_delay_an_http_respawn(server):
    srv = server(workers=2, boot_cpu=0.1, env={
        "GUNICORN_SLOWSTART_LONG_WORKER": "long_hang:run", "GUNICORN_SLOWSTART_LONG_WORKERS": "2",
        "GUNICORN_SLOWSTART_MAX_BATCH": "2", "GUNICORN_SLOWSTART_READY_TIMEOUT": "300"})
    srv.wait_ready()
    wait_for(lambda: len([p for p in srv.timeline()["processes"] if p["kind"] == "long"]) == 2, 30,
             "two long workers forked (they hang at import, filling the window)")
    before = {p["pid"] for p in http_workers(srv.timeline())}
    victim = next(p["pid"] for p in http_workers(srv.timeline()) if p["ready"] is not None)
    os.kill(victim, signal.SIGKILL)

    def replaced():
        return [p for p in http_workers(srv.timeline())
                if p["pid"] not in before and p["ready"] is not None and p["exit"] is None]

    # one boot (~0.1 s of CPU) plus a back-off of at most a few seconds; before the fix: ready_timeout
    new = wait_for(replaced, 60, "the killed HTTP worker replaced while two long workers hang")[0]
    died = wait_for(lambda: next(p["exit"] for p in http_workers(srv.timeline()) if p["pid"] == victim), 10,
                    "the victim's exit in the timeline")
    # seconds, not ready_timeout (300 s here; 30 s by default): generous for a shared machine
    assert new["ready"] - died < 15.0, (died, new)
    assert "no longer holding back the ramp" not in srv.log()
    assert get(srv.port)[0] == 200


# -- 6. a worker that dies right after it became ready backs off -------------------------


def test_a_flapping_worker_backs_off_exponentially(server):
    srv = server(workers=1, app="flap_app:app", env={"FLAP_AFTER": "0.3"})

    def forks():
        return sorted(p["fork"] for p in http_workers(srv.timeline()))

    wait_for(lambda: len(forks()) >= 4, 90, "four forks of the flapping worker")
    times = forks()
    flaps = [p for p in http_workers(srv.timeline()) if p["ready"] is not None and p["exit"] is not None]
    assert flaps, "the worker became ready before it died (a flap, not a boot failure)"
    # back-off after the 1st, 2nd, 3rd flap: 1, 2, 4 s; a lower bound, so a busy machine cannot break it
    assert times[3] - times[2] >= 4.0 - 0.05, times
    assert times[2] - times[1] >= 2.0 - 0.05, times
    assert srv.proc.poll() is None, "flapping never stops the server"
    assert "within 5 s of becoming ready: flap 3 in a row, next spawn in 4 s" in srv.log()


def test_a_worker_exiting_0_after_ready_is_no_flap(server):
    srv = server(workers=1, app="flap_app:app", env={"FLAP_AFTER": "0.3", "FLAP_CODE": "0"})
    wait_for(lambda: len(http_workers(srv.timeline())) >= 4, 60, "four forks of the worker that exits 0")
    assert "flap" not in srv.log(), "a worker that chose to go (max_requests) is respawned at once"


# -- 4. the pool keeps backing off instead of giving up; 5. and 8. ------------------------


def test_a_crashing_pool_keeps_retrying(server, tmp_path):
    srv = server(workers=1, boot_cpu=0.1, env={
        "GUNICORN_SLOWSTART_LONG_WORKER": "long_forks:crash_soon", "GUNICORN_SLOWSTART_LONG_WORKERS": "2"})

    def crashed():
        return [p for p in srv.timeline().get("processes", []) if p["kind"] == "long" and p["exit"] is not None]

    # rounds at about 0, 1, 3, 7 s: 8 crashed processes, where the old rule gave up at 5
    wait_for(lambda: len(crashed()) >= 7, 60, "seven crashed long workers")
    assert get(srv.port)[0] == 200


def test_long_workers_children_stop_with_them_and_reload_says_what_serves(server, tmp_path):
    fault = fault_dir(tmp_path)
    srv = server(workers=2, boot_cpu=0.1, env={
        "FAULT_DIR": str(fault), "GUNICORN_SLOWSTART_LONG_WORKER": "long_forks:run",
        "GUNICORN_SLOWSTART_LONG_WORKERS": "1", "GUNICORN_SLOWSTART_MAX_BATCH": "1"})
    srv.wait_ready()
    child = int(wait_for(lambda: list(fault.glob("child.*")), 30, "the long worker's child")[0].suffix[1:])
    srv.remember_children()
    # 8: a rolling reload says the old generation serves while the new one boots
    srv.signal(signal.SIGHUP)
    wait_for(lambda: srv.summary_done(2), 60, "the reload's summary")
    steps = [line for line in srv.log().splitlines() if "slow start: spawned" in line]
    reload_steps = steps[-2:]
    assert all("serving: " in line and " old + " in line for line in reload_steps), reload_steps
    # 5: the reload stopped the old long worker and, with its group, its child
    wait_for(lambda: not alive(child), 30, f"the old long worker's child {child} stopped")
    children = wait_for(lambda: [c for c in fault.glob("child.*") if int(c.suffix[1:]) != child], 30,
                        "the new long worker's child")
    new_child = int(children[0].suffix[1:])
    srv.remember_children()
    srv.signal(signal.SIGTERM)  # graceful stop
    srv.wait_exit(30)
    assert not alive(new_child), "a graceful stop leaves no child of a long worker"


def test_master_sigkill_takes_the_long_workers_children_along(server, tmp_path):
    fault = fault_dir(tmp_path)
    srv = server(workers=1, boot_cpu=0.1, env={
        "FAULT_DIR": str(fault), "GUNICORN_SLOWSTART_LONG_WORKER": "long_forks:run",
        "GUNICORN_SLOWSTART_LONG_WORKERS": "1"})
    child = int(wait_for(lambda: list(fault.glob("child.*")), 60, "the long worker's child")[0].suffix[1:])
    srv.remember_children()
    srv.orphans_expected = True  # gunicorn's HTTP workers notice a dead master only on their next tick
    srv.signal(signal.SIGKILL)
    wait_for(lambda: not alive(child), 15, f"the long worker's child {child} gone with the master")


# -- 7. inputs: one line, before any fork ------------------------------------------------


@pytest.mark.parametrize("env, needle", [
    ({"GUNICORN_SLOWSTART_MODE": "timer", "GUNICORN_SLOWSTART_DELAY": "1e308"},
     "GUNICORN_SLOWSTART_DELAY must be between 0 and 3600 s"),
    ({"GUNICORN_SLOWSTART_READY_TIMEOUT": "1e-320"}, "GUNICORN_SLOWSTART_READY_TIMEOUT must be between 0.1"),
    ({"GUNICORN_SLOWSTART_INITIAL": "\uff12"}, "GUNICORN_SLOWSTART_INITIAL must be a whole number in plain"),
])
def test_out_of_range_numbers_refused_before_any_fork(server, env, needle):
    srv = server(workers=2, env=env)
    assert srv.wait_exit(20) != 0
    assert needle in srv.log() and "Booting worker" not in srv.log() and "Traceback" not in srv.log()


def test_install_with_a_non_namespace_is_one_line(server, tmp_path):
    config = tmp_path / "bad.conf.py"
    config.write_text("from gunicorn_slowstart import install\ninstall(42)\n")
    srv = server(workers=2, config=str(config))
    assert srv.wait_exit(20) != 0
    log = srv.log()
    assert "install() takes the config file's namespace" in log and "Traceback" not in log, log
    assert try_get(srv.port, timeout=0.5) is None
