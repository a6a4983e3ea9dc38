"""The master's record of a startup ramp, written as JSON, and its analysis.

This module is what the master runs: the recorder and the analysis it
writes into the file (``fill_ramps``, ``summarize``).  Reading a file back,
the text summary and the CLI are in ``timeline_cli.py``, the charts in
``charts.py``; their names stay reachable from here
(``gunicorn_slowstart.timeline.load``, ``.render``, ...) and
``python -m gunicorn_slowstart.timeline`` is still the command.

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
event sequences (an unknown key is ignored) and is not thread-safe (call it
from the master's loop).  ``step`` is cheap to call on every loop iteration:
a row is recorded only when one of its values changes.  ``meta`` is kept by
reference (the master may learn the cap or the mode after it built the
recorder) and copied when the file is written.  A process is keyed by
its ``ProcKey`` (``keys.py``) while it lives, as in the policy; its OS pid is
a value recorded beside it (a long worker's may be learned after its key,
``pid_known``; until then the file says ``null``).  An HTTP worker's key holds
its pid, so a pid reused after ``exited`` starts a new record.

Schema (version 1)
------------------
All times are seconds relative to ``t0`` (the master's start), rounded to
1 ms; ``wall_t0`` is the matching ``time.time()`` for humans::

    {"version": 1, "wall_t0": 1790000000.0,
     "meta": {"mode": "ready", "cap": 2, "cpus": 2, "target": 16, "background": 1, ...},
     "processes": [{"kind": "http", "pid": 123, "fork": 0.012, "ready": 1.204,
                    "exit": 14.8, "exit_code": 0, "exit_signal": null,
                    "stop": {"reason": "reload", "at": 14.5}}, ...],
     "steps": [[t, window, cap, booting, ready], ...],
     "ramps": [{"reason": "start", "start": 0.0, "target": 16, "end": 9.8,
                "first_ready": 1.2, "all_ready": 9.8}, ...],
     "summary": {...}}

An optional ``"templates"`` list (``fork_from = template``) holds one row
per template process, the app's import in it::

     "templates": [{"generation": 1, "pid": 120, "reason": "start", "fork": 0.004,
                    "loaded": 1.031, "cpu": 0.982, "end": 12.5, "outcome": "retired"}, ...]

``loaded`` is when the master heard the app was loaded (null if never),
``cpu`` the template's CPU seconds for it; ``end`` and ``outcome`` (null
while it lives) say how it ended: ``retired`` (a newer one loaded),
``failed`` (the import failed: ``error`` says why), ``superseded`` (a
SIGHUP came while it imported), ``unsafe`` (a fork-safety refusal),
``lost`` (it died or stopped answering) or ``stopped`` (shutdown).

``stop`` says why the master stopped the process (``stops.py``: ``reload``,
``recycle``, ``memory_guard``, ``boot_timeout``, ``scale_down``, ``rollback``,
``priority``, ``timeout``, ``shutdown``, ``halt``) and when it asked (``at``;
for a long worker retired by the pool's rolling reload, when the master heard
it exit: the pool manager stops it); null if it did not: an exit without a
``stop`` is the process's own (a crash, a failed boot, ``max_requests``).
Files written before this field lack it (readers use ``p.get("stop")``).

``kind`` is ``"http"`` or ``"long"``.  A process that booted in the
background (idle CPU priority, ``priority.py``) also has ``"background":
true`` and ``"raised"``: when it was raised to normal priority (null if it
became ready or died first).  ``reason`` is ``"start"``,
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
exited processes, at most ``KEEP_EXITED`` newest beyond those; templates, the
first and the newest ``KEEP_TEMPLATES - 1`` (live ones always).  Trimming runs
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

import json
import math
import statistics
import sys
from typing import Any

from . import files
from .keys import ProcKey

VERSION = 1
KEEP_RAMPS = 32       # ramps kept in full: the first two and the newest
KEEP_STEPS = 256      # newest steps kept beyond the first ramp's
KEEP_EXITED = 256     # newest exited processes kept at most
KEEP_EVENTS = 256     # newest events (memory held / released) kept at most
KEEP_TEMPLATES = 32   # templates kept: the first and the newest (a template replaced every 30 s for days)
TRIM_SLACK = 0.5      # trim once a list is this much over its bound: amortised O(1) per event


class TimelineError(ValueError):
    """A timeline file cannot be read or is not a slowstart timeline."""


# --------------------------------------------------------------------------- recorder


class Timeline:
    """Events of the master's startup ramps, kept in the JSON schema's form."""

    def __init__(self, t0: float, wall_t0: float, meta: dict | None = None) -> None:
        self.t0 = t0
        self.wall_t0 = wall_t0
        self.meta: dict = meta if meta is not None else {}     # by reference: the caller may fill it later
        self._processes: list[dict] = []
        self._live: dict[ProcKey, dict] = {}
        self._steps: list[list] = []
        self._ramps: list[dict] = []
        self._events: list[list] = []  # [t, what, text]: e.g. "memory held" / "memory released"
        self._templates: list[dict] = []  # fork_from = template: one row per template process
        self._live_templates: dict[int, dict] = {}  # generation -> its row, until it ends
        self.dropped = {"ramps": 0, "processes": 0, "steps": 0, "events": 0, "templates": 0}
        self._head_steps = 0  # leading steps of the first ramp, fixed when it ends

    def _rel(self, t: float) -> float:
        return round(t - self.t0, 3)

    def ramp_started(self, t: float, target: int, reason: str) -> None:
        self._ramps.append({"reason": reason, "start": self._rel(t), "target": int(target),
                            "end": None, "first_ready": None, "all_ready": None})
        if len(self._ramps) > KEEP_RAMPS * (1 + TRIM_SLACK):
            self._trim_ramps()

    def spawned(self, key: ProcKey, t: float, pid: int | None = None) -> None:
        """``key`` was forked at ``t``; ``pid`` is its OS pid if known yet (see ``pid_known``)."""
        proc = {"kind": key.kind, "pid": pid, "fork": self._rel(t), "ready": None,
                "exit": None, "exit_code": None, "exit_signal": None, "stop": None}
        self._processes.append(proc)
        self._live[key] = proc
        if len(self._processes) - len(self._live) > KEEP_EXITED * (1 + TRIM_SLACK):
            self._trim_exited()

    def pid_known(self, key: ProcKey, pid: int) -> None:
        """The OS pid of a live process recorded without one (a long worker reports it later)."""
        proc = self._live.get(key)
        if proc is not None:
            proc["pid"] = pid

    def background(self, key: ProcKey) -> None:
        """``key`` boots in the background (idle CPU priority) until ``raised``."""
        proc = self._live.get(key)
        if proc is not None:
            proc.update(background=True, raised=None)

    def raised(self, key: ProcKey, t: float) -> None:
        """A background boot was raised to normal priority at ``t``."""
        proc = self._live.get(key)
        if proc is not None and proc.get("background") and proc["raised"] is None:
            proc["raised"] = self._rel(t)

    def ready(self, key: ProcKey, t: float) -> None:
        proc = self._live.get(key)
        if proc is not None and proc["ready"] is None:
            proc["ready"] = self._rel(t)

    def stopped(self, key: ProcKey, t: float, reason: str) -> bool:
        """The master asked ``key`` to stop at ``t``, for ``reason`` (``stops.REASONS``).  The
        first request is the one kept: a later one (a shutdown while a reload's old worker
        drains) does not say why it was stopped.  True if this one was recorded."""
        proc = self._live.get(key)
        if proc is None or proc.get("stop") is not None:
            return False
        proc["stop"] = {"reason": reason, "at": self._rel(t)}
        return True

    def exited(self, key: ProcKey, t: float, code: int | None = None, signal: int | None = None) -> None:
        proc = self._live.pop(key, None)
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

    def template_started(self, generation: int, t: float, pid: int, reason: str) -> None:
        """A template was forked at ``t`` to import the app (``reason``: start, reload, replace)."""
        row = {"generation": generation, "pid": pid, "reason": reason, "fork": self._rel(t),
               "loaded": None, "cpu": None, "end": None, "outcome": None}
        self._templates.append(row)
        self._live_templates[generation] = row
        if len(self._templates) > KEEP_TEMPLATES * (1 + TRIM_SLACK):
            self._trim_templates()

    def template_loaded(self, generation: int, t: float, cpu: float | None) -> None:
        """The template has the app loaded (``cpu`` seconds of its own): workers fork from it."""
        row = self._live_templates.get(generation)
        if row is not None and row["loaded"] is None:
            row.update(loaded=self._rel(t), cpu=cpu)

    def template_ended(self, generation: int, t: float, outcome: str, error: str | None = None) -> None:
        """The template is gone or told to go (``outcome``: see the schema); ``error`` if it failed."""
        row = self._live_templates.pop(generation, None)
        if row is not None:
            row.update(end=self._rel(t), outcome=outcome)
            if error:
                row["error"] = error

    def _trim_templates(self) -> None:
        """Keep the first template, the newest and the live ones."""
        newest = self._templates[-(KEEP_TEMPLATES - 1):]
        kept = [row for row in self._templates[1:-(KEEP_TEMPLATES - 1)] if row["end"] is None]
        self.dropped["templates"] += len(self._templates) - 1 - len(newest) - len(kept)
        self._templates = self._templates[:1] + kept + newest

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
        if self._templates:
            data["templates"] = [dict(row) for row in self._templates]
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
    """The processes that exited before they were ready; ``stop`` (the master's reason, see
    ``stops.py``) only on those the master stopped."""
    return [{"pid": p["pid"], "kind": p["kind"], "after": round(p["exit"] - p["fork"], 3),
             "exit_code": p["exit_code"], "exit_signal": p["exit_signal"],
             **({"stop": p["stop"]["reason"]} if p.get("stop") else {})}
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
    they were ready.  ``background`` (null if none) counts the HTTP workers that
    booted in the background and the median of their waits (fork to raised).
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
            "failures": len(failed), "failed": failed, "abandoned": ramp.get("failed"),
            "background": _background_stats(http)}


def _background_stats(http: list[dict]) -> dict | None:
    waits = [p["raised"] - p["fork"] for p in http if p.get("background") and p.get("raised") is not None]
    count = sum(1 for p in http if p.get("background"))
    if not count:
        return None
    return {"count": count, "median_wait": round(statistics.median(waits), 3) if waits else None}


def summaries(data: dict) -> list[dict]:
    """``summarize`` of every ramp, in order (one, over the whole record, without ramps)."""
    return [summarize(data, index) for index in range(max(len(data["ramps"]), 1))]


# --------------------------------------------------------------------------- the reader's side


def __getattr__(name: str) -> Any:
    """``timeline.load``, ``timeline.render``, ``timeline.main``, ...: the loader, the text
    summary and the CLI (``timeline_cli.py``) and the charts (``charts.py``) are separate
    modules the master never imports; importing them here on first use keeps every old
    import path working."""
    if name.startswith("__"):  # __path__, __wrapped__, ...: asked by the import system and tools
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import charts, timeline_cli

    for module in (timeline_cli, charts):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from gunicorn_slowstart.timeline_cli import main

    sys.exit(main())
