"""Drawing a startup timeline: one chart, or two stacked to compare.

Theory of operation
-------------------
A chart has, per timeline, a header of labelled marks (each ramp's start,
its first and its last worker ready), one bar per process (light: booting,
dark: serving; HTTP and long workers in their own colours, failed boots in
red), with a row per template process on top (``fork_from = template``: its
import of the app, labelled with its wall and CPU time, then the time it
stays to fork workers), and a strip with the window, the cap and how many
booted and served at each step.  Labels are placed in as few header rows as
keep them apart; what does not fit is left out, its line stays.  The time
axis ends a little after the last ramp's work (``chart_edge``): a server that
served for long after it and then stopped would otherwise have its ramps in a
sliver of the width; bars that go on past the edge end in an arrow and the
legend says when they exited.  Exits are told apart: a crash (red) from a
worker the master stopped (grey; its recorded reason, ``stop``, written beside
the end where the rows are few) or that exited 0 or on SIGTERM / SIGINT /
SIGQUIT (an operator, or a timeline written before stop reasons: grey while
booting, a plain end while serving).  matplotlib is imported only
when a chart is drawn (``MissingMatplotlib`` otherwise), with the Agg
canvas, and the image is written through ``files.write_atomic``.  The
figures come from ``timeline.summaries``; the CLI is ``timeline_cli.py``.
"""

from __future__ import annotations

import math
import os
from typing import Any

from . import files
from .timeline import summaries
from .timeline_cli import PLOT_HINT, MissingMatplotlib, headline

# --------------------------------------------------------------------------- charts
#
# One chart per timeline, in three bands sharing the time axis, laid out in
# inches so nothing overlaps whatever the number of workers:
#   * a header with the title, one figures line per ramp, and the labels of
#     the marks (a later ramp's start, first ready, all ready), placed in rows
#     so that no two labels overlap (text widths are measured, not guessed);
#   * the bars: one row per process, light while booting, dark while serving;
#   * a strip under the bars with the window (a line) and the number booting
#     (filled), so that no line runs over the bars or the labels.

HTTP_COLORS = ("#a6cbe3", "#1f5f99")    # booting, serving
BACKGROUND_COLOR = "#e3eef7"             # booting in the background (idle CPU priority), hatched
BACKGROUND_LABEL = "http worker booting in the background (idle priority)"
LONG_COLORS = ("#fdd0a2", "#d95f0e")
WINDOW_COLOR = "#333333"
FIRST_COLOR = "#2ca02c"
ALL_COLOR = "#7b3294"
RAMP_COLOR = "#666666"
BOOTING_COLOR = "#d9d9d9"
FAILED_COLOR = "#d62728"
STOPPED_COLOR = "#777777"
STOP_SIGNALS = (2, 3, 15)   # SIGINT, SIGQUIT, SIGTERM: how the master (or an operator) stops a worker
STOPPED_SERVING = "stopped by the master"   # a serving worker's end, with the reason (``stop``) beside it
REASON_ROWS = 30            # at most this many rows: each stopped process's end is labelled with its reason
TEMPLATE_COLORS = ("#c2a5cf", "#762a83")  # importing the app, loaded (forking workers)
TEMPLATE_LABELS = ("template importing the app", "template loaded (workers fork from it)")
TEMPLATE_LABEL_INSIDE = 0.3  # an import bar this share of the axis wide holds its label
FAILED_OUTCOMES = ("failed", "lost")  # a template that ended so before loading: marked like a failed boot

FIG_WIDTH = 10.0        # inches
LEFT, RIGHT = 0.95, 0.3  # margins: worker pids on the left
LABEL_SIZE = 8
ROW = 0.21              # a header row of labels
STRIP = 0.8             # the window strip
MAX_ROWS = 5            # labels that would need more rows are left out (their lines stay)
MAX_FIGURE_LINES = 4    # ramps listed under the title


def _figure(width: float, height: float) -> Any:
    try:
        import matplotlib  # noqa: F401  (a None entry in sys.modules also lands here)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingMatplotlib(PLOT_HINT) from e
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # a renderer to measure label widths with
    return fig


