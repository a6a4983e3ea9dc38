"""``initial = auto`` on real masters: the first step forks as many workers as CPUs stand idle.

Each master runs in a cgroup with a CPU quota of 2 (``benchmarks/cpulimit.py``),
so what "idle" means does not depend on the other load of a shared machine:
inside a quota the master measures the quota minus its cgroup's usage, and
the only process in that cgroup is the master itself, whose own CPU time is
counted as idle.  The first step must therefore be 2 workers every time, plus
the one background boot where the master may raise priorities (``priority.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from support import cgroup, get, http_workers, peak_booting

pytestmark = pytest.mark.slow

QUOTA = 2.0


@contextlib.contextmanager
def quota(cpus: float) -> Iterator[object]:
    from benchmarks.cpulimit import CpuLimit
    from gunicorn_slowstart.cpus import usable_cpus

    if usable_cpus() < cpus:
        pytest.skip(f"needs {cpus:g} usable CPUs, this machine has {usable_cpus()}")
    with cgroup(CpuLimit(cpus), "CPU") as limit:
        yield limit


def test_first_step_fills_the_idle_cpus_and_the_tail_merges(server):
    with quota(QUOTA) as limit:
        srv = server(workers=5, boot_cpu=0.3, preexec_fn=limit.preexec_fn())
        timeline = srv.wait_ready(60)
        log = srv.log()
        assert timeline["meta"]["cpus"] == 2 and timeline["meta"]["cap"] == 2
        extra = timeline["meta"]["background"]  # 1 where the master may raise priorities (test_background.py)
        first = next(line for line in log.splitlines() if "slow start: spawned" in line)
        assert f"spawned {2 + extra}, booting {2 + extra}, ready 0 of 5, window 2, cap 2" in first, srv.tail()
        procs = http_workers(timeline)
        assert len(procs) == 5 and all(p["ready"] is not None for p in procs)
        # 5 on 2 CPUs: 2 (+ 1 in the background), then the others boot together (the tail merged),
        # never 1 alone at the end
        assert 3 <= peak_booting(procs) <= 3 + extra, procs
        if not extra:
            assert "spawned 2, booting 3, ready 2 of 5" in log or "spawned 3, booting 3, ready 2 of 5" in log, log
        assert get(srv.port)[0] == 200
        srv.stop()


@pytest.mark.parametrize("app, codes", [("broken_import:app", (3, 4)), ("lifespan_fail:app", (3,))])
def test_broken_app_costs_the_first_step_only(server, app, codes):
    """Two workers (and the background boot) fail at once: gunicorn's own exit code and message,
    no traceback, never N forks."""
    with quota(QUOTA) as limit:
        srv = server(app=app, workers=8, preexec_fn=limit.preexec_fn())
        code = srv.wait_exit(30)
        log = srv.log()
        assert code in codes, srv.tail()
        extra = 1 if "in the background" in log else 0  # the first step's background boot
        assert log.count("Booting worker with pid") == 2 + extra, srv.tail()
        assert f"spawned {2 + extra}, booting {2 + extra}, ready 0 of 8" in log, srv.tail()
        assert "Shutting down: Master" in log and "Reason: " in log, srv.tail()
        # a boot that failed has no stop; one still booting when the master gave up was stopped for the halt
        stops = [p["stop"] for p in srv.timeline()["processes"]]
        assert {None if s is None else s["reason"] for s in stops} <= {None, "halt"}, stops
        assert "Traceback" not in log.split("Shutting down: Master")[-1], srv.tail()
