"""``fork_from = "template"`` across worker classes, memory, and the master's death.

``test_template.py`` runs the whole story on UvicornWorker; here the parts a
worker class could change run on the others: a SIGHUP loading new code under
traffic and a SIGHUP whose code does not import on sync and gthread (with TTOU
and gunicorn's heartbeat timeout on gthread), the fork-safety refusal on
UvicornWorker, the tree's PSS from a template against from the master, and a
master SIGKILLed while a fork is in flight.
"""

from __future__ import annotations

import signal
import sys
import time
import types

import psutil
import pytest
from support import GUNICORN_MAJOR, UVICORN_WORKER, alive, wait_for
from test_template import (
    THREAD_AT_IMPORT,
    Hammer,
    answers,
    imports,
    template_env,
    templates,
    workers,
    write_app,
)

from gunicorn_slowstart.template import fork_hazards

# -- CUDA, with a stand-in for torch ---------------------------------------------------------


def _fake_torch(initialised) -> types.ModuleType:
    """A ``torch`` module whose ``torch.cuda.is_initialized()`` answers ``initialised`` (or raises it)."""
    def is_initialized() -> bool:
        if isinstance(initialised, Exception):
            raise initialised
        return initialised

    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_initialized=is_initialized)
    return torch


def test_fork_hazards_names_cuda_initialised_by_torch(monkeypatch):
    if any("libcuda" in h for h in fork_hazards()):
        pytest.skip("the CUDA driver is loaded in this test process")
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(True))
    assert any("CUDA is initialised (torch.cuda)" in h for h in fork_hazards())
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(False))
    assert not any("CUDA" in h for h in fork_hazards())  # torch imported, CUDA never touched: safe
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(RuntimeError("broken build")))
    assert not any("CUDA" in h for h in fork_hazards())  # a torch that raises: only the maps check counts


# -- the worker classes -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_reload_under_traffic_and_a_broken_reload(server, tmp_path, worker_class):
    """sync and gthread: SIGHUP loads new code with a client running (no failed request), a
    SIGHUP whose code does not import leaves the old generation serving; on gthread also TTOU
    and gunicorn's heartbeat timeout kill a template-forked worker as they kill any other."""
    env = template_env(tmp_path, GUNICORN_SLOWSTART_MAX_BATCH="2")
    write_app(tmp_path / "code", "1")
    srv = server(app="tplapp:wsgi", workers=3, worker_class=worker_class, boot_cpu=0.2, env=env,
                 args=("--timeout", "3"))
    srv.wait_ready(60)
    master = srv.pid
    kids = workers(srv)
    assert len(kids) == 3 and set(kids.values()) == {master}, kids
    assert len(imports(tmp_path)) == 1 and all(r.startswith("version 1 ") for r in answers(srv, 6))

    write_app(tmp_path / "code", "2")
    with Hammer(srv.port) as hammer:
        wait_for(lambda: len(hammer.results) >= 5, 30, "requests before the reload")
        srv.signal(signal.SIGHUP)
        wait_for(lambda: srv.summary_done(2), 60, "the reload ramp")
        wait_for(lambda: not (set(kids) & set(workers(srv))), 30, "old workers gone")
        n = len(hammer.results)
        wait_for(lambda: len(hammer.results) >= n + 5, 30, "requests after the reload")
    if GUNICORN_MAJOR < 24 and worker_class == "gthread":
        # gunicorn 23's gthread worker, told to stop, cancels the requests queued in its thread pool
        # and closes their connections unanswered, forked from the master or not (README: Limits)
        assert any(hammer.results) and all(r is None or r[0] == 200 for r in hammer.results), hammer.results
    else:
        assert hammer.results and all(r is not None and r[0] == 200 for r in hammer.results), hammer.results
        assert len(hammer.retried) <= 2, hammer.retried
    assert all(r.startswith("version 2 ") for r in answers(srv, 6))
    assert len(imports(tmp_path)) == 2 and set(workers(srv).values()) == {master}

    (tmp_path / "code" / "tplapp.py").write_text("raise RuntimeError('deploy typo')\n")
    serving = set(workers(srv))
    srv.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed: the new code did not load" in srv.log(), 30, "the failed reload")
    assert "RuntimeError: deploy typo" in srv.log() and srv.proc.poll() is None
    assert set(workers(srv)) == serving and all(r.startswith("version 2 ") for r in answers(srv, 6))
    if worker_class == "gthread":
        _ttou_and_heartbeat_timeout(srv, tmp_path)


