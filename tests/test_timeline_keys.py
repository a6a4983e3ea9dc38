"""The recorder and the status reporter key a process by ``ProcKey``, as the policy does;
the OS pid is a value in the record (the file's schema is unchanged)."""

from __future__ import annotations

import logging

from gunicorn_slowstart.keys import ProcKey
from gunicorn_slowstart.policy import HTTP, LONG
from gunicorn_slowstart.status import StatusReporter
from gunicorn_slowstart.timeline import Timeline, summarize


def _rows(timeline: Timeline) -> list[tuple]:
    return [(p["kind"], p["pid"], p["fork"], p["ready"], p["exit"]) for p in timeline.to_dict()["processes"]]


def test_a_reused_pid_after_exit_starts_a_new_record() -> None:
    t = Timeline(0.0, 0.0)
    key = ProcKey(HTTP, 42)
    t.spawned(key, 1.0, 42)
    t.ready(key, 2.0)
    t.exited(key, 3.0, code=0)
    t.spawned(key, 4.0, 42)  # the kernel gave the pid to the next worker
    t.exited(key, 4.5, signal=9)
    assert _rows(t) == [("http", 42, 1.0, 2.0, 3.0), ("http", 42, 4.0, None, 4.5)]


def test_a_long_workers_pid_may_be_learned_after_its_key() -> None:
    t = Timeline(0.0, 0.0, {"target": 1})
    key = ProcKey(LONG, 0)
    t.spawned(key, 0.5)
    assert t.to_dict()["processes"][0]["pid"] is None
    t.pid_known(key, 5123)
    t.ready(key, 1.5)
    t.pid_known(ProcKey(LONG, 1), 7)  # never spawned: ignored
    assert _rows(t) == [("long", 5123, 0.5, 1.5, None)]
    assert summarize(t.to_dict())["long"] == {"spawned": 1, "ready": 1}


def test_an_http_pid_and_a_long_id_of_the_same_number_are_two_processes() -> None:
    t = Timeline(0.0, 0.0)
    t.spawned(ProcKey(HTTP, 3), 0.0, 3)
    t.spawned(ProcKey(LONG, 3), 0.0, 9001)
    t.ready(ProcKey(LONG, 3), 1.0)
    t.exited(ProcKey(HTTP, 3), 2.0, code=1)
    assert _rows(t) == [("http", 3, 0.0, None, 2.0), ("long", 9001, 0.0, 1.0, None)]


def test_events_about_an_unknown_or_exited_key_are_ignored() -> None:
    t = Timeline(0.0, 0.0)
    t.ready(ProcKey(HTTP, 1), 1.0)
    t.exited(ProcKey(LONG, 1), 1.0)
    key = ProcKey(HTTP, 2)
    t.spawned(key, 1.0, 2)
    t.exited(key, 2.0)
    t.ready(key, 3.0)
    t.exited(key, 4.0)
    assert _rows(t) == [("http", 2, 1.0, None, 2.0)]


def test_the_status_reporter_passes_keys_and_pids_to_the_timeline() -> None:
    status = StatusReporter(logging.getLogger("test-keys"), 0.0, 0.0)
    status.spawned(ProcKey(HTTP, 10), 0.1, 10)
    status.spawned(ProcKey(LONG, 0), 0.2, 11)
    status.ready(ProcKey(LONG, 0), 1.0)
    status.exited(ProcKey(HTTP, 10), 2.0, 3, None)
    assert _rows(status.timeline) == [("http", 10, 0.1, None, 2.0), ("long", 11, 0.2, 1.0, None)]
    assert status.dirty
