"""``--check-config`` and ``--print-config`` for slow start, and the mistakes worth a warning.

Theory of operation
-------------------
gunicorn's ``Application.run()`` handles ``--check-config`` and
``--print-config`` itself: it loads the application and exits, never building
the master.  The slow-start settings are checked when the master is built
(``SlowStartArbiter.setup()``), so without help ``--check-config`` would pass
a config that then refuses to start.  ``activate()`` wraps ``Application.run``
with ``run_checked``: in either mode it runs the very checks ``setup()`` runs
(``settings.resolve()`` and the arbiter's ``_pool_from()``), prints a failure
exactly as gunicorn prints the master's (``Error: ...``, exit 1), and for
``--print-config`` prints gunicorn's list with the slow-start lines showing the
resolved values and where each came from.

Some mistakes refuse nothing and so pass silently: gunicorn ignores config
names it does not know, so ``max_batch = 1`` or ``slow_start_max_batch = 1``
does nothing, and a long-worker target without a pool size starts no long
worker.  ``config_warnings()`` finds those; the master logs them once at start
(our ``on_starting`` hook) and ``--check-config`` prints them.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from . import settings as settings_mod
from .settings import SETTING_PREFIX, SPECS

_MARK = "_slowstart_checked"


# -- the same checks as the master's setup() ----------------------------------------------


def check(cfg: Any, installation: Any, environ: Mapping[str, str] | None = None) -> tuple[Any, Any]:
    """Resolve and check the settings as ``SlowStartArbiter.setup()`` does; raises SettingError.

    The same three steps in the same order: the settings, the long-worker pool
    (its target found on the server's ``sys.path``, ``--pythonpath`` included,
    which gunicorn adds only when it serves), and what ``fork_from =
    template`` refuses (``--preload``, ``--reload``, mode off, gevent/eventlet,
    not Linux).
    """
    from .arbiter import SlowStartArbiter
    from .template import check_config

    resolved = settings_mod.resolve(cfg, installation.namespace, installation.keywords, environ)
    with _served_sys_path(cfg):
        pool = SlowStartArbiter._pool_from(resolved, installation.pool)
        check_config(resolved.fork_from, resolved.mode, cfg)  # loads the worker class: --pythonpath too
    return resolved, pool


@contextlib.contextmanager
def _served_sys_path(cfg: Any) -> Iterator[None]:
    """``sys.path`` as gunicorn's ``Application.run()`` sets it before building the master."""
    saved = list(sys.path)
    for path in (getattr(cfg, "pythonpath", None) or "").split(","):
        if path and os.path.abspath(path) not in sys.path:
            sys.path.insert(0, os.path.abspath(path))
    try:
        yield
    finally:
        sys.path[:] = saved


# -- what passes but does nothing -------------------------------------------------------------