def end_time(data: dict) -> float:
    """The last time anything was recorded (at least 1 s, so an empty chart has a scale)."""
    times = [0.0]
    for p in data["processes"]:
        times += [t for t in (p["fork"], p["ready"], p["exit"]) if t is not None]
    times += [s[0] for s in data["steps"]]
    for row in data.get("templates", []):
        times += [t for t in (row["fork"], row["loaded"], row["end"]) if t is not None]
    for r in data["ramps"]:
        times += [t for t in (r["start"], r.get("end"), r.get("all_ready")) if t is not None]
    return max(max(times), 1.0)


def busy_end(data: dict) -> float:
    """When the last ramp's work was over: its events, every fork and ready, every exit
    before ready, and the serving workers that a ramp stopped right after it (a reload's
    old generation).  A server that then serves for minutes and stops adds nothing."""
    times = [0.0]
    for p in data["processes"]:
        times += [t for t in (p["fork"], p["ready"]) if t is not None]
        if p["ready"] is None and p["exit"] is not None:
            times.append(p["exit"])             # a boot that failed or was stopped
    for r in data["ramps"]:
        failed = r.get("failed") or {}
        times += [t for t in (r["start"], r.get("end"), r.get("all_ready"), failed.get("t")) if t is not None]
    times += [e[0] for e in data.get("events", [])]
    if not data["ramps"]:
        times += [s[0] for s in data["steps"]]
    busy = max(times)
    retired = [p["exit"] for p in data["processes"] if p["ready"] is not None and p["exit"] is not None
               and busy < p["exit"] <= busy + _margin(busy)]
    return max([busy, *retired])


def _margin(t: float) -> float:
    return max(0.08 * t, 0.5)


LONG_TAIL = 0.25    # a run that served idle for more than this share of its time is cut after its last ramp


def chart_edge(data: dict, until: float | None = None) -> float:
    """Right edge of the x axis: ``until`` if given; else a little after the last event, or,
    when the server then served for a while (the tail would squeeze the ramps into a sliver
    of the width), a little after the last ramp's work (``busy_end``)."""
    if until is not None:
        return until
    end, busy = end_time(data), busy_end(data)
    if end - busy <= max(LONG_TAIL * end, 1.0):
        return end + max(0.03 * end, 0.2)
    return busy + _margin(busy)


def beyond_edge(data: dict, edge: float) -> str | None:
    """What the bars cut at ``edge`` go on to: the exits off the chart (None: nothing is cut)."""
    exits = sorted(p["exit"] for p in data["processes"] if p["ready"] is not None and p["fork"] <= edge
                   and p["ready"] < edge and p["exit"] is not None and p["exit"] > edge)
    if not exits:
        return None
    when = f"{exits[0]:.1f} s" if exits[-1] - exits[0] < 0.05 else f"{exits[0]:.1f}-{exits[-1]:.1f} s"
    return f"serving on past {edge:.1f} s (exit{'s' if len(exits) > 1 else ''} at {when})"


# -- what the header says -------------------------------------------------------------------


def _marks(data: dict) -> list[tuple[float, str, str, str]]:
    """(x, label, color, line style) of each ramp's start (after the first) and readiness."""
    marks = []
    for index, s in enumerate(summaries(data) if data["ramps"] else []):
        start, sign = s["start"], "+" if index else ""     # later ramps: seconds after their start
        if index:
            marks.append((start, f"{s['reason']} (ramp {index + 1})", RAMP_COLOR, ":"))
        if s["abandoned"]:
            marks.append((s["abandoned"]["t"], f"{s['reason']} (ramp {index + 1}) failed", FAILED_COLOR, "-."))
        if s["first_ready"] is not None:
            marks.append((start + s["first_ready"], f"first ready {sign}{s['first_ready']:.2f} s", FIRST_COLOR, "--"))
        if s["all_ready"] is not None and s["all_ready"] != s["first_ready"]:
            marks.append((start + s["all_ready"], f"all {s['target']} ready {sign}{s['all_ready']:.2f} s",
                          ALL_COLOR, "--"))
    return sorted(marks, key=lambda m: m[0])


