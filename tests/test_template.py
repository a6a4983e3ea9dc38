"""``fork_from = "template"`` for real: a template imports the app once, workers fork from it.

One server per scenario, several assertions each: the app module is written
into the test's own directory, so a "code change" is a new file on disk and
SIGHUP must load it.  Every import of the app appends the importing pid to a
file, which says how many times (and in which process) the app was imported.
"""

from __future__ import annotations

import http.client
import signal
import sys
import threading
import time

import psutil
import pytest
from support import APPS, GUNICORN_MAJOR, ROOT, get, try_get, wait_for

from gunicorn_slowstart import settings as settings_mod
from gunicorn_slowstart.template import TemplateUnavailable, check_config, fork_hazards

APP_SOURCE = '''
import os
import sys

from examples.asgi import lifespan, reply
from examples.cpu import burn_cpu

VERSION = {version!r}
with open(os.environ["TEMPLATE_IMPORTS"], "a") as record:
    record.write(f"{{os.getpid()}}\\n")
burn_cpu(float(os.environ.get("EXAMPLE_BOOT_CPU", "0.3")))
{extra}

def _body():
    return f"version {{VERSION}} pid {{os.getpid()}} ppid {{os.getppid()}}\\n".encode()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    await reply(send, _body())


def wsgi(environ, start_response):
    body = _body()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''

THREAD_AT_IMPORT = '''
import threading
_stop = threading.Event()
_flusher = threading.Thread(target=_stop.wait, name="metrics-flusher", daemon=True)
_flusher.start()


def stop_flusher(template):  # a template_pre_fork hook: stop the thread before the fork
    _stop.set()
    _flusher.join(5)
    template.log.info("test hook ran in the template, generation %s", template.generation)
'''


HOOKS_CONFIG = '''
import os

from gunicorn_slowstart import install

install(globals())


def post_fork(server, worker):
    server.log.info("hook post_fork pid=%s ppid=%s worker.ppid=%s", os.getpid(), os.getppid(), worker.ppid)


def post_worker_init(worker):
    worker.log.info("hook post_worker_init pid=%s", os.getpid())
