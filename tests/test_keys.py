"""One key type for every paced process; the pool link returns typed events (pure, no server)."""

import signal

from gunicorn_slowstart.keys import ProcKey
from gunicorn_slowstart.policy import HTTP, LONG, PolicyConfig, SlowStartPolicy
from gunicorn_slowstart.pool import (
    EXITED,
    MANAGER_RESTARTS,
    READY,
    SPAWNED,
    LongWorkerPool,
    PoolEvent,
    PoolLink,
)


class _Log:
    def info(self, *args) -> None:
        pass

    warning = error = info


def test_decision_lists_proc_keys_whose_kind_says_who_to_kill():
    policy = SlowStartPolicy(PolicyConfig(mode="ready", initial=2, max_batch=4, boot_timeout=5.0), 0.0)
    policy.spawned(ProcKey(HTTP, 4711), 0.0, HTTP)
    policy.spawned(ProcKey(LONG, 0), 0.0, LONG)
    decision = policy.decide(6.0, 0, 0)
    assert sorted(decision.kill) == [ProcKey(HTTP, 4711), ProcKey(LONG, 0)]
    assert {key.kind for key in decision.kill} == {HTTP, LONG}
    assert ProcKey(HTTP, 7) == ProcKey(HTTP, 7) and ProcKey(HTTP, 7) != ProcKey(LONG, 7)


def _link() -> PoolLink:
    return PoolLink(LongWorkerPool("examples.jobs:run", 2), 2, _Log())


def test_the_pool_link_reports_events_and_feeds_nothing_itself():
    link = _link()
    keys = link.grant(2)  # no manager yet: nothing is sent, the grant is booked
    assert keys == [ProcKey(LONG, 0), ProcKey(LONG, 1)]
    assert link.current_keys() == [] and link.pending == {0, 1}  # granted, not forked yet
    assert link._handle({"op": "spawned", "id": 0, "pid": 100}) == PoolEvent(SPAWNED, keys[0], 100)
    assert link.pid_of(keys[0]) == 100 and link.pid_of(keys[1]) is None
    assert link._handle({"op": "ready", "id": 0}) == PoolEvent(READY, keys[0], 100)
    assert link.current_keys() == [keys[0]] and link.pending == {1}  # who is ready: the arbiter's Boots
    exited = link._handle({"op": "exited", "id": 0, "requested": False, "uptime": 0.5, "code": 1, "signal": None})
    assert exited == PoolEvent(EXITED, keys[0], 100, expected=False, failed=True, code=1)
    assert link._handle({"op": "unknown"}) is None
    assert link.poll() == []  # no manager: nothing to read


def test_a_dead_manager_reports_its_workers_killed():
    """No pid was reported (nothing to signal) and the manager is not replaced (nothing forked)."""
    link = _link()
    keys = link.grant(2)

    class _Sock:
        def close(self) -> None:
            pass

    link.pid, link.sock = 2 ** 22 + 12345, _Sock()  # not our child: the manager is gone
    link.restarts, link.started_at = MANAGER_RESTARTS, 0.0  # one more restart in a row: give up
    events = link.check_alive(None, 1.0)
    assert sorted(events, key=lambda e: e.key) == [
        PoolEvent(EXITED, key, None, expected=True, sig=signal.SIGKILL) for key in keys]
    assert link.pid == 0 and link.pending == set() and link.current_keys() == []
