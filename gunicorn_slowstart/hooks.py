"""``install()``: what a gunicorn config file calls to turn slow start on.

gunicorn executes the config file (``-c``) while it builds the application,
before ``run()`` constructs the master.  ``install()`` does three things then:

* checks its keywords (a bad one stops gunicorn with one line, before any fork);
* makes gunicorn construct a ``SlowStartArbiter`` instead of its ``Arbiter``
  (``BaseApplication.run()`` looks the class up in ``gunicorn.app.base`` when
  it runs, so replacing that one name is enough);
* chains the hooks slow start needs into the config namespace, keeping any
  hook of the same name the user defined.

A user may also define a hook *after* calling ``install()``, replacing ours in
the namespace.  So the arbiter calls ``ensure_hooks()`` on the final
configuration, which chains ours in again: user hooks always run, and so do
ours, whatever the order in the file.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from . import settings as settings_mod

_MARK = "_slowstart_hook"


class Installation:
    """What one ``install()`` call asked for: its keywords and its namespace."""

    def __init__(self, namespace: MutableMapping[str, Any] | None = None,
                 keywords: dict[str, Any] | None = None, pool: Any = None) -> None:
        self.namespace = namespace if namespace is not None else {}
        self.keywords = keywords or {}
        self.pool = pool
        self.adopted = False  # namespace taken from a config file without install() (the command)

    def hooks(self) -> dict[str, Callable]:
        """Our side of each hook, with gunicorn's exact arity."""

        def on_starting(server):
            from .arbiter import SlowStartArbiter

            if not isinstance(server, SlowStartArbiter):
                server.log.warning("slow start is not active: the master is %s, not SlowStartArbiter",
                                   type(server).__name__)
                return
            warn_silent_mistakes(server)

        def pre_fork(server, worker):
            start = getattr(server, "start_long_workers", None)
            if start is not None:
                start()  # the first pre_fork starts the long-worker pool, if there is one

        return {"on_starting": on_starting, "pre_fork": pre_fork}

    def chain_into(self, namespace: MutableMapping[str, Any]) -> None:
        for name, ours in self.hooks().items():
            namespace[name] = chain(ours, namespace.get(name))

    def ensure_hooks(self, cfg: Any) -> None:
        """Chain our hooks into a loaded gunicorn ``Config`` unless they are there."""
        for name, ours in self.hooks().items():
            setting = cfg.settings[name]
            theirs = setting.get()
            if not getattr(theirs, _MARK, False):
                setting.set(chain(ours, theirs))


_current = Installation()


def current_installation() -> Installation:
    return _current


def restore_installation(installation: Installation) -> None:
    """A config file refused on SIGHUP may have called ``install()`` before it failed:
    the arbiter puts the previous installation back."""
    global _current
    _current = installation


def chain(ours: Callable, theirs: Callable | None) -> Callable:
    """A hook calling ours, then theirs; same arity, so gunicorn accepts it.

    Chaining onto one of our own hooks (``install()`` called twice on one
    namespace) keeps the user's hook that one had chained.
    """
    if getattr(theirs, _MARK, False):
        theirs = getattr(theirs, "_slowstart_theirs", None)
    if theirs is None:
        hook = ours
    elif ours.__code__.co_argcount == 1:
        def hook(server):
            ours(server)
            theirs(server)
    else:
        def hook(server, worker):
            ours(server, worker)
            theirs(server, worker)
    setattr(hook, _MARK, True)
    hook._slowstart_theirs = theirs
    return hook


def warn_silent_mistakes(server: Any) -> None:
    """Log, once at start, each setting or config name that silently does nothing."""
    from .configcheck import config_warnings

    for text in config_warnings(getattr(server, "cfg", None), _current):
        server.log.warning("slow start: %s", text)


def adopt_namespace(namespace: MutableMapping[str, Any]) -> None:
    """``gunicorn-slowstart -c file.py`` with no ``install()`` in the file: its names are
    still checked (unknown ``slowstart_*`` names refused, near-misses warned about)."""
    if not _current.namespace or _current.adopted:
        _current.namespace = namespace
        _current.adopted = True


def activate() -> None:
    """Make gunicorn's application runner construct a ``SlowStartArbiter``, and make
    ``--check-config`` / ``--print-config`` check and show the slow-start settings."""
    from ._compat import use_arbiter
    from .arbiter import SlowStartArbiter
    from .configcheck import checked

    use_arbiter(SlowStartArbiter, checked)


def install(namespace: MutableMapping[str, Any] | None = None, **keywords: Any) -> Installation:
    """Turn slow start on from a gunicorn config file: ``install(globals(), max_batch=4)``.

    Keywords are the settings without their ``slowstart_`` prefix; see the
    README for each, and for their precedence against flags, config names and
    ``GUNICORN_SLOWSTART_*`` variables.
    """
    global _current
    if namespace is not None and not isinstance(namespace, MutableMapping):
        raise SystemExit("Error: gunicorn-slowstart: install() takes the config file's namespace, "
                         f"install(globals(), ...), not {settings_mod.show(namespace)}")
    pool = keywords.pop("long_workers", None) if _is_pool(keywords.get("long_workers")) else None
    try:
        checked = settings_mod.check_keywords(keywords)
    except settings_mod.SettingError as exc:
        raise SystemExit(f"Error: gunicorn-slowstart: {exc}") from None
    settings_mod.register()  # config-file names and flags of gunicorn's Config from now on (SIGHUP)
    _current = Installation(namespace, checked, pool)
    if namespace is not None:
        _current.chain_into(namespace)
    activate()
    return _current


def _is_pool(value: Any) -> bool:
    return hasattr(value, "pre_fork") and hasattr(value, "size")
