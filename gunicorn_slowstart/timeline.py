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
``"reload"``, ``"respawn"``, ``"scale"`` or ``"recycle"`` (max_worker_age /
max_worker_memory).  An optional ``"events"`` list holds ``[t, what, text]``
rows, e.g. ``[3.2, "memory held", "3 of 8 workers fit in 320 MiB (~68 MiB each)"]``
and ``"memory released"``.  A ramp's ``end`` is when the
arbiter called ``ramp_done`` (null if it never did); ``first_ready`` and
``all_ready`` are times (relative to ``t0``, like every time in the file) of
the first and of the ``target``-th ready event among the ramp's HTTP workers
(the target is the master's number of HTTP workers): those forked at or after
the ramp's start and before the next ramp's start.  ``all_ready`` is null if
the target was not reached.

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
KEEP_EVENTS = 256     # newest events (memory held / released) kept at most
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
        self._events: list[list] = []  # [t, what, text]: e.g. "memory held" / "memory released"
        self.dropped = {"ramps": 0, "processes": 0, "steps": 0, "events": 0}
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

    def event(self, t: float, what: str, text: str = "") -> None:
        """Something that is not a process or a step, e.g. the ramp held for memory."""
        self._events.append([self._rel(t), what, text])
        if len(self._events) > KEEP_EVENTS * (1 + TRIM_SLACK):
            self.dropped["events"] += len(self._events) - KEEP_EVENTS
            self._events = self._events[-KEEP_EVENTS:]

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

    def reload_failed(self, t: float, generation: int, serving: int, cause: str) -> None:
        """The last ramp (a reload) was abandoned; ``failed`` says why and what still serves."""
        if self._ramps and self._ramps[-1]["reason"] == "reload":
            ramp = self._ramps[-1]
            ramp["failed"] = {"t": self._rel(t), "generation": generation, "serving": serving, "cause": cause}
            if ramp["end"] is None:
                ramp["end"] = self._rel(t)

    def to_dict(self) -> dict:
        data = {"version": VERSION, "wall_t0": self.wall_t0, "meta": dict(self.meta),
                "processes": [dict(p) for p in self._processes],
                "steps": [list(s) for s in self._steps],
                "ramps": [dict(r) for r in self._ramps],
                "dropped": dict(self.dropped)}
        if self._events:
            data["events"] = [list(e) for e in self._events]
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


def _http(processes: list[dict]) -> list[dict]:
    """A ramp's ``target`` counts HTTP workers (the master's ``num_workers``): only they make it ready."""
    return [p for p in processes if p["kind"] == "http"]


def fill_ramps(data: dict) -> None:
    """Set each ramp's ``first_ready`` and ``all_ready`` from its HTTP workers' ready events."""
    ramps = data["ramps"]
    for index, ramp in enumerate(ramps):
        readies = _ready_times(_http(ramp_members(data["processes"], ramps, index)))
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


def _ramp(data: dict, index: int) -> tuple[dict, list[dict]]:
    """Ramp ``index`` and its processes; without ramps, the whole record from t0."""
    processes, ramps = data["processes"], data["ramps"]
    if ramps:
        return ramps[index], ramp_members(processes, ramps, index)
    target = data.get("meta", {}).get("target")
    if not isinstance(target, int) or isinstance(target, bool):
        target = len(_http(processes))
    return {"reason": None, "start": 0.0, "target": target}, processes


def summarize(data: dict, index: int = 0) -> dict:
    """Figures of ramp ``index`` (the first by default); durations in seconds from its start.

    ``spawned``, ``ready``, ``first_ready`` and ``all_ready`` (when the
    ``target``-th HTTP worker was ready, null if never) are about HTTP workers,
    which the target counts; ``long`` counts the long workers forked during the
    ramp (null if none).  ``peak_booting`` and ``boot`` (min/median/max of
    ready - fork) cover both kinds, ``failed`` lists those that exited before
    they were ready.
    """
    ramp, members = _ramp(data, index)
    http, long = _http(members), [p for p in members if p["kind"] == "long"]
    readies = _ready_times(http)
    failed = _failures(members)
    return {"ramps": len(data["ramps"]), "reason": ramp["reason"], "start": ramp["start"],
            "target": ramp["target"], "spawned": len(http), "ready": len(readies),
            "first_ready": _since(ramp["start"], readies[0] if readies else None),
            "all_ready": _since(ramp["start"], _all_ready_at(ramp["start"], ramp["target"], readies)),
            "long": {"spawned": len(long), "ready": len(_ready_times(long))} if long else None,
            "peak_booting": peak_booting(members), "boot": _boot_stats(members),
            "failures": len(failed), "failed": failed, "abandoned": ramp.get("failed")}


def summaries(data: dict) -> list[dict]:
    """``summarize`` of every ramp, in order (one, over the whole record, without ramps)."""
    return [summarize(data, index) for index in range(max(len(data["ramps"]), 1))]


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
    abandoned = summary.get("abandoned")
    if abandoned:
        return f"reload failed and abandoned, generation {abandoned['serving']} kept serving ({count})"
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


def _ramp_heading(s: dict, index: int) -> str:
    if not s["ramps"]:
        return "no ramp recorded"
    return f"ramp {index + 1} of {s['ramps']}, {s['reason'] or 'ramp'} at {s['start']:.2f} s"


def _spawned_text(s: dict) -> str:
    if s["long"] is None:
        return str(s["spawned"])
    return f"{s['spawned']} http, {s['long']['spawned']} long ({s['long']['ready']} ready)"


def format_summary(data: dict, name: str = "timeline") -> str:
    """Every ramp's summary as aligned text, for people."""
    lines = [f"{name}: {_meta_text(data.get('meta', {}))}"]
    for index, s in enumerate(summaries(data)):
        rows = [("spawned", _spawned_text(s)), ("peak booting", str(s["peak_booting"])),
                ("boot time", _boot_text(s["boot"])), ("failures", _failure_text(s))]
        lines.append(f"{_ramp_heading(s, index)}: {headline(s)}")
        lines += [f"  {label:<13} {value}" for label, value in rows]
    lines += _event_lines(data.get("events"))
    return "\n".join(lines)


def _event_lines(events: Any, limit: int = 10) -> list[str]:
    """The recorded events (memory held / released), the first ``limit`` of them."""
    if not isinstance(events, list):
        return []
    rows = [e for e in events if isinstance(e, list) and len(e) == 3 and _is_number(e[0])]
    lines = [f"  {'event':<13} {e[0]:.2f} s: {e[1]}" + (f" ({e[2]})" if e[2] else "") for e in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"  {'':<13} ... {len(rows) - limit} more events")
    return lines


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
LONG_COLORS = ("#fdd0a2", "#d95f0e")
WINDOW_COLOR = "#333333"
FIRST_COLOR = "#2ca02c"
ALL_COLOR = "#7b3294"
RAMP_COLOR = "#666666"
BOOTING_COLOR = "#d9d9d9"
FAILED_COLOR = "#d62728"

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
    for r in data["ramps"]:
        times += [t for t in (r["start"], r.get("end"), r.get("all_ready")) if t is not None]
    return max(max(times), 1.0)


def chart_edge(data: dict) -> float:
    """Right edge of the x axis: a little after the last event."""
    end = end_time(data)
    return end + max(0.03 * end, 0.2)


# -- what the header says -------------------------------------------------------------------


def _marks(data: dict) -> list[tuple[float, str, str, str]]:
    """(x, label, color, line style) of each ramp's start (after the first) and readiness."""
    marks = []
    for index, s in enumerate(summaries(data) if data["ramps"] else []):
        start, sign = s["start"], "+" if index else ""     # later ramps: seconds after their start
        if index:
            marks.append((start, f"{s['reason']} (ramp {index + 1})", RAMP_COLOR, ":"))
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
        failed = f", {s['failures']} died before ready" if s["failures"] else ""
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
    placed: list[tuple[int, float, float, float]] = []     # row, left, right, line x (inches)
    result: list[tuple[int, str] | None] = []
    lines = [x / edge * width for x, _, _, _ in marks]
    gap = 0.08
    for index, (_, text, _, _) in enumerate(marks):
        w, at = _label_width(fig, text), lines[index]
        spans = [(*label_span(at, w, "left"), "left"), (*label_span(at, w, "right"), "right")]
        if spans[0][1] > width:
            spans.reverse()
        spans = [span for span in spans if span[0] >= -LEFT + 0.1 and span[1] <= width + 0.1] or spans
        others = lines[index + 1:]      # lines still to place: better not covered by this label
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
            result.append(None)
            continue
        row, left, right, align = choice
        placed.append((row, left, right, at))
        result.append((row, align))
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


def _draw_bars(ax: Any, processes: list[dict], marks: list, edge: float) -> None:
    ax.set_xlim(0, edge)
    for kind, (light, dark) in (("http", HTTP_COLORS), ("long", LONG_COLORS)):
        booting, serving = _bars(processes, kind, edge)
        for rows, color, phase in ((booting, light, "booting"), (serving, dark, "serving")):
            if rows:
                ys, lefts, widths = zip(*rows, strict=True)
                ax.barh(ys, widths, left=lefts, height=0.72, color=color, linewidth=0,
                        label=f"{kind} worker {phase}")
    failed = [(p["exit"], y) for y, p in enumerate(processes) if p["exit"] is not None and p["ready"] is None]
    if failed:
        xs, ys = zip(*failed, strict=True)
        ax.plot(xs, ys, "x", color=FAILED_COLOR, markersize=7, markeredgewidth=2, label="died before ready",
                zorder=4)
    for x, _, color, style in marks:
        ax.axvline(x, color=color, linestyle=style, linewidth=1.2, zorder=3)
    n = len(processes)
    ax.set_ylim(max(n, 1) - 0.5, -0.5)      # first fork on top
    if 0 < n <= 30:
        ax.set_yticks(range(n), [str(p["pid"]) for p in processes], fontsize=7 if n <= 20 else 6)
        ax.set_ylabel("worker pid, in fork order", fontsize=9)
    else:
        ax.set_yticks([])
        ax.set_ylabel("workers, in fork order" if n else "no worker recorded", fontsize=9)
    ax.tick_params(axis="y", length=0)
    ax.tick_params(axis="x", labelbottom=False)
    ax.grid(axis="x", color="#e0e0e0", linewidth=0.8)
    ax.set_axisbelow(True)


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
    return min(max(0.2 * len(data["processes"]), 1.4), 5.5)


def _panels(fig: Any, panels: list[tuple[dict, str]], edge: float, top: float) -> dict[str, Any]:
    """Draw each (timeline, title) as header, bars and strip, stacked from ``top`` inches down."""
    width = FIG_WIDTH - LEFT - RIGHT
    plans = []
    for data, title in panels:
        marks = _marks(data)
        places = _place(fig, marks, edge, width)
        rows = max([p[0] + 1 for p in places if p is not None], default=1)
        plans.append((data, title, marks, places, rows, _figure_lines(data)))
    height = top + LEGEND_ROW * _legend_rows(plans) + sum(
        0.3 + 0.19 * len(lines) + rows * ROW + _bars_height(data) + 0.06 + STRIP + 0.55
        for data, _, _, _, rows, lines in plans)
    fig.set_size_inches(FIG_WIDTH, height)
    handles: dict[str, Any] = {}
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
        processes = sorted(data["processes"], key=lambda p: (p["fork"], p["pid"]))
        _draw_header(header, marks, places, rows, edge, title, lines)
        _draw_bars(bars, processes, marks, edge)
        _draw_strip(strip, data, marks, edge, xlabel=number == len(plans) - 1)
        for ax in (bars, strip):
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
    return handles


WINDOW_LABELS = {"ready": "window (max booting)", "timer": "batch (forks per delay)",
                 "off": "window (off: all at once)"}
LEGEND_ORDER = ("http worker booting", "http worker serving", "long worker booting", "long worker serving",
                "died before ready", "booting now (http)", *dict.fromkeys(WINDOW_LABELS.values()))
LEGEND_COLUMNS = 5      # more entries than this: two rows


LEGEND_ROW = 0.3        # inches


def _legend_rows(plans: list) -> int:
    """Rows the legend will take, known before drawing: which kinds, failures, a window."""
    entries = set()
    for data, *_ in plans:
        for p in data["processes"]:
            entries.add(p["kind"] + " booting")
            if p["ready"] is not None:
                entries.add(p["kind"] + " serving")
            elif p["exit"] is not None:
                entries.add("died before ready")
        if data["steps"]:
            entries.update(("booting now (http)", WINDOW_LABELS.get(_mode(data), WINDOW_LABELS["ready"])))
    return 1 if len(entries) <= LEGEND_COLUMNS else 2


def _figure_legend(fig: Any, handles: dict[str, Any]) -> None:
    """The legend at the bottom, where it hides nothing: one row, or two when long."""
    labels = sorted(handles, key=lambda label: LEGEND_ORDER.index(label) if label in LEGEND_ORDER else 99)
    if labels:
        columns = len(labels) if len(labels) <= LEGEND_COLUMNS else math.ceil(len(labels) / 2)
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
    return ", ".join(parts)


def default_title(data: dict) -> str:
    return f"Startup timeline: {_setup_text(data)}"


def _panel_title(data: dict, label: str) -> str:
    setup = _setup_text(data, mode=label != _mode(data))
    return f"{label} ({setup})" if setup else label


def render(data: dict, path: str, title: str | None = None) -> None:
    """Draw one timeline to an image file (PNG by its suffix); needs matplotlib.

    ``title`` replaces the first line only: the figures of every ramp stay under it.
    """
    fig = _figure(FIG_WIDTH, 6.0)
    _figure_legend(fig, _panels(fig, [(data, title or default_title(data))], chart_edge(data), top=0.1))
    _save(fig, path)


def render_compare(first: dict, second: dict, path: str, title: str | None = None,
                   labels: tuple[str, str] | None = None) -> None:
    """Draw two timelines stacked on one time scale, each titled with its label (default: meta mode)."""
    labels = labels or (_mode(first), _mode(second))
    fig = _figure(FIG_WIDTH, 9.0)
    edge = max(chart_edge(first), chart_edge(second))
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


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gunicorn_slowstart.timeline",
                                     description="Summarise or draw a gunicorn-slowstart startup timeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    summary = sub.add_parser("summary", help="print every ramp's figures")
    summary.add_argument("file", help="timeline JSON written by the master")
    summary.add_argument("--json", action="store_true", help="print the summaries as a JSON list, one per ramp")
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
    print(json.dumps(summaries(data), indent=2) if args.json else format_summary(data, args.file))
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    if args.compare:
        first, second = (load(p) for p in args.compare)
        labels = (_label(first, args.compare[0]), _label(second, args.compare[1]))
        render_compare(first, second, args.output, args.title, labels)
    else:
        render(load(args.file), args.output, args.title)
    print(f"wrote {args.output}")
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