def _figure_lines(data: dict) -> list[str]:
    """One line of figures per ramp, under the title."""
    lines = []
    for index, s in enumerate(summaries(data)):
        where = s["reason"] or "ramp" if index == 0 else f"{s['reason']} at {s['start']:.2f} s"
        died = sum(1 for f in s["failed"] if not stopped_on_purpose(f))
        failed = f", {died} died before ready" if died else ""
        failed += f", {s['failures'] - died} stopped while booting" if s["failures"] > died else ""
        lines.append(f"{where}: {headline(s)}{failed}")
    if len(lines) > MAX_FIGURE_LINES:
        more = len(lines) - MAX_FIGURE_LINES + 1
        lines = lines[:MAX_FIGURE_LINES - 1] + [f"... and {more} more ramps (see summary)"]
    return lines


def _label_width(fig: Any, text: str) -> float:
    """Inches a mark's label takes, box included."""
    probe = fig.text(0, 0, text, fontsize=LABEL_SIZE)
    width = probe.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi
    probe.remove()
    return width + 0.07


LABEL_OFFSET = 0.03     # inches between a mark's line and its label's box


def label_span(at: float, width: float, align: str) -> tuple[float, float]:
    """Inches [left, right] a label's box takes, for a line at ``at``."""
    if align == "left":
        return at + LABEL_OFFSET, at + LABEL_OFFSET + width
    return at - LABEL_OFFSET - width, at - LABEL_OFFSET


def _place(fig: Any, marks: list, edge: float, width: float) -> list[tuple[int, str] | None]:
    """A header row (0: next to the bars) and alignment for each mark's label; None: left out.

    No two labels overlap, and no mark's line (which runs from the bars up to
    its label) crosses another label.
    """
    lines = [x / edge * width for x, _, _, _ in marks]
    widths = [_label_width(fig, text) for _, text, _, _ in marks]
    best = _place_in_order(list(range(len(marks))), lines, widths, width)
    if None in best:  # placing greedily from the left can box in a label near the right edge
        other = _place_in_order(list(reversed(range(len(marks)))), lines, widths, width)
        if other.count(None) < best.count(None):
            best = other
    return best


def _place_in_order(order: list[int], lines: list[float], widths: list[float],
                    width: float) -> list[tuple[int, str] | None]:
    """``_place``, the labels taken in ``order`` (indices into ``lines``)."""
    placed: list[tuple[int, float, float, float]] = []     # row, left, right, line x (inches)
    result: list[tuple[int, str] | None] = [None] * len(lines)
    gap = 0.08
    for position, index in enumerate(order):
        w, at = widths[index], lines[index]
        spans = [(*label_span(at, w, "left"), "left"), (*label_span(at, w, "right"), "right")]
        if spans[0][1] > width:
            spans.reverse()
        spans = [span for span in spans if span[0] >= -LEFT + 0.1 and span[1] <= width + 0.1] or spans
        others = [lines[i] for i in order[position + 1:]]  # lines still to place: better not covered
        # first a place that covers none of them; else high enough to leave the rows below to them
        choice = next(((row, left, right, align) for row in range(MAX_ROWS) for left, right, align in spans
                       if not _covered(others, left, right, gap) and _free(placed, row, left, right, at, gap)),
                      None)
        for left, right, align in spans if choice is None else ():
            low = _covered(others, left, right, gap)
            choice = next(((row, left, right, align) for row in [*range(low, MAX_ROWS), *range(low)]
                           if _free(placed, row, left, right, at, gap)), None)
            if choice is not None:
                break
        if choice is None:
            continue
        row, left, right, align = choice
        placed.append((row, left, right, at))
        result[index] = (row, align)
    return result


def _covered(lines: list[float], left: float, right: float, gap: float) -> int:
    return sum(1 for at in lines if left - gap <= at <= right + gap)


def _free(placed: list, row: int, left: float, right: float, at: float, gap: float) -> bool:
    """Room at ``row`` for a label spanning [left, right] whose line rises at ``at``."""
    for other_row, other_left, other_right, other_at in placed:
        if other_row == row and left - gap < other_right and other_left < right + gap:
            return False        # two labels side by side
        if other_row < row and other_left <= at <= other_right:
            return False        # this line would cross a lower label
        if other_row > row and left <= other_at <= right:
            return False        # a higher label's line would cross this one
    return True


# -- the three bands ------------------------------------------------------------------------


