"""The master's record of a startup ramp, written as JSON, and a CLI to read it.

What it is for
--------------
"Did slow start help?" is a question about time: when was each worker
forked, when did it become ready, how many booted at once, when did the first
one answer and when were all of them up.  The arbiter feeds a ``Timeline``
with those events, stamped with its own monotonic clock, and writes the
record next to its logs (the ``slowstart_timeline`` setting).  The file is
small, stable JSON, so it can be diffed, summarised in CI, or drawn::

    python -m gunicorn_slowstart.timeline summary startup.json
    python -m gunicorn_slowstart.timeline render startup.json -o startup.png
    python -m gunicorn_slowstart.timeline render --compare off.json ready.json -o cmp.png

Recorder
--------
The recorder is a passive log: it never reads a clock, never raises on odd
event sequences (an unknown pid is ignored) and is not thread-safe (call it
from the master's loop).  ``step`` is cheap to call on every loop iteration:
a row is recorded only when one of its values changes.  ``meta`` is kept by
reference (the master may learn the cap or the mode after it built the
recorder) and copied when the file is written.  A process is keyed by
its pid while it lives; a pid reused after ``exited`` starts a new record.

Schema (version 1)
------------------
All times are seconds relative to ``t0`` (the master's start), rounded to
1 ms; ``wall_t0`` is the matching ``time.time()`` for humans::

    {"version": 1, "wall_t0": 1790000000.0,
     "meta": {"mode": "ready", "cap": 2, "cpus": 2, "target": 16, ...},
     "processes": [{"kind": "http", "pid": 123, "fork": 0.012, "ready": 1.204,
                    "exit": null, "exit_code": null, "exit_signal": null}, ...],
     "steps": [[t, window, cap, booting, ready], ...],
     "ramps": [{"reason": "start", "start": 0.0, "target": 16, "end": 9.8,
                "first_ready": 1.2, "all_ready": 9.8}, ...],
     "summary": {...}}

``kind`` is ``"http"`` or ``"long"``.  ``reason`` is ``"start"``,
``"reload"``, ``"respawn"`` or ``"scale"``.  A ramp's ``end`` is when the
arbiter called ``ramp_done`` (null if it never did); ``first_ready`` and
``all_ready`` are times (relative to ``t0``, like every time in the file) of
the first and of the ``target``-th ready event among the ramp's processes:
those forked at or after the ramp's start and before the next ramp's start.
Both kinds count.  ``all_ready`` is null if the target was not reached.

``summary`` describes the first ramp (see ``summarize``); its durations are
seconds from the ramp's start.  It is derived data: readers recompute it
with ``summarize(data)`` rather than trust the file.

Bounded history
---------------
Every respawn is a ramp, so a long-lived master (``--max-requests``) records
thousands.  The recorder keeps the first two ramps (the start, and the edge
of its members) and the last ``KEEP_RAMPS - 2`` in full; older ramps and the
exited processes forked in them are dropped and counted in ``dropped``
(``{"ramps": n, "processes": n, "steps": n}``).  Live processes are always
kept (the second ramp's members may then include a live process of a
dropped ramp).  Steps keep the first ramp's and the last ``KEEP_STEPS``;
exited processes, at most ``KEEP_EXITED`` newest beyond those.  Trimming runs
in batches, so an event costs O(1) amortised and a write is bounded by what
is kept, not by the master's age.

Writing
-------
``Timeline.write`` goes through ``files.write_atomic``: atomic (temporary
file, fsync, ``os.replace``), and only where the path is absent or a regular
file; a symbolic link, device, FIFO, socket or directory there is refused
(``files.UnsafePath``, an ``OSError``) and left as it was.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from typing import Any

from . import files

VERSION = 1
PLOT_HINT = "gunicorn-slowstart: rendering needs matplotlib: pip install 'gunicorn-slowstart[plot]'"
PROG = "gunicorn-slowstart"
EXIT_INPUT = 2      # bad input file, missing matplotlib (argparse also uses 2 for usage errors)
EXIT_OUTPUT = 1     # the chart could not be written


KEEP_RAMPS = 32       # ramps kept in full: the first two and the newest
KEEP_STEPS = 256      # newest steps kept beyond the first ramp's
KEEP_EXITED = 256     # newest exited processes kept at most
TRIM_SLACK = 0.5      # trim once a list is this much over its bound: amortised O(1) per event


class TimelineError(ValueError):
    """A timeline file cannot be read or is not a slowstart timeline."""


class MissingMatplotlib(ImportError):
    """``render`` was asked for a chart but matplotlib is not installed."""


# --------------------------------------------------------------------------- recorder


class Timeline:
    """Events of the master's startup ramps, kept in the JSON schema's form."""

    def __init__(self, t0: float, wall_t0: float, meta: dict | None = None) -> None:
        self.t0 = t0
        self.wall_t0 = wall_t0
        self.meta: dict = meta if meta is not None else {}     # by reference: the caller may fill it later
        self._processes: list[dict] = []
        self._live: dict[int, dict] = {}
        self._steps: list[list] = []
        self._ramps: list[dict] = []
        self.dropped = {"ramps": 0, "processes": 0, "steps": 0}
        self._head_steps = 0  # leading steps of the first ramp, fixed when it ends

    def _rel(self, t: float) -> float:
        return round(t - self.t0, 3)

    def ramp_started(self, t: float, target: int, reason: str) -> None:
        self._ramps.append({"reason": reason, "start": self._rel(t), "target": int(target),
                            "end": None, "first_ready": None, "all_ready": None})
        if len(self._ramps) > KEEP_RAMPS * (1 + TRIM_SLACK):
            self._trim_ramps()

    def spawned(self, kind: str, pid: int, t: float) -> None:
        proc = {"kind": kind, "pid": pid, "fork": self._rel(t), "ready": None,
                "exit": None, "exit_code": None, "exit_signal": None}
        self._processes.append(proc)
        self._live[pid] = proc
        if len(self._processes) - len(self._live) > KEEP_EXITED * (1 + TRIM_SLACK):
            self._trim_exited()

    def ready(self, pid: int, t: float) -> None:
        proc = self._live.get(pid)
        if proc is not None and proc["ready"] is None:
            proc["ready"] = self._rel(t)

    def exited(self, pid: int, t: float, code: int | None = None, signal: int | None = None) -> None:
        proc = self._live.pop(pid, None)
        if proc is not None:
            proc.update(exit=self._rel(t), exit_code=code, exit_signal=signal)

    def step(self, t: float, window: int, cap: int, booting: int, ready: int) -> None:
        values = [window, cap, booting, ready]
        if self._steps and self._steps[-1][1:] == values:
            return
        self._steps.append([self._rel(t), *values])
        if len(self._steps) > KEEP_STEPS * (1 + TRIM_SLACK) + self._first_steps():
            self._trim_steps()

    def ramp_done(self, t: float) -> None:
        if self._ramps and self._ramps[-1]["end"] is None:
            self._ramps[-1]["end"] = self._rel(t)
            if len(self._ramps) == 1 and not self.dropped["steps"]:
                self._head_steps = min(len(self._steps), KEEP_STEPS)

    # -- bounding the history ------------------------------------------------------

    def _trim_ramps(self) -> None:
        """Keep the first two ramps and the newest; drop the exited processes of the others."""
        gone = self._ramps[2:len(self._ramps) - (KEEP_RAMPS - 2)]
        if not gone:
            return
        lo, hi = gone[0]["start"], self._ramps[len(self._ramps) - (KEEP_RAMPS - 2)]["start"]
        self._ramps[2:len(self._ramps) - (KEEP_RAMPS - 2)] = []
        self.dropped["ramps"] += len(gone)
        self._keep_processes(lambda p: not (lo <= p["fork"] < hi) or p["exit"] is None)

    def _trim_exited(self) -> None:
        """The backstop: a ramp that never ends (a crash loop) still keeps only the newest exits."""
        exited = [id(p) for p in self._processes if p["exit"] is not None]
        old = set(exited[: len(exited) - KEEP_EXITED])
        self._keep_processes(lambda p: id(p) not in old)

    def _keep_processes(self, keep) -> None:
        kept = [p for p in self._processes if keep(p)]
        self.dropped["processes"] += len(self._processes) - len(kept)
        self._processes = kept

    def _first_steps(self) -> int:
        """How many leading steps belong to the first ramp (kept in full, up to KEEP_STEPS)."""
        return self._head_steps

    def _trim_steps(self) -> None:
        head = self._first_steps()
        tail_from = max(head, len(self._steps) - KEEP_STEPS)
        self.dropped["steps"] += tail_from - head
        self._steps = self._steps[:head] + self._steps[tail_from:]

    def to_dict(self) -> dict:
        data = {"version": VERSION, "wall_t0": self.wall_t0, "meta": dict(self.meta),
                "processes": [dict(p) for p in self._processes],
                "steps": [list(s) for s in self._steps],
                "ramps": [dict(r) for r in self._ramps],
                "dropped": dict(self.dropped)}
        fill_ramps(data)
        data["summary"] = summarize(data)
        return data

    def write(self, path: str) -> None:
        """Atomically write the timeline to ``path`` (mode 0o644); refuse a symlink there."""
        write_atomic(path, dumps(self.to_dict()))


def dumps(data: dict) -> str:
    """JSON text with one line per process, step and ramp: small, readable, diffable."""
    lines = []
    for key, value in data.items():
        if isinstance(value, list) and value:
            rows = ",\n  ".join(json.dumps(row, default=str) for row in value)
            lines.append(f"{json.dumps(key)}: [\n  {rows}\n ]")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, default=str)}")
    return "{\n " + ",\n ".join(lines) + "\n}\n"


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically, only over a regular file (see ``files.write_atomic``)."""
    files.write_atomic(path, text)


