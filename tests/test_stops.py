"""Why the master stopped a process (``stops.py``): the rules, the record, the reader's side."""

from __future__ import annotations

import ast
import json
import logging
import signal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gunicorn_slowstart import charts, stops
from gunicorn_slowstart.keys import ProcKey
from gunicorn_slowstart.policy import HTTP, LONG
from gunicorn_slowstart.status import StatusReporter
from gunicorn_slowstart.timeline import Timeline, TimelineError, summarize
from gunicorn_slowstart.timeline_cli import format_summary, load, main

ROOT = Path(__file__).resolve().parents[1]


def http(pid: int) -> ProcKey:
    return ProcKey(HTTP, pid)


# -- the rules -------------------------------------------------------------------------------


def test_a_halt_is_a_shutdown_unless_the_master_gives_up() -> None:
    assert stops.halt_reason(0) == "shutdown"
    assert stops.halt_reason(3) == stops.halt_reason(1) == "halt"


def test_a_retiring_worker_is_a_reloads_while_one_runs_else_a_recycle() -> None:
    assert stops.retire_reason(reloading=True) == "reload"
    assert stops.retire_reason(reloading=False) == "recycle"


@pytest.mark.parametrize("sig, stopping, older, reason", [
    (signal.SIGTERM, None, False, "scale_down"),      # mode off: TTOU, gunicorn kills the oldest
    (signal.SIGTERM, None, True, "reload"),           # mode off: gunicorn's reload kills the old generation
    (signal.SIGABRT, None, False, "timeout"),         # gunicorn's worker timeout
    (signal.SIGKILL, None, False, "scale_down"),
    (signal.SIGTERM, "shutdown", True, "shutdown"),   # the master stops: whatever the generation
    (signal.SIGQUIT, "halt", False, "halt"),
    (signal.SIGKILL, "shutdown", False, "shutdown"),  # gunicorn's last SIGKILL at the graceful timeout
    (signal.SIGUSR1, None, False, None),              # reopen the logs: not a stop
    (signal.SIGHUP, "shutdown", False, None),
    (signal.SIGWINCH, None, True, None),
])
def test_gunicorns_own_kills_are_named(sig, stopping, older, reason) -> None:
    assert stops.gunicorn_stop_reason(sig, stopping=stopping, older_generation=older) == reason


def test_every_reason_the_arbiter_records_is_in_the_vocabulary() -> None:
    """The arbiter names reasons only by ``stops.NAME``; each is one of ``REASONS``."""
    tree = ast.parse((ROOT / "gunicorn_slowstart" / "arbiter.py").read_text())
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "stops"}
    constants = {name for name in used if name.isupper()}
    assert constants >= {"RELOAD", "SCALE_DOWN", "MEMORY_GUARD", "BOOT_TIMEOUT", "ROLLBACK", "PRIORITY"}, constants
    assert "shutdown_reason" in used and "halt_reason" in used  # SHUTDOWN and HALT come through these
    assert {getattr(stops, name) for name in constants} <= set(stops.REASONS)
    assert len(set(stops.REASONS)) == len(stops.REASONS)


# -- the record ------------------------------------------------------------------------------


def test_the_first_stop_request_is_the_one_kept() -> None:
    t = Timeline(100.0, 0.0)
    t.spawned(http(1), 100.0, 1)
    t.ready(http(1), 101.0)
    t.stopped(http(1), 105.0, "reload")
    t.stopped(http(1), 106.0, "shutdown")  # the reload's old worker still draining at shutdown
    t.exited(http(1), 107.5, signal=15)
    (proc,) = t.to_dict()["processes"]
    assert proc["stop"] == {"reason": "reload", "at": 5.0} and proc["exit"] == 7.5


def test_an_exit_without_a_request_has_no_stop_and_nothing_is_recorded_after_exit() -> None:
    t = Timeline(0.0, 0.0)
    t.spawned(http(1), 0.0, 1)
    t.exited(http(1), 1.0, signal=9)
    t.stopped(http(1), 2.0, "shutdown")  # gone already: an unknown key is ignored
    t.stopped(http(99), 2.0, "shutdown")
    (proc,) = t.to_dict()["processes"]
    assert proc["stop"] is None and proc["exit_signal"] == 9


def test_a_reused_pid_starts_without_the_old_records_stop() -> None:
    t = Timeline(0.0, 0.0)
    t.spawned(http(7), 0.0, 7)
    t.stopped(http(7), 1.0, "scale_down")
    t.exited(http(7), 1.2, signal=15)
    t.spawned(http(7), 2.0, 7)
    assert [p["stop"] for p in t.to_dict()["processes"]] == [{"reason": "scale_down", "at": 1.0}, None]


def test_the_status_reporter_passes_the_request_to_the_timeline() -> None:
    status = StatusReporter(logging.getLogger("test"), 0.0, 0.0)
    status.spawned(ProcKey(LONG, 0), 0.0, 500)
    status.written_at, status.dirty = 0.0, False
    status.stopping(ProcKey(LONG, 0), 2.0, "boot_timeout")
    assert status.dirty
    assert status.timeline.to_dict()["processes"][0]["stop"] == {"reason": "boot_timeout", "at": 2.0}
    status.dirty = False
    status.stopping(ProcKey(LONG, 0), 3.0, "shutdown")  # a re-sent signal, a later reason: nothing new
    assert not status.dirty


