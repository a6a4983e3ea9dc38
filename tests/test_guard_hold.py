"""The memory guard's hold on a fake master (no fork): it waits for the workers the guard let
boot, and ends when none is left, so that a survivor dying before ready cannot leave the
server held forever with nothing booting (nothing would ever make a worker's cost known)."""

from __future__ import annotations

import os
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
    arbiter._long_room_for_spawns = False
    arbiter._ramp = None
    arbiter._measure_room = lambda wanted, long_wanted, now: (Room(None), Room(None))  # no cost known: no cap
    arbiter._pool_link, arbiter._long_room, arbiter._long_held = None, Room(None), ""
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


def test_the_guard_looks_every_ramp_tick_at_boots_past_ready_timeout(monkeypatch):
    """Workers loading a big model for longer than ready_timeout no longer hold back the
    ramp, but the guard still watches them grow: every tick while memory is close (less than
    a burst from each to spare), every WATCHED_TICK otherwise, and not at all once one is
    left (it never stops the last one)."""
    from gunicorn_slowstart import arbiter as arbiter_mod
    from gunicorn_slowstart.memory import MemoryView
    from gunicorn_slowstart.wakeups import Wakeups

    arbiter = _held_master()
    arbiter.pid = 1
    arbiter.slowstart.mode = "ready"
    arbiter.WORKERS[101] = object()
    arbiter._boots.add(ProcKey(HTTP, 101), 0.0)
    for pid in (100, 101):
        arbiter.policy.spawned(ProcKey(HTTP, pid), 0.0)
        arbiter.policy.booting[ProcKey(HTTP, pid)].stale = True  # past ready_timeout
    arbiter._pool_link, arbiter.templates, arbiter._wake_at = None, None, None
    arbiter._wakeups = Wakeups(signal_pipe=False)
    arbiter._unvetted, arbiter._guard_base, arbiter._guard_samples = {100, 101}, {}, {}
    arbiter._grown_cost, arbiter._guard_at, arbiter._guard_failing = None, 0.0, False
    anon = {1: 50.0, 100: 150.0, 101: 150.0}
    view = {"memory": MemoryView(available=8000.0, limit=16000.0, source="host")}
    monkeypatch.setattr(arbiter_mod, "anon_resident_mb", lambda pid: anon.get(pid))
    monkeypatch.setattr(arbiter_mod, "memory_view", lambda: view["memory"])
    assert arbiter._active_boots() == []

    view["memory"] = MemoryView(available=2000.0, limit=16000.0, source="host")  # headroom: 1600 MiB
    arbiter._guard_memory(1.0)  # what a worker grows by is not known, 400 MiB to spare: a burst could take it
    assert arbiter._timeout(1.0) == arbiter_mod.RAMP_TICK
    view["memory"] = MemoryView(available=8000.0, limit=16000.0, source="host")
    arbiter._guard_memory(1.25)  # not known, but 6.4 GB to spare
    assert arbiter._timeout(1.0) == arbiter_mod.WATCHED_TICK
    arbiter._grown_cost = 120.0  # known: both fit
    arbiter._guard_memory(1.5)
    assert arbiter._timeout(1.0) == arbiter_mod.WATCHED_TICK
    view["memory"] = MemoryView(available=1700.0, limit=16000.0, source="host")  # headroom: 1600 MiB
    arbiter._guard_memory(2.0)  # 40 MiB still to grow fit, but 60 MiB to spare is no burst from each
    assert arbiter._timeout(1.0) == arbiter_mod.RAMP_TICK
    arbiter._boots.pop(ProcKey(HTTP, 101))  # one boot left: the guard would never stop it
    del arbiter.WORKERS[101]
    arbiter._guard_memory(2.5)
    assert arbiter._timeout(1.0) == 1.0


def test_two_looks_a_moment_apart_do_not_make_a_burst_a_rate(monkeypatch):
    """A pass right after the last (a SIGCHLD) sees a 10 MiB burst of page faults in 1 ms:
    not 10 GiB/s, which projected over a 25 ms tick would be 250 MiB it does not need."""
    from gunicorn_slowstart import arbiter as arbiter_mod

    arbiter = _held_master()
    arbiter.pid, arbiter.templates = 1, None
    arbiter._unvetted, arbiter._guard_base, arbiter._guard_samples = {100}, {}, {}
    anon = {1: 50.0, 100: 150.0}  # the worker grew 100 MiB beyond the master's 50
    monkeypatch.setattr(arbiter_mod, "anon_resident_mb", lambda pid: anon[pid])
    monkeypatch.setattr(arbiter_mod, "memory_view", lambda: None)
    arbiter._guard_sample(10.0)
    anon[100] = 160.0
    watched, _ = arbiter._guard_sample(10.001)
    assert watched[0].grown == 110.0
    assert watched[0].rate * arbiter_mod.RAMP_TICK <= 10.0 + 1e-9  # no more than it grew


def test_a_reload_to_mode_off_does_not_keep_the_guards_last_look():
    """The guard runs only outside mode off: a SIGHUP from ready to off while it looked every
    tick must not leave the master waking every RAMP_TICK (or WATCHED_TICK) for good."""
    from gunicorn_slowstart import arbiter as arbiter_mod
    from gunicorn_slowstart.wakeups import Wakeups

    arbiter = _held_master()
    arbiter._boots.pop(ProcKey(HTTP, 100))  # nothing boots any more
    arbiter._pool_link, arbiter.templates, arbiter._wake_at = None, None, None
    arbiter._wakeups = Wakeups(signal_pipe=False)
    arbiter.slowstart.mode = "off"  # the reload's settings
    for look in (arbiter_mod.RAMP_TICK, arbiter_mod.WATCHED_TICK):
        arbiter._guard_look = look  # what the last ready-mode pass computed
        assert arbiter._timeout(1.0) == 1.0


def test_the_guards_first_look_at_a_new_boot_comes_in_a_tick(monkeypatch):
    """The guard decides its next look in manage_workers before _spawn forks; a worker forked
    while no worker's cost is known (the first step) is looked at a tick later, as before the
    master waited WATCHED_TICK (4 workers allocating 200 MiB in 0.26 s each, the README's
    figure, fill a 700 MiB pod in about that time)."""
    from gunicorn.arbiter import Arbiter

    from gunicorn_slowstart import arbiter as arbiter_mod
    from gunicorn_slowstart.rollout import Rollout
    from gunicorn_slowstart.wakeups import Wakeups

    arbiter = _held_master()
    arbiter._boots.pop(ProcKey(HTTP, 100))
    arbiter.WORKERS = {}
    arbiter.slowstart.mode = "ready"
    arbiter._pool_link, arbiter.templates, arbiter._wake_at = None, None, None
    arbiter._wakeups = Wakeups(signal_pipe=False)
    arbiter._guard_look, arbiter._tracked, arbiter._reloading = None, {}, False
    arbiter.rollout, arbiter._place = Rollout(), lambda key, now: None
    arbiter._watch = lambda pid, worker: True  # watched: its readiness would wake the master
    arbiter._wakeups.watching = lambda pid: True

    def spawn_worker(self):
        self.WORKERS[os.getpid()] = SimpleNamespace(tmp=SimpleNamespace(last_update=lambda: 1.0))
        return os.getpid()

    try:
        with mock.patch.object(Arbiter, "spawn_worker", spawn_worker):
            arbiter.spawn_worker()
        assert arbiter._active_boots() == [os.getpid()]
        assert arbiter._timeout(1.0) == arbiter_mod.RAMP_TICK
    finally:
        arbiter._wakeups.close()