# --------------------------------------------------------------------------- analysis


def ramp_members(processes: list[dict], ramps: list[dict], index: int) -> list[dict]:
    """The processes of ramp ``index``: forked at or after its start, before the next ramp's."""
    start = ramps[index]["start"]
    stop = ramps[index + 1]["start"] if index + 1 < len(ramps) else math.inf
    return [p for p in processes if start <= p["fork"] < stop]


def _ready_times(processes: list[dict]) -> list[float]:
    return sorted(p["ready"] for p in processes if p["ready"] is not None)


def _all_ready_at(start: float, target: int, readies: list[float]) -> float | None:
    if target <= 0:
        return start
    return readies[target - 1] if len(readies) >= target else None


def fill_ramps(data: dict) -> None:
    """Set each ramp's ``first_ready`` and ``all_ready`` from its processes' ready events."""
    ramps = data["ramps"]
    for index, ramp in enumerate(ramps):
        readies = _ready_times(ramp_members(data["processes"], ramps, index))
        ramp["first_ready"] = readies[0] if readies else None
        ramp["all_ready"] = _all_ready_at(ramp["start"], ramp["target"], readies)


def peak_booting(processes: list[dict]) -> int:
    """Most processes booting at once; a process boots from fork to ready (or exit)."""
    events = []
    for p in processes:
        events.append((p["fork"], 1))
        end = p["ready"] if p["ready"] is not None else p["exit"]
        if end is not None:
            events.append((end, -1))
    peak = booting = 0
    for _, delta in sorted(events):     # at equal times, a boot ends before the next starts
        booting += delta
        peak = max(peak, booting)
    return peak


