"""The timeline says why the master stopped each process, for real.

Two masters side by side (slow start, and ``mode = "off"``: gunicorn's own
scale-down and reload, seen through ``kill_worker``) go through the same
life: a worker SIGKILLed by the test (no stop record: it did not go because
the master asked), TTOU (``scale_down``), SIGHUP (the old generation:
``reload``) and SIGTERM (``shutdown`` in the final timeline).  Each step acts
on both masters, then waits for both.  The slow-start master also runs a
long-worker pool of one: its worker goes for the reload and for the shutdown
too.
"""

from __future__ import annotations

import os
import signal

import pytest
from support import http_workers, wait_for

from gunicorn_slowstart.timeline_cli import format_summary, load

pytestmark = pytest.mark.slow

MODES = ("ready", "off")
POOL = {"GUNICORN_SLOWSTART_LONG_WORKER": "examples.jobs:run", "GUNICORN_SLOWSTART_LONG_WORKERS": "1"}


def live(srv) -> list[dict]:
    return [p for p in http_workers(srv.timeline()) if p["exit"] is None]


def settled(srv, count: int) -> bool:
    """``count`` HTTP workers alive, all ready and none being stopped, as the timeline says."""
    procs = live(srv)
    return len(procs) == count and all(p["ready"] is not None and p["stop"] is None for p in procs)


def by_pid(srv) -> dict[int, dict]:
    return {p["pid"]: p for p in http_workers(srv.timeline())}


def long_ready(srv) -> list[dict]:
    """The live long worker(s), ready and not being stopped."""
    return [p for p in srv.timeline()["processes"] if p["kind"] == "long" and p["exit"] is None
            and p["ready"] is not None and p["stop"] is None]


def test_the_timeline_says_why_each_worker_stopped(server):
    servers = {mode: server(workers=3, boot_cpu=0.1, env={"GUNICORN_SLOWSTART_MODE": mode,
                                                          **(POOL if mode == "ready" else {})})
               for mode in MODES}
    for mode, srv in servers.items():
        wait_for(lambda srv=srv: settled(srv, 3), 60, f"3 ready workers ({mode})")
    long_old = wait_for(lambda: long_ready(servers["ready"]), 60, "the long worker ready")[0]

    # a worker the test kills: an exit of its own, no stop record
    victims = {mode: live(srv)[0]["pid"] for mode, srv in servers.items()}
    for pid in victims.values():
        os.kill(pid, signal.SIGKILL)
    for mode, srv in servers.items():
        wait_for(lambda srv=srv, mode=mode: by_pid(srv)[victims[mode]]["exit"] is not None and settled(srv, 3),
                 60, f"the killed worker replaced ({mode})")
        dead = by_pid(srv)[victims[mode]]
        assert dead["exit_signal"] == signal.SIGKILL and dead["stop"] is None, dead

    # TTOU: one worker goes, for a scale-down
    before = {mode: {p["pid"] for p in live(srv)} for mode, srv in servers.items()}
    for srv in servers.values():
        srv.signal(signal.SIGTTOU)
    for mode, srv in servers.items():
        wait_for(lambda srv=srv: settled(srv, 2), 60, f"2 workers after TTOU ({mode})")
        gone = [by_pid(srv)[pid] for pid in before[mode] - {p["pid"] for p in live(srv)}]
        assert len(gone) == 1, gone
        assert gone[0]["stop"]["reason"] == "scale_down", (mode, gone)
        assert gone[0]["stop"]["at"] <= gone[0]["exit"], gone

    # SIGHUP: the old generation goes, for the reload (slow start: each once a new one is ready)
    old = {mode: {p["pid"] for p in live(srv)} for mode, srv in servers.items()}
    for srv in servers.values():
        srv.signal(signal.SIGHUP)
    for mode, srv in servers.items():
        wait_for(lambda srv=srv, mode=mode: settled(srv, 3) and not old[mode] & {p["pid"] for p in live(srv)},
                 60, f"3 new workers after SIGHUP, the old ones gone ({mode})")
        procs = by_pid(srv)
        stops = [procs[pid]["stop"] for pid in old[mode]]
        assert [s["reason"] for s in stops] == ["reload"] * len(old[mode]), (mode, stops)
        reload_ramp = [r for r in srv.timeline()["ramps"] if r["reason"] == "reload"][-1]
        assert reload_ramp["target"] == 3, (mode, reload_ramp)  # the config's, not TTOU's 2
        if mode == "ready":
            first_new = min(p["ready"] for p in live(srv))
            assert all(s["at"] >= first_new for s in stops), (stops, first_new)
    long_new = wait_for(lambda: [p for p in long_ready(servers["ready"]) if p["pid"] != long_old["pid"]], 60,
                        "a new long worker after SIGHUP")[0]
    wait_for(lambda: next(p for p in servers["ready"].timeline()["processes"]
                          if p["pid"] == long_old["pid"])["exit"] is not None, 30, "the old long worker gone")
    old_long = next(p for p in servers["ready"].timeline()["processes"] if p["pid"] == long_old["pid"])
    assert old_long["stop"]["reason"] == "reload", old_long

    # SIGTERM: the rest go, for the shutdown; the summary counts every reason
    serving = {mode: {p["pid"] for p in live(srv)} for mode, srv in servers.items()}
    for srv in servers.values():
        srv.remember_children()
        srv.signal(signal.SIGTERM)
    for mode, srv in servers.items():
        assert srv.wait_exit(30) == 0, srv.tail()
        procs = by_pid(srv)
        assert all(procs[pid]["exit"] is not None and procs[pid]["stop"]["reason"] == "shutdown"
                   for pid in serving[mode]), (mode, [procs[pid] for pid in serving[mode]])
        text = format_summary(load(str(srv.timeline_path)))
        counts = "reload 3, scale_down 1, shutdown 4" if mode == "ready" else "reload 2, scale_down 1, shutdown 3"
        assert f"stopped by the master: {counts}; exited on its own: 1" in text, text
    last_long = next(p for p in servers["ready"].timeline()["processes"] if p["pid"] == long_new["pid"])
    assert last_long["exit"] is not None and last_long["stop"]["reason"] == "shutdown", last_long
