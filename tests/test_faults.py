"""Startup that survives faults: hung boots, crash loops, flaky boots, low memory.

Each test starts a real gunicorn master on an app from ``tests/apps/fault_*``
and judges what happened from the master's log and its timeline file.
"""

from __future__ import annotations

import re
import signal
import time

import pytest
from support import GUNICORN_MAJOR, alive, get, hold, http_workers, try_get, wait_for

pytestmark = pytest.mark.slow

KILLED = re.compile(r"slow start: worker (\d+) not ready ([\d.]+) s after fork: killing it \(boot_timeout\)")


def live_ready(srv) -> list[dict]:
    return [p for p in http_workers(srv.timeline()) if p["ready"] is not None and p["exit"] is None]


def settled(srv, count: int) -> bool:
    """``count`` ready workers in the timeline, and exactly those pids alive under the master."""
    ready = live_ready(srv)
    return len(ready) == count and sorted(p["pid"] for p in ready) == srv.workers()


def claimed(directory) -> dict[int, int]:
    """Boot number -> pid, as ``tests/apps/fault_claim.py`` recorded them."""
    boots = {}
    for path in directory.glob("boot.*"):
        text = path.read_text()
        if text:
            boots[int(path.suffix[1:])] = int(text)
    return boots


def fault_env(tmp_path, **extra: str) -> dict:
    fault = tmp_path / "fault"
    fault.mkdir()
    # one probe: these tests count forks (initial=auto forks as many as CPUs stand idle: test_first_step.py)
    return {"FAULT_DIR": str(fault), "GUNICORN_SLOWSTART_INITIAL": "1", **extra}


def window_before_and_after(timeline: dict, t: float) -> tuple[int, int]:
    """The window in the last step before ``t``, and the smallest in the half second after it.

    The master may record a step in the same millisecond as the exit, before it has handled
    the exit (gunicorn 23 reaps in its SIGCHLD handler): the reaction is the next step."""
    steps = timeline["steps"]
    before = [s[1] for s in steps if s[0] < t]
    after = [s[1] for s in steps if t <= s[0] < t + 0.5]
    return before[-1], min(after)


# -- boot time-out --------------------------------------------------------------------


def test_boot_timeout_kills_the_hung_probe_and_replaces_it(server, tmp_path):
    env = fault_env(tmp_path, GUNICORN_SLOWSTART_BOOT_TIMEOUT="2",
                    GUNICORN_SLOWSTART_INITIAL="1")  # one probe first (auto: tests/test_first_step.py)
    srv = server(app="fault_hang:app", workers=3, boot_cpu=0.2, env=env)
    hung = int(wait_for(lambda: (tmp_path / "fault" / "hung").exists()
                        and (tmp_path / "fault" / "hung").read_text(), 15, "the hung boot"))
    match = wait_for(lambda: KILLED.search(srv.log()), 10, "the boot_timeout kill in the log")
    assert int(match.group(1)) == hung, srv.tail()
    assert 2.0 <= float(match.group(2)) < 3.5, match.group(0)  # at boot_timeout, give or take a busy machine

    wait_for(lambda: settled(srv, 3), 30, "3 ready workers after the hung one was replaced")
    assert get(srv.port)[0] == 200
    assert not alive(hung)
    procs = http_workers(srv.timeline())
    dead = next(p for p in procs if p["pid"] == hung)
    assert dead["ready"] is None and dead["exit_signal"] == signal.SIGTERM, dead
    assert dead["stop"]["reason"] == "boot_timeout" and dead["stop"]["at"] <= dead["exit"], dead
    assert 2.0 <= dead["exit"] - dead["fork"] < 4.0, dead  # SIGTERM ended it, long before the 5 s SIGKILL
    assert f"worker {hung} died" in srv.log() and "(signal 15) before it was ready" in srv.log()
    # a boot failure backs off: the replacement comes about 1 s after the hung one is gone
    replacement = min(p["fork"] for p in procs if p["fork"] > dead["fork"])
    assert 0.95 <= replacement - dead["exit"] < 1.9, (dead, procs)  # 1 s: below the next step's 2 s
    assert len(procs) == 4, procs


