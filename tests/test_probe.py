"""The status file (atomic, never through a symlink, heartbeat) and the probe's verdicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import ROOT

from gunicorn_slowstart import probe
from gunicorn_slowstart.statusfile import HEARTBEAT, StatusFile, status_state

RECORD = dict(ready=6, booting=1, target=8, state="serving", generation=1, pid=os.getpid(), detail="")


def write_status(path: Path, **changes) -> None:
    StatusFile(str(path)).update(0.0, changes.pop("wall", time.time()), **{**RECORD, **changes})


def test_state_names_the_most_important_first():
    base = dict(stopping=False, reload_failed=False, held=False, reloading=False, started=True)
    assert status_state(**base) == "serving"
    assert status_state(**{**base, "started": False}) == "starting"
    assert status_state(**{**base, "reloading": True}) == "reloading"
    assert status_state(**{**base, "reloading": True, "held": True}) == "memory held"
    assert status_state(**{**base, "held": True, "reload_failed": True}) == "reload failed"
    assert status_state(**{**base, "reload_failed": True, "stopping": True}) == "stopping"


def test_written_on_change_and_as_a_heartbeat(tmp_path: Path):
    status = StatusFile(str(tmp_path / "status.json"))
    assert status.update(10.0, 1000.0, **RECORD)
    assert not status.update(10.5, 1000.5, **RECORD)  # unchanged, heartbeat not due
    assert status.update(10.6, 1000.6, **{**RECORD, "ready": 7})
    assert status.update(10.6 + HEARTBEAT, 1003.0, **{**RECORD, "ready": 7})
    data = json.loads((tmp_path / "status.json").read_text())
    assert data == {**RECORD, "ready": 7, "updated_at": 1003.0}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp file left
    assert not StatusFile(None).update(0.0, 0.0, **RECORD)


def test_never_written_through_a_symlink(tmp_path: Path):
    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / "status.json").symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        StatusFile(str(tmp_path / "status.json")).update(0.0, 0.0, **RECORD)
    assert target.read_text() == "keep me"


def test_verdicts():
    now = 1000.0
    record = {**RECORD, "updated_at": now - 1}
    assert probe.verdict(record, now) == (True, "6/8 workers ready; state serving")
    assert probe.verdict(record, now, min_ready=7)[0] is False
    assert probe.verdict(record, now, min_fraction=0.75)[0] is True
    ok, line = probe.verdict(record, now, min_fraction=1.0)
    assert not ok and line == "6/8 workers ready, need 8; state serving"
    held = {**record, "ready": 2, "state": "memory held", "detail": "2 of 8 workers fit in 700 MiB (~200 MiB each)"}
    assert probe.verdict(held, now, min_ready=4)[1].endswith("state memory held (2 of 8 workers fit in 700 MiB "
                                                             "(~200 MiB each))")
    assert probe.verdict({**record, "ready": 0, "state": "starting"}, now) == (
        False, "0/8 workers ready, need 1; state starting")
    assert probe.verdict({**record, "state": "stopping"}, now)[0] is False
    assert "master stuck or gone" in probe.verdict(record, now + 30, max_age=10)[1]
    assert probe.verdict(record, now, pid_alive=False) == (False, f"master pid {os.getpid()} is not running")


def run_probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gunicorn_slowstart.probe", *args],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


def test_command_line(tmp_path: Path):
    path = tmp_path / "status.json"
    write_status(path)
    assert probe.main([str(path), "--min-ready", "6", "--max-age", "10"]) == 0
    assert probe.main([str(path), "--min-ready-fraction", "1"]) == 1
    write_status(path, wall=time.time() - 60)
    assert probe.main([str(path), "--max-age", "10"]) == 1
    assert probe.main([str(tmp_path / "missing.json")]) == 1
    path.write_text("[1, 2]")
    assert probe.main([str(path)]) == 1
    done = run_probe(str(tmp_path / "missing.json"))
    assert done.returncode == 1 and done.stderr.startswith("not ready: cannot read status file")
    assert len(done.stderr.splitlines()) == 1


def test_dead_master_pid(tmp_path: Path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)  # reaped: its pid names no process now
    write_status(tmp_path / "status.json", pid=child.pid)
    done = run_probe(str(tmp_path / "status.json"))
    assert done.returncode == 1 and f"master pid {child.pid} is not running" in done.stderr


@pytest.mark.parametrize("args", [["--min-ready", "-1"], ["--min-ready-fraction", "0"],
                                  ["--min-ready-fraction", "1.5"], ["--max-age", "0"],
                                  ["--min-ready", "2", "--min-ready-fraction", "0.5"], []])
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str]):
    argv = [str(tmp_path / "s.json"), *args] if args else []
    done = run_probe(*argv)
    assert done.returncode == 2 and "usage:" in done.stderr


def test_the_kubernetes_example_stays_consistent():
    """Its probe commands are valid probe arguments, and Kubernetes' grace period outlasts
    gunicorn's graceful timeout (so Kubernetes' SIGKILL never comes first)."""
    import re

    text = (ROOT / "examples" / "kubernetes" / "deployment.yaml").read_text()
    commands = [[part.strip().strip('"') for part in body.split(",")]
                for body in re.findall(r"command: \[(.*?)\]", text, re.DOTALL)]
    assert len(commands) == 3
    for argv in commands:
        assert argv[:3] == ["python", "-m", "gunicorn_slowstart.probe"]
        assert argv[3] in text  # the status file the server writes
        assert f"--slowstart-status-file={argv[3]}" in text
        probe_parser_accepts(argv[3:])
    grace = int(re.search(r"terminationGracePeriodSeconds: (\d+)", text).group(1))
    graceful = int(re.search(r"--graceful-timeout=(\d+)", text).group(1))
    assert graceful < grace <= graceful + 10


def probe_parser_accepts(args: list[str]) -> None:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = probe.main([*args])  # the file does not exist here: 1, not a usage error (2)
    assert code == 1, out.getvalue()


def test_fail_on_names_states_that_fail_the_probe():
    record = {**RECORD, "ready": 8, "state": "reload failed", "updated_at": time.time()}
    assert probe.verdict(record, time.time())[0]  # a rolled-back reload still serves
    ok, line = probe.verdict(record, time.time(), fail_on=("reload failed",))
    assert not ok and line.startswith("state reload failed (--fail-on)") and "8/8 workers ready" in line
    assert probe.verdict({**record, "state": "serving"}, time.time(), fail_on=("reload failed",))[0]


def test_fail_on_rejects_unknown_states(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        probe.main([str(tmp_path / "s.json"), "--fail-on", "broken"])
    assert exited.value.code == 2 and "--fail-on" in capsys.readouterr().err
