"""Memory-aware admission: the pure "how many more fit" logic, and the limits read from
fake cgroup trees (memory with its limit, pids)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_memory import GIB, MIB, meminfo, v1, v1_limit, v2, v2_limit, write

from gunicorn_slowstart.admission import (
    Admission,
    MemoryView,
    PidsView,
    Room,
    admit,
    hold_message,
    memory_room,
    pids_room,
)
from gunicorn_slowstart.cgroup import pids_limit
from gunicorn_slowstart.memory import memory_view, process_cost

# -- the arithmetic ---------------------------------------------------------------------


def test_the_issue_example_700_mib_pod_200_mib_workers():
    """700 MiB limit, a 30 MiB master, 200 MiB workers, 10 % headroom: 3 fit."""
    assert memory_room(available_mb=670, limit_mb=700, cost_mb=200) == 3
    admission = Admission()
    admission.measured("w1", 200, 2)
    # one worker ready: 700 - 30 - 200 = 470 available; 470 - 70 = 400: 2 more
    room = admission.room(MemoryView(470, 700), None)
    assert room == Room(2, "memory", 200, 700)
    assert hold_message(Room(0, "memory", 200, 700), 3, 8) == "3 of 8 workers fit in 700 MiB (~200 MiB each)"


def test_booting_workers_reserve_what_they_have_not_allocated_yet():
    admission = Admission()
    admission.measured(1, 100, 1)
    view = MemoryView(available=450, limit=1000)  # 450 - 100 headroom = 350: 3 more
    assert admission.room(view, None).count == 3
    assert admission.room(view, None, [(10, 1)]).count == 2  # one booting at 10 MiB: 90 to come
    assert admission.room(view, None, [(100, 1), (None, None)]).count == 2


def test_nothing_known_before_the_first_worker_is_ready():
    admission = Admission()
    assert admission.room(MemoryView(10, 1000), PidsView(10, 9)) == Room(None)
    assert admit(8, Room(None)) == 8


def test_median_cost_ignores_one_odd_worker_and_follows_exits():
    admission = Admission()
    for key, uss in enumerate([100, 102, 98, 900]):
        admission.measured(key, uss, 3)
    assert admission.cost_mb == 101
    admission.forget(3)
    assert admission.cost_mb == 100
    for key in (0, 1, 2):
        admission.forget(key)
    assert admission.cost_mb is not None  # the last sample is kept: a crash loop must not admit all


def test_unreadable_samples_are_skipped():
    admission = Admission()
    admission.measured(1, None, None)
    admission.measured(2, 0.0, 0)
    assert admission.cost_mb is None and admission.threads_per_worker is None


def test_pids_limit_and_the_smaller_room_wins():
    assert pids_room(limit=64, current=20, per_worker=10) == 4  # one task kept spare
    assert pids_room(limit=64, current=60, per_worker=10) == 0
    admission = Admission()
    admission.measured(1, 10, 11)
    room = admission.room(MemoryView(10_000, 20_000), PidsView(100, 50))
    assert room.reason == "pids" and room.count == 4
    assert "pids limit of 100 tasks (~11 threads each)" in hold_message(room, 4, 16)


def test_admit_caps_wanted():
    assert admit(5, Room(2, "memory", 1, 1)) == 2
    assert admit(1, Room(2, "memory", 1, 1)) == 1
    assert admit(-3, Room(2, "memory", 1, 1)) == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        memory_room(100, 100, 0)
    with pytest.raises(ValueError):
        pids_room(10, 1, 0)
    with pytest.raises(ValueError):
        Admission(headroom=1.0)


@given(available=st.floats(0, 1e6), limit=st.floats(1, 1e6), cost=st.floats(0.5, 1e5),
       pending=st.floats(0, 1e5), headroom=st.floats(0, 0.5))
def test_room_is_the_most_that_fits(available, limit, cost, pending, headroom):
    room = memory_room(available, limit, cost, pending, headroom)
    left = available - headroom * limit - pending
    assert room >= 0
    assert room * cost <= max(0.0, left) + 1e-6 * max(1.0, left)
    assert (room + 1) * cost > left - 1e-6 * max(1.0, abs(left))


@given(limit=st.integers(0, 10**6), current=st.integers(0, 10**6), per=st.integers(1, 1000),
       pending=st.integers(0, 10**4))
def test_pids_room_never_exceeds_the_limit(limit, current, per, pending):
    room = pids_room(limit, current, per, pending)
    assert room >= 0
    assert room == 0 or current + pending + room * per + 1 <= limit


# -- the limits, read from fake trees ------------------------------------------------------


def test_memory_view_v1_names_the_limit(tmp_path: Path):
    base = v1(tmp_path, "/pod")
    v1_limit(base / "pod", 700 * MIB, 230 * MIB)
    meminfo(tmp_path)
    assert memory_view(str(tmp_path)) == MemoryView(470, 700, "cgroup")


def test_memory_view_v2_parent_limit_is_tighter(tmp_path: Path):
    base = v2(tmp_path, "/kube/pod")
    v2_limit(base / "kube", 1 * GIB, 900 * MIB)
    v2_limit(base / "kube/pod", "max", 100 * MIB)
    meminfo(tmp_path)
    assert memory_view(str(tmp_path)) == MemoryView(124, 1024, "cgroup")


def test_memory_view_falls_back_to_the_host(tmp_path: Path):
    meminfo(tmp_path, total_mib=4096, available_mib=1000)
    assert memory_view(str(tmp_path)) == MemoryView(1000, 4096, "host")
    assert memory_view(str(tmp_path / "nothing")) is None


def pids_tree(root: Path, version: int, levels: dict[str, tuple[str, str]], path: str = "/pod") -> None:
    if version == 2:
        write(root, "proc/self/cgroup", f"0::{path}\n")
        write(root, "proc/self/mountinfo",
              "35 31 0:32 / /sys/fs/cgroup rw,relatime shared:9 - cgroup2 cgroup2 rw\n")
        base = root / "sys/fs/cgroup"
    else:
        write(root, "proc/self/cgroup", f"8:pids:{path}\n0::/\n")
        write(root, "proc/self/mountinfo",
              "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n")
        base = root / "sys/fs/cgroup/pids"
    (base / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for rel, (limit, current) in levels.items():
        (base / rel / "pids.max").write_text(limit + "\n")
        (base / rel / "pids.current").write_text(current + "\n")


@pytest.mark.parametrize("version", [1, 2])
def test_pids_limit_tightest_level(tmp_path: Path, version: int):
    pids_tree(tmp_path, version, {"pod": ("max", "12"), ".": ("100", "90")})
    assert pids_limit(str(tmp_path)) == (100, 90)
    pids_tree(tmp_path, version, {"pod": ("50", "12"), ".": ("100", "90")})
    assert pids_limit(str(tmp_path)) == (100, 90)  # 10 left above beats 38 left in the pod
    pids_tree(tmp_path, version, {"pod": ("20", "12"), ".": ("100", "90")})
    assert pids_limit(str(tmp_path)) == (20, 12)


def test_pids_unlimited_or_garbage_means_no_limit(tmp_path: Path):
    pids_tree(tmp_path, 1, {"pod": ("max", "3"), ".": ("lots", "3")})
    assert pids_limit(str(tmp_path)) is None
    assert pids_limit(str(tmp_path / "nothing")) is None


def test_process_cost_of_this_process_and_of_a_missing_one():
    import os

    uss, pss, threads = process_cost(os.getpid())
    assert uss is not None and uss > 1 and threads >= 1
    assert pss is None or pss >= 0
    assert process_cost(2**22 + 12345) == (None, None, None)


# -- the guard: the first step, forked before any worker's cost is known ------------------


def test_guard_stops_the_youngest_until_the_rest_fit():
    """The issue's pod: 700 MiB, a master of ~40: four workers booting, the oldest already at
    +150 MiB: the others will grow at least as much; stopping the youngest gives back what it
    holds and what it would still take."""
    from gunicorn_slowstart.admission import Growing, guard

    booting = [Growing("a", 150), Growing("b", 40), Growing("c", 30), Growing("d", 20)]
    verdict = guard(MemoryView(700 - 40 - 240, 700), booting)
    assert verdict.stop == ("d",)  # 420 - 360 < 70; without d: 420 - 230 + 20 >= 70
    assert verdict.floor == 70 and verdict.need == 0 + 110 + 120 + 130


def test_guard_leaves_workers_that_fit_alone():
    from gunicorn_slowstart.admission import Growing, guard

    booting = [Growing("a", 150), Growing("b", 140)]
    assert guard(MemoryView(2000, 4000), booting).stop == ()
    assert guard(MemoryView(2000, 4000), []).stop == ()


def test_guard_never_stops_the_last_booting_worker():
    from gunicorn_slowstart.admission import Growing, guard

    assert guard(MemoryView(10, 700), [Growing("a", 300)]).stop == ()
    assert guard(MemoryView(10, 700), [Growing("a", 300), Growing("b", 300)]).stop == ("b",)


def test_guard_looks_ahead_by_the_growth_rate():
    """Workers growing in step (none ahead of the others) still cannot outrun the next look."""
    from gunicorn_slowstart.admission import Growing, guard

    booting = [Growing("a", 100, rate=800), Growing("b", 100, rate=800)]
    assert guard(MemoryView(150, 700), booting, lookahead=0.025).stop == ()  # 150 - 40 >= 70
    assert guard(MemoryView(150, 700), booting, lookahead=0.06).stop == ("b",)  # 150 - 96 < 70


def test_guard_uses_what_a_worker_grew_by_when_it_became_ready():
    from gunicorn_slowstart.admission import Growing, guard

    booting = [Growing("b", 20), Growing("c", 20)]
    assert guard(MemoryView(400, 700), booting).stop == ()
    assert guard(MemoryView(400, 700), booting, grown_cost=200).stop == ("c",)  # 400 - 360 < 70


@given(st.lists(st.tuples(st.floats(0, 500), st.floats(0, 2000)), max_size=8), st.floats(0, 4000),
       st.floats(100, 8000), st.floats(0, 0.5))
def test_guard_properties(workers, available, limit, lookahead):
    from gunicorn_slowstart.admission import Growing, guard

    booting = [Growing(i, grown, rate) for i, (grown, rate) in enumerate(workers)]
    verdict = guard(MemoryView(available, limit), booting, lookahead=lookahead)
    assert len(verdict.stop) <= max(0, len(booting) - 1)  # never the last one
    assert list(verdict.stop) == [b.key for b in reversed(booting)][:len(verdict.stop)]  # youngest first
    if available - verdict.need >= 0.1 * limit:
        assert verdict.stop == ()


def test_samples_taken_before_a_time_are_due_oldest_first_and_the_latest_counts():
    admission = Admission()
    admission.measured("a", 100, 2, at=5.0)
    admission.measured("b", 100, 2, at=1.0)
    admission.measured("c", 100, 2, at=9.0)
    assert admission.sampled_before(6.0) == ["b", "a"]
    admission.measured("b", 300, 2, at=10.0)  # it grew after it was ready
    admission.measured("a", None, None, at=10.0)  # unreadable now: its old sample stays, not due again
    assert admission.sampled_before(10.0) == ["c"]
    assert admission.uss == {"a": 100.0, "b": 300.0, "c": 100.0} and admission.cost_mb == 100.0
    admission.measured("c", 300, 2, at=11.0)
    assert admission.cost_mb == 300.0  # the median of the latest samples
    admission.forget("c")
    assert "c" not in admission.sampled_at


def test_the_samples_taken_since_a_ramp_began_outweigh_older_ones_but_never_lower_the_cost():
    admission = Admission()
    for key in range(8):
        admission.measured(key, 100, 2, at=1.0)
    admission.fresh_since = 10.0  # a respawn: its one look measures 2 of the 8 again, grown
    admission.measured(0, 400, 2, at=10.0)
    admission.measured(1, 400, 2, at=10.0)
    assert admission.cost_mb == 400.0  # not the median of all (100): most samples are stale
    admission.fresh_since = 20.0
    admission.measured(2, 50, 2, at=20.0)  # shrank (a new worker's first sample is small)
    assert admission.cost_mb == 100.0  # the median of all latest samples is the floor


def test_each_kind_reserves_what_the_other_promised():
    """HTTP workers of 100 MiB and long workers of 300 MiB share 1000 MiB (no headroom):
    the long workers' room counts the HTTP boots still growing and the HTTP forks admitted."""
    http, long = Admission(headroom=0.0), Admission(headroom=0.0)
    http.measured(1, 100, 2)
    long.measured("a", 300, 5)
    memory = MemoryView(available=1000.0, limit=2000.0)
    booting_http = [(40.0, 1)]  # 60 MiB and 1 task still to come
    assert http.promised(booting_http) == (60.0, 1)
    assert http.promised(booting_http, forks=2) == (260.0, 5)
    assert long.promised([(None, None)]) == (300.0, 5)  # unmeasured: its whole cost
    assert Admission().promised([(None, None)], forks=3) == (0.0, 0)  # nothing known: nothing promised
    room = long.room(memory, None, [], http.promised(booting_http, forks=2))
    assert room.count == 2  # (1000 - 260) // 300
    pids = PidsView(limit=30, current=10)
    assert long.room(None, pids, [], http.promised(booting_http, forks=2)).count == 2  # (30-10-5-1) // 5
