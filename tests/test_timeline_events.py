"""Events in the timeline (memory held / released): recorded, written only when present,
and shown by ``timeline summary``."""

from __future__ import annotations

from gunicorn_slowstart.timeline import Timeline, format_summary


def test_events_are_recorded_and_summarised():
    timeline = Timeline(100.0, 1.79e9)
    assert "events" not in timeline.to_dict()
    timeline.ramp_started(100.0, 8, "start")
    timeline.event(101.5, "memory held", "3 of 8 workers fit in 320 MiB (~68 MiB each)")
    timeline.event(104.25, "memory released", "")
    data = timeline.to_dict()
    assert data["events"] == [[1.5, "memory held", "3 of 8 workers fit in 320 MiB (~68 MiB each)"],
                              [4.25, "memory released", ""]]
    lines = format_summary(data).splitlines()
    assert lines[-2] == "  event         1.50 s: memory held (3 of 8 workers fit in 320 MiB (~68 MiB each))"
    assert lines[-1] == "  event         4.25 s: memory released"


def test_many_or_malformed_events_stay_short():
    timeline = Timeline(0.0, 0.0)
    for n in range(25):
        timeline.event(float(n), "memory held" if n % 2 else "memory released", "")
    data = timeline.to_dict()
    data["events"] += [["not a time", "x", ""], "garbage", [1.0, "short"]]
    lines = format_summary(data).splitlines()
    assert sum(1 for line in lines if line.startswith("  event ")) == 10
    assert lines[-1].strip() == "... 15 more events"
    data["events"] = {"not": "a list"}
    assert "event" not in format_summary(data)


def test_events_are_bounded():
    timeline = Timeline(0.0, 0.0)
    for n in range(2000):
        timeline.event(float(n), "memory held", "")
    data = timeline.to_dict()
    assert len(data["events"]) <= 384 and data["events"][-1][0] == 1999.0
    assert data["dropped"]["events"] + len(data["events"]) == 2000


def test_an_abandoned_reload_is_said_in_the_summary():
    timeline = Timeline(0.0, 0.0)
    timeline.ramp_started(0.0, 4, "start")
    timeline.ramp_started(10.0, 4, "reload")
    timeline.reload_failed(10.5, 2, 1, "worker 7 died 0.3 s after fork (exit code 3)")
    text = format_summary(timeline.to_dict())
    assert "reload failed and abandoned, generation 1 kept serving" in text
