"""Every mistake is caught where users look: --check-config, --print-config, --version, --help,
warnings for settings that silently do nothing, and imports without side effects."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gunicorn.app.base
import gunicorn.config
import pytest
from support import APPS, ROOT, free_port

from gunicorn_slowstart import configcheck, hooks
from gunicorn_slowstart import settings as sm

INSTALL = "from gunicorn_slowstart import install\ninstall(globals())\n"


def run(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(sm.ENV_PREFIX)}
    full_env.update({"PYTHONPATH": os.pathsep.join([str(ROOT), str(APPS)]), "EXAMPLE_BOOT_CPU": "0"})
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


# Each case: a config file and environment the master itself refuses, and a word of its message.
REFUSED = {
    "bad value": (INSTALL + "slowstart_max_batch = 'four'\n", {}, "slowstart_max_batch must be a whole number"),
    "unknown name": (INSTALL + "slowstart_max_bacth = 4\n", {},
                     "unknown slow-start setting slowstart_max_bacth: did you mean slowstart_max_batch?"),
    "pool without target": (INSTALL + "slowstart_long_workers = 2\n", {}, "needs a target"),
    "missing target": (INSTALL + "slowstart_long_worker = 'no_such_module_x:run'\nslowstart_long_workers = 1\n",
                       {}, "no module named 'no_such_module_x'"),
    "bad variable": (INSTALL, {"GUNICORN_SLOWSTART_MAX_BATCH": "0"},
                     "GUNICORN_SLOWSTART_MAX_BATCH must be a whole number >= 1"),
    "unknown variable": (INSTALL, {"GUNICORN_SLOWSTART_MAX_BACH": "2"},
                         "GUNICORN_SLOWSTART_MAX_BACH: did you mean GUNICORN_SLOWSTART_MAX_BATCH?"),
    "template and preload": (INSTALL + "preload_app = True\n", {"GUNICORN_SLOWSTART_FORK_FROM": "template"},
                             "slowstart_fork_from = 'template' and --preload both load the app once"),
    "template and reload": (INSTALL + "reload = True\n", {"GUNICORN_SLOWSTART_FORK_FROM": "template"},
                            "slowstart_fork_from = 'template' cannot be combined with --reload"),
    "template and mode off": (INSTALL + "slowstart_fork_from = 'template'\nslowstart_mode = 'off'\n", {},
                              "slowstart_fork_from = 'template' needs slowstart_mode 'ready' or 'timer'"),
}
if importlib.util.find_spec("gevent") is not None:  # gunicorn's gevent worker imports it
    REFUSED["template and gevent"] = (INSTALL + "worker_class = 'gevent'\n", {"GUNICORN_SLOWSTART_FORK_FROM":
                                      "template"}, "slowstart_fork_from = 'template' does not support 'gevent'")


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_check_config_fails_with_the_masters_own_error(tmp_path: Path, case: str) -> None:
    text, env, words = REFUSED[case]
    (tmp_path / "conf.py").write_text(text)
    checked = run(["-m", "gunicorn", "--check-config", "-c", "conf.py", "wsgi_app:app"], tmp_path, env)
    served = run(["-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{free_port()}", "-c", "conf.py",
                  "wsgi_app:app"], tmp_path, env)
    assert served.returncode == 1 and "Booting worker" not in served.stderr  # refused before any fork
    assert checked.returncode == 1, checked.stderr
    assert error_lines(checked.stderr) == error_lines(served.stderr) and len(error_lines(checked.stderr)) == 1
    assert words in error_lines(checked.stderr)[0]
    assert "Traceback" not in checked.stderr


def test_check_config_refuses_a_template_off_linux(monkeypatch) -> None:
    cfg = gunicorn.config.Config()
    inst = installation({"slowstart_fork_from": "template"})
    assert configcheck.check(cfg, inst, environ={})[0].fork_from == "template"  # Linux: fine
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(sm.SettingError, match=r"^slowstart_fork_from = 'template' needs Linux "
                                              r"\(PR_SET_CHILD_SUBREAPER\)$") as refused:
        configcheck.check(cfg, inst, environ={})
    assert f"`Error: {refused.value}`" in (ROOT / "README.md").read_text()  # its Troubleshooting row


def test_check_config_finds_a_long_worker_target_on_the_pythonpath(tmp_path: Path) -> None:
    """gunicorn adds --pythonpath only when it serves; the check looks where the server will."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "h15_jobs.py").write_text("def run():\n    pass\n")
    (tmp_path / "conf.py").write_text(INSTALL + "slowstart_long_worker = 'h15_jobs:run'\nslowstart_long_workers = 1\n")
    args = ["-m", "gunicorn", "--check-config", "-c", "conf.py", "wsgi_app:app"]
    assert run([*args, "--pythonpath", "lib"], tmp_path).returncode == 0
    missing = run(args, tmp_path)
    assert missing.returncode == 1 and "no module named 'h15_jobs'" in missing.stderr


