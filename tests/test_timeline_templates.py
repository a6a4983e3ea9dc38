"""The timeline's record of template processes (``fork_from = template``): each template's
fork, import and end, the bounded history, the loader, the summary text and the chart's bars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_timeline import run_cli, scenario

from gunicorn_slowstart import timeline as tl
from gunicorn_slowstart.timeline_cli import format_summary, load, template_line

T0 = 1000.0


def with_templates() -> tl.Timeline:
    """The two-ramp scenario, each generation imported by a template; a replacement that
    failed to load in between."""
    t = scenario()
    t.template_started(1, T0 + 0.002, 90, "start")
    t.template_loaded(1, T0 + 1.004, 0.9512)
    t.template_started(2, T0 + 5.0, 91, "replace")
    t.template_ended(2, T0 + 5.5, "failed", "RuntimeError: no database")
    t.template_started(3, T0 + 9.0, 92, "reload")
    t.template_loaded(3, T0 + 10.0, 0.95)
    t.template_ended(1, T0 + 10.0, "retired")
    return t


def test_each_template_is_recorded_with_its_import_and_end() -> None:
    rows = with_templates().to_dict()["templates"]
    assert rows == [
        {"generation": 1, "pid": 90, "reason": "start", "fork": 0.002, "loaded": 1.004, "cpu": 0.9512,
         "end": 10.0, "outcome": "retired"},
        {"generation": 2, "pid": 91, "reason": "replace", "fork": 5.0, "loaded": None, "cpu": None,
         "end": 5.5, "outcome": "failed", "error": "RuntimeError: no database"},
        {"generation": 3, "pid": 92, "reason": "reload", "fork": 9.0, "loaded": 10.0, "cpu": 0.95,
         "end": None, "outcome": None},
    ]


def test_template_events_out_of_order_are_ignored() -> None:
    t = tl.Timeline(0.0, 0.0)
    t.template_loaded(4, 1.0, 0.5)  # never started
    t.template_ended(4, 1.0, "lost")
    t.template_started(1, 0.0, 10, "start")
    t.template_loaded(1, 1.0, 0.5)
    t.template_loaded(1, 2.0, 0.7)  # a second load report keeps the first
    t.template_ended(1, 3.0, "retired")
    t.template_ended(1, 4.0, "stopped")  # after its end: ignored
    assert t.to_dict()["templates"] == [{"generation": 1, "pid": 10, "reason": "start", "fork": 0.0,
                                         "loaded": 1.0, "cpu": 0.5, "end": 3.0, "outcome": "retired"}]
    assert "templates" not in tl.Timeline(0.0, 0.0).to_dict()  # without a template the file is as before


def test_template_history_is_bounded_keeping_the_first_and_live_ones() -> None:
    """A replacement failing every 30 s for days: the first, the live and the newest are kept."""
    t = tl.Timeline(0.0, 0.0)
    t.template_started(1, 0.0, 1, "start")
    t.template_loaded(1, 1.0, 1.0)  # the first, alive for ever
    t.template_started(2, 2.0, 2, "reload")  # a live one among the dropped ones' ages
    for generation in range(3, 5003):
        t.template_started(generation, float(generation), generation, "replace")
        t.template_ended(generation, generation + 0.5, "failed", "ImportError")
    data = t.to_dict()
    kept = [row["generation"] for row in data["templates"]]
    assert kept[:2] == [1, 2] and kept[2:] == list(range(5003 - len(kept) + 2, 5003))
    assert len(kept) <= tl.KEEP_TEMPLATES * (1 + tl.TRIM_SLACK) + 1
    assert data["dropped"]["templates"] + len(kept) == 5002


def test_summary_lists_the_templates(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    with_templates().write(str(path))
    text = format_summary(load(str(path)), str(path))
    assert "templates (fork_from = template: the app imported once per generation):" in text
    assert ("  generation 1 (start), pid 90, forked at 0.00 s: app loaded after 1.00 s, 0.95 s CPU; "
            "retired at 10.00 s") in text
    assert "  generation 2 (replace), pid 91, forked at 5.00 s; failed (RuntimeError: no database) at 5.50 s" in text
    assert text.endswith("generation 3 (reload), pid 92, forked at 9.00 s: app loaded after 1.00 s, 0.95 s CPU")
    assert run_cli("summary", str(path)).stdout.strip() == text
    loading = {"generation": 4, "pid": 5, "reason": "reload", "fork": 1.0, "loaded": None, "cpu": None,
               "end": None, "outcome": None}
    assert template_line(loading) == "generation 4 (reload), pid 5, forked at 1.00 s: importing the app"


def test_loader_checks_templates_and_fills_old_rows(tmp_path: Path) -> None:
    data = with_templates().to_dict()
    data["templates"].append({"generation": 9, "fork": 20.0})  # hand-written: only the essentials
    good = tmp_path / "good.json"
    good.write_text(json.dumps(data))
    assert load(str(good))["templates"][-1] == {"generation": 9, "fork": 20.0, "pid": None, "reason": None,
                                                "loaded": None, "cpu": None, "end": None, "outcome": None}
    data["templates"][0]["loaded"] = "soon"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(tl.TimelineError, match="template 1 has a time that is not a number"):
        load(str(bad))
    data["templates"] = {"generation": 1}
    bad.write_text(json.dumps(data))
    with pytest.raises(tl.TimelineError, match="'templates' is not a list"):
        load(str(bad))


# -- the chart ----------------------------------------------------------------------------


def test_template_bars_come_first_and_are_labelled(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from gunicorn_slowstart import charts

    data = with_templates().to_dict()
    fig = charts._figure(charts.FIG_WIDTH, 6.0)
    ax = fig.add_subplot()
    processes = sorted(data["processes"], key=lambda p: (p["fork"], p["pid"]))
    charts._draw_bars(ax, processes, [], charts.chart_edge(data), templates=data["templates"])
    labels = [tick.get_text() for tick in ax.get_yticklabels()]
    assert labels[:3] == ["template 1", "template 2", "template 3"] and labels[3] == str(processes[0]["pid"])
    texts = [t.get_text() for t in ax.texts]
    assert "template 1: app loaded in 1.00 s (0.95 s CPU)" in texts
    assert "template 2: failed after 0.50 s" in texts
    handles = dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    assert set(charts.TEMPLATE_LABELS) <= set(handles) and "died before ready" in handles
    out = tmp_path / "t.png"
    charts.render(data, str(out))
    assert out.stat().st_size > 10_000
    assert charts.default_title(data).endswith("forked from a template")


def test_label_goes_inside_a_wide_import_bar_else_beside_it() -> None:
    from gunicorn_slowstart.charts import _template_label_place

    assert _template_label_place(0.0, 4.0, 10.0) == (0.0, "left", True)
    assert _template_label_place(0.0, 1.0, 10.0) == (1.0, "left", False)
    assert _template_label_place(7.0, 8.0, 10.0) == (7.0, "right", False)