def _draw_header(ax: Any, marks: list, places: list, rows: int, edge: float, title: str,
                 lines: list[str]) -> None:
    ax.set_xlim(0, edge)
    ax.set_ylim(0, rows)
    ax.set_axis_off()
    ax.set_title(title, fontsize=11, pad=4 + 12.5 * len(lines))
    ax.annotate("\n".join(lines), (0.5, 1.0), xycoords="axes fraction", xytext=(0, 3), textcoords="offset points",
                ha="center", va="bottom", fontsize=9, color="#333333")
    for (x, text, color, style), place in zip(marks, places, strict=True):
        if place is None:
            continue
        row, align = place
        y = row + 0.5               # row 0 just above the bars
        ax.plot([x, x], [0, y], color=color, linestyle=style, linewidth=1.2, clip_on=False, zorder=1)
        offset = (LABEL_OFFSET + 0.03) * 72 * (1 if align == "left" else -1)     # to the text, in points
        ax.annotate(text, (x, y), xytext=(offset, 0), textcoords="offset points",
                    ha=align, va="center", fontsize=LABEL_SIZE, color=color, zorder=3,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": color, "lw": 0.6})


def _background_end(p: dict, end: float) -> float | None:
    """When a background boot left the background (raised, ready or gone); None if it never was one."""
    if not p.get("background"):
        return None
    for t in (p.get("raised"), p["ready"], p["exit"]):
        if t is not None:
            return t
    return end


def _bars(processes: list[dict], kind: str, end: float, first: int = 0) -> tuple[list, list, list]:
    """(y, left, width) rows of the background, booting and serving bars of one kind (the
    processes' rows from ``first`` on)."""
    waiting, booting, serving = [], [], []
    for y, p in enumerate(processes, first):
        if p["kind"] != kind:
            continue
        boot_end = p["ready"] if p["ready"] is not None else (p["exit"] if p["exit"] is not None else end)
        start = p["fork"]
        raised = _background_end(p, end)
        if raised is not None:
            waiting.append((y, start, max(raised - start, 0.0)))
            start = min(raised, boot_end)
        booting.append((y, start, max(boot_end - start, 0.0)))
        if p["ready"] is not None:
            stop = p["exit"] if p["exit"] is not None else end
            serving.append((y, p["ready"], max(stop - p["ready"], 0.0)))
    return waiting, booting, serving


def template_text(row: dict) -> str:
    """``template 1: app loaded in 1.02 s (0.98 s CPU)``: what a template's bar is labelled."""
    name = f"template {row['generation']}"
    if row["loaded"] is not None:
        cpu = f" ({row['cpu']:.2f} s CPU)" if row.get("cpu") is not None else ""
        return f"{name}: app loaded in {row['loaded'] - row['fork']:.2f} s{cpu}"
    if row["outcome"] is not None:
        return f"{name}: {row['outcome']} after {row['end'] - row['fork']:.2f} s"
    return f"{name}: importing the app"


def _template_label_place(fork: float, loaded: float, edge: float) -> tuple[float, str, bool]:
    """(x, alignment, inside the bar) of a template's label: inside a wide import bar, else
    after it, or before it when the bar ends late on the axis."""
    if (loaded - fork) / edge > TEMPLATE_LABEL_INSIDE:
        return fork, "left", True
    if loaded / edge < 0.6:
        return loaded, "left", False
    return fork, "right", False


def _draw_templates(ax: Any, templates: list[dict], edge: float) -> None:
    """A row per template: its import (wide, labelled), then the time it forks workers (thin)."""
    for y, row in enumerate(templates):
        loaded = row["loaded"] if row["loaded"] is not None else (row["end"] if row["end"] is not None else edge)
        ax.barh(y, max(loaded - row["fork"], 0.0), left=row["fork"], height=0.72, color=TEMPLATE_COLORS[0],
                linewidth=0, label=TEMPLATE_LABELS[0])
        if row["loaded"] is not None:
            stop = row["end"] if row["end"] is not None else edge
            ax.barh(y, max(stop - loaded, 0.0), left=loaded, height=0.3, color=TEMPLATE_COLORS[1], linewidth=0,
                    label=TEMPLATE_LABELS[1])
        elif row["outcome"] in FAILED_OUTCOMES:
            ax.plot([row["end"]], [y], "x", color=FAILED_COLOR, markersize=7, markeredgewidth=2,
                    label="died before ready", zorder=4)
        at, align, inside = _template_label_place(row["fork"], loaded, edge)
        ax.annotate(template_text(row), (at, y), xytext=(-4 if align == "right" else 4, 0), textcoords="offset points",
                    ha=align, va="center", fontsize=7, color="black" if inside else TEMPLATE_COLORS[1], zorder=5,
                    bbox=None if inside else {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})


def _draw_bars(ax: Any, processes: list[dict], marks: list, edge: float, beyond: str | None = None,
               templates: list[dict] | None = None) -> None:
    ax.set_xlim(0, edge)
    templates = templates or []
    _draw_templates(ax, templates, edge)
    first = len(templates)
    for kind, (light, dark) in (("http", HTTP_COLORS), ("long", LONG_COLORS)):
        waiting, booting, serving = _bars(processes, kind, edge, first)
        if waiting:
            ys, lefts, widths = zip(*waiting, strict=True)
            ax.barh(ys, widths, left=lefts, height=0.72, color=BACKGROUND_COLOR, edgecolor=light, hatch="////",
                    linewidth=0, label=BACKGROUND_LABEL)
        for rows, color, phase in ((booting, light, "booting"), (serving, dark, "serving")):
            if rows:
                ys, lefts, widths = zip(*rows, strict=True)
                ax.barh(ys, widths, left=lefts, height=0.72, color=color, linewidth=0,
                        label=f"{kind} worker {phase}")
    _draw_exits(ax, processes, edge, beyond, first)
    for x, _, color, style in marks:
        ax.axvline(x, color=color, linestyle=style, linewidth=1.2, zorder=3)
    n = len(processes) + first
    ax.set_ylim(max(n, 1) - 0.5, -0.5)      # first fork on top
    if 0 < n <= 30:
        names = [f"template {row['generation']}" for row in templates] + [str(p["pid"]) for p in processes]
        ax.set_yticks(range(n), names, fontsize=7 if n <= 20 else 6)
        ax.set_ylabel("worker pid, in fork order", fontsize=9)
    elif first:
        ax.set_yticks(range(first), [f"template {row['generation']}" for row in templates], fontsize=7)
        ax.set_ylabel("workers, in fork order", fontsize=9)
    else:
        ax.set_yticks([])
        ax.set_ylabel("workers, in fork order" if n else "no worker recorded", fontsize=9)
    ax.tick_params(axis="y", length=0)
    ax.tick_params(axis="x", labelbottom=False)
    ax.grid(axis="x", color="#e0e0e0", linewidth=0.8)
    ax.set_axisbelow(True)


def stopped_on_purpose(p: dict) -> bool:
    """The master recorded why it stopped it (``stop``, ``stops.py``: whatever the signal,
    e.g. the memory guard's SIGKILL); else exit 0, or SIGTERM / SIGINT / SIGQUIT: an
    operator, or the master in a timeline written before stop reasons.  Any other exit is
    a crash; so is a SIGKILL the master did not record, the kernel's OOM killer's."""
    return bool(p.get("stop")) or p["exit_code"] == 0 or p["exit_signal"] in STOP_SIGNALS


EXIT_MARKERS = {    # label: (before ready?, on purpose?, matplotlib style)
    "died before ready": (True, False, {"marker": "x", "color": FAILED_COLOR, "markersize": 7,
                                        "markeredgewidth": 2}),
    "stopped while booting": (True, True, {"marker": "o", "color": STOPPED_COLOR, "markerfacecolor": "white",
                                           "markersize": 6, "markeredgewidth": 1.5}),
    "crashed while serving": (False, False, {"marker": "|", "color": FAILED_COLOR, "markersize": 10,
                                             "markeredgewidth": 2.5}),
    STOPPED_SERVING: (False, True, {"marker": "|", "color": STOPPED_COLOR, "markersize": 10,
                                    "markeredgewidth": 1.5}),
}


def _exit_kind(p: dict) -> str | None:
    """Which ``EXIT_MARKERS`` entry a process's exit is drawn with (None: a plain end of its bar)."""
    if p["exit"] is None:
        return None
    if p["ready"] is not None and p.get("stop"):
        return STOPPED_SERVING  # the master recorded why: its reason is written beside the mark
    for label, (before_ready, on_purpose, _) in EXIT_MARKERS.items():
        if label != STOPPED_SERVING and (p["ready"] is None) == before_ready and stopped_on_purpose(p) == on_purpose:
            return label
    return None     # a serving worker that exited 0 or on SIGTERM with no recorded reason: its bar just ends


def _draw_exits(ax: Any, processes: list[dict], edge: float, beyond: str | None = None, first: int = 0) -> None:
    """A mark where a worker died or was stopped while booting, or crashed while serving, and
    an arrow at the right edge on every serving bar that goes on past it (``beyond``: its
    legend text, the same for every panel of a figure).  The processes' rows start at ``first``."""
    for label, (_, _, style) in EXIT_MARKERS.items():
        points = [(p["exit"], y) for y, p in enumerate(processes, first)
                  if _exit_kind(p) == label and p["exit"] <= edge]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, linestyle="none", label=label, zorder=4, **style)
    _draw_stop_reasons(ax, processes, edge, first)
    on = beyond or beyond_edge({"processes": processes}, edge)
    for kind, (_, dark) in (("http", HTTP_COLORS), ("long", LONG_COLORS)) if on else ():
        ys = [y for y, p in enumerate(processes, first) if p["kind"] == kind and p["ready"] is not None
              and p["ready"] < edge and p["exit"] is not None and p["exit"] > edge]
        if ys:
            ax.plot([edge] * len(ys), ys, linestyle="none", marker=">", color=dark, markersize=6,
                    clip_on=False, zorder=4, label=on)
            on = "_" + on       # one legend entry (matplotlib skips labels starting with "_")


