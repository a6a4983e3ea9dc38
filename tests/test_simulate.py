"""Tests of the discrete-event start-up simulator (benchmarks/simulate.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # pyproject's pythonpath does this too; keep the file runnable alone
    sys.path.insert(0, str(ROOT))

from benchmarks import simulate as sim  # noqa: E402
from gunicorn_slowstart.arbiter import RAMP_TICK  # noqa: E402
from gunicorn_slowstart.policy import PolicyConfig, SlowStartPolicy  # noqa: E402

LAG = sim.DETECT_LAG  # the default: the event-driven master's measured ready -> fork gap
FORK = 0.002
TOL = 1e-9


def all_seen(result: sim.Result) -> int:
    return sum(1 for p in result.procs if p.seen_at is not None)


# -- closed forms -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_off_without_contention_is_one_boot_plus_gunicorns_jitter(n: int) -> None:
    r = sim.simulate("off", n, cores=16, boot_cpu=1.0)
    last_fork = max(p.started_at for p in r.procs)
    assert r.all_ready == pytest.approx(last_fork + 1.0 + LAG, abs=TOL)
    assert 1.0 + LAG <= r.all_ready <= 1.0 + LAG + n * FORK + 0.1 * (n - 1) + TOL
    assert r.first_ready == pytest.approx(FORK + 1.0 + LAG, abs=TOL)
    assert r.spawns == n and r.peak_booting <= n


def test_off_forks_are_spaced_by_gunicorns_sleep() -> None:
    r = sim.simulate("off", 8, cores=16)
    starts = [p.started_at for p in r.procs]
    gaps = [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)]
    assert all(FORK - TOL <= g <= FORK + 0.1 + TOL for g in gaps)


def test_ready_two_cores_two_workers_probe_then_second_exactly() -> None:
    r = sim.simulate("ready", 2, cores=2, boot_cpu=1.0, fork_cost=0.0, initial=1)
    assert r.cap == 2
    assert r.first_ready == pytest.approx(1.0 + LAG, abs=TOL)
    assert r.all_ready == pytest.approx(2.0 + 2 * LAG, abs=TOL)
    assert r.peak_booting == 1


def test_a_polling_master_sees_readiness_a_tick_late() -> None:
    """``--detect-lag 0.025``: the master that polls every RAMP_TICK (no inotify) pays it per round."""
    assert sim.POLLED_LAG == RAMP_TICK and 0 < sim.DETECT_LAG < RAMP_TICK
    polled = sim.simulate("ready", 2, cores=2, fork_cost=0.0, initial=1, detect_lag=sim.POLLED_LAG)
    watched = sim.simulate("ready", 2, cores=2, fork_cost=0.0, initial=1)
    assert polled.all_ready == pytest.approx(2.0 + 2 * RAMP_TICK, abs=TOL)
    assert watched.all_ready == pytest.approx(2.0 + 2 * sim.DETECT_LAG, abs=TOL)


def test_ready_two_cores_two_workers_with_fork_cost() -> None:
    r = sim.simulate("ready", 2, cores=2, boot_cpu=1.0, initial=1)
    assert r.first_ready == pytest.approx(1.0 + LAG + FORK, abs=TOL)
    assert r.all_ready == pytest.approx(2.0 + 2 * (LAG + FORK), abs=TOL)


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_timer_cap_one_spawns_every_delay(n: int) -> None:
    r = sim.simulate("timer", n, cores=2, boot_cpu=1.0)
    assert r.cap == 1
    assert r.all_ready == pytest.approx(2.0 * (n - 1) + 1.0, abs=LAG + FORK + TOL)
    assert [p.spawned_at for p in r.procs] == pytest.approx([2.0 * i for i in range(n)])


def test_timer_batches_double_to_the_cap() -> None:
    r = sim.simulate("timer", 20, cores=16, boot_cpu=1.0)  # cap 8: batches 1, 2, 4, 8, 5
    assert r.cap == 8
    spawned = [p.spawned_at for p in r.procs]
    assert [spawned.count(2.0 * i) for i in range(5)] == [1, 2, 4, 8, 5]


def test_processor_sharing_with_neighbours_and_quota() -> None:
    # one worker, 2 neighbours, a 0.5-CPU quota: the worker gets 0.5 / 3 of a CPU
    r = sim.simulate("off", 1, cores=2, quota=0.5, neighbours=2, boot_cpu=1.0, fork_cost=0.0)
    assert r.lone_boot == pytest.approx(6.0)
    assert r.all_ready == pytest.approx(6.0 + LAG, abs=TOL)
    # four workers alone on 2 cores: each gets half a CPU
    r = sim.simulate("off", 4, cores=2, boot_cpu=1.0, fork_cost=0.0, seed=3)
    assert r.cpu_bound == pytest.approx(2.0)
    assert r.all_ready >= 2.0 + LAG - TOL


def test_bounds_closed_form() -> None:
    assert sim.lone_boot_bound(1.0, 8, None, 0) == 1.0
    assert sim.lone_boot_bound(1.0, 8, None, 8) == pytest.approx(9 / 8)
    assert sim.lone_boot_bound(2.0, 16, 4.0, 16) == pytest.approx(2.0 * 17 / 4)
    assert sim.cpu_bound_of([1.0] * 8, 2, 0.5, 2) == pytest.approx(20.0)
    assert sim.cpu_bound_of([1.0] * 4, 8, None, 0) == pytest.approx(1.0)


def test_default_caps_follow_the_project() -> None:
    assert sim.default_cap("ready", 16, None) == 16
    assert sim.default_cap("ready", 16, 4.0) == 4
    assert sim.default_cap("ready", 2, 0.5) == 1
    assert sim.default_cap("timer", 16, None) == 8
    assert sim.default_cap("timer", 2, None) == 1
    assert sim.default_cap("timer", 64, 2.7) == 1


def test_distributions() -> None:
    import random

    rng = random.Random(1)
    assert sim.draw_boots(5, 2.0, "fixed", rng) == [2.0] * 5
    normal = sim.draw_boots(2000, 1.0, "normal", random.Random(1))
    assert min(normal) > 0 and abs(sum(normal) / len(normal) - 1.0) < 0.02
    longtail = sim.draw_boots(5000, 1.0, "longtail", random.Random(1))
    assert abs(sum(longtail) / len(longtail) - 1.0) < 0.05 and max(longtail) > 3.0
    straggler = sim.draw_boots(10, 1.0, "straggler", random.Random(1))
    assert sorted(straggler) == [1.0] * 9 + [5.0]
    with pytest.raises(ValueError):
        sim.draw_boots(1, 1.0, "bimodal", rng)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        sim.simulate("fast", 2, 2)
    with pytest.raises(ValueError):
        sim.simulate("ready", 2, 2, growth="triple")
    with pytest.raises(ValueError):
        sim.simulate("ready", 0, 2)
    with pytest.raises(ValueError):
        sim.simulate("ready", 2, 2, fail_prob=1.0)
    with pytest.raises(ValueError, match="dist must be one of"):
        sim.SimConfig(mode="ready", n=2, cores=2, dist="uniform")  # refused before any run


def test_one_config_object_is_one_start() -> None:
    """``run(SimConfig(...))`` is ``simulate(...)`` with the same fields; the cap is the
    product's rule unless given, and off has none."""
    config = sim.SimConfig(mode="ready", n=9, cores=4, quota=3.0, neighbours=1, dist="normal", seed=4,
                           fail_prob=0.1, growth="double")
    assert sim.run(config) == sim.simulate("ready", 9, 4, 3.0, 1, dist="normal", seed=4, fail_prob=0.1,
                                           growth="double")
    assert sim.run(config).cap == sim.default_cap("ready", 4, 3.0)
    assert sim.run(dataclasses.replace(config, cap=1)).peak_booting == 1
    assert sim.run(dataclasses.replace(config, mode="off", cap=1)).cap is None


