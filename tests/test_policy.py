"""SlowStartPolicy, the pure pacing state machine, fed plain values (no clock, no processes)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gunicorn_slowstart.policy import (
    HTTP,
    LONG,
    BackoffConfig,
    Decision,
    PolicyConfig,
    SlowStartPolicy,
)


def make(**kwargs) -> SlowStartPolicy:
    return SlowStartPolicy(PolicyConfig(**kwargs))


class Keys:
    """Integer keys for forked processes, as a simulated arbiter would use pids."""

    def __init__(self) -> None:
        self.n = 0

    def fork(self, policy: SlowStartPolicy, count: int, now: float, kind: str = HTTP) -> list[int]:
        keys = []
        for _ in range(count):
            self.n += 1
            policy.spawned(self.n, now, kind)
            keys.append(self.n)
        return keys


def fail_once(policy: SlowStartPolicy, keys: Keys, now: float, kind: str = HTTP) -> None:
    """Fork one process of ``kind`` and have it die, unasked, before it is ready."""
    (key,) = keys.fork(policy, 1, now, kind)
    policy.exited(key, now, expected=False)


# -- PolicyConfig ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    dict(mode="fast"), dict(growth="triple"), dict(initial=0), dict(max_batch=0),
    dict(delay=-1), dict(ready_timeout=0), dict(boot_timeout=-1),
])
def test_config_refuses_bad_values(kwargs):
    with pytest.raises(ValueError):
        PolicyConfig(**kwargs)


def test_default_backoffs():
    config = PolicyConfig()
    http, long = config.http_backoff, config.long_backoff
    assert (http.initial, http.cap, http.reset_after, http.max_failures) == (1, 30, 30, 10)
    assert (long.initial, long.cap, long.reset_after, long.max_failures) == (1, 60, 60, 0)  # never gives up


# -- ready mode: the window -------------------------------------------------------------------


@pytest.mark.parametrize("initial, max_batch, window", [(1, 8, 1), (3, 8, 3), (5, 2, 2), (4, 4, 4)])
def test_window_starts_at_initial_capped_by_max_batch(initial, max_batch, window):
    policy = make(initial=initial, max_batch=max_batch)
    assert policy.window == window
    decision = policy.decide(0.0, 100)
    assert decision.spawn == window
    assert decision.spawn_long == 0


def test_window_grows_by_one_per_ready_never_beyond_max_batch():
    policy, keys = make(initial=1, max_batch=4), Keys()
    seen = []
    now = 0.0
    for _ in range(8):
        (key,) = keys.fork(policy, 1, now)
        now += 1.0
        policy.ready(key, now)
        seen.append(policy.window)
    assert seen == [2, 3, 4, 4, 4, 4, 4, 4]


def test_in_flight_is_bounded_by_the_window():
    policy, keys = make(initial=2, max_batch=8), Keys()
    assert policy.decide(0.0, 10).spawn == 2
    keys.fork(policy, 2, 0.0)
    assert policy.in_flight == 2
    # nothing more until something is ready; look again at the first ready time-out
    decision = policy.decide(0.5, 8)
    assert decision.spawn == 0
    assert decision.wake_at == pytest.approx(30.0)


def test_pipelining_a_ready_worker_frees_its_place_at_once():
    policy, keys = make(initial=2, max_batch=2), Keys()
    slow, fast = keys.fork(policy, policy.decide(0.0, 10).spawn, 0.0)
    policy.ready(fast, 1.0)
    # the fast one's place is free now, although the slow one still boots
    decision = policy.decide(1.0, 9)
    assert decision.spawn == 1
    assert policy.in_flight == 1


def test_one_slow_worker_does_not_hold_back_the_others_beyond_its_own_place():
    policy, keys = make(initial=3, max_batch=3), Keys()
    slow, *others = keys.fork(policy, policy.decide(0.0, 20).spawn, 0.0)
    forked = 3
    now = 0.0
    for _ in range(6):  # six rounds while the slow worker boots on
        now += 1.0
        for key in others:
            policy.ready(key, now)
        decision = policy.decide(now, 20 - forked)
        assert decision.spawn == 2  # the cap minus the slow worker's place
        others = keys.fork(policy, decision.spawn, now)
        forked += decision.spawn
        assert policy.in_flight == 3
    assert forked == 3 + 12
    policy.ready(slow, now + 0.5)
    assert policy.window == 3


def test_exact_spawn_sequence_16_workers_cap_2_equal_boots():
    policy, keys = make(initial=1, max_batch=2, tail_merge=False), Keys()
    now, ready, forks, sequence = 0.0, 0, [], []
    booting: list[int] = []
    while ready < 16:
        decision = policy.decide(now, 16 - ready - len(booting))
        sequence.append(decision.spawn)
        booting += keys.fork(policy, decision.spawn, now)
        forks += [now] * decision.spawn
        now += 1.0  # every boot takes one second
        for key in booting:
            policy.ready(key, now)
        ready += len(booting)
        booting = []
    assert sequence == [1, 2, 2, 2, 2, 2, 2, 2, 1]
    assert forks == [0.0] + [float(t) for t in range(1, 9) for _ in range(2)][:15]
    assert now == 9.0
    assert policy.decide(now, 0) == Decision()


def test_pipelined_spawn_times_when_each_ready_is_seen_alone():
    """Decide after every single ready, as the arbiter does when readiness arrives one by one."""
    policy, keys = make(initial=1, max_batch=3, tail_merge=False), Keys()
    boot = 1.0
    pending = [(boot, k) for k in keys.fork(policy, policy.decide(0.0, 7).spawn, 0.0)]
    forked_at = [0.0]
    while pending:
        pending.sort()
        at, key = pending.pop(0)
        policy.ready(key, at)
        decision = policy.decide(at, 7 - len(forked_at))
        for new in keys.fork(policy, decision.spawn, at):
            pending.append((at + boot, new))
            forked_at.append(at)
        assert policy.in_flight <= policy.window <= 3
    assert forked_at == [0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0]


def test_http_first_then_long_workers_share_the_budget():
    policy, keys = make(initial=3, max_batch=4), Keys()
    decision = policy.decide(0.0, 2, 5)
    assert (decision.spawn, decision.spawn_long) == (2, 1)
    http = keys.fork(policy, 2, 0.0)
    (long1,) = keys.fork(policy, 1, 0.0, LONG)
    assert policy.booting_count(HTTP) == 2 and policy.booting_count(LONG) == 1
    assert policy.decide(0.5, 0, 4) == Decision(wake_at=30.0)
    policy.ready(long1, 1.0)  # a long worker's readiness grows the shared window too
    assert policy.window == 4
    decision = policy.decide(1.0, 1, 4)
    assert (decision.spawn, decision.spawn_long) == (1, 1)
    keys.fork(policy, 1, 1.0)
    keys.fork(policy, 1, 1.0, LONG)
    policy.ready(http[0], 2.0)
    decision = policy.decide(2.0, 0, 3)
    assert (decision.spawn, decision.spawn_long) == (0, 1)
    assert policy.ready_count(LONG) == 1 and policy.ready_count(HTTP) == 1 and policy.ready_count() == 2


def test_decide_clamps_negative_wants():
    policy = make(initial=2, max_batch=2)
    assert policy.decide(0.0, -3, -1) == Decision()


def test_spawned_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        make().spawned(1, 0.0, "batch")


def test_ready_or_exit_of_an_unknown_key_is_ignored():
    policy = make(initial=1, max_batch=4)
    policy.ready(99, 1.0)
    policy.exited(98, 1.0)
    assert policy.window == 1
    assert policy.backoff[HTTP].failures == 0


# -- timer mode ---------------------------------------------------------------------------------


def run_timer(policy: SlowStartPolicy, wanted: int, keys: Keys) -> list[tuple[float, int]]:
    """Call decide at every wake_at, mark everything ready at once; return (time, batch)."""
    now, forked, batches = 0.0, 0, []
    for _ in range(200):
        decision = policy.decide(now, wanted - forked)
        if decision.spawn:
            batches.append((now, decision.spawn))
            for key in keys.fork(policy, decision.spawn, now):
                policy.ready(key, now + 0.1)
            forked += decision.spawn
        if forked == wanted:
            return batches
        assert decision.wake_at is not None and decision.wake_at > now
        now = decision.wake_at
    raise AssertionError("timer mode never finished")


def test_timer_batches_double_up_to_max_batch_delay_apart():
    policy = make(mode="timer", initial=1, max_batch=4, delay=2.0)
    batches = run_timer(policy, 20, Keys())
    assert batches == [(0.0, 1), (2.0, 2), (4.0, 4), (6.0, 4), (8.0, 4), (10.0, 4), (12.0, 1)]


def test_timer_16_workers_cap_1_delay_2_last_fork_at_30_s():
    policy = make(mode="timer", initial=1, max_batch=1, delay=2.0)
    batches = run_timer(policy, 16, Keys())
    assert [n for _, n in batches] == [1] * 16
    assert batches[-1][0] == 30.0


def test_timer_is_blind_to_readiness():
    policy, keys = make(mode="timer", initial=1, max_batch=8, delay=2.0), Keys()
    (key,) = keys.fork(policy, policy.decide(0.0, 10).spawn, 0.0)
    policy.ready(key, 0.1)  # ready at once: in ready mode this would allow two more now
    assert policy.window == 1
    decision = policy.decide(0.1, 9)
    assert decision.spawn == 0
    assert decision.wake_at == 2.0
    # nor is it held back by workers that are still booting
    assert policy.decide(2.0, 9).spawn == 2
    keys.fork(policy, 2, 2.0)
    assert policy.decide(4.0, 7).spawn == 4


def test_timer_wake_at_none_when_nothing_is_wanted():
    policy = make(mode="timer", max_batch=4)
    policy.decide(0.0, 1)
    policy.spawned(1, 0.0)
    policy.ready(1, 0.5)
    assert policy.decide(1.0, 0).wake_at is None


def test_timer_wake_at_is_the_backoff_end_not_now():
    """A due batch held back by a back-off wakes at the back-off's end, not at once."""
    policy, keys = make(mode="timer", initial=1, max_batch=4, delay=2.0), Keys()
    keys.fork(policy, policy.decide(0.0, 4).spawn, 0.0)
    policy.exited(1, 3.0)  # the next batch was due at 2.0; the back-off runs until 4.0
    decision = policy.decide(3.0, 4)
    assert decision.spawn == 0
    assert decision.wake_at == 4.0
    assert policy.decide(4.0, 4).spawn == 2