def _draw_stop_reasons(ax: Any, processes: list[dict], edge: float, first: int = 0) -> None:
    """The master's reason (``stop``) beside the end of each process it stopped, where the
    rows are few enough to be read (``REASON_ROWS``); a reason near the right edge goes left."""
    if len(processes) + first > REASON_ROWS:
        return
    for y, p in enumerate(processes, first):
        if not p.get("stop") or p["exit"] is None or p["exit"] > edge:
            continue
        right = p["exit"] > 0.85 * edge
        ax.annotate(str(p["stop"].get("reason")), (p["exit"], y), xytext=(-5 if right else 5, 0),
                    textcoords="offset points", ha="right" if right else "left", va="center", fontsize=6,
                    color=STOPPED_COLOR, zorder=5,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})


def _draw_background_share(ax: Any, processes: list[dict], steps: list, edge: float) -> None:
    """The top of the "booting now" fill, hatched: how many of them boot in the background
    (from the processes' records, at every step and every fork or raise)."""
    spans = [(p["fork"], _background_end(p, edge)) for p in processes if p.get("background")]
    if not spans:
        return
    times = sorted({s[0] for s in steps} | {t for span in spans for t in span if 0 <= t <= edge})
    xs, tops, bottoms = [], [], []
    for t in times:
        at = [s for s in steps if s[0] <= t]
        top = at[-1][3] if at else 0
        waiting = sum(1 for lo, hi in spans if lo <= t < hi)
        xs.append(t)
        tops.append(top)
        bottoms.append(max(0, top - waiting))
    ax.fill_between([*xs, edge], [*bottoms, bottoms[-1]], [*tops, tops[-1]], step="post", color=BACKGROUND_COLOR,
                    hatch="////", edgecolor=BOOTING_COLOR, linewidth=0, label="of them in the background")


