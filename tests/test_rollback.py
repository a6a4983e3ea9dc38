"""A bad deploy never takes down a serving server: reloads roll back, respawns back off.

Every test runs a real master on ``tests/apps/deploy_app.py``, whose next
boots a test breaks and fixes through a flag file, with a client sending a
request every 20 ms the whole time; failed requests are counted.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time

import psutil
import pytest
from support import hold, http_workers, peak_booting, ready_at, try_get, wait_for

pytestmark = pytest.mark.slow

ABANDONED = re.compile(r"reload to generation (\d+) failed and is abandoned after (\d+) boot failure\(s\): "
                       r"worker (\d+) died [\d.]+ s after fork \((exit code \d+|signal \d+)\)")


class Client:
    """Sends GET / every 20 ms from a thread; records (time, status or None, body)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[tuple[float, int | None, str]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 240  # bounded, whatever the test does
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            result = try_get(self.port, timeout=5)
            self.results.append((time.monotonic(), *(result or (None, ""))))
            time.sleep(0.02)

    def __enter__(self) -> Client:
        self.thread.start()
        wait_for(lambda: self.results, 10, "the client's first answer")
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(10)

    def failed(self, since: float = 0.0) -> list:
        return [r for r in self.results if r[0] >= since and r[1] != 200]

    def count(self) -> int:
        return len(self.results)

    def more(self, n: int = 5) -> None:
        target = self.count() + n
        wait_for(lambda: self.count() >= target, 15, f"{n} more requests")

    def versions(self, since: float) -> set[str]:
        return {r[2].split()[1] for r in self.results if r[0] >= since and r[1] == 200}


class Deploy:
    """The flag files ``deploy_app`` reads as each worker boots."""

    def __init__(self, tmp_path) -> None:
        self.dir = tmp_path / "deploy"
        self.dir.mkdir()
        self.env = {"DEPLOY_DIR": str(self.dir)}

    def set(self, fault: str = "ok", version: str | None = None) -> None:
        (self.dir / "fault").write_text(fault)
        if version is not None:
            (self.dir / "version").write_text(version)


def http(srv) -> list[dict]:
    return http_workers(srv.timeline())


def live_ready(srv) -> list[int]:
    return sorted(p["pid"] for p in http(srv) if p["ready"] is not None and p["exit"] is None)


def settled(srv, count: int) -> list[int] | None:
    """``count`` ready HTTP workers, and no other HTTP worker alive under the master."""
    ready = live_ready(srv)
    alive_http = [p["pid"] for p in http(srv) if p["exit"] is None]
    children = set(srv.workers())
    if len(ready) == count and sorted(alive_http) == ready and set(ready) <= children:
        return ready
    return None


def rollback_server(server, tmp_path, deploy: Deploy, env: dict | None = None, conf_text: str = "", **kwargs):
    conf = tmp_path / "deploy.conf.py"
    conf.write_text(conf_text or "from gunicorn_slowstart import install\ninstall(globals())\n")
    env = {**deploy.env, "GUNICORN_SLOWSTART_INITIAL": "1", **(env or {})}  # one probe: the tests count forks
    srv = server(app="deploy_app:app", config=str(conf), env=env, **kwargs)
    srv.conf = conf
    return srv


def reload_and_wait_abandoned(srv, count: int) -> re.Match:
    srv.signal(signal.SIGHUP)
    wait_for(lambda: len(ABANDONED.findall(srv.log())) >= count, 30, f"abandoned reload #{count}")
    return list(ABANDONED.finditer(srv.log()))[count - 1]


# -- what the issue must show -------------------------------------------------------------


def test_invalid_settings_and_broken_config_files_on_sighup_keep_everything(server, tmp_path):
    """Each bad config on SIGHUP: one error line, previous settings and workers kept, 0 failed."""
    deploy = Deploy(tmp_path)
    srv = rollback_server(server, tmp_path, deploy, workers=2, boot_cpu=0.1)
    first = wait_for(lambda: settled(srv, 2), 30, "2 ready workers")
    head = "from gunicorn_slowstart import install\ninstall(globals())\n"
    bad = [
        (head + "slowstart_max_batch = 0\n", "slowstart_max_batch must be a whole number >= 1 or 'auto', got 0"),
        (head + "slowstart_mode = 'fast'\n", "slowstart_mode must be one of: ready, timer, off, got 'fast'"),
        ("from gunicorn_slowstart import install\ninstall(globals(), max_bacth=4)\n",
         "unknown slow-start setting install(max_bacth=...)"),
        (head + "workers = undefined_name\n", "NameError: name 'undefined_name' is not defined"),
        (head + "slowstart_long_workers = 2\n", "slowstart_long_workers (GUNICORN_SLOWSTART_LONG_WORKERS) "
                                                "needs a target"),
    ]
    with Client(srv.port) as client:
        for n, (text, needle) in enumerate(bad, 1):
            srv.conf.write_text(text)
            srv.signal(signal.SIGHUP)
            wait_for(lambda n=n: srv.log().count("SIGHUP refused") >= n, 15, f"refusal #{n}")
            line = [x for x in srv.log().splitlines() if "SIGHUP refused" in x][-1]
            assert needle in line, line
            assert srv.proc.poll() is None, srv.tail()
            client.more()
        assert srv.workers() == first, "a refused SIGHUP changed the workers"
        # the previous settings still hold: a good config is a normal rolling reload
        srv.conf.write_text(head + "slowstart_max_batch = 2\n")
        srv.signal(signal.SIGHUP)
        wait_for(lambda: srv.summary_done(2), 30, "the reload after the refusals")
        wait_for(lambda: (w := settled(srv, 2)) and not set(w) & set(first), 30, "2 new workers")
        client.more()
    assert not client.failed(), client.failed()
    assert srv.log().count("SIGHUP refused") == len(bad)
    assert "Traceback" not in srv.log(), "the refused config files' output goes to one line"


def test_broken_deploy_rolls_back_and_the_fixed_deploy_rolls_out(server, tmp_path):
    """SIGHUP with code that fails at import: the old 4 keep serving; fixed code + SIGHUP: 4 new."""
    deploy = Deploy(tmp_path)
    deploy.set("ok", "1")
    notify = Listener(socket.AF_UNIX, str(tmp_path / "notify.sock"))
    statsd = Listener(socket.AF_INET, ("127.0.0.1", 0))
    try:
        srv = rollback_server(server, tmp_path, deploy, workers=4, boot_cpu=0.2,
                              env={"NOTIFY_SOCKET": notify.address, "GUNICORN_SLOWSTART_RELOAD_SURGE": "1",
                                   "GUNICORN_SLOWSTART_MAX_BATCH": "4"},
                              args=("--statsd-host", f"127.0.0.1:{statsd.address[1]}"))
        old = wait_for(lambda: settled(srv, 4), 30, "4 ready workers")
        with Client(srv.port) as client:
            deploy.set("import", "2")
            match = reload_and_wait_abandoned(srv, 1)
            t_abandoned = time.monotonic()
            assert match.group(1) == "2" and match.group(2) == "1", match.group(0)
            # the old generation serves at full count, nothing more of the new one is forked
            hold(lambda: srv.workers() == old and srv.proc.poll() is None, 3.0, "the old 4 stopped serving")
            assert srv.log().count("[INFO] Booting worker with pid") == 5, srv.tail()
            assert client.versions(t_abandoned) == {"1"}
            assert not client.failed(), client.failed()

            deploy.set("ok", "3")
            t_fixed = time.monotonic()
            srv.signal(signal.SIGHUP)
            new = wait_for(lambda: (w := settled(srv, 4)) and not set(w) & set(old) and w, 60,
                           "4 new workers, the old ones gone")
            client.more()
            assert client.versions(time.monotonic() - 0.05) <= {"3"}
        assert not client.failed(), client.failed()
        wait_for(lambda: "gunicorn.slowstart.reload_failed:0|g" in "\n".join(statsd.lines), 10, "statsd")
    finally:
        notes, metrics = notify.close(), statsd.close()
    log = srv.log()
    line = next(x for x in log.splitlines() if "abandoned" in x)
    assert "(exit code 3)" in line or "(exit code 4)" in line, line
    assert "its own log lines, any traceback among them, follow 'Booting worker with pid:" in line
    assert "serving generation 1 with 4 workers" in line
    assert "ImportError: cannot import name 'settings'" in log  # the worker's own traceback
    assert "Shutting down: Master" not in log and "Reason:" not in log
    assert "STATUS=reload failed, serving generation 1" in notes
    assert "gunicorn.slowstart.reload_failed:1|g" in metrics and "gunicorn.slowstart.reload_failed:0|g" in metrics
    # the timeline: the failed reload, then the good one, which never ran more than 1 extra worker
    ramps = srv.timeline()["ramps"]
    failed = [r for r in ramps if r.get("failed")]
    assert len(failed) == 1 and failed[0]["failed"]["generation"] == 2 and failed[0]["failed"]["serving"] == 1
    procs = http(srv)
    t0 = srv.timeline()["wall_t0"]
    t_fix_rel = time.time() - t0 - (time.monotonic() - t_fixed)
    reload = [p for p in procs if p["fork"] >= t_fix_rel - 0.05]
    assert len(reload) == 4 and peak_booting(reload) == 1, reload  # reload_surge = 1: one extra at a time
    end = max(p["ready"] for p in reload)
    probes = [t_fix_rel + i * 0.01 for i in range(int((end - t_fix_rel) / 0.01) + 1)]
    assert min(ready_at(procs, t) for t in probes) >= 4, "fewer than 4 ready workers during the reload"
    assert len(new) == 4


class Listener:
    """Reads a datagram socket from a thread (statsd, systemd's NOTIFY_SOCKET), as the real
    reader would: an unread unix datagram socket fills up and blocks the sender."""

    def __init__(self, family: int, address) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self.lines: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 240
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            try:
                self.lines.extend(self.sock.recv(65536).decode().splitlines())
            except (TimeoutError, OSError):
                continue

    def close(self) -> str:
        self.stop_event.set()
        self.thread.join(5)
        self.sock.close()
        return "\n".join(self.lines)


def test_respawn_failing_at_lifespan_startup_backs_off_then_recovers(server, tmp_path):
    """A serving server whose respawns fail: no app (exit 4), a crash before ready, a hang past
    boot_timeout, then lifespan start-up failing for 20 s (a database outage).  Each is a boot failure with
    back-off while the others serve: at most 1 failed request per worker the test kills (the
    request it held), none otherwise; back-off 1, 2, 4, 8, 16 s in the log; and the full count
    again within the back-off step that was running when the outage ended."""
    deploy = Deploy(tmp_path)
    srv = rollback_server(server, tmp_path, deploy, workers=4, boot_cpu=0.1,
                          env={"GUNICORN_SLOWSTART_MAX_BOOT_FAILURES": "2", "GUNICORN_SLOWSTART_BOOT_TIMEOUT": "2",
                               "GUNICORN_SLOWSTART_FLAP_WINDOW": "0"})  # the test's kills are no flaps
    wait_for(lambda: settled(srv, 4), 30, "4 ready workers")
    kills: list[float] = []

    def kill_one(fault: str) -> int:
        """Break the next boots with ``fault``, kill a serving worker; the log's length then."""
        deploy.set(fault)
        mark = len(srv.log())
        kills.append(time.monotonic())
        oldest = min((p for p in http(srv) if p["exit"] is None and p["ready"] is not None), key=lambda p: p["ready"])
        psutil.Process(oldest["pid"]).kill()
        return mark

    with Client(srv.port) as client:
        # no app (exit 4, gunicorn's halt code), then a crash before ready (exit 1), then a hang
        # killed by boot_timeout, each on a serving server
        mark = kill_one("noapp")
        wait_for(lambda: "(exit code 4) before it was ready" in srv.log()[mark:], 20, "a respawn without its app")
        deploy.set("crash")
        wait_for(lambda: "(exit code 1) before it was ready" in srv.log()[mark:], 20, "a respawn crashing")
        deploy.set("ok")
        wait_for(lambda: settled(srv, 4), 30, "4 ready workers after the crash")
        mark = kill_one("hang")
        wait_for(lambda: re.search(r"\(signal (15|9)\) before it was ready", srv.log()[mark:]), 30,
                 "a hung respawn killed by boot_timeout")
        assert "s after fork: killing it (boot_timeout)" in srv.log()[mark:]
        deploy.set("ok")
        wait_for(lambda: settled(srv, 4), 30, "4 ready workers after the hang")

        # lifespan start-up fails for 20 s
        mark = kill_one("lifespan")
        t_outage = kills[-1]
        wait_for(lambda: srv.log()[mark:].count("before it was ready") >= 5, 40, "5 failed respawns")
        hold(lambda: srv.proc.poll() is None, max(0.0, t_outage + 20 - time.monotonic()), "the master died")
        wall_t0 = srv.timeline()["wall_t0"]
        t_fix, t_fix_rel = time.monotonic(), time.time() - wall_t0
        deploy.set("ok")
        wait_for(lambda: settled(srv, 4), 40, "4 ready workers again")
        recovered_after = time.monotonic() - t_fix
        client.more()
    log = srv.log()
    assert srv.proc.poll() is None and "Reason:" not in log, srv.tail()
    failed = client.failed()
    for kill in kills:  # a SIGKILLed worker loses the request it held; nothing else fails
        assert len([r for r in failed if kill <= r[0] <= kill + 1.0]) <= 1, (kills, failed)
    assert len(failed) == len([r for r in failed if any(k <= r[0] <= k + 1.0 for k in kills)]), (kills, failed)
    backoffs = re.findall(r"\(exit code 3\) before it was ready; next fork in ([\d.]+) s \(back-off after (\d+) "
                          r"consecutive boot failures\), 3 of 4 serving", log[mark:])
    assert [(float(d), int(n)) for d, n in backoffs] == [(1, 1), (2, 2), (4, 3), (8, 4), (16, 5)], backoffs
    # the full count within the step that was running: the 6th fork comes when the 16 s step
    # ends, and is ready one boot later (a missed step would be 30 s more)
    procs = http(srv)
    failures = sorted((p for p in procs if p["ready"] is None and p["exit"] is not None and p["fork"] < t_fix_rel),
                      key=lambda p: p["fork"])
    due = failures[-1]["exit"] + 16.0
    after = [p for p in procs if p["fork"] >= t_fix_rel]
    assert len(after) == 1 and after[0]["ready"] is not None, after  # one fork, and it served
    assert due - 0.5 <= after[0]["fork"] <= due + 5.0, (due, after)  # on time, on a busy machine
    assert after[0]["ready"] - due < 10.0, (due, after)
    assert recovered_after < due - t_fix_rel + 10.0, (recovered_after, due - t_fix_rel)


def test_broken_reload_during_the_first_ramp_keeps_the_target_and_fills_it_later(server, tmp_path):
    """SIGHUP with a broken deploy while the first ramp is under way (1 of 4 ready): the reload
    is abandoned, the target stays 4 (the missing places are respawns that back off while the
    code on disk is broken), never fewer ready than before; fixed code + SIGHUP: 4 new workers."""
    deploy = Deploy(tmp_path)
    status = tmp_path / "status.json"
    srv = rollback_server(server, tmp_path, deploy, workers=4, boot_cpu=0.8,  # slow boots: a long ramp
                          env={"GUNICORN_SLOWSTART_MAX_BATCH": "1", "GUNICORN_SLOWSTART_STATUS_FILE": str(status)})
    first = wait_for(lambda: live_ready(srv), 30, "the first ready worker")
    assert len(first) == 1 and len(http(srv)) < 4 + 1, "the ramp is still under way"

    def state() -> dict:
        try:
            return json.loads(status.read_text())
        except (OSError, ValueError):
            return {}

    with Client(srv.port) as client:
        deploy.set("import")
        wall_t0 = srv.timeline()["wall_t0"]
        t_hup = time.time() - wall_t0
        srv.signal(signal.SIGHUP)
        wait_for(lambda: "abandoned" in srv.log(), 30, "the broken reload abandoned")
        t_abandoned = time.monotonic()

        def backoffs() -> list[str]:
            log = srv.log()
            return re.findall(r"back-off after \d+ consecutive boot failures\), (\d+) of 4 serving",
                              log[log.index("abandoned"):])

        # the missing places are tried again, backing off, while the target stays 4
        while len(backoffs()) < 2 and time.monotonic() - t_abandoned < 40:
            assert srv.proc.poll() is None, srv.tail()
            now = state()
            assert not now or now["target"] == 4, now
            time.sleep(0.05)
        assert len(backoffs()) >= 2, srv.tail()
        t_fix = time.time() - wall_t0
        deploy.set("ok")
        srv.signal(signal.SIGHUP)
        new = wait_for(lambda: (w := settled(srv, 4)) and not set(w) & set(first) and w, 60,
                       "4 new workers of the fixed code")
        client.more()
    log = srv.log()
    assert "Reason:" not in log, srv.tail()
    assert re.search(r"1 of 4 workers serve after the abandoned reload( \(\d+ still booting\))?; the \d missing "
                     r"places are filled as respawns, which fork from the master and load the code on disk now", log), \
        srv.tail()
    assert log.count("after the abandoned reload") == 1, "said once"
    procs = http(srv)
    probes = [t_hup + i * 0.02 for i in range(int((t_fix - t_hup) / 0.02) + 1)]
    assert min(ready_at(procs, t) for t in probes) >= 1, "fewer ready workers than before the SIGHUP"
    assert len(new) == 4 and state()["target"] == 4
    assert not client.failed(), client.failed()


def test_broken_reload_during_the_first_ramp_with_a_template_fills_the_target_from_the_old_one(server, tmp_path):
    """fork_from = template: the new code fails to import in its template during the first
    ramp; the reload is abandoned and the missing places fork from the old template, so the
    target of 4 is reached with the old code.  (Timer mode paces the ramp: the SIGHUP
    lands while it is under way, however fast warm forks are ready.)"""
    deploy = Deploy(tmp_path)
    deploy.set("ok", "1")
    srv = rollback_server(server, tmp_path, deploy, workers=4, boot_cpu=0.1, env={
        "GUNICORN_SLOWSTART_FORK_FROM": "template", "GUNICORN_SLOWSTART_MODE": "timer",
        "GUNICORN_SLOWSTART_DELAY": "1.5", "GUNICORN_SLOWSTART_MAX_BATCH": "1"})
    first = wait_for(lambda: live_ready(srv), 30, "the first ready worker")
    with Client(srv.port) as client:
        deploy.set("import", "2")
        srv.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed: the new code did not load in template" in srv.log(), 30,
                 "the broken reload abandoned")
        assert len(live_ready(srv)) < 4, "the first ramp was over before the SIGHUP"
        ready = wait_for(lambda: settled(srv, 4), 30, "4 ready workers from the old template")
        assert set(first) <= set(ready)
        client.more()
        assert client.versions(time.monotonic() - 0.5) == {"1"}
    log = srv.log()
    said = re.search(r"\d of 4 workers serve after the abandoned reload( \(\d+ still booting\))?; the \d missing "
                     r"places are filled as respawns, which fork from the template of the last code that loaded", log)
    assert said, srv.tail()
    assert srv.proc.poll() is None and "Reason:" not in log
    assert not client.failed(), client.failed()


