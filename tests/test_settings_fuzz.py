"""Fuzzing every slow-start setting: accepted with its documented meaning, or refused in one line.

``settings.resolve()`` is fed random strings, numbers, negatives and huge
values through the environment (and Python objects through a config file's
namespace).  Every value must either come out with the meaning the setting's
help documents, or be refused with a one-line ``SettingError`` that names the
variable; no other exception may escape.  A few real gunicorn runs check the
same at the command line: a refused value stops the master before any fork.
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import get, wait_for

from gunicorn_slowstart import settings as settings_mod
from gunicorn_slowstart.settings import SPECS, SettingError, env_name, resolve

# What each setting's help (and the README's table) documents: ("int", minimum, takes 'auto', maximum),
# ("float", minimum, minimum included, maximum, a value allowed outside the range (0 = off) or None),
# ("choice", options), ("path",), ("target",).
# A setting added to SPECS needs an entry here (test_every_setting_is_documented_here).
DOCUMENTED = {
    "mode": ("choice", ("ready", "timer", "off")),
    "initial": ("int", 1, True, 10_000),
    "max_batch": ("int", 1, True, 10_000),
    "cpus": ("int", 1, True, 65_536),
    "delay": ("float", 0.0, True, 3600.0, None),
    "ready_timeout": ("float", 0.1, True, 86400.0, None),
    "boot_timeout": ("float", 0.1, True, 86400.0, 0.0),
    "max_boot_failures": ("int", 0, False, 1_000_000),
    "min_free_mb": ("float", 0.0, True, 2.0 ** 30, None),
    "growth": ("choice", ("double", "idle")),
    "timeline": ("path",),
    "long_worker": ("target",),
    "long_workers": ("int", 0, True, 10_000),
    "reload_max_failures": ("int", 0, True, 1_000_000),
    "reload_surge": ("int", 1, True, 10_000),
    "fork_from": ("choice", ("master", "template")),
    "template_pre_fork": ("target",),
    "memory_admission": ("switch",),
    "max_worker_age": ("float", 0.0, True, 365 * 86400.0, None),
    "max_worker_memory": ("float", 0.0, True, 2.0 ** 30, None),
    "status_file": ("path",),
    "flap_window": ("float", 0.0, True, 3600.0, None),
    "background_boots": ("choice", ("auto", "off")),
}
SWITCH = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}
NAMES = list(SPECS)
KNOWN_SUFFIXES = {n.upper() for n in SPECS}

ASCII_INT = re.compile(r"[+-]?[0-9]+")
ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
INT_DIGITS = 4300  # Python's default int-from-str limit; longer whole numbers may be refused
NON_FINITE = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)

SPECIAL = [
    "", " ", "\t", "auto", "AUTO", " Auto\n", "-1", "0", "-0", "+0", "1", "+3", " 7 ", "\t7\n",
    "1.0", "1.5", "-1.5", "1e3", "1e309", "-1e309", "1e-400", "5e-324", "nan", "NaN", "inf", "-inf",
    "Infinity", "9" * 40, "-" + "9" * 40, "9" * 4300, "9" * 5000, "1_000", "0x10", "0b1", "1,5", "١٢",
    "abc", "ready", "READY", " timer ", "off", "double", "idle", "IDLE ", "fast", "pkg.mod:fn",
    "a:b:c", ":fn", "pkg:", ":", "/tmp/x.json", "None", "true", "false", "\x00", "１２", "1\n2",
    "\udcff", "7\udc80",  # os.environ decodes undecodable bytes to lone surrogates
]

VALUES = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(),
    st.text(alphabet="0123456789+-.eE_ \t", max_size=12),
    st.integers(min_value=-(10**45), max_value=10**45).map(str),
    st.floats().map(repr),
    st.floats().map(lambda f: f"{f:e}"),
    st.from_regex(r"\s*[+-]?[0-9]{1,30}(\.[0-9]{0,10})?([eE][+-]?[0-9]{1,4})?\s*", fullmatch=True),
    st.sampled_from(["auto", "ready", "timer", "off", "double", "idle"]).map(
        lambda s: s.upper() if len(s) % 2 else f"  {s}\t"),
)

PYTHON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**300), max_value=10**300), st.floats(),
    st.text(), st.binary(max_size=8), st.complex_numbers(), st.decimals(), st.fractions(),
    st.lists(st.integers(), max_size=3), st.tuples(st.integers()), st.just(object()),
)


# -- the oracle -----------------------------------------------------------------------------

ACCEPT, REFUSE, EITHER = "accept", "refuse", "either"


def oracle(name: str, raw: str):
    """(ACCEPT, value) | (REFUSE, None) | (EITHER, check): what the documentation promises.

    EITHER covers spellings the documentation says nothing about (Unicode
    digits, underscores, "1.0" for a whole number): refusing is fine, and
    accepting is fine if the value has the documented type and range.
    """
    if raw == "":
        return ACCEPT, SPECS[name].default  # an empty variable is an unset one
    doc = DOCUMENTED[name]
    text = raw.strip()
    if doc[0] == "choice":
        return (ACCEPT, text.lower()) if text.lower() in doc[1] else (REFUSE, None)
    if doc[0] == "path":
        return ACCEPT, raw
    if doc[0] == "switch":
        return (ACCEPT, SWITCH[text.lower()]) if text.lower() in SWITCH else (REFUSE, None)
    if doc[0] == "target":
        ok = raw.count(":") == 1 and all(raw.split(":"))
        return (ACCEPT, raw) if ok else (REFUSE, None)
    if doc[0] == "int":
        _, low, auto, high = doc
        if auto and text.lower() == "auto":
            return ACCEPT, "auto"
        if ASCII_INT.fullmatch(text) and len(text.lstrip("+-")) <= INT_DIGITS:
            number = int(text)
            return (ACCEPT, number) if low <= number <= high else (REFUSE, None)
        if NON_FINITE.fullmatch(text) or not any(c.isdigit() for c in text):
            return REFUSE, None
        if ASCII_FLOAT.fullmatch(text):
            number = float(text)
            if not math.isfinite(number) or not number.is_integer() or not low <= number <= high:
                return REFUSE, None
        return EITHER, lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
    _, low, inclusive, high, off = doc

    def in_range(value: float) -> bool:
        if value == off:
            return True
        return math.isfinite(value) and (value >= low if inclusive else value > low) and value <= high

    if NON_FINITE.fullmatch(text) or not any(c.isdigit() for c in text):
        return REFUSE, None
    if ASCII_FLOAT.fullmatch(text):
        number = float(text)
        return (ACCEPT, number) if in_range(number) else (REFUSE, None)
    return EITHER, lambda v: isinstance(v, float) and in_range(v)


def assert_refusal(exc: BaseException, names: list[str]) -> None:
    assert isinstance(exc, SettingError), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert len(message.splitlines()) == 1, f"not one line: {message!r}"
    assert any(n in message for n in names), f"{message!r} names none of {names}"


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} chars)"


def check_one(name: str, raw: str) -> None:
    var = env_name(name)
    try:
        result = resolve(environ={var: raw})
    except Exception as exc:  # noqa: BLE001 - anything but a SettingError is the bug we look for
        assert_refusal(exc, [var])
        assert str(exc).startswith(var + " ") and "got " in str(exc), str(exc)  # names it first, quotes it
        if name in DOCUMENTED:
            verdict, _ = oracle(name, raw)
            assert verdict != ACCEPT, f"{var}={short(raw)} is documented as valid but was refused: {short(str(exc))}"
        return
    value = getattr(result, name)
    for other in NAMES:
        if other != name:
            assert getattr(result, other) == SPECS[other].default, other
    if name not in DOCUMENTED:
        return
    verdict, expected = oracle(name, raw)
    assert verdict != REFUSE, f"{var}={short(raw)} should be refused, got {short(value)}"
    if verdict == ACCEPT:
        assert value == expected and type(value) is type(expected), (short(raw), short(value))
    else:
        assert expected(value), f"{var}={short(raw)} accepted as {short(value)}, outside the documented range"


# -- fuzzing resolve() ------------------------------------------------------------------------


def test_every_setting_is_documented_here():
    assert set(SPECS) == set(DOCUMENTED), "new setting: add what its help documents to DOCUMENTED"
    for name, doc in DOCUMENTED.items():
        if doc[0] == "choice":
            quoted = set(re.findall(r"'(\w+)'", SPECS[name].help))
            assert set(doc[1]) <= quoted, (name, SPECS[name].help)
        if doc[0] == "int" and doc[2]:
            assert "'auto'" in SPECS[name].help, name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("raw", SPECIAL, ids=lambda r: repr(r)[:20])
def test_special_values(name, raw):
    check_one(name, raw)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), raw=VALUES)
def test_fuzz_one_setting_from_the_environment(name, raw):
    check_one(name, raw)


@settings(max_examples=300, deadline=None)
@given(values=st.dictionaries(st.sampled_from(NAMES), VALUES, min_size=2, max_size=6))
def test_fuzz_several_settings_at_once(values):
    environ = {env_name(n): v for n, v in values.items()}
    verdicts = {n: oracle(n, v)[0] for n, v in values.items()}
    try:
        result = resolve(environ=environ)
    except Exception as exc:  # noqa: BLE001
        blamable = [env_name(n) for n, v in verdicts.items() if v != ACCEPT]
        assert blamable, f"refused though every value is documented as valid: {exc}"
        assert_refusal(exc, blamable)
        return
    assert REFUSE not in verdicts.values(), (values, result)
    for name, raw in values.items():
        verdict, expected = oracle(name, raw)
        if verdict == ACCEPT:
            assert getattr(result, name) == expected, (name, raw)


@settings(max_examples=300, deadline=None)
@given(name=st.text(min_size=1, max_size=20).filter(lambda n: n not in KNOWN_SUFFIXES), raw=VALUES)
@example(name="MAX_BACH", raw="2")
@example(name="max_batch", raw="2")  # names are upper case: a lower-case one is a typo too
def test_fuzz_unknown_names_are_refused(name, raw):
    """Any other GUNICORN_SLOWSTART_* variable is a typo: refused, naming it."""
    var = settings_mod.ENV_PREFIX + name
    if var.splitlines() != [var]:
        return  # a name that itself breaks the line: see the one-line test below
    with pytest.raises(SettingError) as info:
        resolve(environ={var: raw})
    assert_refusal(info.value, [var])


@settings(max_examples=800, deadline=None)
@given(name=st.sampled_from(NAMES), value=PYTHON_VALUES)
@example(name="boot_timeout", value=0)  # 0 (off) lies outside boot_timeout's range, and is allowed
@example(name="delay", value=1e308)
def test_fuzz_config_file_values(name, value):
    """``slowstart_<name> = <any Python value>`` in a config file: a value or one line naming it."""
    key = settings_mod.SETTING_PREFIX + name
    try:
        result = resolve(environ={}, namespace={key: value})
    except Exception as exc:  # noqa: BLE001
        assert_refusal(exc, [key])
        return
    got = getattr(result, name)
    if value is None:
        assert got == SPECS[name].default
        return
    doc = DOCUMENTED.get(name, ("?",))
    if doc[0] in ("int", "float"):
        assert not isinstance(value, bool), (value, got)
    if doc[0] == "int" and got != "auto":
        assert isinstance(got, int) and doc[1] <= got <= doc[3], (value, got)
        if isinstance(value, (int, float)):
            assert got == value, (value, got)  # never rounded
    elif doc[0] == "int":
        assert doc[2] and isinstance(value, str), (value, got)
    elif doc[0] == "float":
        assert isinstance(got, float) and math.isfinite(got), (value, got)
        assert got == doc[4] or ((got >= doc[1] if doc[2] else got > doc[1]) and got <= doc[3]), (value, got)
        if isinstance(value, (int, float)):
            assert got == float(value), (value, got)
    elif doc[0] == "choice":
        assert got in doc[1], (value, got)


# -- bugs found by fuzzing, fixed; kept as regression tests ------------------------------------


@pytest.mark.parametrize("name", ["delay", "mode"])
def test_huge_int_in_config_file_is_refused_in_one_line(name):
    with pytest.raises(SettingError):
        resolve(environ={}, namespace={settings_mod.SETTING_PREFIX + name: 10**5000})


@pytest.mark.parametrize("raw", ["abc", "1e309"])
def test_min_free_mb_refusal_names_its_unit(raw):
    with pytest.raises(SettingError) as info:
        resolve(environ={"GUNICORN_SLOWSTART_MIN_FREE_MB": raw})
    assert "seconds" not in str(info.value), str(info.value)


def test_unknown_name_with_a_newline_is_refused_in_one_line():
    with pytest.raises(SettingError) as info:
        resolve(environ={"GUNICORN_SLOWSTART_MAX_BATCH\nX": "1"})
    assert len(str(info.value).splitlines()) == 1, str(info.value)


# -- real gunicorn runs ---------------------------------------------------------------------------


def error_lines(log: str, var: str) -> list[str]:
    return [line for line in log.splitlines() if var in line]


@pytest.mark.slow
@pytest.mark.parametrize("name, raw", [
    ("initial", "-1"),
    ("boot_timeout", "abc"),
    ("ready_timeout", "0"),
    ("min_free_mb", "1e309"),
    ("growth", "9" * 40),
    ("long_worker", "abc"),
])
def test_real_run_refuses_bad_value_before_any_fork(server, name, raw):
    var = env_name(name)
    srv = server(workers=3, env={var: raw})
    code = srv.wait_exit(20)
    log = srv.log()
    assert code != 0, log
    assert "Booting worker" not in log and "Traceback" not in log, log
    lines = error_lines(log, var)
    assert len(lines) == 1 and lines[0].startswith("Error: "), log
    assert repr(raw) in lines[0], lines


@pytest.mark.slow
@pytest.mark.parametrize("name, raw, check", [
    ("mode", "", lambda tl: tl["meta"]["mode"] == "ready"),  # empty = unset: the default
    ("max_batch", "10000", lambda tl: tl["meta"]["cap"] == 10000),  # the largest valid
])
def test_real_run_accepts_empty_and_huge_values(server, name, raw, check):
    srv = server(workers=2, boot_cpu=0.1, env={env_name(name): raw})
    timeline = srv.wait_ready(30)
    assert check(timeline), timeline["meta"]
    assert get(srv.port)[0] == 200
    assert "Traceback" not in srv.log() and "Error" not in srv.log()


@pytest.mark.slow
def test_real_run_with_unwritable_timeline_serves_and_warns(server, tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "timeline.json"
    srv = server(workers=2, boot_cpu=0.1, env={"GUNICORN_SLOWSTART_TIMELINE": str(path)})
    wait_for(srv.summary_done, 30, "ramp summary in the log")
    assert get(srv.port)[0] == 200
    assert f"slow start: cannot write timeline {path}" in srv.log()
    assert "Traceback" not in srv.log()


@pytest.mark.slow
def test_real_run_long_workers_without_target_names_the_variable(server):
    srv = server(workers=2, env={"GUNICORN_SLOWSTART_LONG_WORKERS": "9" * 40})
    assert srv.wait_exit(20) != 0
    log = srv.log()
    assert "Booting worker" not in log and "Traceback" not in log, log
    lines = error_lines(log, "GUNICORN_SLOWSTART_LONG_WORKERS")
    assert len(lines) == 1 and lines[0].startswith("Error: "), log

