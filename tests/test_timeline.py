"""The startup timeline: recorder, summary, atomic write, CLI and charts."""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gunicorn_slowstart import timeline as tl
from gunicorn_slowstart.keys import ProcKey
from gunicorn_slowstart.policy import HTTP, LONG

ROOT = Path(__file__).resolve().parents[1]
T0 = 1000.0


def http(pid: int) -> ProcKey:
    return ProcKey(HTTP, pid)


def scenario() -> tl.Timeline:
    """Two ramps: a start (4 http + 1 long worker, one http boot failure) and a reload."""
    meta = {"mode": "ready", "cap": 2, "cpus": 2, "target": 4}
    t = tl.Timeline(T0, 1790000000.0, meta)
    t.ramp_started(T0, 4, "start")  # the master's target counts HTTP workers
    t.spawned(http(101), T0 + 0.010, 101)
    t.step(T0 + 0.010, 1, 2, 1, 0)
    t.ready(http(101), T0 + 1.010)
    t.step(T0 + 1.010, 2, 2, 0, 1)
    t.spawned(http(102), T0 + 1.020, 102)
    t.spawned(http(103), T0 + 1.020, 103)
    t.spawned(ProcKey(LONG, 0), T0 + 1.100, 201)  # a long worker: keyed by its granted id
    t.step(T0 + 1.100, 2, 2, 3, 1)
    t.exited(http(103), T0 + 1.420, code=3)
    t.step(T0 + 1.420, 1, 2, 2, 1)
    t.ready(ProcKey(LONG, 0), T0 + 1.600)
    t.ready(http(102), T0 + 2.220)
    t.step(T0 + 2.220, 2, 2, 0, 3)
    t.spawned(http(104), T0 + 2.230, 104)
    t.spawned(http(105), T0 + 2.230, 105)
    t.ready(http(104), T0 + 3.230)
    t.ready(http(105), T0 + 3.530)
    t.step(T0 + 3.530, 2, 2, 0, 5)
    t.ramp_done(T0 + 3.600)
    # SIGHUP: a reload ramp of 4 http workers; the old ones are stopped at the end
    t.ramp_started(T0 + 10.0, 4, "reload")
    t.spawned(http(301), T0 + 10.010, 301)
    t.ready(http(301), T0 + 11.0)
    t.spawned(http(302), T0 + 11.0, 302)
    t.spawned(http(303), T0 + 11.0, 303)
    t.ready(http(302), T0 + 12.0)
    t.spawned(http(304), T0 + 12.0, 304)
    t.ready(http(303), T0 + 12.1)
    t.ready(http(304), T0 + 13.0)
    t.ramp_done(T0 + 13.0)
    for pid in (101, 102, 104, 105):
        t.exited(http(pid), T0 + 13.1, signal=15)
    return t


EXPECTED_SUMMARY = {
    "ramps": 2, "reason": "start", "start": 0.0, "target": 4, "spawned": 5, "ready": 4,
    "first_ready": 1.01, "all_ready": 3.53, "long": {"spawned": 1, "ready": 1}, "peak_booting": 3,
    "boot": {"min": 0.5, "median": 1.0, "max": 1.3},
    "failures": 1,
    "failed": [{"pid": 103, "kind": "http", "after": 0.4, "exit_code": 3, "exit_signal": None}],
    "abandoned": None,
    "background": None,
}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gunicorn_slowstart.timeline", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
def written(tmp_path: Path) -> Path:
    path = tmp_path / "startup.json"
    scenario().write(str(path))
    return path


# ----------------------------------------------------------------------------- recorder


def test_processes_are_relative_to_t0_and_rounded_to_ms() -> None:
    data = scenario().to_dict()
    assert data["version"] == 1 and data["wall_t0"] == 1790000000.0
    by_pid = {p["pid"]: p for p in data["processes"]}
    assert [p["pid"] for p in data["processes"]] == [101, 102, 103, 201, 104, 105, 301, 302, 303, 304]
    assert by_pid[101] == {"kind": "http", "pid": 101, "fork": 0.01, "ready": 1.01, "exit": 13.1,
                           "exit_code": None, "exit_signal": 15, "stop": None}
    assert by_pid[103] == {"kind": "http", "pid": 103, "fork": 1.02, "ready": None, "exit": 1.42,
                           "exit_code": 3, "exit_signal": None, "stop": None}
    assert by_pid[201]["kind"] == "long" and by_pid[201]["exit"] is None
    t = tl.Timeline(5.0, 0.0)
    t.spawned(http(1), 5.0 + 1.23456, 1)
    assert t.to_dict()["processes"][0]["fork"] == 1.235