# -- off mode -------------------------------------------------------------------------------------


def test_off_spawns_everything_at_once():
    policy, keys = make(mode="off", initial=1, max_batch=1), Keys()
    assert policy.decide(0.0, 16, 3) == Decision(spawn=16, spawn_long=3)
    keys.fork(policy, 16, 0.0)
    # booting workers do not hold anything back either
    assert policy.decide(0.1, 4).spawn == 4


# -- time-outs --------------------------------------------------------------------------------------


def test_ready_timeout_lists_a_stuck_worker_once_and_frees_its_place():
    policy, keys = make(initial=1, max_batch=4, ready_timeout=5.0), Keys()
    (stuck,) = keys.fork(policy, policy.decide(0.0, 4).spawn, 0.0)
    early = policy.decide(4.9, 3)
    assert early.stale == () and early.spawn == 0 and early.wake_at == 5.0
    decision = policy.decide(5.0, 3)
    assert decision.stale == (stuck,)
    assert policy.in_flight == 0
    assert policy.booting_count() == 1  # still booting, just not counted
    assert decision.spawn == 1  # its place is free
    keys.fork(policy, 1, 5.0)
    for t in (5.0, 6.0, 20.0, 100.0):
        assert stuck not in policy.decide(t, 0).stale
    # its late readiness is not a sign the window may grow
    window = policy.window
    policy.ready(stuck, 101.0)
    assert policy.window == window
    assert policy.ready_count() == 1


