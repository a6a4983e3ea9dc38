"""Rolling recycling: which worker is due, and that only one is recycled at a time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gunicorn_slowstart.recycling import Due, age_limit, due, next_recycle


def test_age_limit_has_up_to_ten_percent_jitter():
    assert age_limit(100, 0.0) == 100
    assert age_limit(100, 0.5) == pytest.approx(105)
    assert age_limit(100, 0.999999) < 110
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            age_limit(100, bad)


def test_due_by_age_oldest_first():
    ages = {1: 10.0, 2: 30.0, 3: 20.0, 4: 5.0}
    limits = {pid: 8.0 for pid in ages}
    assert [d.key for d in due(ages, limits, {}, 0)] == [2, 3, 1]
    assert due(ages, {}, {}, 0) == []  # no age limit set


def test_memory_comes_before_age():
    ages = {1: 100.0, 2: 5.0, 3: 6.0}
    limits = {1: 50.0, 2: 50.0, 3: 50.0}
    found = due(ages, limits, {1: 10.0, 2: 300.0, 3: 500.0}, max_memory_mb=200)
    assert [(d.key, d.reason) for d in found] == [(3, "memory"), (2, "memory"), (1, "age")]
    assert found[0].text == "USS 500 MiB > max_worker_memory 200 MiB"
    assert due(ages, {}, {1: 10.0, 2: 300.0}, max_memory_mb=0) == []  # 0: no memory limit


def test_one_at_a_time_and_never_during_a_ramp():
    candidates = [Due(1, "age", ""), Due(2, "age", "")]
    assert next_recycle(candidates, retiring=0, booting=0, ramping=False) == candidates[0]
    assert next_recycle(candidates, retiring=1, booting=0, ramping=False) is None
    assert next_recycle(candidates, retiring=0, booting=1, ramping=False) is None
    assert next_recycle(candidates, retiring=0, booting=0, ramping=True) is None
    assert next_recycle([], retiring=0, booting=0, ramping=False) is None


@given(st.dictionaries(st.integers(0, 50), st.tuples(st.floats(0, 1e4), st.floats(1, 1e4), st.floats(0, 1e4)),
                       max_size=20),
       st.floats(0, 1e4))
def test_due_lists_exactly_the_workers_past_a_limit(workers, max_memory):
    ages = {k: a for k, (a, _, _) in workers.items()}
    limits = {k: lim for k, (_, lim, _) in workers.items()}
    uss = {k: u for k, (_, _, u) in workers.items()}
    found = due(ages, limits, uss, max_memory)
    expected = {k for k in workers if ages[k] >= limits[k] or (max_memory and uss[k] > max_memory)}
    assert {d.key for d in found} == expected
    assert len(found) == len(expected)
