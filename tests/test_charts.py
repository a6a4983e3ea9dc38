"""The timeline charts: labels never overlap nor are crossed by a line, every ramp's figures are
shown (also under a custom --title), and render says what it wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_timeline import scenario

from gunicorn_slowstart import timeline as tl

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
