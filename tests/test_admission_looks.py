"""Memory admission's looks on a fake master (no fork): a look taken while only one kind was
wanted measured no room for the other (``Room(None)``: admit all), so the first time the other
kind is wanted the room must be measured at once, not up to ``ADMIT_POLL`` later."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

from gunicorn_slowstart.admission import Admission, Room
from gunicorn_slowstart.arbiter import SlowStartArbiter
from gunicorn_slowstart.boots import Boots
from gunicorn_slowstart.policy import PolicyConfig, SlowStartPolicy


class _Link:
    def __init__(self, size: int, current: int) -> None:
        self.size, self.next_id, self.pid = size, 0, 1
        self.current = set(range(current))

    def wanted(self) -> int:
        return self.size - len(self.current)

    def current_keys(self) -> list:
        return []


def _master(link: _Link):
    arbiter = SlowStartArbiter.__new__(SlowStartArbiter)
    arbiter.log, arbiter.status = mock.Mock(), mock.Mock()
    arbiter.slowstart = SimpleNamespace(min_free_mb=0, memory_admission=True, mode="ready")
    arbiter.policy = SlowStartPolicy(PolicyConfig(max_batch=4), 0.0)
    arbiter._num_workers, arbiter.WORKERS = 2, {100: object(), 101: object()}
    arbiter._retiring, arbiter._terminating = set(), {}
    arbiter._boots = Boots()
    arbiter._admission, arbiter._long_admission = Admission(), Admission()
    arbiter._admission.measured(100, 100.0, 2)  # both kinds' cost is known
    arbiter._long_admission.measured("a", 100.0, 2)
    arbiter._room, arbiter._room_known, arbiter._long_room = Room(None), set(), Room(None)
    arbiter._memory_checked_at, arbiter._room_for_spawns = -100.0, False
    arbiter._long_room_for_spawns = False
    arbiter._ramp = object()  # a ramp is in progress (its HTTP workers all forked)
    arbiter._pool_link, arbiter._long_held, arbiter._long_granted = link, "", 0
    arbiter._guard_text, arbiter._guard_stopped, arbiter._held_text = "", 0, ""
    looks = []

    def measure(wanted, long_wanted, now):  # no memory left for either kind; unmeasured: None
        looks.append((wanted, long_wanted))
        full = Room(0, "memory", 100.0, 1000.0)
        return (full if wanted else Room(None)), (full if long_wanted else Room(None))

    arbiter._measure_room = measure
    return arbiter, looks


def test_an_http_fork_wanted_after_a_look_for_long_workers_only_is_measured_at_once():
    link = _Link(size=2, current=1)  # a long worker is wanted, no HTTP worker
    arbiter, looks = _master(link)
    arbiter._check_memory(1.0)
    assert looks == [(0, 1)] and arbiter._admitted_long(1) == 0
    arbiter._num_workers = 3  # TTIN during the ramp: an HTTP worker is wanted a moment later
    arbiter._check_memory(1.1)
    assert looks[-1] == (1, 1)
    assert arbiter._admitted(1) == 0  # not forked unchecked


def test_a_long_worker_wanted_after_a_look_for_http_workers_only_is_measured_at_once():
    link = _Link(size=1, current=1)  # no long worker wanted
    arbiter, looks = _master(link)
    arbiter._num_workers = 3  # one HTTP worker wanted
    arbiter._check_memory(1.0)
    assert looks == [(1, 0)] and arbiter._admitted(1) == 0
    link.current.clear()  # the long worker died: the pool wants one
    arbiter._check_memory(1.1)
    assert looks[-1] == (1, 1)
    assert arbiter._admitted_long(1) == 0  # not granted unchecked


def test_a_long_worker_hold_marks_the_timeline_for_writing():
    """Nothing else changes while long workers are held (no fork, no exit): the hold's event
    must make the next step write the timeline, as the HTTP hold's does."""
    import logging

    from gunicorn_slowstart.status import StatusReporter

    status = StatusReporter(logging.getLogger("test"), 0.0, 0.0)
    for held in (True, False):
        status.written_at, status.dirty = 0.0, False
        status.long_memory_held(1.0, held, "4 of 6 long workers fit in 320 MiB (~60 MiB each)")
        assert status.dirty


def test_a_worker_that_could_never_be_measured_is_forgotten_once_gone(monkeypatch):
    """A measurement that read nothing (the worker exited as it was read, or it cannot be
    read at all) leaves only its time: once the worker is gone that goes too, or a master
    that runs for months keeps one entry per such worker and sorts them at every look."""
    from gunicorn_slowstart import arbiter as arbiter_mod

    arbiter, _ = _master(_Link(size=1, current=1))
    arbiter._said_cost = {}
    monkeypatch.setattr(arbiter_mod, "process_cost", lambda pid: (None, None, None))
    admission = Admission()
    arbiter._sample(admission, {7: 7}, {7}, 1.0, "worker")
    assert 7 in admission.sampled_at
    arbiter._sample(admission, {}, set(), 2.0, "worker")  # it exited
    assert admission.sampled_at == {}


def test_measuring_again_stops_once_a_look_took_its_time(monkeypatch):
    """Re-measuring ready workers is bounded by time, not only by count: smaps_rollup of a
    worker holding GiBs takes tens of milliseconds, and four of them in one pass would hold
    the master (a booting worker's readiness, a signal) for a good part of a second."""
    from gunicorn_slowstart import arbiter as arbiter_mod

    arbiter, _ = _master(_Link(size=1, current=1))
    arbiter._said_cost = {}
    clock = {"now": 0.0}

    def slow_cost(pid):
        clock["now"] += 0.05  # a 2 GiB worker's smaps_rollup
        return 2000.0, None, 4

    monkeypatch.setattr(arbiter_mod, "process_cost", slow_cost)
    monkeypatch.setattr(arbiter_mod, "time", SimpleNamespace(monotonic=lambda: clock["now"]))
    admission = Admission()
    for pid in range(8):
        admission.measured(pid, 1000.0, 4, at=1.0)
    admission.fresh_since = 10.0  # a ramp began: all eight samples are stale
    ready = {pid: pid for pid in range(8)}
    arbiter._sample(admission, ready, set(ready), 10.0, "worker")
    assert len(admission.sampled_before(10.0)) == 7  # one per look, not four
    arbiter._sample(admission, ready, set(ready), 10.5, "worker")
    assert len(admission.sampled_before(10.0)) == 6  # and the next look goes on