def test_boot_timeout_escalates_to_sigkill_while_the_others_serve(server, tmp_path):
    env = fault_env(tmp_path, FAULT_HANG_IGNORE_TERM="1", GUNICORN_SLOWSTART_BOOT_TIMEOUT="2",
                    GUNICORN_SLOWSTART_INITIAL="2", GUNICORN_SLOWSTART_MAX_BATCH="2",
                    GUNICORN_SLOWSTART_GROWTH="double")
    srv = server(app="fault_hang:app", workers=3, boot_cpu=0.2, env=env)
    hung = int(wait_for(lambda: (tmp_path / "fault" / "hung").exists()
                        and (tmp_path / "fault" / "hung").read_text(), 15, "the hung boot"))

    # the two healthy workers serve while the hung one is still booting
    wait_for(lambda: len(live_ready(srv)) == 2, 15, "2 ready workers beside the hung one")
    assert get(srv.port)[0] == 200
    assert alive(hung) and not KILLED.search(srv.log()), srv.tail()

    match = wait_for(lambda: KILLED.search(srv.log()), 10, "the boot_timeout kill in the log")
    assert int(match.group(1)) == hung
    # it ignores SIGTERM: still there (and the server still answers) until SIGKILL, 5 s later
    hold(lambda: alive(hung), 3.5, f"hung worker {hung} gone before the SIGKILL grace ran out")
    assert get(srv.port)[0] == 200
    wait_for(lambda: not alive(hung), 5, f"hung worker {hung} SIGKILLed")

    wait_for(lambda: settled(srv, 3), 30, "3 ready workers after the replacement")
    assert get(srv.port)[0] == 200
    timeline = srv.timeline()
    dead = next(p for p in http_workers(timeline) if p["pid"] == hung)
    assert dead["exit_signal"] == signal.SIGKILL, dead
    assert 6.9 <= dead["exit"] - dead["fork"] < 12.0, dead  # 2 s boot_timeout + 5 s grace (+ a shared machine)
    before, after = window_before_and_after(timeline, dead["exit"])
    assert (before, after) == (2, 1), timeline["steps"]  # a boot failure halves the window
    assert "Perhaps out of memory" in srv.log()  # gunicorn's own words for a SIGKILLed worker


@pytest.mark.skipif(GUNICORN_MAJOR < 24, reason="gunicorn 23 has no control socket")
def test_hung_worker_without_boot_timeout_does_not_block_the_control_socket(server, tmp_path):
    env = fault_env(tmp_path, GUNICORN_SLOWSTART_READY_TIMEOUT="2")
    srv = server(app="fault_hang:app", workers=2, boot_cpu=0.1, env=env)
    wait_for(lambda: "no longer holding back the ramp (ready_timeout)" in srv.log(), 15, "the stale warning")
    wait_for(lambda: len(live_ready(srv)) == 1, 15, "the other worker ready")
    assert get(srv.port)[0] == 200
    wait_for(lambda: "Control socket listening" in srv.log(), 5, "the control socket")


def test_boot_timeouts_count_toward_max_boot_failures(server, tmp_path):
    env = fault_env(tmp_path, FAULT_HANG_BOOT="*", GUNICORN_SLOWSTART_BOOT_TIMEOUT="0.5",
                    GUNICORN_SLOWSTART_MAX_BOOT_FAILURES="2", GUNICORN_SLOWSTART_INITIAL="1")  # one fork a step
    srv = server(app="fault_hang:app", workers=3, env=env)
    assert srv.wait_exit(20) == 3, srv.tail()
    log = srv.log()
    kills = KILLED.findall(log)
    assert len(kills) == 2 and log.count("Booting worker with pid") == 2, srv.tail()
    assert re.search(rf"Reason: 2 consecutive boot failures; last: worker {kills[-1][0]} died "
                     r"[\d.]+ s after fork \(signal 15\)", log), srv.tail()
    assert [p["stop"]["reason"] for p in http_workers(srv.timeline())] == ["boot_timeout"] * 2, srv.timeline()
    assert "Traceback" not in log


