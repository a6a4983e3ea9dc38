"""Every ``slowstart_*`` setting: its parser, its default, its sources.

A setting can come from four places.  From highest precedence to lowest:

1. a gunicorn setting: ``--slowstart-max-batch 4`` (``gunicorn-slowstart``
   command), ``GUNICORN_CMD_ARGS``, or ``slowstart_max_batch = 4`` in a config
   file (gunicorn merges these three in its own order: CLI over
   ``GUNICORN_CMD_ARGS`` over the file);
2. the environment: ``GUNICORN_SLOWSTART_MAX_BATCH=4``;
3. a keyword of ``install(globals(), max_batch=4)`` in a config file;
4. the default below.

The settings are registered with gunicorn (``gunicorn.config.Setting``
subclasses) by ``register()``, which ``install()``, the ``gunicorn-slowstart``
command and the ready-made config module call; importing this module has no
side effect and does not import gunicorn.  The plain ``gunicorn`` command
builds its argument parser before it reads ``-c``, so it only learns the
``--slowstart-*`` flags through the ``gunicorn-slowstart`` command; config-file
names work with both, because ``install()`` hands the config namespace to
``resolve()``.

Every value is checked before the master forks anything.  A bad one raises
``SettingError`` (a ``RuntimeError``, which gunicorn prints as one ``Error:``
line before exiting with status 1) naming the setting, its source and value.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .policy import DEFAULT_GROWTH, DEFAULT_INITIAL, DEFAULT_MODE, GROWTHS, MODES

ENV_PREFIX = "GUNICORN_SLOWSTART_"
SETTING_PREFIX = "slowstart_"


class SettingError(RuntimeError):
    """A slow-start setting has a value it cannot use (one line, names the setting)."""


# -- parsers: each takes a str (from a flag or the environment) or a Python value


# Numbers as text are plain ASCII: int() and float() would also take full-width or Arabic-Indic
# digits and "1_000", which a setting should not (they are typos more often than intent).
ASCII_INT = re.compile(r"[+-]?[0-9]+")
ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _number(value: Any, cast: Callable, what: str) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"must be {what}, not a boolean")
    if isinstance(value, str) and not _plain_ascii(value.strip(), cast):
        digits = any(c.isdigit() or c == "_" for c in value)
        raise ValueError(f"must be {what}{' in plain ASCII digits (no underscores)' if digits else ''}")
    try:
        number = cast(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"must be {what}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"must be {what}")
    return number


def _plain_ascii(text: str, cast: Callable) -> bool:
    pattern = ASCII_INT if cast is int else ASCII_FLOAT
    return pattern.fullmatch(text) is not None or (cast is not int and text.lower().lstrip("+-") in (
        "inf", "infinity", "nan"))  # refused below with the plain message


def in_range(parse: Callable[[Any], Any], low: float, high: float, off: float | None = None,
             unit: str = "") -> Callable[[Any], Any]:
    """``parse``, then refuse a value outside ``[low, high]`` (``off``, e.g. 0, is also allowed).

    A value far outside what a server can use (a ``ready_timeout`` of 1e-320 s that turns pacing
    off, a timer ``delay`` of 1e308 s that never starts the second batch) is a mistake: say so.
    """

    def parse_ranged(value: Any) -> Any:
        number = parse(value)
        if number == off or low <= number <= high:
            return number
        allowed = f"{'0 (off) or ' if off is not None else ''}between {low:g} and {high:g}{unit}"
        raise ValueError(f"must be {allowed}")

    return parse_ranged


def _whole(value: Any) -> int:
    number = _number(value, int, "a whole number")
    if not isinstance(value, str) and number != value:
        raise ValueError("must be a whole number")  # 1.5, Decimal("1.5"): int() would truncate
    return number


def positive_int(value: Any) -> int:
    number = _whole(value)
    if number < 1:
        raise ValueError("must be a whole number >= 1")
    return number


def non_negative_int(value: Any) -> int:
    number = _whole(value)
    if number < 0:
        raise ValueError("must be a whole number >= 0")
    return number


def non_negative_float(value: Any, what: str = "a number of seconds") -> float:
    number = _number(value, float, what)
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def mebibytes(value: Any) -> float:
    return non_negative_float(value, "a number of MiB")


def positive_float(value: Any) -> float:
    number = _number(value, float, "a number of seconds")
    if number <= 0:
        raise ValueError("must be > 0")
    return number


def on_off(value: Any) -> bool:
    """A switch: True/False, or on/off, true/false, yes/no, 1/0 as text."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise ValueError("must be on or off (true/false, yes/no, 1/0)")


def choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower() if isinstance(value, str) else value
        if text not in options:
            raise ValueError(f"must be one of: {', '.join(options)}")
        return text

    return parse


def auto_or(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``"auto"`` (or None) means: work it out from this machine."""

    def parse_auto(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return "auto"
        try:
            return parse(value)
        except ValueError as exc:
            raise ValueError(f"{exc} or 'auto'") from None

    return parse_auto


def optional_path(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError("must be a file path")
    return os.fspath(value)


def optional_hook(value: Any) -> Any:
    """A callable, or ``"package.module:function"`` (imported where it runs, not in the master)."""
    return optional_target(value)


def optional_target(value: Any) -> Any:
    """``module:callable`` for a long worker, or a callable."""
    if value is None or value == "" or callable(value):
        return value or None
    if not isinstance(value, str) or value.count(":") != 1 or not all(value.split(":")):
        raise ValueError("must be 'package.module:function'")
    return value


@dataclass(frozen=True)
class Spec:
    parse: Callable[[Any], Any]
    default: Any
    help: str
    meta: str = "VALUE"


# Sane ranges: anything outside is a typo or a unit mistake, refused in one line.
MAX_WORKERS = 10_000
MAX_CPUS = 65_536
MAX_DELAY = 3600.0  # timer mode: an hour between batches
MIN_TIMEOUT = 0.1  # below a tenth of a second no worker class can boot
MAX_TIMEOUT = 86400.0
MAX_FAILURES = 1_000_000
MAX_MEBIBYTES = 2.0 ** 30  # 1 PiB
MAX_FLAP_WINDOW = 3600.0
MAX_WORKER_AGE = 365 * 86400.0  # a year

SPECS: dict[str, Spec] = {
    "mode": Spec(choice(*MODES), DEFAULT_MODE,
                 "How workers are paced: 'ready' (by readiness), 'timer' (fixed delay), 'off' (stock).",
                 "MODE"),
    "initial": Spec(auto_or(in_range(positive_int, 1, MAX_WORKERS)), DEFAULT_INITIAL,
                    "Workers in the first step; 'auto': as many as CPUs stand idle (1: a single probe).",
                    "INT"),
    "max_batch": Spec(auto_or(in_range(positive_int, 1, MAX_WORKERS)), "auto",
                      "Most workers booting at once; 'auto': usable CPUs (ready mode) or half (timer mode).",
                      "INT"),
    "cpus": Spec(auto_or(in_range(positive_int, 1, MAX_CPUS)), "auto",
                 "Usable CPU count; 'auto' detects it (affinity, cgroup quota, host).", "INT"),
    "delay": Spec(in_range(non_negative_float, 0, MAX_DELAY, unit=" s"), 2.0,
                  "Seconds between batches in timer mode.", "SECONDS"),
    "ready_timeout": Spec(in_range(positive_float, MIN_TIMEOUT, MAX_TIMEOUT, unit=" s"), 30.0,
                          "Seconds after which a worker that is not ready stops holding back the ramp.",
                          "SECONDS"),
    "boot_timeout": Spec(in_range(non_negative_float, MIN_TIMEOUT, MAX_TIMEOUT, off=0.0, unit=" s"), 0.0,
                         "Kill a worker that is not ready this many seconds after its fork (0: never).",
                         "SECONDS"),
    "max_boot_failures": Spec(in_range(non_negative_int, 0, MAX_FAILURES), 10,
                              "Stop the server after this many consecutive boot failures (0: never).", "INT"),
    "min_free_mb": Spec(in_range(mebibytes, 0, MAX_MEBIBYTES, unit=" MiB"), 0.0,
                        "Hold the ramp while available memory is below this many MiB (0: off).", "MIB"),
    "growth": Spec(choice(*GROWTHS), DEFAULT_GROWTH,
                   "How the window grows: 'double' (+1 per ready worker) or 'idle' (also up to idle CPUs).",
                   "GROWTH"),
    "timeline": Spec(optional_path, None, "Write the startup timeline (JSON) to this path.", "PATH"),
    "long_worker": Spec(optional_target, None,
                        "Target of the long-worker pool, 'package.module:function'.", "TARGET"),
    "long_workers": Spec(auto_or(in_range(non_negative_int, 0, MAX_WORKERS)), 0,
                         "Size of the long-worker pool; 'auto': 2 x usable CPUs.", "INT"),
    "reload_max_failures": Spec(auto_or(in_range(non_negative_int, 0, MAX_FAILURES)), "auto",
                                "Abandon a SIGHUP reload after this many boot failures of its new workers; "
                                "'auto': the size of the reload's first step; 0: never.", "INT"),
    "reload_surge": Spec(auto_or(in_range(positive_int, 1, MAX_WORKERS)), "auto",
                         "Most workers a SIGHUP reload runs above the target; 'auto': as many as the policy lets "
                         "boot at once (the window).",
                         "INT"),
    "fork_from": Spec(choice("master", "template"), "master",
                      "Where workers fork from: 'master' (each imports the app) or 'template' (a process "
                      "that imported the app once per generation).", "SOURCE"),
    "template_pre_fork": Spec(optional_hook, None,
                              "Called in the template before it forks a worker, "
                              "'package.module:function' or a callable taking the template.", "HOOK"),
    "memory_admission": Spec(on_off, True,
                             "Fork a worker only if it fits in the memory (and pids) limit, measured "
                             "from the ready workers ('on' or 'off').", "ON|OFF"),
    "max_worker_age": Spec(in_range(non_negative_float, 0, MAX_WORKER_AGE, unit=" s"), 0.0,
                           "Replace a worker older than this many seconds (+ up to 10 % jitter), "
                           "new one ready before the old one stops (0: never).", "SECONDS"),
    "max_worker_memory": Spec(in_range(mebibytes, 0, MAX_MEBIBYTES, unit=" MiB"), 0.0,
                              "Replace a worker whose USS exceeds this many MiB, new one ready before the "
                              "old one stops (0: never).", "MIB"),
    "status_file": Spec(optional_path, None,
                        "Keep the master's view (ready, target, state) in this JSON file, for "
                        "'python -m gunicorn_slowstart.probe'.", "PATH"),
    "flap_window": Spec(in_range(non_negative_float, 0, MAX_FLAP_WINDOW, unit=" s"), 5.0,
                        "A worker dying within this many seconds of becoming ready counts as a boot failure "
                        "for the back-off (0: off).", "SECONDS"),
    "background_boots": Spec(choice("auto", "off"), "auto",
                             "Boot one worker beyond the CPU window at idle CPU priority (SCHED_IDLE), raised "
                             "when its turn comes; 'auto': in ready mode, where the master may raise it "
                             "(CAP_SYS_NICE or RLIMIT_NICE >= 20) and initial and max_batch are auto (under a "
                             "CPU quota below the cores, booting workers share its whole CPUs); 'off': never.",
                             "AUTO|OFF"),
}


@dataclass(frozen=True)
class Settings:
    mode: str = DEFAULT_MODE
    initial: Any = DEFAULT_INITIAL
    max_batch: Any = "auto"
    cpus: Any = "auto"
    delay: float = 2.0
    ready_timeout: float = 30.0
    boot_timeout: float = 0.0
    max_boot_failures: int = 10
    min_free_mb: float = 0.0
    growth: str = DEFAULT_GROWTH
    timeline: str | None = None
    long_worker: Any = None
    long_workers: Any = 0
    reload_max_failures: Any = "auto"
    reload_surge: Any = "auto"
    fork_from: str = "master"
    template_pre_fork: Any = None
    memory_admission: bool = True
    max_worker_age: float = 0.0
    max_worker_memory: float = 0.0
    status_file: str | None = None
    flap_window: float = 5.0
    background_boots: str = "auto"


assert [f.name for f in fields(Settings)] == list(SPECS), "Settings and SPECS must list the same names"


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def show(value: Any, limit: int = 60) -> str:
    """A value for a one-line message: repr, shortened, never raising."""
    try:
        text = repr(value)
    except ValueError:  # an int over Python's 4300-digit str limit
        return f"<a {value.bit_length()}-bit number>" if isinstance(value, int) else "<unprintable>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(name: str) -> str:
    """A name as typed, unless it would break the one-line message."""
    return name if name.splitlines() == [name] else repr(name)


def parse_one(name: str, value: Any, source: str) -> Any:
    """Parse one value or raise SettingError naming where it came from."""
    spec = SPECS.get(name)
    if spec is None:
        known = ", ".join(SPECS)
        close = difflib.get_close_matches(name.lower(), list(SPECS), n=1, cutoff=0.75) if name else []
        hint = f": did you mean {source.replace(name, close[0])}?" if close else ""
        raise SettingError(f"unknown slow-start setting {one_line(source)}{hint} (known: {known})")
    try:
        return spec.parse(value)
    except (ValueError, TypeError) as exc:
        raise SettingError(f"{source} {exc}, got {show(value)}") from None


def check_keywords(keywords: Mapping[str, Any]) -> dict[str, Any]:
    """Parse ``install()`` keywords, refusing unknown ones."""
    return {name: parse_one(name, value, f"install({name}=...)") for name, value in keywords.items()}


def resolve(cfg: Any = None, namespace: Mapping[str, Any] | None = None,
            keywords: Mapping[str, Any] | None = None,
            environ: Mapping[str, str] | None = None) -> Settings:
    """Merge every source into one ``Settings``, highest precedence first."""
    environ = os.environ if environ is None else environ
    namespace = namespace or {}
    _refuse_unknown(namespace, environ)
    values = {}
    for name in SPECS:
        values[name] = _first_given(name, cfg, namespace, keywords or {}, environ)
    return Settings(**values)


def _first_given(name: str, cfg: Any, namespace: Mapping, keywords: Mapping, environ: Mapping) -> Any:
    given = given_by(name, cfg, namespace, keywords, environ)
    return SPECS[name].default if given is None else parse_one(name, given[1], given[0])


def given_by(name: str, cfg: Any, namespace: Mapping, keywords: Mapping,
             environ: Mapping) -> tuple[str, Any] | None:
    """(source, raw value) of the source ``resolve()`` takes a setting from; None: the default."""
    key = SETTING_PREFIX + name
    settings = getattr(cfg, "settings", {}) or {}
    if key in settings and settings[key].get() is not None:
        return key, settings[key].get()
    if namespace.get(key) is not None:
        return key, namespace[key]
    if environ.get(env_name(name), "") != "":
        return env_name(name), environ[env_name(name)]
    if name in keywords:
        return f"install({name}=...)", keywords[name]
    return None


def _refuse_unknown(namespace: Mapping, environ: Mapping) -> None:
    """A typo in a setting name must not pass silently."""
    for key in namespace:
        if key.startswith(SETTING_PREFIX) and key[len(SETTING_PREFIX):] not in SPECS:
            parse_one(key[len(SETTING_PREFIX):], None, key)
    known = {env_name(name) for name in SPECS}
    for key in environ:
        if key.startswith(ENV_PREFIX) and key not in known:
            raise SettingError(f"unknown slow-start setting {one_line(key)}{did_you_mean(key, known)} "
                               f"(known: {', '.join(sorted(known))})")


def did_you_mean(name: str, candidates: Any) -> str:
    """``": did you mean slowstart_max_batch?"`` for a near-miss spelling, else ``""``."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.75)
    return f": did you mean {close[0]}?" if close else ""


# -- registration with gunicorn ---------------------------------------------------


def flag(name: str) -> str:
    return "--slowstart-" + name.replace("_", "-")


def default_text(name: str) -> str:
    """The default as a user would type it (``auto``, ``2.0``, ``none``)."""
    default = SPECS[name].default
    return "none" if default is None else str(default)


def _validator(name: str) -> Callable[[Any], Any]:
    def validate(value: Any) -> Any:
        return None if value is None else parse_one(name, value, SETTING_PREFIX + name)

    return validate


def _flag_type(name: str) -> Callable[[str], str]:
    """Check a flag's value while argparse parses it, so the error names the flag typed
    (``argument --slowstart-max-batch: must be ...``); the text goes on unchanged."""

    def check(text: str) -> str:
        try:
            SPECS[name].parse(text)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(f"{exc}, got {show(text)}") from None
        return text

    return check


def _add_option(self: Any, parser: argparse.ArgumentParser) -> None:
    """gunicorn's ``Setting.add_option`` shows ``[None]``, the registered default (None
    means "not given", so lower sources can apply); show the real one and the variable."""
    name = self.name[len(SETTING_PREFIX):]
    text = f"{SPECS[name].help} [{default_text(name)}; env {env_name(name)}]"
    parser.add_argument(*self.cli, dest=self.name, type=_flag_type(name), default=None,
                        metavar=self.meta, help=text.replace("%", "%%"))


def _register(setting: type, name: str, spec: Spec) -> None:
    attrs = {
        "name": SETTING_PREFIX + name,
        "section": "Slow Start",
        "cli": [flag(name)],
        "meta": spec.meta,
        "validator": _validator(name),
        "default": None,
        "desc": f"{spec.help}\n\nDefault: {spec.default!r}. Environment: ``{env_name(name)}``.",
        "add_option": _add_option,
    }
    type("SlowStart" + name.title().replace("_", ""), (setting,), attrs)


def register() -> None:
    """Register every setting with gunicorn (flags, config-file names, ``GUNICORN_CMD_ARGS``).

    Idempotent.  Only what runs inside gunicorn calls it: ``install()``, the
    ``gunicorn-slowstart`` command, the ready-made config module.
    """
    from gunicorn.config import KNOWN_SETTINGS, Setting

    known = {cls.name for cls in KNOWN_SETTINGS}
    for name, spec in SPECS.items():
        if SETTING_PREFIX + name not in known:
            _register(Setting, name, spec)