def test_a_failure_the_master_caused_says_so_in_the_summary() -> None:
    t = Timeline(0.0, 0.0, {"target": 2})
    t.ramp_started(0.0, 2, "start")
    for pid in (1, 2, 3):
        t.spawned(http(pid), 0.0, pid)
    t.stopped(http(2), 0.5, "memory_guard")
    t.exited(http(2), 0.6, signal=9)
    t.exited(http(3), 0.7, code=3)
    failed = summarize(t.to_dict())["failed"]
    assert failed == [{"pid": 2, "kind": "http", "after": 0.6, "exit_code": None, "exit_signal": 9,
                       "stop": "memory_guard"},
                      {"pid": 3, "kind": "http", "after": 0.7, "exit_code": 3, "exit_signal": None}]
    text = format_summary(t.to_dict())
    assert "http pid 2 stopped by the master (memory_guard) after 0.60 s" in text
    assert "http pid 3 exit code 3 after 0.70 s" in text


# -- counting --------------------------------------------------------------------------------


def test_counts_per_reason_in_vocabulary_order_and_the_exits_of_their_own() -> None:
    procs = [{"exit": 1.0, "stop": {"reason": "shutdown", "at": 0.9}},
             {"exit": 1.0, "stop": {"reason": "reload", "at": 0.5}},
             {"exit": None, "stop": {"reason": "reload", "at": 0.8}},  # asked, not gone yet: counted
             {"exit": 0.3, "stop": None},
             {"exit": None, "stop": None},                             # alive: neither
             {"exit": 2.0, "stop": {"reason": "something newer", "at": 1.0}}]
    assert stops.stop_counts(procs) == {"stopped": {"reload": 2, "shutdown": 1, "something newer": 1},
                                        "on_own": 1}
    assert stops.stop_counts([]) == {"stopped": {}, "on_own": 0}


def test_a_timeline_from_before_stop_reasons_is_not_counted() -> None:
    assert stops.stop_counts([{"exit": 1.0, "exit_code": 0}]) is None


@given(st.lists(st.one_of(st.none(), st.sampled_from(stops.REASONS)), max_size=20), st.data())
def test_every_exited_process_is_counted_once(reasons: list, data: st.DataObject) -> None:
    exits = [data.draw(st.one_of(st.none(), st.floats(0, 10))) for _ in reasons]
    procs = [{"exit": e, "stop": None if r is None else {"reason": r, "at": 0.0}} for r, e in zip(reasons, exits)]
    counts = stops.stop_counts(procs)
    assert sum(counts["stopped"].values()) == sum(1 for r in reasons if r is not None)
    assert counts["on_own"] == sum(1 for r, e in zip(reasons, exits) if r is None and e is not None)


# -- the reader's side -----------------------------------------------------------------------


def _file(tmp_path: Path, processes: list[dict]) -> Path:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"version": 1, "wall_t0": 0.0, "meta": {}, "processes": processes,
                                "steps": [], "ramps": []}))
    return path


OLD = {"kind": "http", "pid": 1, "fork": 0.0, "ready": 0.5, "exit": 3.0, "exit_code": None, "exit_signal": 15}


def test_an_older_timeline_loads_and_says_reasons_were_not_recorded(tmp_path: Path, capsys) -> None:
    path = _file(tmp_path, [OLD])
    assert "stop" not in load(str(path))["processes"][0]  # absent stays absent: "not recorded", not "none"
    assert main(["summary", str(path)]) == 0
    assert "stopped by the master: not recorded (a timeline written before stop reasons)" in capsys.readouterr().out


@pytest.mark.parametrize("stop", ["reload", {"reason": "reload"}, {"reason": 3, "at": 1.0}, {"at": 1.0}, []])
def test_a_malformed_stop_is_refused_with_the_process_named(tmp_path: Path, stop) -> None:
    with pytest.raises(TimelineError, match="process 1 has a stop that is not"):
        load(str(_file(tmp_path, [dict(OLD, stop=stop)])))


def test_the_summary_counts_reasons_and_exits_of_their_own(tmp_path: Path, capsys) -> None:
    rows = [dict(OLD, pid=1, stop={"reason": "reload", "at": 2.0}), dict(OLD, pid=2, stop={"reason": "reload",
            "at": 2.1}), dict(OLD, pid=3, exit_signal=9, stop=None), dict(OLD, pid=4, exit=None, stop=None)]
    assert main(["summary", str(_file(tmp_path, rows))]) == 0
    assert "stopped by the master: reload 2; exited on its own: 1" in capsys.readouterr().out