def _boot_stats(processes: list[dict]) -> dict | None:
    durations = [p["ready"] - p["fork"] for p in processes if p["ready"] is not None]
    if not durations:
        return None
    return {"min": round(min(durations), 3), "median": round(statistics.median(durations), 3),
            "max": round(max(durations), 3)}


def _failures(processes: list[dict]) -> list[dict]:
    return [{"pid": p["pid"], "kind": p["kind"], "after": round(p["exit"] - p["fork"], 3),
             "exit_code": p["exit_code"], "exit_signal": p["exit_signal"]}
            for p in processes if p["exit"] is not None and p["ready"] is None]


def _since(start: float, t: float | None) -> float | None:
    return None if t is None else round(t - start, 3)


def _first_ramp(data: dict) -> tuple[dict, list[dict]]:
    """The first ramp and its processes; without ramps, the whole record from t0."""
    processes, ramps = data["processes"], data["ramps"]
    if ramps:
        return ramps[0], ramp_members(processes, ramps, 0)
    target = data.get("meta", {}).get("target")
    if not isinstance(target, int) or isinstance(target, bool):
        target = len(processes)
    return {"reason": None, "start": 0.0, "target": target}, processes


def summarize(data: dict) -> dict:
    """Figures of the first ramp; durations in seconds from the ramp's start.

    ``ready`` counts the ramp's processes that became ready, ``all_ready`` is
    when the ``target``-th did (null if never), ``peak_booting`` and ``boot``
    (min/median/max of ready - fork) cover the ramp's processes of both kinds,
    ``failed`` lists those that exited before they were ready.
    """
    ramp, members = _first_ramp(data)
    readies = _ready_times(members)
    failed = _failures(members)
    return {"ramps": len(data["ramps"]), "reason": ramp["reason"], "target": ramp["target"],
            "spawned": len(members), "ready": len(readies),
            "first_ready": _since(ramp["start"], readies[0] if readies else None),
            "all_ready": _since(ramp["start"], _all_ready_at(ramp["start"], ramp["target"], readies)),
            "peak_booting": peak_booting(members), "boot": _boot_stats(members),
            "failures": len(failed), "failed": failed}