def test_boot_timeout_lists_a_worker_in_kill_once():
    policy, keys = make(initial=1, max_batch=4, boot_timeout=3.0, ready_timeout=30.0), Keys()
    (hung,) = keys.fork(policy, policy.decide(0.0, 4).spawn, 0.0)
    assert policy.decide(1.0, 3).wake_at == 3.0
    decision = policy.decide(3.0, 3)
    assert decision.kill == (hung,)
    assert decision.stale == ()
    assert policy.decide(3.5, 3).kill == ()
    assert policy.decide(10.0, 3).kill == ()


def test_a_killed_worker_exit_is_a_failure_even_if_expected():
    policy, keys = make(initial=2, max_batch=4, boot_timeout=3.0), Keys()
    hung, ok = keys.fork(policy, policy.decide(0.0, 4).spawn, 0.0)
    policy.ready(ok, 1.0)
    assert policy.window == 3
    assert policy.decide(3.0, 0).kill == (hung,)
    policy.exited(hung, 3.2, expected=True)  # we stopped it, but it was the boot time-out
    assert policy.window == 1
    assert policy.backoff[HTTP].failures == 1
    decision = policy.decide(3.2, 3)
    assert decision.spawn == 0
    assert decision.wake_at == pytest.approx(4.2)


def test_stale_and_kill_both_listed_once():
    policy, keys = make(initial=1, max_batch=2, ready_timeout=2.0, boot_timeout=4.0), Keys()
    (key,) = keys.fork(policy, policy.decide(0.0, 2).spawn, 0.0)
    assert policy.decide(2.0, 0).stale == (key,)
    decision = policy.decide(2.5, 0)
    assert decision.stale == () and decision.wake_at == 4.0
    assert policy.decide(4.0, 0).kill == (key,)
    assert policy.decide(5.0, 0) == Decision()


# -- boot failures ------------------------------------------------------------------------------------


def test_a_failure_halves_the_window_never_below_one():
    policy, keys = make(initial=8, max_batch=8, http_backoff=BackoffConfig(max_failures=0)), Keys()
    windows = []
    for t in range(5):  # each failing process forked after the previous reaction
        fail_once(policy, keys, 100.0 * t)
        windows.append(policy.window)
    assert windows == [4, 2, 1, 1, 1]


def test_failures_of_one_round_halve_the_window_once():
    """Like TCP: processes already in flight when the window was halved do not halve it again."""
    policy, keys = make(initial=8, max_batch=8), Keys()
    booting = keys.fork(policy, policy.decide(0.0, 8).spawn, 0.0)
    for i, key in enumerate(booting[:3]):
        policy.exited(key, 1.0 + i / 10)
    assert policy.window == 4
    assert policy.backoff[HTTP].failures == 1  # one loss event, one step toward giving up
    # a process forked after that reaction belongs to a new round
    (late,) = keys.fork(policy, 1, 2.0)
    policy.exited(late, 2.5)
    assert policy.window == 2


def test_in_timer_mode_every_failure_counts():
    policy, keys = make(mode="timer", initial=8, max_batch=8), Keys()
    booting = keys.fork(policy, policy.decide(0.0, 8).spawn, 0.0)
    for i, key in enumerate(booting[:3]):
        policy.exited(key, 1.0 + i)
    assert policy.backoff[HTTP].failures == 3
    assert policy.decide(3.0, 8).wake_at == 3.0 + 4.0


def backoff_delays(policy: SlowStartPolicy, kind: str, count: int) -> list[float]:
    """Let ``count`` processes of ``kind`` fail in a row; return each back-off delay."""
    keys, now, delays = Keys(), 0.0, []
    for _ in range(count):
        decision = policy.decide(now, 1 if kind == HTTP else 0, 1 if kind == LONG else 0)
        assert decision.spawn + decision.spawn_long == 1
        fail_once(policy, keys, now, kind)
        decision = policy.decide(now, 1 if kind == HTTP else 0, 1 if kind == LONG else 0)
        assert decision.spawn == decision.spawn_long == 0
        assert decision.wake_at is not None
        delays.append(decision.wake_at - now)
        early = policy.decide(decision.wake_at - 0.01, 1 if kind == HTTP else 0, 1 if kind == LONG else 0)
        assert early.spawn + early.spawn_long == 0
        now = decision.wake_at
    return delays


def test_http_backoff_doubles_capped_at_30_s():
    policy = make(http_backoff=BackoffConfig(max_failures=0))
    assert backoff_delays(policy, HTTP, 8) == [1, 2, 4, 8, 16, 30, 30, 30]


def test_long_backoff_doubles_capped_at_60_s():
    long_backoff = dataclasses.replace(PolicyConfig().long_backoff, max_failures=0)
    policy = make(long_backoff=long_backoff)
    assert backoff_delays(policy, LONG, 8) == [1, 2, 4, 8, 16, 32, 60, 60]


def test_backoff_of_one_kind_does_not_stop_the_other():
    policy, keys = make(initial=2, max_batch=2), Keys()
    policy.decide(0.0, 0, 1)
    fail_once(policy, keys, 0.0, LONG)
    decision = policy.decide(0.1, 2, 1)
    assert (decision.spawn, decision.spawn_long) == (1, 0)  # the window was halved to 1
    assert decision.wake_at == pytest.approx(1.0)