def test_ramps_are_filled_from_their_own_processes() -> None:
    assert scenario().to_dict()["ramps"] == [
        {"reason": "start", "start": 0.0, "target": 4, "end": 3.6, "first_ready": 1.01, "all_ready": 3.53},
        {"reason": "reload", "start": 10.0, "target": 4, "end": 13.0, "first_ready": 11.0, "all_ready": 13.0},
    ]


def test_summary_figures_are_exact() -> None:
    assert scenario().to_dict()["summary"] == EXPECTED_SUMMARY


def test_target_not_reached_and_open_ramp() -> None:
    t = tl.Timeline(0.0, 0.0)
    t.ramp_started(0.5, 3, "start")
    t.spawned(http(1), 0.6, 1)
    t.spawned(http(2), 0.6, 2)
    t.ready(http(1), 1.5)
    data = t.to_dict()
    assert data["ramps"][0] == {"reason": "start", "start": 0.5, "target": 3, "end": None,
                                "first_ready": 1.5, "all_ready": None}
    s = data["summary"]
    assert (s["ready"], s["first_ready"], s["all_ready"], s["peak_booting"]) == (1, 1.0, None, 2)
    assert tl.headline(s) == "1/3 workers ready, target not reached (first ready after 1.00 s)"


def test_steps_are_recorded_only_when_a_value_changes() -> None:
    t = tl.Timeline(0.0, 0.0)
    for now in (0.1, 0.2, 0.3):
        t.step(now, 1, 2, 0, 0)
    t.step(0.4, 1, 2, 1, 0)
    t.step(0.5, 1, 2, 1, 0)
    t.step(0.6, 2, 2, 1, 1)
    t.step(0.7, 1, 2, 0, 0)  # back to an earlier row: a change, so recorded
    assert t.to_dict()["steps"] == [[0.1, 1, 2, 0, 0], [0.4, 1, 2, 1, 0], [0.6, 2, 2, 1, 1],
                                    [0.7, 1, 2, 0, 0]]


def test_odd_events_are_ignored_and_pids_may_be_reused() -> None:
    t = tl.Timeline(0.0, 0.0)
    t.ready(http(9), 1.0)
    t.exited(http(9), 1.0, code=1)
    t.ramp_done(1.0)
    t.spawned(http(7), 1.0, 7)
    t.ready(http(7), 2.0)
    t.ready(http(7), 3.0)              # a second ready event keeps the first
    t.exited(http(7), 4.0, code=0)
    t.ready(http(7), 4.5)              # after exit: ignored
    t.spawned(http(7), 5.0, 7)    # the pid is reused by a new worker
    t.ready(http(7), 6.0)
    assert [(p["fork"], p["ready"], p["exit"]) for p in t.to_dict()["processes"]] == [
        (1.0, 2.0, 4.0), (5.0, 6.0, None)]


def test_meta_is_kept_by_reference_until_written() -> None:
    meta: dict = {}
    t = tl.Timeline(0.0, 0.0, meta)
    meta.update(mode="timer", cap=4)
    assert t.to_dict()["meta"] == {"mode": "timer", "cap": 4}
    assert tl.Timeline(0.0, 0.0).to_dict()["meta"] == {}


def test_summary_without_ramps_covers_every_process() -> None:
    t = tl.Timeline(0.0, 0.0, {"target": 2})
    t.spawned(http(1), 0.0, 1)
    t.spawned(http(2), 0.0, 2)
    t.ready(http(1), 1.0)
    t.ready(http(2), 1.5)
    s = t.to_dict()["summary"]
    assert (s["ramps"], s["reason"], s["target"], s["ready"], s["all_ready"]) == (0, None, 2, 2, 1.5)


def _brute_peak(intervals: list[tuple[float, float | None]]) -> int:
    points = {start for start, _ in intervals}
    return max((sum(1 for s, e in intervals if s <= x and (e is None or x < e)) for x in points), default=0)