# -- crash loops ------------------------------------------------------------------------


def test_crash_loop_backs_off_then_stops_with_boot_error(server):
    srv = server(app="fault_crash:app", workers=3,
                 env={"GUNICORN_SLOWSTART_MAX_BOOT_FAILURES": "4", "GUNICORN_SLOWSTART_INITIAL": "1"})
    start = time.monotonic()
    code = srv.wait_exit(30)
    assert code == 3, srv.tail()  # gunicorn's WORKER_BOOT_ERROR
    assert time.monotonic() - start < 30
    log = srv.log()
    assert log.count("Booting worker with pid") == 4, srv.tail()
    assert "Traceback" not in log

    procs = wait_for(lambda: len(http_workers(srv.timeline())) == 4 and http_workers(srv.timeline()),
                     5, "4 forks in the timeline")
    assert all(p["exit_code"] == 1 and p["ready"] is None for p in procs), procs
    assert all(p["stop"] is None for p in procs), procs  # each failed on its own: the halt stopped none
    # back-off between a failed boot's exit and the next fork: 1, 2, 4 s
    gaps = [later["fork"] - earlier["exit"] for earlier, later in zip(procs, procs[1:])]
    for gap, expected in zip(gaps, (1, 2, 4)):
        assert expected - 0.05 <= gap < expected + 0.6, gaps
    last = procs[-1]["pid"]
    assert re.search(rf"Reason: 4 consecutive boot failures; last: worker {last} died [\d.]+ s after fork "
                     r"\(exit code 1\)", log), srv.tail()


def test_flaky_app_gets_every_worker_ready(server, tmp_path):
    env = fault_env(tmp_path)
    srv = server(app="fault_flaky:app", workers=4, boot_cpu=0.2, env=env)
    wait_for(lambda: settled(srv, 4), 45, "4 ready workers despite 1 boot in 3 crashing")
    assert get(srv.port)[0] == 200
    boots = claimed(tmp_path / "fault")
    procs = {p["pid"]: p for p in http_workers(srv.timeline())}
    crashed = {pid for n, pid in boots.items() if n % 3 == 0}
    assert len(crashed) >= 2, boots  # boots 0 and 3 at least (6 needs 7 boots)
    for n, pid in boots.items():
        proc = procs[pid]
        if n % 3 == 0:
            assert proc["exit_code"] == 1 and proc["ready"] is None, (n, proc)
        else:
            assert proc["ready"] is not None and proc["exit"] is None, (n, proc)
    assert "Traceback" not in srv.log()


# -- memory -----------------------------------------------------------------------------


def test_memory_hold_before_any_fork_then_clean_exit(server):
    srv = server(workers=3, env={"GUNICORN_SLOWSTART_MIN_FREE_MB": str(10**9)})
    wait_for(lambda: "holding the ramp" in srv.log(), 15, "the hold warning")
    hold(lambda: not ("Booting worker" in srv.log() or srv.workers()), 3.5, "a worker forked while held")
    log = srv.log()
    assert log.count("holding the ramp") == 1, log
    assert re.search(r"holding the ramp: \d+ MiB available, below min_free_mb 1000000000", log), log
    # the port is bound but no worker exists: a request waits in the listen backlog
    assert try_get(srv.port, timeout=1.0) is None
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(6) == 0, srv.tail()
    assert not srv.leftovers()
    assert "Traceback" not in srv.log()


def test_small_memory_floor_ramps_normally(server):
    srv = server(workers=3, boot_cpu=0.2, env={"GUNICORN_SLOWSTART_MIN_FREE_MB": "1"})
    srv.wait_ready(30)
    wait_for(lambda: settled(srv, 3), 10, "3 ready workers")
    assert "holding the ramp" not in srv.log()
    assert get(srv.port)[0] == 200
