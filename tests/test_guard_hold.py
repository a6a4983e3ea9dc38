"""The memory guard's hold on a fake master (no fork): it waits for the workers the guard let
boot, and ends when none is left, so that a survivor dying before ready cannot leave the
server held forever with nothing booting (nothing would ever make a worker's cost known)."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

from gunicorn_slowstart.admission import Admission, Room
from gunicorn_slowstart.arbiter import GUARD_HOLD, SlowStartArbiter
from gunicorn_slowstart.boots import Boots
from gunicorn_slowstart.keys import ProcKey
from gunicorn_slowstart.policy import HTTP, PolicyConfig, SlowStartPolicy


def _held_master():
    arbiter = SlowStartArbiter.__new__(SlowStartArbiter)
    arbiter.log, arbiter.status = mock.Mock(), mock.Mock()
    arbiter.slowstart = SimpleNamespace(min_free_mb=0, memory_admission=True)
    arbiter.policy = SlowStartPolicy(PolicyConfig(max_batch=4), 0.0)
    arbiter._num_workers, arbiter.WORKERS = 4, {100: object()}  # gunicorn's property, no hook
    arbiter._retiring, arbiter._terminating = set(), {}
    arbiter._boots = Boots()
    arbiter._boots.add(ProcKey(HTTP, 100), 0.0)  # the survivor: the guard stopped the 3 youngest
    arbiter._admission, arbiter._room, arbiter._room_known = Admission(), Room(None), set()
    arbiter._memory_checked_at, arbiter._room_for_spawns = -100.0, False
    arbiter._measure_room = lambda: Room(None)  # no worker's cost known: admission caps nothing
    arbiter._guard_text = f"{GUARD_HOLD} 3 booting worker(s) to stay under 700 MiB"
    arbiter._guard_stopped = 3
    arbiter._held_text = arbiter._guard_text
    arbiter.policy.set_hold(True)
    return arbiter


def test_the_guard_hold_waits_for_the_survivor_to_boot():
    arbiter = _held_master()
    arbiter._check_memory(1.0)
    assert arbiter.policy.held and GUARD_HOLD in arbiter._held_text


def test_the_guard_hold_ends_when_the_survivor_died_before_ready():
    arbiter = _held_master()
    del arbiter.WORKERS[100]  # it died (a crash, the OOM killer, boot_timeout) before ready
    arbiter._boots.pop(ProcKey(HTTP, 100))
    arbiter._check_memory(1.0)
    assert not arbiter.policy.held and arbiter._held_text == ""  # the policy's back-off paces the retry
    assert arbiter._guard_text == "" and arbiter._guard_stopped == 0


def test_the_guard_looks_every_ramp_tick_at_boots_past_ready_timeout():
    """A worker loading a big model for longer than ready_timeout no longer holds back the
    ramp, but the guard still watches it grow: every tick, not once a second."""
    from gunicorn_slowstart.arbiter import RAMP_TICK

    arbiter = _held_master()
    arbiter.policy.spawned(ProcKey(HTTP, 100), 0.0)
    arbiter.policy.booting[ProcKey(HTTP, 100)].stale = True  # past ready_timeout
    arbiter._pool_link, arbiter.templates, arbiter._wake_at = None, None, None
    arbiter._unvetted = {100}
    assert arbiter._active_boots() == []
    assert arbiter._timeout(1.0) == RAMP_TICK
    arbiter._boots.pop(ProcKey(HTTP, 100))  # gone, still listed (the guard looks no more: mode off)
    assert arbiter._timeout(1.0) == 1.0
