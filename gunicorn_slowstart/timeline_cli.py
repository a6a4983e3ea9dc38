"""Reading a startup timeline back: the loader, the text summary and the CLI.

Theory of operation
-------------------
The master writes a timeline with ``timeline.Timeline`` (the schema is
described there); this module is the reader's side, which the master never
imports.  ``load`` checks a file against the schema and fills in what older
files lack; ``format_summary`` is the text ``summary`` prints; ``main`` is
``python -m gunicorn_slowstart.timeline`` (``summary`` and ``render``; the
charts are drawn by ``charts.py``, imported only when one is asked for, as
it is the only part that needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from .stops import stop_counts
from .timeline import VERSION, TimelineError, fill_ramps, summaries

PLOT_HINT = "gunicorn-slowstart: rendering needs matplotlib: pip install 'gunicorn-slowstart[plot]'"
PROG = "gunicorn-slowstart"
EXIT_INPUT = 2      # bad input file, missing matplotlib (argparse also uses 2 for usage errors)
EXIT_OUTPUT = 1     # the chart could not be written


class MissingMatplotlib(ImportError):
    """``render`` was asked for a chart but matplotlib is not installed."""


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
    stop = p.get("stop")  # absent in files written before stop reasons
    if stop is not None and not (isinstance(stop, dict) and isinstance(stop.get("reason"), str)
                                 and _is_number(stop.get("at"))):
        return f"process {p['pid']!r} has a stop that is not {{\"reason\": text, \"at\": seconds}}"
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


def _template_problem(row: Any) -> str | None:
    if not isinstance(row, dict) or not isinstance(row.get("generation"), int) or not _is_number(row.get("fork")):
        return "a template has no generation or fork time"
    if not (_is_time(row.get("loaded")) and _is_time(row.get("end")) and _is_time(row.get("cpu"))):
        return f"template {row['generation']} has a time that is not a number"
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
    if not isinstance(data.get("templates", []), list):
        return "'templates' is not a list"
    return next(filter(None, map(_template_problem, data.get("templates", []))), None)


def _normalize(data: dict) -> None:
    """Fill what older or hand-written files may omit, and the ramps' derived times."""
    data.setdefault("meta", {})
    for p in data["processes"]:
        p.setdefault("exit_code", None)
        p.setdefault("exit_signal", None)
    for r in data["ramps"]:
        r.setdefault("reason", None)
        r.setdefault("end", None)
    for row in data.setdefault("templates", []):
        for key in ("pid", "reason", "loaded", "cpu", "end", "outcome"):
            row.setdefault(key, None)
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
    if f.get("stop"):
        how = f"stopped by the master ({f['stop']})"
    elif f["exit_signal"]:
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


def _background_text(b: dict) -> str:
    wait = "" if b["median_wait"] is None else f", median wait {b['median_wait']:.2f} s before raised"
    return f"{b['count']} booted at idle priority first{wait} (boot time counts the wait)"


def format_summary(data: dict, name: str = "timeline") -> str:
    """Every ramp's summary as aligned text, for people."""
    lines = [f"{name}: {_meta_text(data.get('meta', {}))}"]
    for index, s in enumerate(summaries(data)):
        rows = [("spawned", _spawned_text(s)), ("peak booting", str(s["peak_booting"])),
                ("boot time", _boot_text(s["boot"])), ("failures", _failure_text(s))]
        if s.get("background"):
            rows.insert(2, ("background", _background_text(s["background"])))
        lines.append(f"{_ramp_heading(s, index)}: {headline(s)}")
        lines += [f"  {label:<13} {value}" for label, value in rows]
    lines += _stop_lines(data["processes"])
    lines += _template_lines(data.get("templates", []))
    lines += _event_lines(data.get("events"))
    return "\n".join(lines)


def stops_text(counts: dict) -> str:
    """``reload 4, scale_down 1, shutdown 3; exited on its own: 1`` (``stops.stop_counts``)."""
    stopped = ", ".join(f"{reason} {n}" for reason, n in counts["stopped"].items()) or "none"
    return f"{stopped}; exited on its own: {counts['on_own']}"


def _stop_lines(processes: list) -> list[str]:
    """Why the processes in the file ended: the master's reasons, counted, and the rest."""
    counts = stop_counts(processes)
    if counts is None:
        return ["stopped by the master: not recorded (a timeline written before stop reasons)"]
    return [f"stopped by the master: {stops_text(counts)}"]


def template_line(row: dict) -> str:
    """One template (``fork_from = template``): when it was forked, its import, how it ended."""
    head = f"generation {row['generation']} ({row['reason'] or '?'}), pid {row['pid']}, forked at {row['fork']:.2f} s"
    if row["loaded"] is not None:
        cpu = f", {row['cpu']:.2f} s CPU" if row.get("cpu") is not None else ""
        head += f": app loaded after {row['loaded'] - row['fork']:.2f} s{cpu}"
    elif row["end"] is None:
        head += ": importing the app"
    if row["end"] is not None:
        error = f" ({row['error']})" if row.get("error") else ""
        head += f"; {row['outcome']}{error} at {row['end']:.2f} s"
    return head


def _template_lines(templates: list, limit: int = 10) -> list[str]:
    """The template processes (their import of the app), the last ``limit`` of them."""
    if not templates:
        return []
    lines = ["templates (fork_from = template: the app imported once per generation):"]
    if len(templates) > limit:
        lines.append(f"  ... {len(templates) - limit} earlier templates")
    return lines + [f"  {template_line(row)}" for row in templates[-limit:]]


def _event_lines(events: Any, limit: int = 10) -> list[str]:
    """The recorded events (memory held / released), the first ``limit`` of them."""
    if not isinstance(events, list):
        return []
    rows = [e for e in events if isinstance(e, list) and len(e) == 3 and _is_number(e[0])]
    lines = [f"  {'event':<13} {e[0]:.2f} s: {e[1]}" + (f" ({e[2]})" if e[2] else "") for e in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"  {'':<13} ... {len(rows) - limit} more events")
    return lines


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
    render_p.add_argument("--until", type=_seconds, metavar="S",
                          help="end the time axis at S seconds since the master's start (default: a little "
                               "after the last ramp, or after the last exit if that comes soon after)")
    return parser


def _seconds(text: str) -> float:
    """``--until``: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _label(data: dict, path: str) -> str:
    return str(data["meta"].get("mode") or os.path.basename(path))


def _cmd_summary(args: argparse.Namespace) -> int:
    data = load(args.file)
    print(json.dumps(summaries(data), indent=2) if args.json else format_summary(data, args.file))
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from .charts import render, render_compare  # charts.py imports this module: import it on use

    if args.compare:
        first, second = (load(p) for p in args.compare)
        labels = (_label(first, args.compare[0]), _label(second, args.compare[1]))
        render_compare(first, second, args.output, args.title, labels, until=args.until)
    else:
        render(load(args.file), args.output, args.title, until=args.until)
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
