"""The status file's states on one real master, in the order a deploy sees them: ``starting``
before the first worker is ready, ``serving``, ``reloading`` while a SIGHUP generation boots,
``serving`` generation 2, then ``reload failed`` once a broken deploy is rolled back (the probe
passes, since the old generation serves, unless asked to ``--fail-on 'reload failed'``)."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from support import get, wait_for
from test_lifecycle import probe, status, status_env

pytestmark = pytest.mark.slow


class Recorder(threading.Thread):
    """Every distinct (state, generation) the status file shows, read every 10 ms (bounded)."""

    def __init__(self, srv, limit: float = 90.0) -> None:
        super().__init__(daemon=True)
        self.srv, self.until, self.seen, self.done = srv, time.monotonic() + limit, [], threading.Event()

    def run(self) -> None:
        while not self.done.is_set() and time.monotonic() < self.until:
            record = status(self.srv)
            now = (record.get("state"), record.get("generation"))
            if record and (not self.seen or self.seen[-1] != now):
                self.seen.append(now)
            time.sleep(0.01)


def test_status_file_states_through_a_reload_and_a_rollback(server, tmp_path):
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / "fault").write_text("ok")
    conf = tmp_path / "deploy.conf.py"  # SIGHUP executes it again
    conf.write_text("from gunicorn_slowstart import install\ninstall(globals())\n")
    srv = server(app="deploy_app:app", config=str(conf), workers=2, boot_cpu=0.5,
                 env=status_env({"DEPLOY_DIR": str(deploy), "GUNICORN_SLOWSTART_INITIAL": "1",
                                 "GUNICORN_SLOWSTART_RELOAD_MAX_FAILURES": "1"}))
    recorder = Recorder(srv)
    recorder.start()
    try:
        wait_for(lambda: status(srv).get("state") == "serving" and status(srv).get("ready") == 2, 60, "2 serving")
        assert recorder.seen[0] == ("starting", 1), recorder.seen
        srv.signal(signal.SIGHUP)  # a good deploy: the new generation boots for >= 0.5 s
        wait_for(lambda: status(srv).get("generation") == 2 and status(srv).get("state") == "serving", 60,
                 "generation 2 serving")
        assert ("reloading", 1) in recorder.seen, recorder.seen
        (deploy / "fault").write_text("crash")  # a broken deploy: rolled back at its first failure
        srv.signal(signal.SIGHUP)
        wait_for(lambda: status(srv).get("state") == "reload failed", 60, "reload failed")
    finally:
        recorder.done.set()
        recorder.join(5)
    record = status(srv)
    assert record["generation"] == 2 and record["ready"] == 2, record
    assert get(srv.port)[0] == 200
    assert probe(srv, "--min-ready-fraction", "1").returncode == 0  # the old generation serves
    failed = probe(srv, "--fail-on", "reload failed")
    assert failed.returncode == 1 and "state reload failed (--fail-on)" in failed.stderr, failed
    states = [state for state, _ in recorder.seen]
    order = ["starting", "serving", "reloading", "serving", "reloading", "reload failed"]
    it = iter(states)
    assert all(state in it for state in order), recorder.seen  # in this order (others may come between)