# --------------------------------------------------------------------------- loading


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_time(value: Any) -> bool:
    return value is None or _is_number(value)


def _process_problem(p: Any) -> str | None:
    if not isinstance(p, dict):
        return "a process is not an object"
    missing = [k for k in ("kind", "pid", "fork", "ready", "exit") if k not in p]
    if missing:
        return f"a process lacks {', '.join(missing)}"
    if not (_is_number(p["fork"]) and _is_time(p["ready"]) and _is_time(p["exit"])):
        return f"process {p['pid']!r} has a time that is not a number"
    return None


def _ramp_problem(r: Any) -> str | None:
    if not isinstance(r, dict) or not _is_number(r.get("start")):
        return "a ramp has no start time"
    if not isinstance(r.get("target"), int) or isinstance(r.get("target"), bool):
        return "a ramp has no integer target"
    return None


def _step_problem(s: Any) -> str | None:
    if not isinstance(s, list) or len(s) != 5 or not all(_is_number(v) for v in s):
        return "a step is not [t, window, cap, booting, ready]"
    return None


def _schema_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return f"the top level is a JSON {type(data).__name__}, not an object"
    if data.get("version") != VERSION:
        return f"version is {data.get('version')!r}, expected {VERSION}"
    for key, check in (("processes", _process_problem), ("ramps", _ramp_problem), ("steps", _step_problem)):
        if not isinstance(data.get(key), list):
            return f"{key!r} is missing or not a list"
        for problem in map(check, data[key]):
            if problem:
                return problem
    if not isinstance(data.get("meta", {}), dict):
        return "'meta' is not an object"
    return None


def _normalize(data: dict) -> None:
    """Fill what older or hand-written files may omit, and the ramps' derived times."""
    data.setdefault("meta", {})
    for p in data["processes"]:
        p.setdefault("exit_code", None)
        p.setdefault("exit_signal", None)
    for r in data["ramps"]:
        r.setdefault("reason", None)
        r.setdefault("end", None)
    fill_ramps(data)