@pytest.mark.parametrize("ready, sig, stop, kind", [
    (None, 9, "memory_guard", "stopped while booting"),   # its SIGKILL is the guard's, not the OOM killer's
    (None, 9, None, "died before ready"),
    (1.0, 15, "reload", charts.STOPPED_SERVING),
    (1.0, 6, "timeout", charts.STOPPED_SERVING),
    (1.0, 15, None, None),                                 # an operator's SIGTERM: the bar just ends
    (1.0, 9, None, "crashed while serving"),
])
def test_the_chart_draws_the_masters_stops_apart_from_crashes(ready, sig, stop, kind) -> None:
    p = {"ready": ready, "exit": 2.0, "exit_code": None, "exit_signal": sig,
         "stop": None if stop is None else {"reason": stop, "at": 1.5}}
    assert charts._exit_kind(p) == kind


def test_a_chart_with_stops_is_drawn_with_their_reasons(tmp_path: Path) -> None:
    t = Timeline(0.0, 0.0, {"mode": "ready", "target": 2})
    t.ramp_started(0.0, 2, "start")
    for pid in (1, 2, 3):
        t.spawned(http(pid), 0.1 * pid, pid)
        t.ready(http(pid), 0.1 * pid + 0.5)
    t.stopped(http(1), 2.0, "scale_down")
    t.exited(http(1), 2.1, signal=15)
    t.stopped(http(2), 4.0, "shutdown")
    t.exited(http(2), 4.1, signal=15)
    t.exited(http(3), 3.0, signal=9)
    data = t.to_dict()
    fig = charts._figure(charts.FIG_WIDTH, 5.0)
    edge = charts.chart_edge(data, until=5.0)  # the exits, not only the ramp
    handles = charts._panels(fig, [(data, "t")], edge, top=0.1)
    assert {charts.STOPPED_SERVING, "crashed while serving"} <= set(handles)
    texts = {text.get_text() for ax in fig.axes for text in ax.texts}
    assert {"scale_down", "shutdown"} <= texts
    out = tmp_path / "stops.png"
    charts.render(data, str(out), until=5.0)
    assert out.read_bytes().startswith(b"\x89PNG")


def _retiring_master(rollout):
    """A fake master for ``_retire_old``: workers 1, 2 of the old generation retire, 3 and 4
    are the new one; what it stops is recorded with the reason."""
    from types import SimpleNamespace
    from unittest import mock

    from gunicorn_slowstart.arbiter import SlowStartArbiter
    from gunicorn_slowstart.boots import Boots

    arbiter = SlowStartArbiter.__new__(SlowStartArbiter)
    arbiter.cfg, arbiter.log = mock.Mock(), mock.Mock()
    arbiter._num_workers = 2
    arbiter.WORKERS = {pid: SimpleNamespace(age=pid) for pid in (1, 2, 3, 4)}
    arbiter._retiring, arbiter._terminating, arbiter._boots = {1, 2}, {}, Boots()
    arbiter.rollout = rollout
    stopped = []
    arbiter._stop = lambda pid, reason: stopped.append((pid, reason)) or arbiter._retiring.discard(pid)
    return arbiter, stopped


def test_old_workers_retired_after_a_reloads_ramp_ended_are_the_reloads() -> None:
    """A reload's ramp ends once no boot holds it back: a new worker booting past
    ready_timeout (stale) does not, so the reload is done while old workers still serve in
    its place.  They retire when it is ready at last, for the reload, not as a recycle."""
    from gunicorn_slowstart.keys import ProcKey
    from gunicorn_slowstart.policy import HTTP
    from gunicorn_slowstart.rollout import Rollout

    rollout = Rollout()
    rollout.spawned(1), rollout.spawned(2)
    rollout.begin_reload(0)
    rollout.spawned(3), rollout.spawned(4)
    arbiter, stopped = _retiring_master(rollout)
    arbiter._boots.add(ProcKey(HTTP, 4), 0.0)  # still booting, past ready_timeout
    arbiter._retire_old()
    assert stopped == [(1, "reload")]  # 3 is ready: one old one goes
    rollout.reload_done()  # the ramp ended: the stale boot did not hold it back
    arbiter._boots.pop(ProcKey(HTTP, 4))  # ready at last
    arbiter._retire_old()
    assert stopped == [(1, "reload"), (2, "reload")]


def test_a_recycled_worker_retires_as_a_recycle_even_after_an_abandoned_reload() -> None:
    from gunicorn_slowstart.rollout import Rollout

    rollout = Rollout()
    for pid in (1, 2, 3):
        rollout.spawned(pid)
    rollout.begin_reload(1)
    rollout.abandon()  # the serving generation stays; a respawn after it is of the newest
    rollout.spawned(4)
    arbiter, stopped = _retiring_master(rollout)
    arbiter._retiring = {1}  # recycling marked the oldest; its replacement (4) is ready
    arbiter._retire_old()
    assert stopped == [(1, "recycle")]


def test_stop_is_a_shutdown_unless_the_main_loop_crashed():
    assert stops.shutdown_reason(None) == "shutdown"
    assert stops.shutdown_reason(StopIteration()) == "shutdown"  # SIGTERM, SIGQUIT (gunicorn's handle_*)
    assert stops.shutdown_reason(KeyboardInterrupt()) == "shutdown"  # SIGINT
    assert stops.shutdown_reason(RuntimeError("bug")) == "halt"  # "Unhandled exception in main loop"