def test_backoff_wake_at_is_the_backoff_end_when_nothing_boots():
    policy, keys = make(), Keys()
    policy.decide(10.0, 1)
    fail_once(policy, keys, 10.0)
    assert policy.decide(10.0, 1) == Decision(wake_at=11.0)
    assert policy.decide(10.99, 1).spawn == 0
    assert policy.decide(11.0, 1).spawn == 1


def test_http_ready_ends_the_run_and_the_backoff_at_once():
    """HTTP workers: a boot that works is the evidence that boots work (Backoff docstring)."""
    policy, keys = make(initial=1, max_batch=4), Keys()
    fail_once(policy, keys, 0.0)
    fail_once(policy, keys, 1.0)  # level 2: until 3.0
    assert policy.backoff[HTTP].level == 2
    boot(policy, keys, 3.0, 1.0)
    assert policy.backoff[HTTP].failures == 0
    assert policy.backoff[HTTP].level == 0
    fail_once(policy, keys, 5.0)
    assert policy.decide(5.0, 1).wake_at == 6.0  # back to 1 s


def test_long_backoff_level_resets_only_once_a_worker_ready_since_the_failure_stays_up():
    policy, keys = make(initial=4, max_batch=4), Keys()
    fail_once(policy, keys, 0.0, LONG)  # level 1: 1 s
    boot(policy, keys, 1.0, 1.0, LONG)  # ready at 2.0
    assert (policy.backoff[LONG].failures, policy.backoff[LONG].level) == (1, 1)
    policy.decide(61.9, 0, 0)
    assert policy.backoff[LONG].level == 1
    policy.decide(62.0, 0, 0)  # up for reset_after (60 s)
    assert (policy.backoff[LONG].failures, policy.backoff[LONG].level) == (0, 0)
    fail_once(policy, keys, 63.0, LONG)
    assert policy.decide(63.0, 0, 1).wake_at == 64.0  # back to 1 s


def test_long_backoff_level_is_kept_when_the_ready_worker_dies_before_reset_after():
    policy, keys = make(initial=4, max_batch=4), Keys()
    fail_once(policy, keys, 0.0, LONG)
    (key,) = keys.fork(policy, 1, 1.0, LONG)
    policy.ready(key, 2.0)
    policy.exited(key, 20.0)
    policy.decide(100.0, 0, 0)
    assert policy.backoff[LONG].level == 1
    fail_once(policy, keys, 100.0, LONG)
    assert policy.decide(100.0, 0, 1).wake_at == 102.0  # second level: 2 s


def test_long_backoff_level_not_reset_by_a_worker_ready_before_the_failure():
    policy, keys = make(initial=2, max_batch=4), Keys()
    old, bad = keys.fork(policy, 2, 0.0, LONG)
    policy.ready(old, 1.0)
    policy.exited(bad, 2.0)
    policy.decide(500.0, 0, 0)  # ``old`` has been up for ages, but since before the failure
    assert policy.backoff[LONG].level == 1


def test_while_backed_off_wake_at_includes_the_settle_time():
    backoff = BackoffConfig(initial=10.0, cap=60.0, reset_after=5.0, max_failures=5, ready_resets=False)
    policy, keys = make(initial=2, max_batch=4, long_backoff=backoff), Keys()
    good, bad = keys.fork(policy, 2, 0.0, LONG)
    policy.exited(bad, 0.5)  # backed off until 10.5
    policy.ready(good, 1.0)  # ready after the failure: the level may reset at 6.0
    assert policy.decide(1.0, 0, 5).wake_at == 6.0
    assert policy.decide(6.0, 0, 5).spawn_long == 2  # window: 2, halved to 1, +1 for the ready
    assert policy.backoff[LONG].level == 0


def test_a_crash_after_ready_counts_toward_the_backoff_when_the_caller_says_so():
    policy, keys = make(initial=2, max_batch=4), Keys()
    (key,) = keys.fork(policy, 1, 0.0, LONG)
    policy.ready(key, 1.0)
    window = policy.window
    policy.exited(key, 3.0, failed=True)
    assert policy.window == window  # not a boot failure: no congestion
    assert (policy.backoff[LONG].failures, policy.backoff[LONG].level) == (1, 1)
    assert policy.decide(3.0, 0, 1).wake_at == 4.0


def test_the_caller_may_say_a_booting_exit_is_no_backoff_failure():
    policy, keys = make(initial=4, max_batch=4), Keys()
    (key,) = keys.fork(policy, 1, 0.0)
    policy.exited(key, 1.0, failed=False)
    assert policy.window == 2  # still congestion
    assert policy.backoff[HTTP].failures == 0 and policy.decide(1.0, 1).spawn == 1


def test_a_long_boot_failure_backs_off_the_long_kind_even_in_an_http_loss_round():
    policy, keys = make(initial=4, max_batch=4), Keys()
    (long_worker,) = keys.fork(policy, 1, 0.0, LONG)
    fail_once(policy, keys, 1.0)  # an HTTP worker dies: the window is halved at 1.0
    policy.exited(long_worker, 2.0)  # the long worker (forked at 0.0) dies while booting
    assert policy.backoff[LONG].failures == 1
    assert policy.decide(2.0, 0, 1).spawn_long == 0  # its kind backs off (1 s)


def test_consecutive_http_failures_reset_on_any_ready():
    policy, keys = make(initial=1, max_batch=4, http_backoff=BackoffConfig(max_failures=3)), Keys()
    now = 0.0
    for _ in range(5):
        for _ in range(2):
            fail_once(policy, keys, now)
            now += 100.0
        (key,) = keys.fork(policy, policy.decide(now, 1).spawn, now)
        policy.ready(key, now + 1)
        assert policy.backoff[HTTP].failures == 0
        assert policy.decide(now + 1, 0).exhausted == ()
        policy.exited(key, now + 2)
        now += 100.0