def _draw_strip(ax: Any, data: dict, marks: list, edge: float, xlabel: bool) -> None:
    """The window (line) and the number booting (filled) over time, under the bars."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0, edge)
    steps = data["steps"]
    if steps:
        xs = [s[0] for s in steps] + [edge]
        windows = [s[1] for s in steps] + [steps[-1][1]]
        booting = [s[3] for s in steps] + [steps[-1][3]]
        ax.fill_between(xs, booting, step="post", color=BOOTING_COLOR, linewidth=0, label="booting now (http)")
        _draw_background_share(ax, data["processes"], steps, edge)
        ax.step(xs, windows, where="post", color=WINDOW_COLOR, linewidth=1.6, label=WINDOW_LABELS.get(
            _mode(data), WINDOW_LABELS["ready"]))
        ax.set_ylim(0, max(windows + booting + [1]) * 1.25)
    else:
        ax.text(0.5, 0.5, "no window recorded", transform=ax.transAxes, ha="center", va="center",
                fontsize=8, color="#888888")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel("booting", fontsize=8)
    for x, _, color, style in marks:
        ax.axvline(x, color=color, linestyle=style, linewidth=1.0, zorder=3)
    ax.grid(axis="x", color="#e0e0e0", linewidth=0.8)
    ax.set_axisbelow(True)
    if xlabel:
        ax.set_xlabel("seconds since master start", fontsize=9)


# -- figures --------------------------------------------------------------------------------


def _bars_height(data: dict) -> float:
    return min(max(0.2 * (len(data["processes"]) + len(data.get("templates", []))), 1.4), 5.5)


def _panels(fig: Any, panels: list[tuple[dict, str]], edge: float, top: float) -> dict[str, Any]:
    """Draw each (timeline, title) as header, bars and strip, stacked from ``top`` inches down."""
    width = FIG_WIDTH - LEFT - RIGHT
    plans = []
    for data, title in panels:
        marks = [mark for mark in _marks(data) if mark[0] <= edge]     # render --until: what it shows
        places = _place(fig, marks, edge, width)
        rows = max([p[0] + 1 for p in places if p is not None], default=1)
        plans.append((data, title, marks, places, rows, _figure_lines(data)))
    height = top + LEGEND_ROW * _legend_rows(plans, edge) + sum(
        0.3 + 0.19 * len(lines) + rows * ROW + _bars_height(data) + 0.06 + STRIP + 0.55
        for data, _, _, _, rows, lines in plans)
    fig.set_size_inches(FIG_WIDTH, height)
    handles: dict[str, Any] = {}
    beyond = _beyond_all(plans, edge)
    y = height - top
    for number, (data, title, marks, places, rows, lines) in enumerate(plans):
        y -= 0.3 + 0.19 * len(lines)
        header_h, bars_h = rows * ROW, _bars_height(data)
        header = fig.add_axes([LEFT / FIG_WIDTH, (y - header_h) / height, width / FIG_WIDTH, header_h / height])
        y -= header_h + bars_h
        bars = fig.add_axes([LEFT / FIG_WIDTH, y / height, width / FIG_WIDTH, bars_h / height])
        y -= 0.06 + STRIP
        strip = fig.add_axes([LEFT / FIG_WIDTH, y / height, width / FIG_WIDTH, STRIP / height])
        y -= 0.55
        processes = sorted((p for p in data["processes"] if p["fork"] <= edge),
                           key=lambda p: (p["fork"], p["pid"] or 0))  # a pid not known yet is null
        _draw_header(header, marks, places, rows, edge, title, lines)
        _draw_bars(bars, processes, marks, edge, beyond, data.get("templates", []))
        _draw_strip(strip, data, marks, edge, xlabel=number == len(plans) - 1)
        for ax in (bars, strip):
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
    return handles


WINDOW_LABELS = {"ready": "window (max booting)", "timer": "batch (forks per delay)",
                 "off": "window (off: all at once)"}
LEGEND_ORDER = (*TEMPLATE_LABELS, BACKGROUND_LABEL, "http worker booting", "http worker serving",
                "long worker booting", "long worker serving", *EXIT_MARKERS, "booting now (http)",
                "of them in the background",
                *dict.fromkeys(WINDOW_LABELS.values()))
LEGEND_COLUMNS = 5      # more entries than this: two rows, or more of at most MORE_COLUMNS each
MORE_COLUMNS = 4


LEGEND_ROW = 0.3        # inches


def _legend_rows(plans: list, edge: float) -> int:
    """Rows the legend will take, known before drawing: which kinds, exits, a window."""
    entries = set()
    for data, *_ in plans:
        for p in (p for p in data["processes"] if p["fork"] <= edge):
            entries.add(p["kind"] + " booting")
            if p.get("background"):
                entries.update((BACKGROUND_LABEL, "of them in the background"))
            if p["ready"] is not None:
                entries.add(p["kind"] + " serving")
            if p["exit"] is not None and p["exit"] <= edge:
                entries.add(_exit_kind(p))
        for row in data.get("templates", []):
            entries.add(TEMPLATE_LABELS[0])
            if row["loaded"] is not None:
                entries.add(TEMPLATE_LABELS[1])
            elif row["outcome"] in FAILED_OUTCOMES:
                entries.add("died before ready")
        if data["steps"]:
            entries.update(("booting now (http)", WINDOW_LABELS.get(_mode(data), WINDOW_LABELS["ready"])))
    entries.add(_beyond_all(plans, edge))
    entries.discard(None)
    return _legend_shape(len(entries))[0]


def _beyond_all(plans: list, edge: float) -> str | None:
    """``beyond_edge`` over every panel: one legend entry for the arrows of them all."""
    return beyond_edge({"processes": [p for data, *_ in plans for p in data["processes"] if p["fork"] <= edge]},
                       edge)


def _legend_shape(entries: int) -> tuple[int, int]:
    """(rows, columns) of a legend of so many entries: it must fit the figure's width."""
    if entries <= LEGEND_COLUMNS:
        return 1, max(entries, 1)
    rows = max(2, math.ceil(entries / MORE_COLUMNS))
    return rows, math.ceil(entries / rows)