def test_every_kind_of_failed_boot_rolls_a_reload_back(server, tmp_path):
    """Failing lifespan (exit 3), crash (exit 1), no app (exit 4), hang past boot_timeout:
    each SIGHUP is abandoned, the same old workers serve throughout, 0 failed requests."""
    deploy = Deploy(tmp_path)
    srv = rollback_server(server, tmp_path, deploy, workers=3, boot_cpu=0.1,
                          env={"GUNICORN_SLOWSTART_BOOT_TIMEOUT": "2",
                               "GUNICORN_SLOWSTART_INITIAL": "1"})  # auto: as many as CPUs stand idle
    old = wait_for(lambda: settled(srv, 3), 30, "3 ready workers")
    forks = srv.log().count("[INFO] Booting worker with pid")
    cases = [("lifespan", "(exit code 3)"), ("crash", "(exit code 1)"), ("noapp", "(exit code 4)"),
             ("hang", "(signal 15)")]
    with Client(srv.port) as client:
        for n, (fault, exit_text) in enumerate(cases, 1):
            deploy.set(fault)
            match = reload_and_wait_abandoned(srv, n)
            assert exit_text in match.group(0) and match.group(1) == str(n + 1), (fault, match.group(0))
            assert srv.workers() == old, f"{fault}: the old workers changed"
            client.more()
    assert not client.failed(), client.failed()
    assert srv.proc.poll() is None
    assert "s after fork: killing it (boot_timeout)" in srv.log()
    assert srv.log().count("[INFO] Booting worker with pid") == forks + len(cases), "one fork per reload"