LONG_GIVES_UP_AFTER_5 = BackoffConfig(initial=1.0, cap=60.0, reset_after=60.0, max_failures=5, ready_resets=False)


def test_long_failures_keep_counting_across_short_lived_readies():  # with a give-up limit set
    """Long workers can crash after they are ready: only a stable one ends the run."""
    policy, keys = make(initial=2, max_batch=2, long_backoff=LONG_GIVES_UP_AFTER_5), Keys()
    now = 0.0
    for _ in range(4):
        fail_once(policy, keys, now, LONG)
        boot(policy, keys, now + 1.0, 1.0, LONG)
        assert policy.decide(now + 2.0, 0, 0).exhausted == ()
        now += 10.0
    assert policy.backoff[LONG].failures == 4
    fail_once(policy, keys, now, LONG)
    assert policy.decide(now, 1, 1).exhausted == (LONG,)


def test_http_exhausted_after_max_failures_nothing_more_spawned():
    policy, keys = make(initial=4, max_batch=4), Keys()
    now = 0.0
    for _ in range(10):
        decision = policy.decide(now, 4, 2)
        assert decision.exhausted == ()
        assert decision.spawn >= 1
        fail_once(policy, keys, now)
        now += 100.0
    decision = policy.decide(now, 4, 2)
    assert decision.exhausted == (HTTP,)
    assert (decision.spawn, decision.spawn_long) == (0, 0)
    assert policy.decide(now + 10_000, 4, 2).spawn == 0


def test_long_exhausted_after_5_while_http_continues():
    policy, keys = make(initial=2, max_batch=2, long_backoff=LONG_GIVES_UP_AFTER_5), Keys()
    now = 0.0
    for _ in range(5):
        assert policy.decide(now, 0, 1).spawn_long == 1
        fail_once(policy, keys, now, LONG)
        now += 100.0
    decision = policy.decide(now, 3, 4)
    assert decision.exhausted == (LONG,)
    assert decision.spawn == 1 and decision.spawn_long == 0  # window halved to 1
    keys.fork(policy, 1, now)
    # the exhausted long kind is no reason to wake up
    assert policy.decide(now + 1, 2, 4).wake_at == now + 30.0


def test_max_failures_zero_never_gives_up():
    policy, keys = make(http_backoff=BackoffConfig(max_failures=0)), Keys()
    now = 0.0
    for _ in range(50):
        decision = policy.decide(now, 1)
        assert decision.exhausted == ()
        assert decision.spawn == 1
        fail_once(policy, keys, now)
        now += 31.0
    assert policy.backoff[HTTP].failures == 50


def test_expected_exit_of_a_booting_worker_is_not_a_failure():
    policy, keys = make(initial=4, max_batch=4), Keys()
    booting = keys.fork(policy, policy.decide(0.0, 4).spawn, 0.0)
    policy.exited(booting[0], 1.0, expected=True)
    assert policy.window == 4
    assert policy.backoff[HTTP].failures == 0 and policy.backoff[HTTP].level == 0
    assert policy.decide(1.0, 1).spawn == 1


@pytest.mark.parametrize("expected", [True, False])
def test_exit_of_a_ready_worker_changes_nothing(expected):
    policy, keys = make(initial=2, max_batch=4), Keys()
    a, b = keys.fork(policy, policy.decide(0.0, 2).spawn, 0.0)
    policy.ready(a, 1.0)
    policy.ready(b, 1.0)
    window = policy.window
    policy.exited(a, 7.0, expected=expected)  # beyond flap_window (5 s) after ready
    assert policy.window == window == 4
    assert policy.backoff[HTTP].failures == 0 and policy.backoff[HTTP].level == 0
    assert policy.ready_count() == 1
    assert policy.decide(7.0, 1).spawn == 1


# -- slow boots -------------------------------------------------------------------------------------


def boot(policy: SlowStartPolicy, keys: Keys, start: float, duration: float, kind: str = HTTP) -> None:
    (key,) = keys.fork(policy, 1, start, kind)
    policy.ready(key, start + duration)


def test_a_boot_slower_than_slow_factor_times_the_median_does_not_grow_the_window():
    policy, keys = make(initial=1, max_batch=16, slow_factor=3.0), Keys()
    for i in range(3):
        boot(policy, keys, 10.0 * i, 1.0)
    assert policy.window == 4
    boot(policy, keys, 100.0, 3.5)  # 3.5 > 3 x median 1.0
    assert policy.window == 4
    boot(policy, keys, 200.0, 3.0)  # exactly 3 x the median (1.0 of [1, 1, 1, 3.5]) grows
    assert policy.window == 5


def test_the_first_boot_of_a_ramp_always_grows_the_window():
    policy, keys = make(initial=1, max_batch=16), Keys()
    boot(policy, keys, 0.0, 1.0)
    boot(policy, keys, 10.0, 1.0)
    policy.restart(50.0)
    assert policy.window == 1
    boot(policy, keys, 50.0, 50.0)  # slow, but the new ramp has no median yet
    assert policy.window == 2
    boot(policy, keys, 200.0, 151.0)  # > 3 x median 50
    assert policy.window == 2


# -- idle growth ----------------------------------------------------------------------------------------


