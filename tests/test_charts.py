"""The timeline charts: labels never overlap nor are crossed by a line, every ramp's figures are
shown (also under a custom --title), and render says what it wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_timeline import scenario

from gunicorn_slowstart import charts
from gunicorn_slowstart import timeline as tl
from gunicorn_slowstart.keys import ProcKey
from gunicorn_slowstart.policy import HTTP

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def test_marks_cover_every_ramp() -> None:
    marks = [(x, text) for x, text, _, _ in tl._marks(scenario().to_dict())]
    assert marks == [(1.01, "first ready 1.01 s"), (3.53, "all 4 ready 3.53 s"), (10.0, "reload (ramp 2)"),
                     (11.0, "first ready +1.00 s"), (13.0, "all 4 ready +3.00 s")]


def test_figure_lines_keep_every_ramp_and_failures() -> None:
    assert tl._figure_lines(scenario().to_dict()) == [
        "start: 4/4 workers ready in 3.53 s (first ready after 1.01 s), 1 died before ready",
        "reload at 10.00 s: 4/4 workers ready in 3.00 s (first ready after 1.00 s)",
    ]


def test_many_ramps_are_summed_up() -> None:
    t = tl.Timeline(0.0, 0.0)
    for i in range(7):
        t.ramp_started(float(i), 1, "respawn")
    lines = tl._figure_lines(t.to_dict())
    assert len(lines) == tl.MAX_FIGURE_LINES and lines[-1] == "... and 4 more ramps (see summary)"


def _check(places: list, marks: list, fig, edge: float, width: float) -> None:
    boxes = []
    for (x, text, _, _), place in zip(marks, places, strict=True):
        if place is None:
            continue
        row, align = place
        at = x / edge * width
        boxes.append((row, *tl.label_span(at, tl._label_width(fig, text), align), at))
    for i, (row, left, right, _) in enumerate(boxes):
        for j, (other_row, other_left, other_right, other_at) in enumerate(boxes):
            if i == j:
                continue
            assert not (row == other_row and left < other_right and other_left < right), "labels overlap"
            assert not (other_row > row and left <= other_at <= right), "a line crosses a label"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 200), min_size=1, max_size=9))
def test_labels_never_overlap_nor_are_crossed(xs: list[int]) -> None:
    fig = tl._figure(tl.FIG_WIDTH, 5.0)
    edge, width = 21.0, tl.FIG_WIDTH - tl.LEFT - tl.RIGHT
    marks = sorted((x / 10, f"label at {x / 10:.2f} s", "k", "--") for x in xs)
    places = tl._place(fig, marks, edge, width)
    _check(places, marks, fig, edge, width)
    if len(xs) <= 3:
        assert all(place is not None for place in places)   # few labels always fit


def test_the_reload_labels_all_fit_in_the_header() -> None:
    data = scenario().to_dict()
    fig = tl._figure(tl.FIG_WIDTH, 5.0)
    marks, width = tl._marks(data), tl.FIG_WIDTH - tl.LEFT - tl.RIGHT
    places = tl._place(fig, marks, tl.chart_edge(data), width)
    assert None not in places
    _check(places, marks, fig, tl.chart_edge(data), width)


def test_render_prints_the_path_and_keeps_figures_under_a_title(tmp_path: Path, capsys) -> None:
    path = tmp_path / "startup.json"
    scenario().write(str(path))
    out = tmp_path / "chart.png"
    assert tl.main(["render", str(path), "-o", str(out), "--title", "My service"]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert out.read_bytes().startswith(b"\x89PNG")
    fig = tl._figure(tl.FIG_WIDTH, 5.0)
    tl._panels(fig, [(scenario().to_dict(), "My service")], 14.0, top=0.1)
    header = fig.axes[0]
    assert header.get_title() == "My service"
    texts = [t.get_text() for t in header.texts]
    assert any(text.startswith("start: 4/4 workers ready") and "reload at 10.00 s" in text for text in texts)


def test_compare_titles_each_panel_without_repeating_the_mode(tmp_path: Path, capsys) -> None:
    data = scenario().to_dict()
    assert tl._panel_title(data, "ready") == "ready (4 workers, cap 2, 2 CPUs)"
    assert tl._panel_title(data, "run 1") == "run 1 (mode ready, 4 workers, cap 2, 2 CPUs)"
    path = tmp_path / "a.json"
    scenario().write(str(path))
    out = tmp_path / "cmp.png"
    assert tl.main(["render", "--compare", str(path), str(path), "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"


# -- the time axis: the ramps, not the hours of serving after them ---------------------------

def served(stop_at: float, reload_fails: bool = False) -> dict:
    """A start of 3 workers ready by 2 s, optionally a reload that fails, then a stop at ``stop_at``."""
    t = tl.Timeline(0.0, 0.0, {"mode": "ready", "target": 3})
    t.ramp_started(0.0, 3, "start")
    for i, pid in enumerate((11, 12, 13)):
        t.spawned(ProcKey(HTTP, pid), 0.01 * i, pid)
        t.ready(ProcKey(HTTP, pid), 1.0 + 0.5 * i)
    t.step(0.0, 1, 2, 1, 0)
    t.ramp_done(2.0)
    if reload_fails:
        t.ramp_started(3.0, 3, "reload")
        t.spawned(ProcKey(HTTP, 21), 3.0, 21)
        t.spawned(ProcKey(HTTP, 22), 3.0, 22)
        t.exited(ProcKey(HTTP, 21), 3.5, code=3)           # the new code crashes
        t.exited(ProcKey(HTTP, 22), 3.6, signal=15)        # rolled back by the master
        t.reload_failed(3.6, 2, 1, "worker 21 died")
    for pid in (11, 12, 13):
        t.exited(ProcKey(HTTP, pid), stop_at, signal=15)
    return t.to_dict()


def test_a_server_that_served_then_stopped_is_drawn_to_its_last_ramp() -> None:
    data = served(33.0)
    edge = charts.chart_edge(data)
    assert charts.busy_end(data) == 2.0 and 2.0 < edge <= 2.6     # not 33 s: the ramp is the chart
    assert charts.beyond_edge(data, edge) == f"serving on past {edge:.1f} s (exits at 33.0 s)"
    assert charts.chart_edge(data, until=40.0) == 40.0 and charts.beyond_edge(data, 40.0) is None


def test_a_short_run_keeps_its_whole_axis() -> None:
    data = served(2.6)
    assert charts.chart_edge(data) == pytest.approx(2.6 + 0.2)
    assert charts.beyond_edge(data, charts.chart_edge(data)) is None


def test_a_reload_ends_the_axis_after_the_old_workers_it_stopped() -> None:
    data = scenario().to_dict()      # the old generation stops at 13.1 s, 0.1 s after the reload's last ready
    assert charts.busy_end(data) == 13.1


def test_a_failed_reload_is_marked_and_its_exits_told_apart() -> None:
    data = served(30.0, reload_fails=True)
    assert [(x, text) for x, text, _, _ in charts._marks(data)][-2:] == [
        (3.0, "reload (ramp 2)"), (3.6, "reload (ramp 2) failed")]
    assert charts.busy_end(data) == 3.6 and charts.chart_edge(data) < 4.2
    assert charts._figure_lines(data)[1].endswith(", 1 died before ready, 1 stopped while booting")
    fig = tl._figure(tl.FIG_WIDTH, 5.0)
    edge = charts.chart_edge(data)
    handles = charts._panels(fig, [(data, "t")], edge, top=0.1)
    assert {"died before ready", "stopped while booting", charts.beyond_edge(data, edge)} <= set(handles)
    assert len(handles) <= charts._legend_shape(len(handles))[0] * charts._legend_shape(len(handles))[1]


@pytest.mark.parametrize("ready, code, sig, kind", [
    (None, 3, None, "died before ready"), (None, None, 11, "died before ready"),
    (None, None, 9, "died before ready"),      # SIGKILL: the OOM killer's, or a boot that ignored SIGTERM
    (None, 0, None, "stopped while booting"), (None, None, 15, "stopped while booting"),
    (1.0, None, 15, None), (1.0, 0, None, None),  # retired, scaled down, shut down: the bar just ends
    (1.0, 1, None, "crashed while serving"), (1.0, None, 9, "crashed while serving"),
    (1.0, None, None, "crashed while serving"),   # an exit the master could not read: not shown as a stop
])
def test_exits_the_master_made_are_drawn_apart_from_crashes(ready, code, sig, kind) -> None:
    assert charts._exit_kind({"ready": ready, "exit": 2.0, "exit_code": code, "exit_signal": sig}) == kind


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 500), st.booleans()), min_size=1, max_size=8),
       st.integers(0, 100_000))
def test_every_ramp_mark_is_on_the_chart(workers: list, stop: int) -> None:
    """Whatever the tail, every fork and every mark lies within the axis, and arrows say what is cut."""
    t = tl.Timeline(0.0, 0.0, {"mode": "ready", "target": len(workers)})
    t.ramp_started(0.0, len(workers), "start")
    for pid, (fork, boot, ok) in enumerate(workers):
        t.spawned(ProcKey(HTTP, pid), fork / 100, pid)
        if ok:
            t.ready(ProcKey(HTTP, pid), (fork + boot) / 100)
        else:
            t.exited(ProcKey(HTTP, pid), (fork + boot) / 100, code=3)
    last = max((f + b) / 100 for f, b, _ in workers)
    for pid, (_, _, ok) in enumerate(workers):
        if ok:
            t.exited(ProcKey(HTTP, pid), last + stop / 100, signal=15)
    data = t.to_dict()
    edge = charts.chart_edge(data)
    assert all(0 <= x <= edge for x, _, _, _ in charts._marks(data))
    assert all(p["fork"] <= edge and (p["ready"] or 0) <= edge for p in data["processes"])
    assert edge <= charts.end_time(data) * 1.03 + 0.2
    cut = any(p["exit"] > edge for p in data["processes"] if p["ready"] is not None)
    assert (charts.beyond_edge(data, edge) is not None) == cut


def test_render_until(tmp_path: Path, capsys) -> None:
    path = tmp_path / "startup.json"
    scenario().write(str(path))
    out = tmp_path / "chart.png"
    assert tl.main(["render", str(path), "-o", str(out), "--until", "5"]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n" and out.read_bytes().startswith(b"\x89PNG")
    fig = tl._figure(tl.FIG_WIDTH, 5.0)
    tl._panels(fig, [(scenario().to_dict(), "t")], 5.0, top=0.1)
    assert fig.axes[1].get_xlim()[1] == 5.0
    assert len(fig.axes[1].get_yticks()) == 6   # the reload's 4 forks after 5 s are left out
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(SystemExit) as exc:
            tl.main(["render", str(path), "-o", str(out), "--until", bad])
        assert exc.value.code == 2
    assert "--until: must be a number of seconds > 0, got 'soon'" in capsys.readouterr().err