# -- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sim.MODES)
def test_deterministic_for_a_seed(mode: str) -> None:
    kwargs = dict(n=17, cores=8, quota=3.0, neighbours=2, dist="longtail", fail_prob=0.1, growth="idle")
    a = sim.simulate(mode, seed=7, **kwargs)
    b = sim.simulate(mode, seed=7, **kwargs)
    assert a == b
    assert a.intervals == b.intervals
    c = sim.simulate(mode, seed=8, **kwargs)
    assert [p.boot_cpu for p in c.procs] != [p.boot_cpu for p in a.procs]


def test_modes_of_a_cell_see_the_same_boot_demands() -> None:
    demands = {
        mode: sorted(p.boot_cpu for p in sim.simulate(mode, 12, 4, dist="normal", seed=5).procs)
        for mode in sim.MODES
    }
    assert demands["off"] == demands["timer"] == demands["ready"]


# -- properties over small configurations -------------------------------------------------------

configs = st.fixed_dictionaries(
    {
        "n": st.integers(1, 24),
        "cores": st.integers(1, 8),
        "quota_frac": st.one_of(st.none(), st.floats(0.1, 1.0)),
        "neighbours": st.integers(0, 6),
        "dist": st.sampled_from(sim.DISTS),
        "seed": st.integers(0, 10_000),
        "growth": st.sampled_from(sim.GROWTHS),
        "fail_prob": st.sampled_from([0.0, 0.0, 0.1, 0.3]),
        "cap": st.one_of(st.none(), st.integers(1, 6)),
    }
)