def test_idle_growth_jumps_after_the_probe():
    policy, keys = make(initial=1, max_batch=8, growth="idle"), Keys()
    policy.cpu_idle(6.0, 0.0)  # the first sample has no interval before it: ignored
    assert policy.decide(0.0, 20).spawn == 1
    (probe,) = keys.fork(policy, 1, 0.0)
    policy.cpu_idle(6.0, 0.5)  # its interval saw the probe's fork: ignored
    assert policy.idle_target is None
    policy.cpu_idle(6.4, 1.0)  # clean: the window may grow to in_flight (1) + round(6.4)
    assert policy.idle_target == 7
    assert policy.decide(1.0, 19).spawn == 0  # not before the probe is ready
    assert policy.window == 1
    policy.ready(probe, 1.2)
    decision = policy.decide(1.2, 19)
    assert policy.window == 7
    assert decision.spawn == 7
    keys.fork(policy, 7, 1.2)
    policy.cpu_idle(1.0, 1.5)  # saw the spawn: ignored
    policy.cpu_idle(1.0, 2.0)  # 7 booting + 1 idle
    assert policy.decide(2.0, 12).spawn == 1
    assert policy.window == 8
    keys.fork(policy, 1, 2.0)
    policy.cpu_idle(50.0, 2.5)
    policy.cpu_idle(50.0, 3.0)
    assert policy.decide(3.0, 11).spawn == 0  # capped at max_batch
    assert policy.window == 8


def test_idle_growth_stops_once_boots_slow_down():
    policy, keys = make(initial=1, max_batch=32, growth="idle", idle_slow_factor=1.5), Keys()
    boot(policy, keys, 0.0, 2.0)  # the probe: 2 s
    policy.cpu_idle(0.0, 2.0)
    policy.cpu_idle(4.0, 2.5)
    policy.decide(2.5, 50)
    assert policy.window == 4
    boot(policy, keys, 3.0, 3.0)  # 3.0 == 1.5 x 2.0: not slower
    assert policy.window == 5
    policy.cpu_idle(10.0, 6.0)
    policy.cpu_idle(10.0, 6.5)
    policy.decide(6.5, 50)
    assert policy.window == 10
    boot(policy, keys, 7.0, 3.1)  # 3.1 > 1.5 x 2.0: boots slowed down
    assert policy.window == 11  # the +1 of a ready still applies
    policy.cpu_idle(30.0, 10.5)
    policy.cpu_idle(30.0, 11.0)
    policy.decide(11.0, 50)
    assert policy.window == 11


def test_idle_growth_never_shrinks_the_window():
    policy, keys = make(initial=4, max_batch=8, growth="idle"), Keys()
    boot(policy, keys, 0.0, 1.0)
    policy.cpu_idle(0.0, 1.0)
    policy.cpu_idle(0.0, 2.0)
    policy.decide(2.0, 10)
    assert policy.window == 5


def test_double_growth_ignores_idle_cpus():
    policy, keys = make(initial=1, max_batch=8, growth="double"), Keys()
    boot(policy, keys, 0.0, 1.0)
    policy.cpu_idle(8.0, 1.0)
    policy.cpu_idle(8.0, 2.0)
    assert policy.decide(2.0, 10).spawn == 2


def test_idle_growth_only_in_ready_mode():
    policy, keys = make(mode="timer", initial=1, max_batch=8, growth="idle"), Keys()
    boot(policy, keys, 0.0, 1.0)
    policy.cpu_idle(8.0, 1.0)
    policy.cpu_idle(8.0, 2.0)
    assert policy.decide(2.0, 10).spawn == 1


def test_restart_forgets_the_probe():
    policy, keys = make(initial=1, max_batch=8, growth="idle"), Keys()
    boot(policy, keys, 0.0, 1.0)
    policy.cpu_idle(8.0, 1.0)
    policy.cpu_idle(8.0, 2.0)
    policy.decide(2.0, 8)
    assert policy.window == 8
    policy.restart(10.0)
    policy.cpu_idle(8.0, 11.0)
    assert policy.decide(11.0, 8).spawn == 1


# -- restart, reconfigure, hold --------------------------------------------------------------------------


def test_restart_resets_the_window_and_keeps_booting_state():
    policy, keys = make(initial=2, max_batch=8), Keys()
    for i in range(6):
        boot(policy, keys, float(i), 1.0)
    assert policy.window == 8
    booting = keys.fork(policy, 3, 10.0)
    fail_once(policy, keys, 10.0)
    policy.restart(11.0)
    assert policy.window == 2
    assert policy.in_flight == 3 and set(policy.booting) == set(booting)
    assert policy.backoff[HTTP].failures == 1
    assert policy.ramp.boot_times == []


def test_restart_resets_the_timer_batch():
    policy = make(mode="timer", initial=1, max_batch=8, delay=1.0)
    for t in range(4):
        policy.decide(float(t), 100)
    assert policy.timer_batch == 8
    policy.restart(10.0)
    assert policy.decide(10.0, 100).spawn == 1


def test_reconfigure_keeps_booting_state_and_caps_the_window():
    policy, keys = make(initial=4, max_batch=8, long_backoff=BackoffConfig(max_failures=5)), Keys()
    booting = keys.fork(policy, policy.decide(0.0, 8).spawn, 0.0)
    policy.ready(booting[0], 1.0)
    fail_once(policy, keys, 1.5)
    (crashing,) = keys.fork(policy, 1, 1.5, LONG)
    policy.ready(crashing, 1.6)
    policy.exited(crashing, 1.7, failed=True)
    assert policy.window == 3
    boot(policy, keys, 2.0, 0.5)
    assert policy.window == 4
    policy.reconfigure(PolicyConfig(initial=1, max_batch=3, ready_timeout=60.0))
    assert policy.window == 3
    assert set(policy.booting) == set(booting[1:])
    assert policy.in_flight == 3
    assert policy.ready_count() == 2
    assert policy.backoff[LONG].failures == 1  # the failure history is kept
    assert policy.backoff[LONG].config == PolicyConfig().long_backoff  # the new back-off settings apply
    assert policy.decide(4.0, 10).spawn == 0
    assert policy.decide(4.0, 10).wake_at == 60.0  # the new ready time-out applies to the old forks
    policy.reconfigure(PolicyConfig(initial=1, max_batch=16))
    assert policy.window == 3  # a higher cap does not grow the window by itself


