"""``gunicorn_slowstart.pool`` is a package split by what each part holds; every old import
path still works, and a process imports only what it runs (pure, no server)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

OLD_NAMES = ["LongWorkerPool", "ready", "reports_ready", "READY_FD_ENV", "check_target", "load_target",
             "PoolLink", "PoolEvent", "SPAWNED", "READY", "EXITED", "MANAGER_RESTARTS", "MANAGER_STABLE",
             "STABLE_AFTER", "manager_restart"]


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_public_name_is_still_found_in_gunicorn_slowstart_pool(name: str) -> None:
    from gunicorn_slowstart import pool

    assert getattr(pool, name) is not None
    assert name in dir(pool)


def test_the_package_level_names_are_the_pools() -> None:
    import gunicorn_slowstart
    from gunicorn_slowstart.pool import LongWorkerPool, ready, reports_ready
    from gunicorn_slowstart.pool.api import LongWorkerPool as declared
    from gunicorn_slowstart.pool.link import PoolLink
    from gunicorn_slowstart.pool.target import check_target

    assert gunicorn_slowstart.LongWorkerPool is LongWorkerPool is declared
    assert gunicorn_slowstart.ready is ready and gunicorn_slowstart.reports_ready is reports_ready
    assert callable(PoolLink) and callable(check_target)


def test_an_unknown_name_is_an_attribute_error() -> None:
    from gunicorn_slowstart import pool

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pool.nothing  # noqa: B018
    with pytest.raises(ImportError):
        from gunicorn_slowstart.pool import nothing  # noqa: F401


def _loaded_after(statement: str) -> set[str]:
    code = (f"import sys; {statement}; "
            "print(' '.join(m for m in sys.modules if m.startswith('gunicorn')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return set(out.split())


def test_a_long_workers_ready_call_imports_the_api_alone() -> None:
    loaded = _loaded_after("from gunicorn_slowstart import ready, reports_ready, LongWorkerPool")
    assert "gunicorn_slowstart.pool.api" in loaded
    assert not loaded & {"gunicorn_slowstart.pool.link", "gunicorn_slowstart.pool.manager",
                         "gunicorn_slowstart.pool.worker", "gunicorn", "gunicorn_slowstart.policy"}


def test_the_masters_side_brings_the_processes_it_forks_but_not_gunicorn() -> None:
    loaded = _loaded_after("from gunicorn_slowstart.pool import PoolLink")
    assert {"gunicorn_slowstart.pool.link", "gunicorn_slowstart.pool.manager",
            "gunicorn_slowstart.pool.worker"} <= loaded
    assert "gunicorn" not in loaded


def test_setup_cfg_ships_every_package() -> None:
    """A subpackage missing from ``packages`` would be left out of the wheel (and of tox's install)."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = {name.strip() for name in cfg["options"]["packages"].replace("\n", ",").split(",") if name.strip()}
    inits = (ROOT / "gunicorn_slowstart").rglob("__init__.py")
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in inits}
    assert found == listed