def _figure_legend(fig: Any, handles: dict[str, Any]) -> None:
    """The legend at the bottom, where it hides nothing: one row, or two when long."""
    labels = sorted(handles, key=lambda label: LEGEND_ORDER.index(label) if label in LEGEND_ORDER else 99)
    if labels:
        columns = _legend_shape(len(labels))[1]
        fig.legend([handles[label] for label in labels], labels, loc="lower center", bbox_to_anchor=(0.5, 0.0),
                   ncols=columns, fontsize=8, frameon=False)


def _mode(data: dict) -> str:
    return str(data.get("meta", {}).get("mode", "?"))


def _setup_text(data: dict, mode: bool = True) -> str:
    """``mode ready, 8 workers, cap 2, 2 CPUs`` from the timeline's meta."""
    meta = data.get("meta", {})
    parts = [f"mode {_mode(data)}"] if mode else []
    parts += [f"{meta['target']} workers"] if "target" in meta else []
    parts += [f"cap {meta['cap']}"] if meta.get("cap") is not None else []
    parts += [f"{meta['cpus']} CPUs"] if "cpus" in meta else []
    parts += ["forked from a template"] if data.get("templates") else []
    return ", ".join(parts)


def default_title(data: dict) -> str:
    return f"Startup timeline: {_setup_text(data)}"