def test_hold_stops_every_spawn():
    policy = make(initial=4, max_batch=4)
    policy.set_hold(True)
    assert policy.decide(0.0, 4, 4) == Decision()
    policy.set_hold(False)
    decision = policy.decide(0.0, 4, 4)
    assert (decision.spawn, decision.spawn_long) == (4, 0)


def test_hold_still_reports_time_outs():
    policy, keys = make(initial=1, max_batch=4, ready_timeout=5.0, boot_timeout=8.0), Keys()
    (key,) = keys.fork(policy, policy.decide(0.0, 4).spawn, 0.0)
    policy.set_hold(True)
    decision = policy.decide(5.0, 3)
    assert decision.spawn == 0 and decision.stale == (key,) and decision.wake_at == 8.0
    assert policy.decide(8.0, 3).kill == (key,)


# -- properties: a simulated arbiter ----------------------------------------------------------------------

FAST = settings(max_examples=150, deadline=None, stateful_step_count=40,
                suppress_health_check=[HealthCheck.too_slow])

times = st.integers(0, 120).map(lambda q: q / 4)  # quarter seconds: equal times happen often


@st.composite
def configs(draw, modes=("ready", "timer", "off")) -> PolicyConfig:
    max_batch = draw(st.integers(1, 6))
    return PolicyConfig(
        mode=draw(st.sampled_from(modes)),
        initial=draw(st.one_of(st.integers(1, 8), st.just("auto"))),
        max_batch=max_batch,
        delay=draw(st.sampled_from([0.0, 0.5, 2.0])),
        ready_timeout=draw(st.sampled_from([3.0, 30.0])),
        boot_timeout=draw(st.sampled_from([0.0, 5.0, 12.0])),
        growth=draw(st.sampled_from(["double", "idle"])),
        tail_merge=draw(st.booleans()),
        extra=draw(st.integers(0, 2)),
        background=draw(st.integers(0, 1)),
        http_backoff=BackoffConfig(max_failures=draw(st.sampled_from([0, 3, 10]))),
    )