def run_config(mode: str, c: dict) -> sim.Result:
    quota = None if c["quota_frac"] is None else max(0.25, c["cores"] * c["quota_frac"])
    return sim.simulate(
        mode,
        c["n"],
        c["cores"],
        quota,
        c["neighbours"],
        1.0,
        c["dist"],
        c["seed"],
        c["growth"],
        fail_prob=c["fail_prob"],
        cap=c["cap"],
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_ready_mode_never_exceeds_the_policy_cap(c: dict) -> None:
    r = run_config("ready", c)
    assert r.cap is not None and r.cap >= 1
    # a worker past ready_timeout stops counting against the window (it is reported stale);
    # the tail merge forks a last round smaller than the cap with the step before it
    assert r.peak_booting <= 2 * r.cap - 1 + r.stale


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs, st.sampled_from(sim.MODES))
def test_no_run_beats_the_lower_bounds(c: dict, mode: str) -> None:
    r = run_config(mode, c)
    seconds_per_cpu_second = r.lone_boot / 1.0  # boot_cpu is 1.0: lone_boot is 1 / the lone rate
    fastest = min(p.boot_cpu for p in r.procs) * seconds_per_cpu_second
    assert r.first_ready >= fastest + LAG - 1e-6
    assert r.all_ready >= r.cpu_bound - 1e-6
    if not r.exhausted and r.all_ready < math.inf:
        assert all_seen(r) == c["n"]
        # every interval is well formed and nothing boots before it is forked
        for p in r.procs:
            assert p.spawned_at <= p.started_at <= p.done_at
            if p.seen_at is not None:
                assert p.seen_at == pytest.approx(p.done_at + LAG)


# -- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sim.MODES)
@pytest.mark.parametrize("growth", sim.GROWTHS)
def test_every_worker_ends_up_ready_with_failures(mode: str, growth: str) -> None:
    failures = 0
    for seed in range(6):
        r = sim.simulate(mode, 8, 4, fail_prob=0.2, seed=seed, growth=growth)
        assert not r.exhausted
        assert r.all_ready < math.inf
        assert all_seen(r) == 8
        assert r.spawns == 8 + r.failures
        assert all(p.seen_at is None for p in r.procs if p.failed)
        failures += r.failures
    assert failures > 0


def test_a_broken_app_exhausts_the_policy_and_stops() -> None:
    r = sim.simulate("ready", 8, 4, fail_prob=0.9999, seed=1, initial=1)  # one failure per round
    assert r.exhausted
    assert r.all_ready == math.inf and r.first_ready == math.inf
    assert r.spawns == PolicyConfig().http_backoff.max_failures


def test_a_wake_at_in_the_past_does_not_hang_the_loop() -> None:
    class Eager(SlowStartPolicy):
        def decide(self, now, wanted, wanted_long=0):  # type: ignore[no-untyped-def]
            from dataclasses import replace

            return replace(super().decide(now, wanted, wanted_long), wake_at=now)

    r = sim.simulate("ready", 4, 2, policy_factory=Eager)
    assert r.all_ready < math.inf
    assert r.zero_wakes > 0


def test_policy_factory_and_decide_on_sample_hooks() -> None:
    seen: list[float] = []

    class Recording(SlowStartPolicy):
        def cpu_idle(self, idle_cpus: float, now: float) -> None:
            seen.append(idle_cpus)
            super().cpu_idle(idle_cpus, now)

    r = sim.simulate("ready", 8, 8, growth="idle", policy_factory=Recording, initial=1, tail_merge=False)
    assert seen and all(0.0 <= x <= 8.0 + 1e-9 for x in seen)
    assert seen[0] == 8.0  # the master's start sample: nothing runs yet
    assert seen[1] == pytest.approx(7.0, abs=0.01)  # the probe alone on 8 CPUs (plus one fork)
    quiet = sim.simulate("ready", 8, 8, growth="double", decide_on_sample=False, initial=1, tail_merge=False)
    loud = sim.simulate("ready", 8, 8, growth="double", initial=1, tail_merge=False)
    assert quiet.all_ready == loud.all_ready  # double growth only changes on events
    assert r.all_ready < quiet.all_ready  # idle growth fills the idle CPUs after the probe


# -- the grid -------------------------------------------------------------------------------------


def test_grid_shape() -> None:
    assert sim.grid_quotas(2) == [None, 0.5, 1.0]
    assert sim.grid_quotas(16) == [None, 4.0]
    assert sim.grid_ns(2) == [1, 2, 5, 8]
    assert sim.grid_ns(128) == [64, 128, 257, 512]
    assert len(sim.grid_cells()) == 88


def test_goal_verdicts() -> None:
    r = sim.simulate("ready", 2, 2, initial=1)
    assert sim.goal(r, stock_all_ready=1.06)
    assert sim.goal_misses(r, stock_all_ready=0.5) == ["all"]
    off = sim.simulate("off", 32, 2)
    assert "first" in sim.goal_misses(off, off.all_ready)


def test_full_default_grid_runs_fast_in_both_growths() -> None:
    started = time.perf_counter()
    for growth in sim.GROWTHS:
        rows = sim.run_grid(growth=growth)
        assert len(rows) == 88 * 3
        assert all(r["all_ready"] < math.inf for r in rows)
        assert {r["goal"] for r in rows} <= {"ok", "MISS"}
    assert time.perf_counter() - started < 30.0


def test_cli_prints_a_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grid.json"
    assert sim.main(["--cores", "2,8", "--growth", "both", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "first" in text and "goal" in text and "growth=idle" in text
    rows = json.loads(out.read_text())
    assert len(rows) == 2 * (24 + 16) * 3
    assert {
        "cores",
        "quota",
        "n",
        "neighbours",
        "mode",
        "first_ready",
        "all_ready",
        "peak_booting",
        "lone_boot",
        "cpu_bound",
        "goal",
    } <= set(rows[0])
