"""``files.write_atomic``: only where the path is absent or a regular file; bounded timeline history."""

from __future__ import annotations

import logging
import os
import socket
import stat

import pytest

from gunicorn_slowstart import files
from gunicorn_slowstart.keys import ProcKey
from gunicorn_slowstart.policy import HTTP
from gunicorn_slowstart.pool import MANAGER_RESTARTS, MANAGER_STABLE, manager_restart
from gunicorn_slowstart.status import WRITE_BURST, StatusReporter
from gunicorn_slowstart.timeline import KEEP_EXITED, KEEP_RAMPS, KEEP_STEPS, Timeline, summarize


def test_writes_a_new_file_and_replaces_a_regular_one(tmp_path):
    path = tmp_path / "out.json"
    files.write_atomic(path, "one")
    files.write_atomic(str(path), b"two")
    assert path.read_text() == "two" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def make_special(tmp_path, kind):
    path = tmp_path / kind
    if kind == "chardev":
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "symlink":
        (tmp_path / "target").write_text("keep")
        path.symlink_to(tmp_path / "target")
    return path


@pytest.mark.parametrize("kind, what", [("chardev", "a character device"), ("fifo", "a FIFO"),
                                        ("directory", "a directory"), ("socket", "a socket"),
                                        ("symlink", "a symbolic link")])
def test_anything_but_a_regular_file_is_left_as_it_was(tmp_path, kind, what):
    path = make_special(tmp_path, kind)
    before = os.lstat(path)
    with pytest.raises(files.UnsafePath, match=f"it is {what}, not a regular file"):
        files.write_atomic(path, "x")
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".slowstart-")]
    if kind == "symlink":
        assert (tmp_path / "target").read_text() == "keep"


@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_a_blank_path_is_refused(tmp_path, blank, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(files.UnsafePath, match="blank"):
        files.write_atomic(blank, "x")
    assert list(tmp_path.iterdir()) == []


def test_a_symlinked_parent_directory_is_followed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    files.write_atomic(tmp_path / "link" / "t.json", "ok")
    assert (real / "t.json").read_text() == "ok"


def test_status_warns_once_per_problem(tmp_path, caplog):
    fifo = make_special(tmp_path, "fifo")
    status = StatusReporter(logging.getLogger("t"), 0.0, 0.0)
    status.configure(str(fifo), {})
    with caplog.at_level(logging.WARNING):
        for n in range(10):
            status.ramp_started(float(n), 1, "respawn")
            status.ramp_done(float(n), 1, 1)
    assert len([r for r in caplog.records if "cannot write timeline" in r.message]) == 1
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_status_writes_at_most_a_burst_a_second(tmp_path, monkeypatch):
    status = StatusReporter(logging.getLogger("t"), 0.0, 0.0)
    status.configure(str(tmp_path / "t.json"), {})
    writes = []
    monkeypatch.setattr(status.timeline, "write", writes.append)
    for n in range(100):  # 100 ramps in one second
        status.ramp_started(n / 100, 1, "respawn")
        status.ramp_done(n / 100, 1, 1)
    assert len(writes) <= 2 * WRITE_BURST  # a full bucket, then WRITE_BURST a second
    status.step(2.0, 1, 1, 0, 1)
    assert status.dirty is False, "what was left unwritten goes out with the next step"


def http(pid: int) -> ProcKey:
    return ProcKey(HTTP, pid)


def respawns(timeline: Timeline, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        t = 100.0 + n
        timeline.ramp_started(t, 1, "respawn")
        timeline.spawned(http(10_000 + n), t, 10_000 + n)
        timeline.step(t, 1, 2, 1, 3)
        timeline.ready(http(10_000 + n), t + 0.5)
        timeline.step(t + 0.5, 2, 2, 0, 4)
        timeline.ramp_done(t + 0.5)
        timeline.exited(http(10_000 + n), t + 0.9, 0, None)


def first_ramp(timeline: Timeline) -> None:
    timeline.ramp_started(0.0, 4, "start")
    for pid in range(4):
        timeline.spawned(http(pid), 0.1 * pid, pid)
        timeline.step(0.1 * pid, pid + 1, 2, 1, pid)
        timeline.ready(http(pid), 0.1 * pid + 0.5)
    timeline.ramp_done(1.0)


def test_the_timeline_keeps_a_bounded_history_and_the_first_ramp():
    timeline = Timeline(0.0, 0.0)
    first_ramp(timeline)
    summary = summarize(timeline.to_dict())
    respawns(timeline, 5000)
    data = timeline.to_dict()
    assert len(data["ramps"]) <= KEEP_RAMPS * 1.5 and data["ramps"][0]["reason"] == "start"
    assert len(data["processes"]) <= KEEP_EXITED * 1.5 + 4
    assert len(data["steps"]) <= KEEP_STEPS * 1.5 + 4
    assert {0, 1, 2, 3} <= {p["pid"] for p in data["processes"]}, "live workers are always kept"
    assert data["ramps"][-1]["start"] == 100.0 + 4999, "the newest ramp is kept"
    assert data["dropped"]["ramps"] == 5001 - len(data["ramps"])
    assert data["dropped"]["processes"] + len(data["processes"]) == 5004
    after = summarize(data)
    assert after.pop("ramps") == len(data["ramps"]) and summary.pop("ramps") == 1
    assert after == summary, "the first ramp's figures do not change"


def test_trimming_is_amortised_and_the_record_stays_the_same_size():
    timeline = Timeline(0.0, 0.0)
    first_ramp(timeline)
    respawns(timeline, 2000)
    size = len(str(timeline.to_dict()))
    respawns(timeline, 20_000, start=2000)
    assert len(str(timeline.to_dict())) < size * 1.2


def test_a_crash_loop_in_one_ramp_keeps_only_the_newest_exits():
    timeline = Timeline(0.0, 0.0)
    timeline.ramp_started(0.0, 1, "start")
    for pid in range(5000):  # never ready: the ramp never ends
        timeline.spawned(http(pid), pid * 0.01, pid)
        timeline.exited(http(pid), pid * 0.01 + 0.005, 1, None)
    data = timeline.to_dict()
    assert len(data["processes"]) <= KEEP_EXITED * 1.5
    assert data["processes"][-1]["pid"] == 4999


def test_the_manager_restart_limit_resets_after_it_was_up_a_while():
    restarts = 0
    for _ in range(MANAGER_RESTARTS):
        restarts, replace = manager_restart(restarts, up_for=1.0)
        assert replace
    assert manager_restart(restarts, up_for=1.0) == (MANAGER_RESTARTS + 1, False)
    assert manager_restart(restarts, up_for=MANAGER_STABLE) == (1, True)


def test_a_chart_never_replaces_a_fifo(tmp_path):
    pytest.importorskip("matplotlib")
    from gunicorn_slowstart import timeline as tl

    data = Timeline(0.0, 0.0)
    first_ramp(data)
    source = tmp_path / "t.json"
    files.write_atomic(source, tl.dumps(data.to_dict()))
    fifo = make_special(tmp_path, "fifo")
    assert tl.main(["render", str(source), "-o", str(fifo)]) == 1
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert tl.main(["render", str(source), "-o", str(tmp_path / "chart.png")]) == 0
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