def _ttou_and_heartbeat_timeout(srv, tmp_path) -> None:
    """TTOU stops one template-forked worker; one that stops notifying (SIGSTOP) is killed by
    gunicorn's ``timeout`` and replaced from the template (no new import)."""
    srv.signal(signal.SIGTTOU)
    wait_for(lambda: len(workers(srv)) == 2, 30, "2 workers after TTOU")
    assert "Handling signal: ttou" in srv.log()
    hung = min(workers(srv))
    psutil.Process(hung).suspend()  # SIGSTOP: no more heartbeats from it
    wait_for(lambda: f"WORKER TIMEOUT (pid:{hung})" in srv.log(), 30, "gunicorn's heartbeat timeout")
    wait_for(lambda: not alive(hung), 30, "the hung worker killed")
    wait_for(lambda: len(workers(srv)) == 2 and hung not in workers(srv), 30, "its replacement")
    wait_for(lambda: srv.log().count("workers ready in") >= 3, 30, "the replacement ready")
    assert len(imports(tmp_path)) == 2  # the two generations' templates; the replacement did not import
    assert set(workers(srv).values()) == {srv.pid}
    assert all(r.startswith("version 2 ") for r in answers(srv, 4))


@pytest.mark.slow
def test_unsafe_app_is_refused_on_uvicorn_too(server, tmp_path):
    env = template_env(tmp_path)
    write_app(tmp_path / "code", "1", THREAD_AT_IMPORT)
    srv = server(app="tplapp:app", workers=2, worker_class=UVICORN_WORKER, boot_cpu=0.1, env=env)
    srv.wait_ready(60)
    lines = [line for line in srv.log().splitlines() if "not forking from a template" in line]
    assert len(lines) == 1 and "metrics-flusher" in lines[0], lines
    assert all(r.startswith("version 1 ") for r in answers(srv, 4))
    assert len(imports(tmp_path)) == 3  # the template's, then one per worker forked from the master
    wait_for(lambda: not templates(srv), 30, "the refused template gone")


# -- memory -----------------------------------------------------------------------------------


def tree_pss(srv) -> int:
    """Bytes of PSS of the master and every process under it."""
    total = 0
    for proc in [psutil.Process(srv.pid), *srv.children()]:
        try:
            total += proc.memory_full_info().pss
        except psutil.NoSuchProcess:
            pass
    return total


@pytest.mark.slow
def test_tree_pss_from_a_template_is_under_40_percent_of_from_the_master(server, tmp_path):
    """The issue's memory claim, scaled to N = 4: an app holding ~100 MiB at import."""
    env = {"EXAMPLE_HEAVY_MB": "100"}
    from_master = server(app="examples.heavy:app", workers=4, boot_cpu=0.05,
                         env=dict(env, GUNICORN_SLOWSTART_FORK_FROM="master"))
    from_template = server(app="examples.heavy:app", workers=4, boot_cpu=0.05,
                           env=dict(env, GUNICORN_SLOWSTART_FORK_FROM="template"))
    for srv in (from_master, from_template):
        srv.wait_ready(90)
        assert len(workers(srv)) == 4
    master_pss, template_pss = tree_pss(from_master), tree_pss(from_template)
    assert master_pss > 4 * 100 * 2**20, master_pss / 2**20  # each worker holds its own copy
    print(f"tree PSS: from the master {master_pss / 2**20:.0f} MiB, from a template {template_pss / 2**20:.0f} MiB")
    assert template_pss <= 0.40 * master_pss, (template_pss / 2**20, master_pss / 2**20)


# -- the master's death -----------------------------------------------------------------------

SLOW_HOOK = '''

def slow_fork(template):  # template_pre_fork: stalls every fork after the first while the flag exists
    import os
    import time
    if template.forks and os.path.exists(os.environ["SLOW_FORK_FLAG"]):
        template.log.info("test hook: fork %s stalled", template.forks + 1)
        time.sleep(30)
'''


@pytest.mark.slow
def test_master_sigkill_during_a_fork_ends_the_template_within_2_s(server, tmp_path):
    """The master is SIGKILLed while the template is in the middle of a fork it asked for (in
    the pre-fork hook): the template exits within 2 s of the SIGKILL and no worker comes of it."""
    flag = tmp_path / "stall"
    env = template_env(tmp_path, GUNICORN_SLOWSTART_TEMPLATE_PRE_FORK="tplapp:slow_fork", SLOW_FORK_FLAG=str(flag))
    write_app(tmp_path / "code", "1", SLOW_HOOK)
    errors = tmp_path / "error.log"
    srv = server(app="tplapp:wsgi", workers=1, worker_class="sync", boot_cpu=0.1, env=env,
                 args=("--error-logfile", str(errors)))
    wait_for(lambda: errors.exists() and "workers ready in" in errors.read_text(), 60, "the first worker")
    template = templates(srv)[0]
    flag.touch()
    srv.signal(signal.SIGTTIN)
    wait_for(lambda: "test hook: fork 2 stalled" in errors.read_text(), 30, "the second fork in flight")
    booted = errors.read_text().count("Booting worker with pid")
    srv.orphans_expected = True  # the first worker (sync) leaves on its own once it sees its parent gone
    killed = time.monotonic()
    srv.proc.kill()
    wait_for(lambda: not alive(template.pid), 2.0, "the template to exit within 2 s of the master's SIGKILL")
    elapsed = time.monotonic() - killed
    srv.proc.wait(10)
    assert errors.read_text().count("Booting worker with pid") == booted, "the stalled fork made a worker"
    print(f"template gone {elapsed:.3f} s after the SIGKILL")
    assert elapsed <= 2.0, elapsed