def load(path: str) -> dict:
    """Read and check a timeline file; ``TimelineError`` names the file and the problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise TimelineError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise TimelineError(f"{path} is not valid JSON: it is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise TimelineError(f"{path} is not valid JSON: {e}") from None
    problem = _schema_problem(data)
    if problem:
        raise TimelineError(f"{path} is not a gunicorn-slowstart timeline: {problem}")
    _normalize(data)
    return data


# --------------------------------------------------------------------------- text


def headline(summary: dict) -> str:
    """``16/16 workers ready in 9.81 s (first ready after 1.20 s)``."""
    count = f"{summary['ready']}/{summary['target']} workers ready"
    if summary["first_ready"] is None:
        return f"{count} (none became ready)"
    first = f"first ready after {summary['first_ready']:.2f} s"
    if summary["all_ready"] is None:
        return f"{count}, target not reached ({first})"
    return f"{count} in {summary['all_ready']:.2f} s ({first})"


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _describe_failure(f: dict) -> str:
    if f["exit_signal"]:
        how = f"killed by {_signal_name(f['exit_signal'])}"
    elif f["exit_code"] is not None:
        how = f"exit code {f['exit_code']}"
    else:
        how = "exited"
    return f"{f['kind']} pid {f['pid']} {how} after {f['after']:.2f} s"


def _failure_text(summary: dict, limit: int = 3) -> str:
    if not summary["failed"]:
        return "none"
    shown = "; ".join(_describe_failure(f) for f in summary["failed"][:limit])
    more = len(summary["failed"]) - limit
    return f"{summary['failures']} ({shown}{f'; {more} more' if more > 0 else ''})"


def _boot_text(boot: dict | None) -> str:
    if boot is None:
        return "none ready"
    return f"min {boot['min']:.2f} s   median {boot['median']:.2f} s   max {boot['max']:.2f} s"


def _meta_text(meta: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in meta.items()) or "no meta"


def format_summary(data: dict, name: str = "timeline") -> str:
    """The summary of the first ramp as aligned text, for people."""
    s = summarize(data)
    ramps = f"{s['reason'] or 'ramp'} (ramp 1 of {s['ramps']})" if s["ramps"] else "no ramp recorded"
    rows = [("ramp", ramps), ("spawned", str(s["spawned"])), ("peak booting", str(s["peak_booting"])),
            ("boot time", _boot_text(s["boot"])), ("failures", _failure_text(s))]
    lines = [f"{name}: {_meta_text(data.get('meta', {}))}", headline(s)]
    lines += [f"  {label:<13} {value}" for label, value in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- charts

HTTP_COLORS = ("#a6cbe3", "#1f5f99")    # booting, serving
LONG_COLORS = ("#fdd0a2", "#d95f0e")
WINDOW_COLOR = "#333333"
FIRST_COLOR = "#2ca02c"
ALL_COLOR = "#7b3294"


def _figure_class() -> Any:
    try:
        import matplotlib  # noqa: F401  (a None entry in sys.modules also lands here)
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingMatplotlib(PLOT_HINT) from e
    return Figure


def end_time(data: dict) -> float:
    """The last time anything was recorded (at least 1 s, so an empty chart has a scale)."""
    times = [0.0]
    for p in data["processes"]:
        times += [t for t in (p["fork"], p["ready"], p["exit"]) if t is not None]
    times += [s[0] for s in data["steps"]]
    for r in data["ramps"]:
        times += [t for t in (r["start"], r.get("end"), r.get("all_ready")) if t is not None]
    return max(max(times), 1.0)


def _bars(processes: list[dict], kind: str, end: float) -> tuple[list, list]:
    """(y, left, width) rows of the booting and the serving bars of one kind."""
    booting, serving = [], []
    for y, p in enumerate(processes):
        if p["kind"] != kind:
            continue
        boot_end = p["ready"] if p["ready"] is not None else (p["exit"] if p["exit"] is not None else end)
        booting.append((y, p["fork"], max(boot_end - p["fork"], 0.0)))
        if p["ready"] is not None:
            stop = p["exit"] if p["exit"] is not None else end
            serving.append((y, p["ready"], max(stop - p["ready"], 0.0)))
    return booting, serving


def _draw_bars(ax: Any, processes: list[dict], end: float) -> None:
    height = 0.72
    for kind, (light, dark) in (("http", HTTP_COLORS), ("long", LONG_COLORS)):
        booting, serving = _bars(processes, kind, end)
        for rows, color, phase in ((booting, light, "booting"), (serving, dark, "serving")):
            if rows:
                ys, lefts, widths = zip(*rows, strict=True)
                ax.barh(ys, widths, left=lefts, height=height, color=color, linewidth=0,
                        label=f"{kind} worker {phase}")
    failed = [(p["exit"], y) for y, p in enumerate(processes) if p["exit"] is not None and p["ready"] is None]
    if failed:
        xs, ys = zip(*failed, strict=True)
        ax.plot(xs, ys, "x", color="#d62728", markersize=8, markeredgewidth=2, label="died before ready")


def _draw_yaxis(ax: Any, processes: list[dict]) -> None:
    n = len(processes)
    ax.set_ylim(n - 0.5, -0.5 - max(1.0, n * 0.12))   # first fork on top; head room for labels
    if 0 < n <= 24:
        ax.set_yticks(range(n), [str(p["pid"]) for p in processes], fontsize=7)
        ax.set_ylabel("worker pid, in fork order")
    else:
        ax.set_ylabel("workers, in fork order")
    ax.tick_params(axis="y", length=0)


def _mark(ax: Any, x: float, text: str, color: str, align: str) -> None:
    ax.axvline(x, color=color, linestyle="--", linewidth=1.2, zorder=3)
    ax.annotate(text, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(3 if align == "left" else -3, -4),
                textcoords="offset points", ha=align, va="top", fontsize=8, color=color,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85}, zorder=4)


def _draw_marks(ax: Any, data: dict, edge: float) -> None:
    """Per ramp: where it started (after the first), its first ready and its all ready times."""
    for index, ramp in enumerate(data["ramps"]):
        start, sign = ramp["start"], "+" if index else ""     # later ramps: seconds after their start
        if index:
            ax.axvline(start, color="#888888", linestyle=":", linewidth=1)
            ax.annotate(f"{ramp['reason']} (ramp {index + 1})", (start, 0.0), xytext=(3, 3),
                        xycoords=("data", "axes fraction"), textcoords="offset points", fontsize=8,
                        color="#555555")
        first, done = ramp["first_ready"], ramp["all_ready"]
        if first is not None:
            room_left = first > 0.12 * edge      # label left of the line when it fits there
            _mark(ax, first, f"first ready\n{sign}{_since(start, first):.2f} s", FIRST_COLOR,
                  "right" if room_left else "left")
        if done is not None and done != first:
            text = f"all {ramp['target']} ready\n{sign}{_since(start, done):.2f} s"
            _mark(ax, done, text, ALL_COLOR, "left")


def _draw_window(ax: Any, data: dict, end: float) -> Any | None:
    """The window as a step line on a right-hand axis; None when no steps were recorded."""
    steps = data["steps"]
    if not steps:
        return None
    from matplotlib.ticker import MaxNLocator

    twin = ax.twinx()
    xs = [s[0] for s in steps] + [end]
    windows = [s[1] for s in steps] + [steps[-1][1]]
    from matplotlib import patheffects

    halo = [patheffects.withStroke(linewidth=3.5, foreground="white")]
    twin.step(xs, windows, where="post", color=WINDOW_COLOR, linewidth=1.8, path_effects=halo,
              label="window (max booting)")
    twin.set_ylabel("window (max booting)")
    twin.set_ylim(0, max(max(windows), 1) * 1.9 + 0.5)     # keep the line in the lower half, under labels
    twin.yaxis.set_major_locator(MaxNLocator(integer=True))
    return twin


def _handles(*axes: Any) -> dict[str, Any]:
    handles: dict[str, Any] = {}
    for ax in axes:
        if ax is not None:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
    return handles


LEGEND_ORDER = ("http worker booting", "http worker serving", "long worker booting", "long worker serving",
                "died before ready", "window (max booting)")


def _figure_legend(fig: Any, handles: dict[str, Any]) -> None:
    """One legend row under the chart(s), where it hides no bar."""
    labels = sorted(handles, key=lambda label: LEGEND_ORDER.index(label) if label in LEGEND_ORDER else 99)
    if labels:
        fig.legend([handles[label] for label in labels], labels, loc="outside lower center",
                   ncols=min(len(labels), 6), fontsize=8, frameon=False)


def chart_edge(data: dict) -> float:
    """Right edge of the x axis: the last event plus room for the "all ready" label."""
    end = end_time(data)
    return end + max(0.1 * end, 0.3)


def draw(ax: Any, data: dict, title: str | None = None, xlabel: bool = True,
         edge: float | None = None) -> dict[str, Any]:
    """Draw one timeline on a matplotlib ``Axes``; open intervals run to ``edge`` (x axis end).

    Returns the legend entries (label -> artist) for the caller to place.
    """
    processes = sorted(data["processes"], key=lambda p: (p["fork"], p["pid"]))
    edge = edge or chart_edge(data)
    ax.set_xlim(0, edge)
    _draw_bars(ax, processes, edge)
    _draw_yaxis(ax, processes)
    _draw_marks(ax, data, edge)
    twin = _draw_window(ax, data, edge)
    ax.grid(axis="x", color="#e0e0e0", linewidth=0.8)
    ax.set_axisbelow(True)
    if xlabel:
        ax.set_xlabel("seconds since master start")
    ax.set_title(title or default_title(data), fontsize=11)
    return _handles(ax, twin)


def _mode(data: dict) -> str:
    return str(data.get("meta", {}).get("mode", "?"))


def default_title(data: dict) -> str:
    meta = data.get("meta", {})
    cap = f", cap {meta['cap']}" if "cap" in meta else ""
    cpus = f", {meta['cpus']} CPUs" if "cpus" in meta else ""
    return f"Startup ramp, mode {_mode(data)}{cap}{cpus}: {headline(summarize(data))}"


def render(data: dict, path: str, title: str | None = None) -> None:
    """Draw one timeline to an image file (PNG by its suffix); needs matplotlib."""
    fig = _figure_class()(figsize=(10, 5), layout="constrained")
    _figure_legend(fig, draw(fig.add_subplot(), data, title))
    _save(fig, path)


def render_compare(first: dict, second: dict, path: str, title: str | None = None,
                   labels: tuple[str, str] | None = None) -> None:
    """Draw two timelines stacked on one time scale, each titled with its label (default: meta mode)."""
    labels = labels or (_mode(first), _mode(second))
    fig = _figure_class()(figsize=(10, 8), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    edge, handles = max(chart_edge(first), chart_edge(second)), {}
    for ax, data, label, last in zip(axes, (first, second), labels, (False, True), strict=True):
        for name, handle in draw(ax, data, f"{label}: {headline(summarize(data))}", last, edge).items():
            handles.setdefault(name, handle)
    _figure_legend(fig, handles)
    fig.suptitle(title or f"Startup compared: {labels[0]} vs {labels[1]}", fontsize=12)
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


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gunicorn_slowstart.timeline",
                                     description="Summarise or draw a gunicorn-slowstart startup timeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    summary = sub.add_parser("summary", help="print the first ramp's figures")
    summary.add_argument("file", help="timeline JSON written by the master")
    summary.add_argument("--json", action="store_true", help="print the summary as JSON")
    render_p = sub.add_parser("render", help="draw the timeline as an image (needs matplotlib)")
    render_p.add_argument("file", nargs="?", help="timeline JSON written by the master")
    render_p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="draw two timelines stacked")
    render_p.add_argument("-o", "--output", required=True, help="image file to write, e.g. startup.png")
    render_p.add_argument("--title", help="chart title")
    return parser


def _label(data: dict, path: str) -> str:
    return str(data["meta"].get("mode") or os.path.basename(path))


def _cmd_summary(args: argparse.Namespace) -> int:
    data = load(args.file)
    print(json.dumps(summarize(data), indent=2) if args.json else format_summary(data, args.file))
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    if args.compare:
        first, second = (load(p) for p in args.compare)
        labels = (_label(first, args.compare[0]), _label(second, args.compare[1]))
        render_compare(first, second, args.output, args.title, labels)
    else:
        render(load(args.file), args.output, args.title)
    return 0


def _fail(message: str, code: int) -> int:
    print(message if message.startswith(PROG) else f"{PROG}: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "render" and bool(args.file) == bool(args.compare):
        parser.error("render needs either FILE or --compare A B")
    try:
        return _cmd_summary(args) if args.command == "summary" else _cmd_render(args)
    except TimelineError as e:
        return _fail(str(e), EXIT_INPUT)
    except MissingMatplotlib:
        return _fail(PLOT_HINT, EXIT_INPUT)
    except OSError as e:
        return _fail(f"cannot write {args.output}: {e.strerror or e}", EXIT_OUTPUT)


if __name__ == "__main__":
    sys.exit(main())
