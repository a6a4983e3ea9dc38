"""The rolling-retire rule shared by the arbiter and the pool manager (pure)."""

from hypothesis import given
from hypothesis import strategies as st

from gunicorn_slowstart.rollout import to_retire


def test_an_old_process_goes_only_when_a_new_one_is_ready():
    old = ["a", "b", "c"]  # oldest first
    assert to_retire(old, 3, 0) == []
    assert to_retire(old, 3, 1) == ["a"]
    assert to_retire(old, 3, 3) == ["a", "b", "c"]
    assert to_retire(old, 3, 5) == ["a", "b", "c"]
    assert to_retire(old, 0, 0) == ["a", "b", "c"]  # a pool resized to 0: all go
    assert to_retire([], 3, 3) == []


@given(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20))
def test_never_below_the_target(old_count, target, ready_new):
    old = list(range(old_count))
    gone = to_retire(old, target, ready_new)
    assert gone == old[: len(gone)]  # oldest first
    assert len(old) - len(gone) + ready_new >= min(target, len(old) + ready_new)