def test_max_boot_failures_zero_never_gives_up_on_a_boot_error(server, tmp_path):
    deploy = Deploy(tmp_path)
    deploy.set("noapp")
    srv = rollback_server(server, tmp_path, deploy, workers=2, boot_cpu=0.05,
                          env={"GUNICORN_SLOWSTART_MAX_BOOT_FAILURES": "0"})
    wait_for(lambda: srv.log().count("(exit code 4) before it was ready") >= 2, 30, "2 failed boots")
    assert "Reason:" not in srv.log()
    assert srv.proc.poll() is None, srv.tail()
    deploy.set("ok")
    wait_for(lambda: settled(srv, 2), 30, "2 ready workers once the code is fixed")


# -- changes of shape on SIGHUP ----------------------------------------------------------------------


def test_sighup_switches_mode_and_long_workers_as_rolling_changes(server, tmp_path):
    """off -> ready with the pool removed (long_workers 2 -> 0), then back: each a rolling change."""
    deploy = Deploy(tmp_path)
    mode, size = tmp_path / "mode", tmp_path / "size"
    mode.write_text("off")
    size.write_text("2")
    conf = ("from gunicorn_slowstart import install\ninstall(globals())\n"
            f"slowstart_mode = open({str(mode)!r}).read()\n"
            f"slowstart_long_workers = int(open({str(size)!r}).read())\n"
            "slowstart_long_worker = 'examples.jobs:run'\n")
    srv = rollback_server(server, tmp_path, deploy, workers=2, boot_cpu=0.1, conf_text=conf,
                          env={"EXAMPLE_JOB_BOOT_CPU": "0.05"})

    def long_ready() -> list[int]:
        return [p["pid"] for p in srv.timeline().get("processes", [])
                if p["kind"] == "long" and p["ready"] is not None and p["exit"] is None]

    def long_alive() -> list[int]:
        return [p["pid"] for p in srv.timeline().get("processes", []) if p["kind"] == "long" and p["exit"] is None]

    old = wait_for(lambda: len(long_ready()) == 2 and settled(srv, 2), 40, "2 http and 2 long workers")
    with Client(srv.port) as client:
        mode.write_text("ready")
        size.write_text("0")
        srv.signal(signal.SIGHUP)
        new = wait_for(lambda: (w := settled(srv, 2)) and not set(w) & set(old) and w, 30,
                       "2 new http workers in ready mode, the old ones gone")
        wait_for(lambda: not long_alive(), 20, "the long workers stopped")
        assert "s, reload)" in srv.log() and "long-worker pool 'examples.jobs:run' removed" in srv.log()
        assert srv.timeline()["meta"]["mode"] == "ready"
        client.more()

        mode.write_text("off")
        size.write_text("2")
        t_off = time.monotonic()
        srv.signal(signal.SIGHUP)
        wait_for(lambda: (w := settled(srv, 2)) and not set(w) & set(new), 30, "2 new http workers in off mode")
        wait_for(lambda: len(long_ready()) == 2, 30, "2 long workers again")
        client.more()
    # the rolling reload fails none; the one back to "off" is stock gunicorn's (not judged here)
    assert not [r for r in client.failed() if r[0] < t_off], client.failed()
    assert srv.proc.poll() is None and "Traceback" not in srv.log()