def config_warnings(cfg: Any, installation: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per config-file name or setting that silently does nothing."""
    environ = os.environ if environ is None else environ
    known = set(getattr(cfg, "settings", {}) or {})
    found = [text for key in installation.namespace if (text := _name_warning(key, known))]
    if _pool_without_size(cfg, installation, environ):
        found.append("slowstart_long_worker is set but the pool size is not, so no long worker starts: "
                     "set slowstart_long_workers (GUNICORN_SLOWSTART_LONG_WORKERS) to a number or 'auto'")
    return found


def _name_warning(key: Any, known: set[str]) -> str | None:
    """``max_batch = 1``, ``slow_start_max_batch = 1``, ``SLOWSTART_MAX_BATCH = 1``: a warning.

    One-word names (``mode``, ``cpus``, ``delay``...) are common variable names
    in config files and are left alone; unknown ``slowstart_*`` names are
    errors (settings.resolve refuses them).
    """
    if not isinstance(key, str) or key.startswith("_") or key in known or key.startswith(SETTING_PREFIX):
        return None
    lowered = key.lower()
    if lowered in SPECS and "_" in lowered:
        meant = SETTING_PREFIX + lowered
    elif lowered.startswith(SETTING_PREFIX) and lowered[len(SETTING_PREFIX):] in SPECS:
        meant = lowered
    else:
        close = difflib.get_close_matches(lowered, [SETTING_PREFIX + n for n in SPECS], n=1, cutoff=0.8)
        if not close:
            return None
        meant = close[0]
    return f"config name {key!r} is not a setting and is ignored: did you mean {meant}?"


def _pool_without_size(cfg: Any, installation: Any, environ: Mapping[str, str]) -> bool:
    if installation.pool is not None:
        return False
    sources = (cfg, installation.namespace, installation.keywords, environ)
    target = settings_mod.given_by("long_worker", *sources)
    return target is not None and bool(target[1]) and settings_mod.given_by("long_workers", *sources) is None


# -- --print-config ---------------------------------------------------------------------------


def _effective(resolved: Any) -> dict[str, str]:
    """What ``auto`` means on this machine, as the master would work it out; what only the
    start or a reload decides says so.  ``memory_admission`` as the docs spell it."""
    from .cpus import cpu_report
    from .policy import default_max_batch

    report = cpu_report()
    cpus = report.usable if resolved.cpus == "auto" else resolved.cpus
    cap = default_max_batch(resolved.mode, cpus) if resolved.max_batch == "auto" else resolved.max_batch
    paced = resolved.mode != "off"
    shown = {"memory_admission": "on" if resolved.memory_admission else "off"}
    if resolved.cpus == "auto":
        shown["cpus"] = f"auto ({cpus})"
    if resolved.max_batch == "auto" and paced:
        shown["max_batch"] = f"auto ({cap})"
    if resolved.long_workers == "auto":
        shown["long_workers"] = f"auto ({2 * cpus})"
    if resolved.initial == "auto" and paced:
        shown["initial"] = ("auto (1)" if resolved.mode == "timer"   # the timer's batches: 1, 2, 4, ...
                            else f"auto (decided at start: the idle CPUs, 1 to {cap})")
    if resolved.reload_surge == "auto" and paced:
        shown["reload_surge"] = "auto (decided at each reload: as many as may boot at once)"
    if resolved.reload_max_failures == "auto" and paced:
        shown["reload_max_failures"] = "auto (decided at each reload: the size of its first step)"
    if resolved.background_boots == "auto":
        shown["background_boots"] = f"auto ({_background_text(resolved, report)})"
    return shown


def _background_text(resolved: Any, report: Any) -> str:
    """``on``, or ``off: why``, by the arbiter's rule (``SlowStartArbiter._background``)."""
    from .priority import unavailable

    if resolved.mode != "ready":
        return f"off: mode {resolved.mode}"
    for name in ("initial", "max_batch"):
        if getattr(resolved, name) != "auto":
            return f"off: {name} is set"
    why = unavailable(report.cgroup_quota, min(report.host, report.affinity or report.host))
    return f"off: {why}" if why else "on"


def _source_text(source: str | None, name: str) -> str:
    if source is None:
        return "default"
    if source == SETTING_PREFIX + name:
        return "flag or config file"
    return source


def config_text(cfg: Any, installation: Any, resolved: Any, pool: Any,
                environ: Mapping[str, str] | None = None) -> str:
    """gunicorn's ``--print-config`` list, with the slow-start lines resolved."""
    environ = os.environ if environ is None else environ
    shown = _effective(resolved)
    rows = {key: str(cfg.settings[key].value) if not callable(cfg.settings[key].value)
            else f"<{cfg.settings[key].value.__qualname__}()>" for key in cfg.settings}
    for name in SPECS:
        given = settings_mod.given_by(name, cfg, installation.namespace, installation.keywords, environ)
        value, source = shown.get(name, getattr(resolved, name)), _source_text(given and given[0], name)
        if name in ("long_worker", "long_workers") and pool is not None and pool is installation.pool:
            value, source = (pool.target if name == "long_worker" else pool.size), "install(long_workers=...)"
        rows[SETTING_PREFIX + name] = f"{value}  # {source}"
    width = max(len(key) for key in rows)
    return "\n".join(f"{key:{width}} = {rows[key]}" for key in sorted(rows))


# -- wrapping gunicorn's Application.run ------------------------------------------------------


def checked(run: Callable) -> Callable:
    """``Application.run`` that checks the slow-start settings under --check-config/--print-config."""
    if getattr(run, _MARK, False):
        return run

    def run_checked(app: Any) -> Any:
        cfg = app.cfg
        if cfg.print_config or cfg.check_config:
            check_or_exit(app)
        return run(app)

    setattr(run_checked, _MARK, True)
    run_checked.__doc__ = run.__doc__
    return run_checked


def check_or_exit(app: Any) -> None:
    """Exit 1 with the master's own one-line error, or warn, and print the config if asked."""
    from .hooks import current_installation

    installation = current_installation()
    try:
        resolved, pool = check(app.cfg, installation)
    except (settings_mod.SettingError, RuntimeError) as exc:  # RuntimeError: a worker class gunicorn cannot load
        print(f"\nError: {exc}\n", file=sys.stderr)  # as gunicorn prints the master's RuntimeError
        sys.stderr.flush()
        sys.exit(1)
    for text in config_warnings(app.cfg, installation):
        print(f"Warning: slow start: {text}", file=sys.stderr)
    if app.cfg.print_config:
        print(config_text(app.cfg, installation, resolved, pool))
        app.cfg.set("print_config", False)  # gunicorn would print its own list again
        app.cfg.set("check_config", True)  # and still load the app, then exit 0