def test_check_config_finds_a_template_servers_worker_class_on_the_pythonpath(tmp_path: Path) -> None:
    """fork_from = template loads the worker class to refuse gevent / eventlet: a class on
    --pythonpath, which the server finds, must not make --check-config fail."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "r3_worker.py").write_text("from gunicorn.workers.sync import SyncWorker as Worker\n")
    (tmp_path / "conf.py").write_text(INSTALL + "slowstart_fork_from = 'template'\n"
                                      "worker_class = 'r3_worker.Worker'\n")
    args = ["-m", "gunicorn", "--check-config", "-c", "conf.py", "wsgi_app:app"]
    found = run([*args, "--pythonpath", "lib"], tmp_path)
    assert found.returncode == 0, found.stderr


def test_check_config_with_the_command_and_a_file_without_install(tmp_path: Path) -> None:
    (tmp_path / "conf.py").write_text("slowstart_max_bacth = 4\n")
    result = run(["-m", "gunicorn_slowstart.cli", "--check-config", "-c", "conf.py", "wsgi_app:app"], tmp_path)
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        f"Error: unknown slow-start setting slowstart_max_bacth: did you mean slowstart_max_batch? "
        f"(known: {', '.join(sm.SPECS)})"]


def test_check_config_passes_a_good_config_and_warns_about_silent_names(tmp_path: Path) -> None:
    (tmp_path / "conf.py").write_text(INSTALL + "max_batch = 1\nslow_start_max_batch = 1\ncpus = 4\n"
                                      "slowstart_long_worker = 'examples.jobs:run'\nworkers = cpus\n")
    result = run(["-m", "gunicorn", "--check-config", "-c", "conf.py", "wsgi_app:app"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "Warning: slow start: config name 'max_batch' is not a setting and is ignored: "
        "did you mean slowstart_max_batch?",
        "Warning: slow start: config name 'slow_start_max_batch' is not a setting and is ignored: "
        "did you mean slowstart_max_batch?",
        "Warning: slow start: slowstart_long_worker is set but the pool size is not, so no long worker "
        "starts: set slowstart_long_workers (GUNICORN_SLOWSTART_LONG_WORKERS) to a number or 'auto'",
    ]


def test_print_config_shows_resolved_settings_and_their_source(tmp_path: Path) -> None:
    (tmp_path / "conf.py").write_text("from gunicorn_slowstart import install\ninstall(globals(), initial=2)\n"
                                      "slowstart_delay = 0.5\n")
    for command in (["-m", "gunicorn"], ["-m", "gunicorn_slowstart.cli", "--slowstart-cpus", "3"]):
        result = run([*command, "--print-config", "-c", "conf.py", "wsgi_app:app"], tmp_path,
                     {"GUNICORN_SLOWSTART_MODE": "timer"})
        assert result.returncode == 0, result.stderr
        rows = {line.split("=")[0].strip(): line.split("=", 1)[1].strip() for line in result.stdout.splitlines()
                if " = " in line}
        assert rows["workers"] == "1"  # gunicorn's own list is still there, once
        assert result.stdout.count("\nworkers ") == 1
        assert rows["slowstart_mode"] == "timer  # GUNICORN_SLOWSTART_MODE"
        assert rows["slowstart_initial"] == "2  # install(initial=...)"
        assert rows["slowstart_delay"] == "0.5  # flag or config file"
        assert rows["slowstart_ready_timeout"] == "30.0  # default"
        assert rows["slowstart_timeline"] == "None  # default"
        assert len([k for k in rows if k.startswith("slowstart_")]) == len(sm.SPECS)
    assert rows["slowstart_cpus"] == "3  # flag or config file"
    assert rows["slowstart_max_batch"] == "auto (1)  # default"  # timer mode: half the CPUs
    assert rows["slowstart_background_boots"] == "auto (off: mode timer)  # default"
    assert rows["slowstart_memory_admission"] == "on  # default"
    assert rows["slowstart_reload_surge"] == "auto (decided at each reload: as many as may boot at once)  # default"


def test_print_config_says_what_auto_resolves_to() -> None:
    from gunicorn_slowstart.cpus import cpu_report
    from gunicorn_slowstart.priority import unavailable

    report = cpu_report()
    why = unavailable(report.cgroup_quota, min(report.host, report.affinity or report.host))
    shown = configcheck._effective(sm.Settings(cpus=3))
    assert shown["initial"] == "auto (decided at start: the idle CPUs, 1 to 3)"
    assert shown["background_boots"] == (f"auto (off: {why})" if why else "auto (on)")
    assert shown["memory_admission"] == "on" and "cpus" not in shown
    shown = configcheck._effective(sm.Settings(cpus=4, mode="timer", memory_admission=False, initial=2))
    assert shown["max_batch"] == "auto (2)" and "initial" not in shown and shown["memory_admission"] == "off"
    assert shown["background_boots"] == "auto (off: mode timer)"
    assert configcheck._effective(sm.Settings(max_batch=2))["background_boots"] == "auto (off: max_batch is set)"
    shown = configcheck._effective(sm.Settings(mode="off", background_boots="off"))
    assert not {"initial", "max_batch", "reload_surge", "background_boots"} & set(shown)


def test_version_names_both() -> None:
    result = run(["-m", "gunicorn_slowstart.cli", "--version"], ROOT)
    assert result.returncode == 0
    assert result.stdout.strip() == f"gunicorn-slowstart 0.1.0 (gunicorn {gunicorn.__version__})"


def test_help_shows_real_defaults_and_variables() -> None:
    from gunicorn_slowstart.cli import SlowStartConfig

    sm.register()
    text = " ".join(SlowStartConfig(prog="gunicorn-slowstart").parser().format_help().split())
    for name in sm.SPECS:
        assert f"[{sm.default_text(name)}; env {sm.env_name(name)}]" in text
    assert "[None]" not in text.split("--slowstart-")[1]


def test_flag_errors_name_the_flag_typed() -> None:
    result = run(["-m", "gunicorn_slowstart.cli", "--slowstart-max-batch", "x", "app:app"], ROOT)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("gunicorn-slowstart: error: argument --slowstart-max-batch: "
                                              "must be a whole number or 'auto', got 'x'")
    env = {"GUNICORN_CMD_ARGS": "--slowstart-mode fast"}
    result = run(["-m", "gunicorn_slowstart.cli", "app:app"], ROOT, env)
    assert result.returncode == 2 and "argument --slowstart-mode: must be one of: ready, timer, off, got 'fast'" \
        in result.stderr and result.stderr.count("gunicorn-slowstart:") == 1


def test_imports_have_no_side_effects() -> None:
    code = ("import gunicorn_slowstart, gunicorn_slowstart.policy, gunicorn_slowstart.timeline, "
            "gunicorn_slowstart.settings, sys; print('gunicorn' in sys.modules)")
    assert run(["-c", code], ROOT).stdout.strip() == "False"
    code = ("import gunicorn_slowstart.settings, gunicorn.config as c; "
            "print(any(s.name.startswith('slowstart_') for s in c.KNOWN_SETTINGS))")
    assert run(["-c", code], ROOT).stdout.strip() == "False"
    code = "from gunicorn_slowstart import install, LongWorkerPool, SlowStartPolicy; print(install.__module__)"
    assert run(["-c", code], ROOT).stdout.strip() == "gunicorn_slowstart.hooks"


# -- the warnings, without a server ---------------------------------------------------------------


def installation(namespace: dict | None = None, **keywords) -> hooks.Installation:
    return hooks.Installation(namespace or {}, keywords)


@pytest.mark.parametrize("key, meant", [
    ("max_batch", "slowstart_max_batch"), ("MAX_BATCH", "slowstart_max_batch"),
    ("slow_start_max_batch", "slowstart_max_batch"), ("SLOWSTART_MAX_BATCH", "slowstart_max_batch"),
    ("slowstartmaxbatch", "slowstart_max_batch"), ("slow_start_timeline", "slowstart_timeline"),
    ("ready_timeout", "slowstart_ready_timeout"), ("long_workers", "slowstart_long_workers"),
])
def test_silent_names_are_warned_about(key: str, meant: str) -> None:
    (text,) = configcheck.config_warnings(None, installation({key: 1}), environ={})
    assert text == f"config name {key!r} is not a setting and is ignored: did you mean {meant}?"


@pytest.mark.parametrize("key", ["cpus", "mode", "delay", "timeline", "workers", "bind", "max_requests",
                                 "_private", "os", "slowstart_max_batch", "post_fork", "multiprocessing"])
def test_ordinary_names_are_left_alone(key: str) -> None:
    known = SimpleNamespace(settings={"workers": 1, "bind": 1, "max_requests": 1, "post_fork": 1})
    assert configcheck.config_warnings(known, installation({key: 1}), environ={}) == []


def test_long_worker_without_size() -> None:
    def warned(namespace, environ=None, **kw):
        return any("pool size" in t for t in configcheck.config_warnings(None, installation(namespace, **kw),
                                                                         environ=environ or {}))

    assert warned({"slowstart_long_worker": "examples.jobs:run"})
    assert warned({}, {"GUNICORN_SLOWSTART_LONG_WORKER": "examples.jobs:run"})
    assert not warned({"slowstart_long_worker": "examples.jobs:run", "slowstart_long_workers": 0})
    assert not warned({"slowstart_long_worker": "examples.jobs:run"}, {"GUNICORN_SLOWSTART_LONG_WORKERS": "2"})
    assert not warned({}, long_worker="examples.jobs:run", long_workers="auto")
    assert not warned({})


def test_the_master_logs_the_warnings_once_at_start(monkeypatch, caplog) -> None:
    monkeypatch.setattr(gunicorn.app.base, "Arbiter", gunicorn.app.base.Arbiter)
    monkeypatch.setattr(gunicorn.app.base.Application, "run", gunicorn.app.base.Application.run)
    monkeypatch.setattr(hooks, "_current", hooks._current)
    from gunicorn_slowstart.arbiter import SlowStartArbiter

    ns = {"max_batch": 2}
    hooks.install(ns)
    server = SlowStartArbiter.__new__(SlowStartArbiter)
    server.log = logging.getLogger("test-master")
    server.cfg = gunicorn.config.Config()
    with caplog.at_level(logging.WARNING, "test-master"):
        ns["on_starting"](server)
    assert [r.getMessage() for r in caplog.records] == [
        "slow start: config name 'max_batch' is not a setting and is ignored: did you mean slowstart_max_batch?"]


def test_activate_wraps_run_once(monkeypatch) -> None:
    monkeypatch.setattr(gunicorn.app.base, "Arbiter", gunicorn.app.base.Arbiter)
    original = gunicorn.app.base.Application.run
    monkeypatch.setattr(gunicorn.app.base.Application, "run", original)
    hooks.activate()
    hooks.activate()
    wrapped = gunicorn.app.base.Application.run
    assert wrapped is not original and configcheck.checked(wrapped) is wrapped


def test_an_unwritable_timeline_is_warned_about_once_by_its_own_path(tmp_path: Path, caplog) -> None:
    from gunicorn_slowstart.status import StatusReporter

    path = tmp_path / "missing" / "startup.json"
    reporter = StatusReporter(logging.getLogger("test-timeline"), 0.0, 0.0)
    reporter.configure(str(path), {})
    with caplog.at_level(logging.WARNING, "test-timeline"):
        for t in range(5):
            reporter.step(float(t), 1, 1, 0, t)
            reporter.write(t + 0.5)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"slow start: cannot write timeline {path}: No such file or directory "
                              f"(the directory {path.parent} does not exist)")
    assert ".timeline-" not in message
    path.parent.mkdir()
    reporter.write(10.0)
    assert path.exists() and reporter.write_problem is None


README_CASES = [
    (INSTALL, {"GUNICORN_SLOWSTART_MAX_BATCH": "four"}),
    (INSTALL + "slowstart_max_batch = 'four'\n", {}),
    (INSTALL + "slowstart_max_bacth = 4\n", {}),
    (INSTALL, {"GUNICORN_SLOWSTART_MAXBATCH": "2"}),
    (INSTALL + "slowstart_long_workers = 2\n", {}),
    (INSTALL + "slowstart_long_worker = 'myjobs:run'\nslowstart_long_workers = 2\n", {}),
    (INSTALL + "slowstart_long_worker = 'examples.jobs:run'\nmax_batch = 1\n", {}),
    ("from gunicorn_slowstart import install\ninstall(globals(), max_batch=0)\n", {}),
    *[(text, env) for name, (text, env, _) in REFUSED.items() if name.startswith("template")],
]


@pytest.mark.parametrize("text, env", README_CASES)
def test_the_readme_troubleshooting_quotes_the_exact_messages(tmp_path: Path, text: str, env: dict) -> None:
    readme = (ROOT / "README.md").read_text()
    (tmp_path / "conf.py").write_text(text)
    result = run(["-m", "gunicorn", "--check-config", "-c", "conf.py", "wsgi_app:app"], tmp_path, env)
    lines = [line.split(" (known: ")[0] for line in result.stderr.splitlines() if line.strip()]
    assert lines and all(f"`{line}" in readme for line in lines), lines
