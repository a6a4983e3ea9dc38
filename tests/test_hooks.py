"""hooks.install(): the config-file hooks slow start adds, chained to a user's own hooks,
and gunicorn constructing the slow-start arbiter.

Pure: a fake master object records what each hook did; no server is started.
"""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import gunicorn.app.base
import gunicorn.config
import pytest

from gunicorn_slowstart import hooks
from gunicorn_slowstart.arbiter import SlowStartArbiter
from gunicorn_slowstart.settings import resolve


def one_line(text: str) -> bool:
    return len(text.splitlines()) == 1


@pytest.fixture
def clean_install(monkeypatch):
    """install() replaces gunicorn.app.base.Arbiter and the current installation: put both back."""
    monkeypatch.setattr(gunicorn.app.base, "Arbiter", gunicorn.app.base.Arbiter)
    monkeypatch.setattr(gunicorn.app.base.Application, "run", gunicorn.app.base.Application.run)
    monkeypatch.setattr(hooks, "_current", hooks._current)
    return hooks


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def hook1(self):
        def on_starting(server):
            self.calls.append(("on_starting", server))
        return on_starting

    def hook2(self, name="pre_fork"):
        def hook(server, worker):
            self.calls.append((name, server, worker))
        return hook


def fake_server(**attrs):
    server = SimpleNamespace(log=mock.Mock(), start_long_workers=mock.Mock())
    server.__dict__.update(attrs)
    return server


def test_install_chains_hooks_defined_before_it(clean_install):
    rec = Recorder()
    ns = {"pre_fork": rec.hook2(), "on_starting": rec.hook1(), "workers": 4}
    user_pre_fork = ns["pre_fork"]
    hooks.install(ns)
    assert ns["pre_fork"] is not user_pre_fork
    server, worker = fake_server(), object()
    ns["pre_fork"](server, worker)
    assert rec.calls == [("pre_fork", server, worker)]
    server.start_long_workers.assert_called_once_with()  # ours ran too
    ns["on_starting"](server)
    assert rec.calls[-1] == ("on_starting", server)
    server.log.warning.assert_called_once()  # ours: this fake master is not a SlowStartArbiter
    assert "not active" in server.log.warning.call_args[0][0]
    assert ns["workers"] == 4


def test_our_on_starting_is_quiet_on_a_slowstart_master(clean_install):
    ns: dict = {}
    hooks.install(ns)
    server = SlowStartArbiter.__new__(SlowStartArbiter)
    server.log = mock.Mock()
    ns["on_starting"](server)
    server.log.warning.assert_not_called()


def test_installed_hooks_are_accepted_by_gunicorn_and_not_chained_twice(clean_install):
    rec = Recorder()
    ns = {"pre_fork": rec.hook2(), "on_starting": rec.hook1()}
    installation = hooks.install(ns)
    cfg = gunicorn.config.Config()
    for name in ("pre_fork", "on_starting"):  # what gunicorn does with a config file's names
        cfg.set(name, ns[name])
    installation.ensure_hooks(cfg)
    installation.ensure_hooks(cfg)
    server, worker = fake_server(), object()
    cfg.pre_fork(server, worker)
    assert rec.calls == [("pre_fork", server, worker)]
    assert server.start_long_workers.call_count == 1


def test_ensure_hooks_rechains_a_hook_replaced_after_install(clean_install):
    rec = Recorder()
    ns: dict = {}
    installation = hooks.install(ns)
    ns["pre_fork"] = rec.hook2("later")  # defined after install() in the config file
    ns["on_starting"] = rec.hook1()
    cfg = gunicorn.config.Config()
    cfg.set("pre_fork", ns["pre_fork"])
    cfg.set("on_starting", ns["on_starting"])
    installation.ensure_hooks(cfg)  # goes through gunicorn's validators (arity 2 and 1)
    installation.ensure_hooks(cfg)
    server, worker = fake_server(), object()
    cfg.pre_fork(server, worker)
    cfg.on_starting(server)
    assert rec.calls == [("later", server, worker), ("on_starting", server)]
    assert server.start_long_workers.call_count == 1
    assert server.log.warning.call_count == 1


def test_ensure_hooks_on_gunicorn_defaults(clean_install):
    cfg = gunicorn.config.Config()
    installation = hooks.install()
    installation.ensure_hooks(cfg)
    server = fake_server()
    cfg.pre_fork(server, object())  # ours, then gunicorn's default (a no-op)
    server.start_long_workers.assert_called_once_with()
    cfg.on_starting(server)
    cfg.when_ready(server)  # hooks slow start does not touch are left alone


def test_install_without_namespace_records_keywords(clean_install):
    installation = hooks.install(max_batch="4", mode="TIMER")
    assert hooks.current_installation() is installation
    assert installation.keywords == {"max_batch": 4, "mode": "timer"}
    assert installation.namespace == {}


def test_install_keywords_and_namespace_reach_resolve(clean_install):
    ns = {"slowstart_mode": "timer"}
    installation = hooks.install(ns, max_batch=3, mode="ready")
    resolved = resolve(None, installation.namespace, installation.keywords, environ={})
    assert (resolved.mode, resolved.max_batch) == ("timer", 3)  # the config-file name beats the keyword


def test_install_takes_a_pool_object_for_long_workers(clean_install):
    pool = SimpleNamespace(pre_fork=lambda server, worker: None, size=2, target="pkg.jobs:run")
    installation = hooks.install({}, long_workers=pool, max_batch=2)
    assert installation.pool is pool
    assert installation.keywords == {"max_batch": 2}


@pytest.mark.parametrize("keywords, named", [
    (dict(max_batch=0), "max_batch"),
    (dict(mode="fast"), "mode"),
    (dict(delay="soon"), "delay"),
    (dict(max_bach=4), "max_bach"),
])
def test_a_bad_keyword_stops_with_one_line(clean_install, keywords, named):
    before = gunicorn.app.base.Arbiter
    ns: dict = {}
    with pytest.raises(SystemExit) as info:
        hooks.install(ns, **keywords)
    message = info.value.code
    assert isinstance(message, str) and one_line(message)
    assert f"install({named}=...)" in message
    assert message.startswith("Error: gunicorn-slowstart: ")
    assert gunicorn.app.base.Arbiter is before  # nothing was changed
    assert ns == {}


def test_install_makes_gunicorn_construct_the_slowstart_arbiter(clean_install):
    assert gunicorn.app.base.Arbiter is not SlowStartArbiter
    hooks.install({})
    assert gunicorn.app.base.Arbiter is SlowStartArbiter


def test_installing_twice_keeps_the_user_hook(clean_install):
    rec = Recorder()
    ns = {"pre_fork": rec.hook2()}
    hooks.install(ns)
    hooks.install(ns, max_batch=4)  # e.g. a config file that extends another one that installed
    server, worker = fake_server(), object()
    ns["pre_fork"](server, worker)
    assert rec.calls == [("pre_fork", server, worker)]
