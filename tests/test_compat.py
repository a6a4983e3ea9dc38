"""_compat.py: gunicorn's internals in one module, checked at import (pure, no server)."""

from __future__ import annotations

import pathlib
import re

import pytest

from gunicorn_slowstart import _compat

PACKAGE = pathlib.Path(_compat.__file__).parent

# Code (not prose) that reaches into gunicorn's private parts: only _compat.py may contain it.
INTERNALS = [r"_setproctitle", r"\.last_update\(", r"gunicorn\.app\.base", r"_last_logged_active_worker_count",
             r"self\.PIPE", r"sd_notify", r"from gunicorn\.workers", r"from gunicorn\.errors",
             r"from gunicorn\.arbiter", r"from gunicorn import (sock|util|systemd)", r"\.tmp\.close\(",
             r"hasattr\(self\.log, \"prefix\"\)", r"self\.WORKERS = ", r"\bworker_age\b", r"\._stats\b",
             r"worker_class\(", r"\.tmp\.fileno\("]


def _code_lines(path: pathlib.Path) -> list[str]:
    """The module's lines outside docstrings and comments."""
    text = re.sub(r'"""(.|\n)*?"""', '""', path.read_text())
    return [line.split("#")[0] for line in text.splitlines()]


def test_the_installed_gunicorn_is_supported():
    _compat.check()  # the import already did: once more, explicitly


@pytest.mark.parametrize("version", ["22.0.0", "28.0.0", "100", "dev"])
def test_a_gunicorn_outside_the_tested_range_is_refused_with_one_line(version):
    with pytest.raises(_compat.UnsupportedGunicorn) as info:
        _compat.check(version)
    text = str(info.value)
    assert "\n" not in text
    assert text == f"gunicorn-slowstart does not support gunicorn {version}: it supports gunicorn 23 to 27"


def test_a_changed_method_body_is_named(monkeypatch):
    """An assumption about what a gunicorn method does inside breaks: the message says which."""
    monkeypatch.setattr(_compat, "_source", lambda obj: "" if obj is _compat.Arbiter.reload else None)
    with pytest.raises(_compat.UnsupportedGunicorn, match=r"Arbiter\.reload\(\) no longer forks"):
        _compat.check()


def test_the_range_is_the_one_setup_cfg_declares():
    setup = (PACKAGE.parent / "setup.cfg").read_text()
    low, high = _compat.SUPPORTED
    assert f"gunicorn>={low},<{high}" in setup


def test_gunicorn_internals_appear_in_compat_only():
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "_compat.py":
            continue
        for line in _code_lines(path):
            found += [f"{path.name}: {pattern}: {line.strip()}" for pattern in INTERNALS if re.search(pattern, line)]
    assert found == []


def test_every_overridden_method_is_checked():
    from gunicorn_slowstart.arbiter import SlowStartArbiter

    checked = set(_compat.OVERRIDDEN + _compat.OVERRIDDEN_24 + _compat.OVERRIDDEN_23 + _compat.OVERRIDDEN_OPTIONAL)
    defined = {name for name, value in vars(SlowStartArbiter).items() if callable(value)}
    assert checked <= defined
    assert {name for name in defined if hasattr(_compat.Arbiter, name)} - {"__init__"} <= checked