'''


def write_app(directory, version: str, extra: str = "") -> None:
    (directory / "tplapp.py").write_text(APP_SOURCE.format(version=version, extra=extra))


def template_env(tmp_path, **extra: str) -> dict:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    env = {"PYTHONPATH": f"{ROOT}:{APPS}:{code}", "PYTHONDONTWRITEBYTECODE": "1",
           "TEMPLATE_IMPORTS": str(tmp_path / "imports"), "GUNICORN_SLOWSTART_FORK_FROM": "template"}
    env.update(extra)
    return env


def imports(tmp_path) -> list[int]:
    try:
        return [int(line) for line in (tmp_path / "imports").read_text().split()]
    except FileNotFoundError:
        return []


def templates(srv) -> list[psutil.Process]:
    found = []
    for proc in srv.children():
        try:
            if "template [" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def workers(srv) -> dict[int, int]:
    """pid -> parent pid of every HTTP worker under the master."""
    found = {}
    for proc in srv.children():
        try:
            if "worker [" in " ".join(proc.cmdline()):
                found[proc.pid] = proc.ppid()
        except psutil.NoSuchProcess:
            pass
    return found


def answers(srv, count: int = 12) -> list[str]:
    out = []
    for _ in range(count):
        reply = try_get(srv.port, timeout=5)
        out.append(reply[1] if reply and reply[0] == 200 else f"failed: {reply}")
    return out


class Hammer:
    """A client thread: GET / every 20 ms, every outcome kept (bounded in time)."""

    def __init__(self, port: int, limit: float = 90.0) -> None:
        self.port, self.limit = port, limit
        self.results: list = []
        self.retried: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        """A connection closed before any response is retried once, as browsers and urllib3
        retry an idempotent request: uvicorn, told to stop, closes a connection it accepted but
        had not read yet (README: Limits); ``retried`` counts those."""
        deadline = time.monotonic() + self.limit
        while not self.stop.is_set() and time.monotonic() < deadline:
            for attempt in range(2):
                try:
                    self.results.append(get(self.port, timeout=5))
                except (http.client.RemoteDisconnected, ConnectionResetError) as exc:
                    if attempt == 0:
                        self.retried.append(repr(exc))
                        continue
                    self.results.append(None)
                except (OSError, http.client.HTTPException):
                    self.results.append(None)
                break
            time.sleep(0.02)

    def __enter__(self) -> Hammer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(15)


# -- pure checks -----------------------------------------------------------------------


def test_fork_hazards_counts_os_threads():
    assert not any("OS threads" in h for h in fork_hazards()) or threading.active_count() > 1
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="holder", daemon=True)
    thread.start()
    try:
        hazards = fork_hazards()
        assert any("OS threads alive" in h and "holder" in h for h in hazards), hazards
    finally:
        stop.set()
        thread.join(5)


def test_a_thread_joined_just_before_the_check_is_not_a_hazard():
    """join() returns before the OS thread has left /proc/self/task: the check waits for it."""
    if threading.active_count() > 1:
        pytest.skip("another thread runs in this test process")
    for _ in range(20):
        thread = threading.Thread(target=lambda: None)
        thread.start()
        thread.join()
        assert not any("OS threads" in h for h in fork_hazards())


def test_fork_hazards_names_grpc_without_fork_support(monkeypatch):
    monkeypatch.setitem(sys.modules, "grpc", object())
    monkeypatch.delenv("GRPC_ENABLE_FORK_SUPPORT", raising=False)
    assert any("gRPC" in h for h in fork_hazards())
    monkeypatch.setenv("GRPC_ENABLE_FORK_SUPPORT", "true")
    assert not any("gRPC" in h for h in fork_hazards())


class _Cfg:
    def __init__(self, **kw):
        self.preload_app = kw.get("preload_app", False)
        self.reload = kw.get("reload", False)
        self.worker_class = kw.get("worker_class", type("W", (), {"__module__": "uvicorn_worker"}))
        self.worker_class_str = "x"


def test_check_config_refuses_what_a_template_cannot_do():
    check_config("master", "off", _Cfg(preload_app=True))  # nothing to check without a template
    check_config("template", "ready", _Cfg())
    for mode, cfg, words in [("off", _Cfg(), "slowstart_mode"), ("ready", _Cfg(preload_app=True), "--preload"),
                             ("ready", _Cfg(reload=True), "--reload"),
                             ("ready", _Cfg(worker_class=type("G", (), {"__module__": "gunicorn.workers.ggevent"})),
                              "monkey-patches")]:
        with pytest.raises(TemplateUnavailable, match=words):
            check_config("template", mode, cfg)
    assert issubclass(TemplateUnavailable, settings_mod.SettingError)


def test_fork_from_setting_parses():
    assert settings_mod.resolve(environ={}).fork_from == "master"
    assert settings_mod.resolve(environ={"GUNICORN_SLOWSTART_FORK_FROM": " Template "}).fork_from == "template"
    with pytest.raises(settings_mod.SettingError, match="GUNICORN_SLOWSTART_FORK_FROM must be one of: master"):
        settings_mod.resolve(environ={"GUNICORN_SLOWSTART_FORK_FROM": "mold"})


# -- real masters -------------------------------------------------------------------------


@pytest.mark.slow
def test_template_serves_reloads_survives_and_refuses_broken_code(server, tmp_path):
    """UvicornWorker: one import per generation, workers are the master's children,
    SIGHUP loads new code with no failed request, a dead template is replaced, TTIN
    forks from the template, and code that does not import is a failed reload."""
    env = template_env(tmp_path, GUNICORN_SLOWSTART_MAX_BATCH="2")
    write_app(tmp_path / "code", "1")
    (tmp_path / "code" / "hooks_conf.py").write_text(HOOKS_CONFIG)
    srv = server(app="tplapp:app", workers=4, boot_cpu=0.3, env=env, config="python:hooks_conf")
    srv.wait_ready(60)
    master = srv.pid
    first = imports(tmp_path)
    assert len(first) == 1 and first[0] != master, first  # imported once, not in the master
    assert [t.pid for t in templates(srv)] == first
    kids = workers(srv)
    assert len(kids) == 4 and set(kids.values()) == {master}, kids
    replies = answers(srv)
    assert all(r.startswith("version 1 ") and r.endswith(f"ppid {master}\n") for r in replies), replies
    log = srv.log()
    assert "loaded the app in" in log and "workers fork from it" in log
    assert log.count("Booting worker with pid") == 4  # gunicorn's own child path ran in each
    for pid in kids:  # the user's hooks ran in each worker, whose parent (and worker.ppid) is the master
        assert f"hook post_fork pid={pid} ppid={master} worker.ppid={master}" in log, pid
        assert f"hook post_worker_init pid={pid}" in log, pid

    # SIGHUP after a code change: every worker serves the new code, no request fails
    write_app(tmp_path / "code", "2")
    old = set(kids)
    with Hammer(srv.port) as hammer:
        wait_for(lambda: len(hammer.results) >= 5, 30, "requests before the reload")
        srv.signal(signal.SIGHUP)
        wait_for(lambda: srv.summary_done(2), 60, "the reload ramp")
        wait_for(lambda: not (old & set(workers(srv))), 30, "old workers gone")
        n = len(hammer.results)
        wait_for(lambda: len(hammer.results) >= n + 5, 30, "requests after the reload")
    assert hammer.results and all(r is not None and r[0] == 200 for r in hammer.results), hammer.results
    assert len(hammer.retried) <= 2, hammer.retried  # uvicorn's stop race: rare
    assert all(r.startswith("version 2 ") for r in answers(srv))
    assert len(imports(tmp_path)) == 2
    wait_for(lambda: [t.pid for t in templates(srv)] == imports(tmp_path)[1:], 30, "the old template retired")
    rows = wait_for(lambda: len(srv.timeline().get("templates", [])) == 2 and srv.timeline()["templates"], 10,
                    "both templates in the timeline")
    assert [(r["generation"], r["pid"], r["reason"], r["outcome"]) for r in rows] == [
        (1, first[0], "start", "retired"), (2, imports(tmp_path)[1], "reload", None)], rows
    assert all(r["fork"] < r["loaded"] and r["cpu"] >= 0.2 for r in rows), rows  # burn_cpu(0.3) in each import

    # the template dies: logged, replaced, serving workers untouched
    serving = set(workers(srv))
    templates(srv)[0].kill()
    wait_for(lambda: len(imports(tmp_path)) == 3 and len(templates(srv)) == 1, 30, "a new template")
    assert "exited; starting a new one (serving workers are not affected)" in srv.log()
    assert set(workers(srv)) == serving

    # TTIN forks from the template: no import, a child of the master
    srv.signal(signal.SIGTTIN)
    wait_for(lambda: len(workers(srv)) == 5, 30, "a fifth worker")
    wait_for(lambda: srv.log().count("slow start: 5/5 workers ready") >= 1, 30, "5 ready")
    assert len(imports(tmp_path)) == 3 and set(workers(srv).values()) == {master}

    # SIGHUP with code that does not import: a failed reload, the old generation keeps serving
    (tmp_path / "code" / "tplapp.py").write_text("raise RuntimeError('deploy typo')\n")
    serving = set(workers(srv))
    srv.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed: the new code did not load" in srv.log(), 30, "the failed reload")
    assert "RuntimeError: deploy typo" in srv.log()  # the template's traceback
    # no worker forked; the config's 4 workers (TTIN's fifth is dropped, as on any SIGHUP) keep
    # serving.  Ask only once the fifth is gone: uvicorn closes a connection it accepted but had
    # not read yet when told to stop (a retire race stock gunicorn has on every TTOU, too)
    wait_for(lambda: len(workers(srv)) == 4, 30, "4 workers after the failed reload")
    assert set(workers(srv)) <= serving and srv.proc.poll() is None
    replies = answers(srv)
    assert all(r.startswith("version 2 ") for r in replies), (replies, srv.log()[-3000:])


@pytest.mark.slow
def test_first_import_fails_exits_4_without_forking_a_worker(server, tmp_path):
    srv = server(app="broken_import:app", workers=3, boot_cpu=0.0,
                 env={"GUNICORN_SLOWSTART_FORK_FROM": "template"})
    assert srv.wait_exit(60) == 4
    log = srv.log()
    assert "ModuleNotFoundError: No module named 'this_module_does_not_exist'" in log
    assert "App failed to load in the template" in log
    assert "Booting worker" not in log
    rows = srv.timeline().get("templates", [])  # the failed import is in the timeline, with its error
    assert [(r["generation"], r["outcome"], r["loaded"]) for r in rows] == [(1, "failed", None)], rows
    assert "ModuleNotFoundError" in rows[0]["error"], rows


@pytest.mark.slow
def test_unsafe_app_falls_back_to_the_master_and_serves(server, tmp_path):
    """gthread: an app that starts a thread at import is refused with one line, and served."""
    env = template_env(tmp_path)
    write_app(tmp_path / "code", "1", THREAD_AT_IMPORT)
    srv = server(app="tplapp:wsgi", workers=2, worker_class="gthread", boot_cpu=0.1, env=env)
    srv.wait_ready(60)
    lines = [line for line in srv.log().splitlines() if "not forking from a template" in line]
    assert len(lines) == 1, lines
    assert "2 OS threads alive after loading the app" in lines[0] and "metrics-flusher" in lines[0], lines
    assert "forking workers from the master instead" in lines[0]
    assert all(r.startswith("version 1 ") for r in answers(srv, 4))
    assert len(imports(tmp_path)) == 3  # the template's, then one per worker forked from the master
    wait_for(lambda: not templates(srv), 30, "the refused template gone")


@pytest.mark.slow
def test_sync_hook_log_rotation_and_master_sigkill(server, tmp_path):
    """sync: the template_pre_fork hook stops the app's thread, so the template forks; a worker
    forked after SIGUSR1 logs to the reopened file; the template exits when the master is SIGKILLed."""
    env = template_env(tmp_path, GUNICORN_SLOWSTART_MAX_BATCH="1",
                       GUNICORN_SLOWSTART_TEMPLATE_PRE_FORK="tplapp:stop_flusher")
    write_app(tmp_path / "code", "1", THREAD_AT_IMPORT)
    errors = tmp_path / "error.log"
    srv = server(app="tplapp:wsgi", workers=3, worker_class="sync", boot_cpu=0.2, env=env,
                 args=("--error-logfile", str(errors)))
    wait_for(lambda: errors.exists() and "workers ready in" in errors.read_text(), 60, "the ramp summary")
    assert all(r.startswith("version 1 ") for r in answers(srv, 4))
    assert len(imports(tmp_path)) == 1
    assert "test hook ran in the template, generation 1" in errors.read_text()
    assert "not forking from a template" not in errors.read_text()

    # log rotation: after SIGUSR1 a worker forked from the (older) template writes to the new file
    errors.rename(tmp_path / "error.log.1")
    srv.signal(signal.SIGUSR1)
    wait_for(errors.exists, 30, "the master to reopen its error log")
    srv.signal(signal.SIGTTIN)
    wait_for(lambda: len(workers(srv)) == 4, 30, "a fourth worker")
    newest = max(workers(srv))
    wait_for(lambda: f"Booting worker with pid: {newest}" in errors.read_text(), 30, "the new worker's log line")
    template = templates(srv)[0]
    srv.orphans_expected = True  # sync workers notice their parent is gone at their next loop
    srv.proc.kill()  # the template exits within 2 s of it (here with no fork in flight; see
    # test_template_workers for one caught in the middle of a fork)
    wait_for(lambda: not template.is_running() or template.status() == psutil.STATUS_ZOMBIE, 2.0,
             "the template to exit within 2 s of the master's SIGKILL")
    srv.proc.wait(10)


@pytest.mark.slow
def test_workers_share_the_templates_memory(server, tmp_path):
    """An app holding 40 MiB at import: the 4 workers together hold privately (USS) less than
    the template's one copy, because they share its pages (gc.freeze keeps them untouched);
    a control-socket scale-up forks from the same template."""
    env = {"GUNICORN_SLOWSTART_FORK_FROM": "template", "EXAMPLE_HEAVY_MB": "40"}
    srv = server(app="examples.heavy:app", workers=4, boot_cpu=0.1, env=env)
    srv.wait_ready(60)
    assert try_get(srv.port)[0] == 200
    template = templates(srv)[0]
    private = sum(psutil.Process(pid).memory_full_info().uss for pid in workers(srv))
    held = template.memory_info().rss
    assert held > 40 * 2**20, held
    assert private < held, (private / 2**20, held / 2**20)
    if GUNICORN_MAJOR >= 24:  # the control socket's scale-up forks from the template too
        from gunicorn.ctl.client import ControlClient

        wait_for(lambda: "Control socket listening" in srv.log(), 30, "the control socket")
        with ControlClient(str(srv.tmp / "ctl.sock"), timeout=10) as client:
            client.send_command("worker add 2")
        wait_for(lambda: "6/6 workers ready in" in srv.log(), 30, "the scale-up")
        assert len(workers(srv)) == 6 and set(workers(srv).values()) == {srv.pid}
        assert "template pid" in srv.log() and srv.log().count("is loading the app") == 1


@pytest.mark.slow
def test_benchmark_compares_preload_and_template_with_memory(tmp_path):
    """``benchmarks.startup --fork-from template --memory`` end to end (N=2, a 5 MiB app)."""
    import json
    import os
    import subprocess

    out = tmp_path / "bench.json"
    env = dict(os.environ, EXAMPLE_HEAVY_MB="5")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.startup", "--quick", "--modes", "preload,ready",
                           "--fork-from", "template", "--memory", "--app", "examples.heavy:app",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    context = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, context
    rows = {row["mode"]: row for row in json.loads(out.read_text())["medians"]}
    assert set(rows) == {"preload", "ready-template"}, context
    for row in rows.values():
        assert row["ok_runs"] == 1 and row["all_ready"] is not None, context
        assert 0 < row["workers_uss_mib"] <= row["workers_pss_mib"] <= row["tree_pss_mib"], row
    assert "tree PSS" in proc.stdout and "no leftover processes" in proc.stdout, context