def _panel_title(data: dict, label: str) -> str:
    setup = _setup_text(data, mode=label != _mode(data))
    return f"{label} ({setup})" if setup else label


def render(data: dict, path: str, title: str | None = None, until: float | None = None) -> None:
    """Draw one timeline to an image file (PNG by its suffix); needs matplotlib.

    ``title`` replaces the first line only: the figures of every ramp stay under it.
    ``until``: the x axis ends there (seconds since the master's start) instead of
    after the last ramp (``chart_edge``).
    """
    fig = _figure(FIG_WIDTH, 6.0)
    _figure_legend(fig, _panels(fig, [(data, title or default_title(data))], chart_edge(data, until), top=0.1))
    _save(fig, path)


def render_compare(first: dict, second: dict, path: str, title: str | None = None,
                   labels: tuple[str, str] | None = None, until: float | None = None) -> None:
    """Draw two timelines stacked on one time scale, each titled with its label (default: meta mode)."""
    labels = labels or (_mode(first), _mode(second))
    fig = _figure(FIG_WIDTH, 9.0)
    edge = max(chart_edge(first, until), chart_edge(second, until))
    handles = _panels(fig, [(first, _panel_title(first, labels[0])),
                            (second, _panel_title(second, labels[1]))], edge, top=0.45)
    _figure_legend(fig, handles)
    fig.suptitle(title or f"Startup compared: {labels[0]} vs {labels[1]}", fontsize=12, y=1 - 0.1 / fig.get_figheight(),
                 va="top")
    _save(fig, path)


def _save(fig: Any, path: str) -> None:
    """Render in memory, then ``files.write_atomic``: a chart never replaces a device or a FIFO."""
    import io

    files.check_writable(path)
    buffer = io.BytesIO()
    suffix = os.path.splitext(path)[1][1:].lower() or None
    try:
        fig.savefig(buffer, dpi=100, format=suffix)
    except ValueError as e:     # e.g. an image format matplotlib does not know
        raise OSError(str(e)) from e
    files.write_atomic(path, buffer.getvalue())
