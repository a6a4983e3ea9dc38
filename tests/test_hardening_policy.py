"""The policy's hardening rules, with plain values: HTTP first, flapping, pool rounds, bounded memory."""

from __future__ import annotations

from gunicorn_slowstart.policy import BOOT_SAMPLES, HTTP, LONG, PolicyConfig, SlowStartPolicy


def make(**kwargs) -> SlowStartPolicy:
    return SlowStartPolicy(PolicyConfig(**kwargs))


def test_hung_long_workers_never_delay_an_http_respawn():
    policy = make(initial=2, max_batch=2)
    for key in ("h1", "h2"):
        policy.spawned(key, 0.0, HTTP)
        policy.ready(key, 1.0)
    decision = policy.decide(1.0, 0, 2)
    assert decision.spawn_long == 2
    policy.spawned((LONG, 1), 1.0, LONG)
    policy.spawned((LONG, 2), 1.0, LONG)  # both hang at import: they fill the window
    policy.exited("h1", 10.0)  # an HTTP worker is killed
    assert policy.decide(10.0, 1, 0).spawn == 1, "the HTTP respawn waits for nothing"


def test_long_workers_take_only_free_places():
    policy = make(initial=2, max_batch=2)
    policy.spawned("h1", 0.0, HTTP)
    decision = policy.decide(0.0, 0, 4)
    assert decision.spawn_long == 1  # one place left by HTTP
    policy.spawned((LONG, 1), 0.0, LONG)
    assert policy.decide(0.0, 0, 3).spawn_long == 0


def test_a_worker_dying_soon_after_ready_backs_off_exponentially():
    policy = make(flap_window=5.0)
    now, gaps = 0.0, []
    for n in range(8):
        decision = policy.decide(now, 1)
        if not decision.spawn:
            gaps.append(round(decision.wake_at - now, 6))
            now = decision.wake_at
            assert policy.decide(now, 1).spawn == 1
        policy.spawned(n, now)
        policy.ready(n, now + 0.5)
        now += 0.55
        policy.exited(n, now)  # 50 ms after ready
    assert gaps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.backoff[HTTP].failures == 0 and not policy.decide(now, 1).exhausted, "flaps never stop the server"


def test_flapping_ends_when_a_worker_stays_up():
    policy = make(flap_window=5.0)
    policy.spawned(1, 0.0)
    policy.ready(1, 1.0)
    policy.exited(1, 1.05)
    assert policy.backoff[HTTP].level == 1
    policy.spawned(2, 2.1)
    policy.ready(2, 3.0)
    policy.decide(7.9, 0)
    assert policy.backoff[HTTP].level == 1
    policy.decide(8.0, 0)
    assert policy.backoff[HTTP].level == 0 and policy.backoff[HTTP].flaps == 0


def test_flap_window_zero_is_stock_behaviour():
    policy = make(flap_window=0.0)
    policy.spawned(1, 0.0)
    policy.ready(1, 1.0)
    policy.exited(1, 1.05)
    assert policy.decide(1.05, 1).spawn == 1


def test_old_ready_workers_dying_later_are_no_flap():
    policy = make(flap_window=5.0)
    policy.spawned(1, 0.0)
    policy.ready(1, 1.0)
    policy.exited(1, 6.0)
    assert policy.decide(6.0, 1).spawn == 1


def test_a_pool_losing_its_broker_counts_one_failure_per_round_and_never_gives_up():
    policy = make(initial=8, max_batch=8)
    now = 0.0
    for round_ in range(12):
        decision = policy.decide(now, 0, 8)
        assert decision.exhausted == ()
        if decision.spawn_long == 0:
            now = decision.wake_at
            decision = policy.decide(now, 0, 8)
        keys = [(LONG, round_ * 10 + i) for i in range(decision.spawn_long)]
        for key in keys:
            policy.spawned(key, now, LONG)
            policy.ready(key, now + 0.5)
        now += 1.0
        for key in keys:  # the broker is down: every one of them crashes
            policy.exited(key, now, failed=True)
        assert policy.backoff[LONG].failures == round_ + 1
    assert policy.backoff[LONG].next_at - now == 60.0, "backing off 1 s doubling to 60 s"


def test_boot_times_are_bounded():
    policy = make(initial=4, max_batch=4)
    for n in range(BOOT_SAMPLES * 4):
        policy.spawned(n, float(n))
        policy.ready(n, n + 0.5)
        policy.exited(n, n + 100.0, expected=True)
    assert len(policy.ramp.boot_times) == BOOT_SAMPLES
    assert not policy.ready_at and not policy.booting