class PolicyMachine(RuleBasedStateMachine):
    """A policy fed events by an arbiter that does what ``decide`` says."""

    @initialize(config=configs(), n_http=st.integers(0, 10), n_long=st.integers(0, 4))
    def setup(self, config, n_http, n_long):
        self.config = config
        self.a = SlowStartPolicy(config)
        self.target, self.target_long = n_http, n_long
        self.now = 0.0
        self.next_key = 0
        self.booting: dict[int, str] = {}
        self.up: dict[int, str] = {}
        self.listed_stale: set[int] = set()
        self.listed_kill: set[int] = set()
        self.forked_at: dict[int, float] = {}
        self.reacted_at = float("-inf")  # when a boot failure last halved the window
        self.kind_failed_at: dict = {}  # when each kind's back-off last counted a failure

    def tell(self, method, *args, **kwargs):
        getattr(self.a, method)(*args, **kwargs)

    def background(self) -> int:
        return self.config.background if self.config.mode == "ready" else 0

    def alive(self, kind: str) -> int:
        return sum(1 for k in (*self.booting.values(), *self.up.values()) if k == kind)

    @rule(dt=times)
    def decide(self, dt):
        self.now += dt
        wanted = self.target - self.alive(HTTP)
        wanted_long = self.target_long - self.alive(LONG)
        decision = self.a.decide(self.now, wanted, wanted_long)
        assert set(decision.promote) <= set(self.booting)
        assert not any(self.a.is_background(k) for k in decision.promote)
        before = self.a.in_flight
        assert 0 <= decision.spawn <= max(0, wanted)
        assert 0 <= decision.spawn_long <= max(0, wanted_long)
        assert not set(decision.stale) & self.listed_stale
        assert not set(decision.kill) & self.listed_kill
        assert set(decision.stale) <= set(self.booting) and set(decision.kill) <= set(self.booting)
        self.listed_stale |= set(decision.stale)
        self.listed_kill |= set(decision.kill)
        if self.config.mode == "ready" or (self.config.mode == "timer" and self.config.delay > 0):
            assert decision.wake_at is None or decision.wake_at > self.now, "a wake-up that is not ahead"
        elif self.config.mode == "timer":
            assert decision.wake_at is None or decision.wake_at >= self.now
        if self.config.mode == "ready":
            if self.a.held:
                assert decision.spawn + decision.spawn_long == 0
        for kind, count in ((HTTP, decision.spawn), (LONG, decision.spawn_long)):
            for _ in range(count):
                self.next_key += 1
                self.booting[self.next_key] = kind
                self.forked_at[self.next_key] = self.now
                self.tell("spawned", self.next_key, self.now, kind)
        if self.config.mode == "ready" and decision.spawn + decision.spawn_long:
            http_over = self.http_in_flight() - self.a.window - self.config.extra - self.background()
            # only the tail merge takes HTTP boots past the window (+ extra): it forks every HTTP worker left
            assert http_over <= 0 or (self.config.tail_merge and decision.spawn == wanted), "HTTP over the window"
            assert http_over < self.config.max_batch
            if decision.spawn_long:  # long workers take only free places
                assert self.a.in_flight <= self.a.window + self.config.extra + self.background(), \
                    "in_flight exceeds the window"
            assert self.a.in_flight == before + decision.spawn + decision.spawn_long

    def http_in_flight(self) -> int:
        return sum(1 for k, kind in self.booting.items() if kind == HTTP and not self.a.is_stale(k))

    @precondition(lambda self: self.booting)
    @rule(data=st.data(), dt=times)
    def ready(self, data, dt):
        self.now += dt
        key = data.draw(st.sampled_from(sorted(self.booting)))
        self.up[key] = self.booting.pop(key)
        self.tell("ready", key, self.now)

    @precondition(lambda self: self.booting)
    @rule(data=st.data(), dt=times, expected=st.booleans())
    def exit_booting(self, data, dt, expected):
        self.now += dt
        key = data.draw(st.sampled_from(sorted(self.booting)))
        kind = self.booting.pop(key)
        window = self.a.window
        failures = self.a.backoff[kind].failures
        self.tell("exited", key, self.now, expected=expected)
        failure = not expected or key in self.listed_kill
        ready_mode = self.config.mode == "ready"
        # one reaction per round: the window once for both kinds, each kind's back-off once for its own
        window_same = ready_mode and self.forked_at[key] < self.reacted_at
        kind_same = ready_mode and self.forked_at[key] < self.kind_failed_at.get(kind, float("-inf"))
        if not failure or window_same:
            assert self.a.window == window
        else:
            assert self.a.window == max(1, window // 2)
            self.reacted_at = self.now
        if not failure or kind_same:
            assert self.a.backoff[kind].failures == failures
        else:
            assert self.a.backoff[kind].failures == failures + 1
            self.kind_failed_at[kind] = self.now

    @precondition(lambda self: self.up)
    @rule(data=st.data(), dt=times, expected=st.booleans())
    def exit_ready(self, data, dt, expected):
        self.now += dt
        key = data.draw(st.sampled_from(sorted(self.up)))
        del self.up[key]
        window = self.a.window
        self.tell("exited", key, self.now, expected=expected)
        assert self.a.window == window

    @rule(idle=st.floats(0, 12, allow_nan=False))
    def cpu_idle(self, idle):
        self.tell("cpu_idle", idle, self.now)

    @rule(held=st.booleans())
    def hold(self, held):
        self.tell("set_hold", held)

    @rule()
    def restart(self):
        self.tell("restart", self.now)

    @invariant()
    def window_within_bounds(self):
        if not hasattr(self, "a"):
            return
        assert 1 <= self.a.window <= self.config.max_batch
        if self.config.mode == "ready":  # HTTP: the window, extra places, a merged tail (< max_batch)
            bound = 2 * self.config.max_batch - 1 + self.config.extra + self.background()
            assert self.http_in_flight() <= bound
            assert self.a.in_flight - self.http_in_flight() <= self.config.max_batch + self.config.extra
        if self.config.mode != "ready" or not self.config.background:
            assert not any(self.a.is_background(k) for k in self.booting)


TestPolicyMachine = PolicyMachine.TestCase
TestPolicyMachine.settings = FAST


events = st.lists(st.tuples(st.sampled_from(["tick", "ready", "fail", "stop", "idle", "decide"]),
                            st.integers(0, 1000), times), max_size=30)


@FAST
@given(config=configs(modes=("ready",)), target=st.integers(1, 12), target_long=st.integers(0, 4),
       prefix=events)
def test_liveness_all_wanted_workers_end_up_ready(config, target, target_long, prefix):
    """After early failures (fewer than the limit), a healthy arbiter reaches its target."""
    policy = SlowStartPolicy(config)
    limits = {HTTP: config.http_backoff.max_failures or 10**9, LONG: config.long_backoff.max_failures or 10**9}
    failures = {HTTP: 0, LONG: 0}
    booting: dict[int, str] = {}
    up: dict[int, str] = {}
    killed: set[int] = set()
    key = 0
    now = 0.0

    def alive(kind):
        return sum(1 for k in (*booting.values(), *up.values()) if k == kind)

    def decide():
        nonlocal key
        decision = policy.decide(now, target - alive(HTTP), target_long - alive(LONG))
        assert decision.exhausted == ()
        killed.update(decision.kill)
        for kind, count in ((HTTP, decision.spawn), (LONG, decision.spawn_long)):
            for _ in range(count):
                key += 1
                booting[key] = kind
                policy.spawned(key, now, kind)
        return decision

    # the early phase: anything may happen, but failures stay below each kind's limit
    for op, pick, dt in prefix:
        now += dt
        if op == "decide":
            decide()
        elif op == "idle":
            policy.cpu_idle(pick % 8, now)
        elif op in ("ready", "fail", "stop") and booting:
            victim = sorted(booting)[pick % len(booting)]
            kind = booting[victim]
            if op == "ready":
                up[victim] = booting.pop(victim)
                policy.ready(victim, now)
                continue
            is_failure = op == "fail" or victim in killed
            if is_failure:
                if failures[kind] + 1 >= limits[kind]:
                    continue
                failures[kind] += 1
            del booting[victim]
            policy.exited(victim, now, expected=op == "stop")

    # the healthy phase: every boot takes 1 s and succeeds; decide after events and at wake_at
    policy.set_hold(False)
    for _step in range(100):
        decision = decide()
        if not booting and alive(HTTP) == target and alive(LONG) == target_long:
            break
        if booting:
            now += 1.0
            for k in sorted(booting):
                up[k] = booting.pop(k)
                policy.ready(k, now)
        else:
            assert decision.wake_at is not None, "nothing booting, workers missing, and no wake-up"
            assert decision.wake_at > now
            now = decision.wake_at
    else:
        raise AssertionError(f"not reached: {alive(HTTP)}/{target} http, {alive(LONG)}/{target_long} long")
    assert policy.in_flight == 0
    assert policy.ready_count(HTTP) == target and policy.ready_count(LONG) == target_long