@given(st.lists(st.tuples(st.integers(0, 50), st.one_of(st.none(), st.integers(0, 20))), max_size=30))
def test_peak_booting_matches_brute_force(raw: list[tuple[int, int | None]]) -> None:
    intervals = [(s / 10, None if d is None else (s + d) / 10) for s, d in raw]
    procs = [{"fork": s, "ready": e, "exit": None} for s, e in intervals]
    assert tl.peak_booting(procs) == _brute_peak([(s, e) for s, e in intervals if e is None or e > s])


def test_module_imports_neither_gunicorn_nor_matplotlib_at_top_level() -> None:
    tree = ast.parse(Path(tl.__file__).read_text())
    names = [a.name for node in tree.body if isinstance(node, ast.Import) for a in node.names]
    names += [node.module or "" for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] in ("gunicorn", "matplotlib")]


# ----------------------------------------------------------------------------- writing


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "startup.json"
    path.write_text("old")
    t = scenario()
    t.write(str(path))
    first = json.loads(path.read_text())
    assert first == json.loads(json.dumps(t.to_dict()))
    t.spawned(http(999), T0 + 20.0, 999)
    t.write(str(path))
    assert json.loads(path.read_text())["processes"][-1]["pid"] == 999
    assert os.listdir(tmp_path) == ["startup.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    scenario().write("startup.json")
    assert json.loads((tmp_path / "startup.json").read_text())["version"] == 1


def test_write_does_not_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("do not touch")
    link = tmp_path / "startup.json"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        scenario().write(str(link))
    assert target.read_text() == "do not touch"
    assert link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["precious.txt", "startup.json"]


def test_failed_write_removes_its_temp_file(tmp_path: Path) -> None:
    (tmp_path / "startup.json").mkdir()
    with pytest.raises(OSError):
        scenario().write(str(tmp_path / "startup.json"))
    assert os.listdir(tmp_path) == ["startup.json"]


# ----------------------------------------------------------------------------- loading


def test_summarize_a_loaded_file(written: Path) -> None:
    data = tl.load(str(written))
    assert tl.summarize(data) == EXPECTED_SUMMARY == data["summary"]


def test_load_recomputes_derived_fields(written: Path) -> None:
    raw = json.loads(written.read_text())
    del raw["summary"]
    for ramp in raw["ramps"]:
        del ramp["first_ready"], ramp["all_ready"]
    written.write_text(json.dumps(raw))
    data = tl.load(str(written))
    assert data["ramps"][1]["all_ready"] == 13.0
    assert tl.summarize(data) == EXPECTED_SUMMARY


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "not a gunicorn-slowstart timeline: the top level is a JSON list"),
    ('{"version": 2}', "version is 2, expected 1"),
    ('{"version": 1, "processes": [{"pid": 1}], "ramps": [], "steps": []}', "a process lacks"),
    ('{"version": 1, "processes": [], "ramps": [], "steps": [[1, 2]]}', "a step is not"),
])
def test_load_names_the_file_and_the_problem(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "startup.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(tl.TimelineError, match=problem) as info:
        tl.load(str(path))
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- CLI


def test_cli_summary(written: Path, capsys: pytest.CaptureFixture) -> None:
    assert tl.main(["summary", str(written)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{written}: mode=ready, cap=2, cpus=2, target=4"
    assert lines[1:] == [
        "ramp 1 of 2, start at 0.00 s: 4/4 workers ready in 3.53 s (first ready after 1.01 s)",
        "  spawned       5 http, 1 long (1 ready)",
        "  peak booting  3",
        "  boot time     min 0.50 s   median 1.00 s   max 1.30 s",
        "  failures      1 (http pid 103 exit code 3 after 0.40 s)",
        "ramp 2 of 2, reload at 10.00 s: 4/4 workers ready in 3.00 s (first ready after 1.00 s)",
        "  spawned       4",
        "  peak booting  2",
        "  boot time     min 0.99 s   median 1.00 s   max 1.10 s",
        "  failures      none",
        "stopped by the master: none; exited on its own: 5",
    ]


def test_cli_summary_json(written: Path, capsys: pytest.CaptureFixture) -> None:
    assert tl.main(["summary", "--json", str(written)]) == 0
    first, second = json.loads(capsys.readouterr().out)
    assert first == EXPECTED_SUMMARY
    assert (second["reason"], second["start"], second["ready"], second["all_ready"]) == ("reload", 10.0, 4, 3.0)


def test_a_long_worker_ready_early_does_not_make_the_ramp_ready() -> None:
    t = tl.Timeline(0.0, 0.0, {"target": 2})
    t.ramp_started(0.0, 2, "start")
    t.spawned(http(1), 0.0, 1)
    t.spawned(ProcKey(LONG, 0), 0.0, 2)
    t.spawned(http(3), 0.5, 3)
    t.ready(ProcKey(LONG, 0), 0.6)
    t.ready(http(1), 1.0)
    t.ready(http(3), 2.0)
    data = t.to_dict()
    assert data["ramps"][0]["first_ready"] == 1.0 and data["ramps"][0]["all_ready"] == 2.0
    assert tl.headline(data["summary"]) == "2/2 workers ready in 2.00 s (first ready after 1.00 s)"


def test_failure_text_names_signals_and_truncates() -> None:
    failed = [{"pid": p, "kind": "long", "after": 0.25, "exit_code": None, "exit_signal": 9}
              for p in range(5)]
    text = tl._failure_text({"failures": 5, "failed": failed})
    assert text.startswith("5 (long pid 0 killed by SIGKILL after 0.25 s; ")
    assert text.endswith("; 2 more)")


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read"),
    ("{not json", "is not valid JSON"),
    ('{"version": 1}', "not a gunicorn-slowstart timeline"),
])
@pytest.mark.parametrize("command", ["summary", "render"])
def test_cli_bad_input_is_one_line_without_traceback(tmp_path: Path, content: str | None, problem: str,
                                                     command: str) -> None:
    path = tmp_path / "startup.json"
    if content is not None:
        path.write_text(content)
    extra = ["-o", str(tmp_path / "out.png")] if command == "render" else []
    result = run_cli(command, str(path), *extra)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("gunicorn-slowstart: ") and str(path) in lines[0] and problem in lines[0]


def test_cli_missing_matplotlib(written: Path, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['matplotlib'] = None; "
            "from gunicorn_slowstart.timeline import main; sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "x.png"
    result = subprocess.run([sys.executable, "-c", code, "render", str(written), "-o", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [tl.PLOT_HINT]
    assert not out.exists()


def test_cli_render_needs_one_source(written: Path, tmp_path: Path) -> None:
    for argv in (["render", "-o", "x.png"], ["render", str(written), "--compare", "a", "b", "-o", "x.png"]):
        with pytest.raises(SystemExit) as info:
            tl.main(argv)
        assert info.value.code == 2


# ----------------------------------------------------------------------------- charts


@pytest.fixture
def agg() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_render_writes_a_png(agg: None, written: Path, tmp_path: Path) -> None:
    out = tmp_path / "startup.png"
    assert tl.main(["render", str(written), "-o", str(out), "--title", "a test"]) == 0
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_render_compare(agg: None, written: Path, tmp_path: Path) -> None:
    off = tl.Timeline(0.0, 0.0, {"mode": "off", "target": 3})
    off.ramp_started(0.0, 3, "start")
    for pid in (1, 2, 3):
        off.spawned(http(pid), 0.01, pid)
    for pid in (1, 2, 3):
        off.ready(http(pid), 2.5 + pid / 10)
    off.write(str(tmp_path / "off.json"))
    out = tmp_path / "cmp.png"
    assert tl.main(["render", "--compare", str(tmp_path / "off.json"), str(written), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_render_an_empty_timeline(agg: None, tmp_path: Path) -> None:
    out = tmp_path / "empty.png"
    tl.render(tl.Timeline(0.0, 0.0).to_dict(), str(out))
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_cli_render_unwritable_output(agg: None, written: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    assert tl.main(["render", str(written), "-o", str(tmp_path / "no" / "such" / "dir.png")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("gunicorn-slowstart: cannot write ")


def test_a_background_boot_is_recorded_and_summarised():
    t = tl.Timeline(T0, 1.0e9, {"mode": "ready"})
    t.ramp_started(T0, 2, "start")
    t.spawned(http(1), T0, 1)
    t.spawned(http(2), T0, 2)
    t.background(http(2))
    t.ready(http(1), T0 + 1.0)
    t.raised(http(2), T0 + 1.0)
    t.ready(http(2), T0 + 1.5)
    data = t.to_dict()
    by_pid = {p["pid"]: p for p in data["processes"]}
    assert "background" not in by_pid[1] and by_pid[2]["background"] is True and by_pid[2]["raised"] == 1.0
    assert tl.summarize(data)["background"] == {"count": 1, "median_wait": 1.0}
    assert "1 booted at idle priority first, median wait 1.00 s" in tl.format_summary(data)
