"""The issue's own case on real masters in a real memory cgroup: ``-w 8`` of workers holding
200 MiB each under a 700 MiB limit.  The first step forks before any worker's cost is known
(as many workers as CPUs stand idle, plus a background boot); the memory guard watches them
boot and stops the youngest before the kernel's OOM killer picks a victim.

Needs root and a writable ``memory`` controller (skips otherwise); the cgroup is removed after.
"""

from __future__ import annotations

import socket

import pytest
from support import cgroup, get, recv_all, wait_for
from test_lifecycle import status, status_env

from benchmarks.cpulimit import MemoryLimit

pytestmark = pytest.mark.slow

POD_MB = 700  # the pod
APP_MB = 200  # each worker holds this much (tests/apps/memory_app.py), ~230 MiB USS in all


CASES = {
    "4-cpus": {"GUNICORN_SLOWSTART_CPUS": "4"},  # the issue's: a first step of up to 4 (+ 1 in the background)
    "this-machine": {},  # 2 cores shared with other tests: a first step of 1-2, + 1 in the background
    "first-step-4": {"GUNICORN_SLOWSTART_CPUS": "4", "GUNICORN_SLOWSTART_INITIAL": "4"},  # 4 at once: must act
}


@pytest.mark.parametrize("case", CASES)
def test_the_first_step_never_meets_the_oom_killer(server, tmp_path, case):
    env = status_env({"MEMAPP_MB": str(APP_MB), **CASES[case]})
    notify = str(tmp_path / "notify.sock")
    env["NOTIFY_SOCKET"] = notify
    with cgroup(MemoryLimit(POD_MB), "memory") as limit, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(notify)
        systemd.setblocking(False)
        srv = server(app="memory_app:app", workers=8, preexec_fn=limit.preexec_fn(), env=env)
        wait_for(lambda: status(srv).get("state") == "memory held" and status(srv).get("booting") == 0
                 and status(srv).get("ready", 0) >= 2, 90, "the ramp held for memory, 2+ workers ready")
        record = status(srv)
        assert 2 <= record["ready"] <= 3, record
        assert f"fit in {POD_MB} MiB" in record["detail"], record
        assert get(srv.port)[0] == 200
        assert limit.oom_kills() == 0, srv.tail()
        assert srv.proc.poll() is None
        log = srv.log()
        assert "slow start: holding the ramp:" in log and f"{POD_MB} MiB" in log
        seen: list[str] = []
        wait_for(lambda: seen.extend(recv_all(systemd)) or any(s.startswith("STATUS=memory held: ") for s in seen),
                 10, "systemd STATUS=memory held")
        stopped = log.count("slow start: memory guard: stopping booting worker")
        first = next(x for x in log.splitlines() if "slow start: spawned" in x)
        if case == "first-step-4" or int(first.split("spawned ")[1].split(",")[0]) >= 4:
            assert stopped >= 1, srv.tail()  # 4 x 230 MiB cannot all fit in 700: the guard had to act
        if stopped:
            wait_for(lambda: sum(1 for p in srv.timeline()["processes"] if (p.get("stop") or {}).get("reason")
                                 == "memory_guard") == stopped, 10, "the guard's stops in the timeline")
            line = next(x for x in log.splitlines() if "memory guard: stopping" in x)
            assert f"of {POD_MB} MiB" in line and "MiB left" in line, line
        held = srv.timeline().get("events", [])
        assert held and held[0][1] == "memory held", held
        if stopped:  # the guard's hold first (with its figures), then admission's, once the cost is known
            assert "memory guard stopped" in held[0][2] and "MiB left of 700 MiB" in held[0][2], held
            assert any("workers fit in 700 MiB" in e[2] for e in held if e[1] == "memory held"), held
            assert any(s.startswith("STATUS=memory held: memory guard stopped") for s in seen), seen
        srv.stop()
        assert limit.oom_kills() == 0
