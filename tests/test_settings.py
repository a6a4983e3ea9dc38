"""settings.py: parsers, sources, precedence, registration with gunicorn.

hooks.install() is tested in test_hooks.py, and random values for every setting in
test_settings_fuzz.py (against what each setting documents)."""

from __future__ import annotations

import pathlib
from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace

import gunicorn.app.base
import gunicorn.config
import pytest

from gunicorn_slowstart import settings as sm
from gunicorn_slowstart.settings import (
    SPECS,
    SettingError,
    Settings,
    auto_or,
    choice,
    env_name,
    non_negative_float,
    non_negative_int,
    optional_path,
    optional_target,
    parse_one,
    positive_float,
    positive_int,
    resolve,
)

NAN, INF = float("nan"), float("inf")
sm.register()  # what install() and the gunicorn-slowstart command do; importing settings does not


def one_line(text: str) -> bool:
    return len(text.splitlines()) == 1


# -- parsers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value, parsed", [
    ("4", 4), (4, 4), (4.0, 4), (" 4 ", 4), ("\t4\n", 4), ("+4", 4), ("1", 1),
    (10**30, 10**30), (str(10**30), 10**30), (1e20, 10**20),
])
def test_positive_int_accepts(value, parsed):
    result = positive_int(value)
    assert result == parsed and type(result) is int


@pytest.mark.parametrize("value", [
    0, -1, "0", "-1", "x", "", "   ", 1.5, "1.5", "4.0", "1e3", True, False, NAN, INF, -INF,
    "inf", "nan", None, [4], "4 4", "0x10",
])
def test_positive_int_refuses(value):
    with pytest.raises(ValueError, match="whole number"):
        positive_int(value)


def test_non_negative_int_accepts_zero_and_refuses_negatives():
    assert non_negative_int("0") == 0 and non_negative_int(0) == 0 and non_negative_int(" 7 ") == 7
    assert non_negative_int(-0.0) == 0
    for bad in (-1, "-1", 0.5, "x", "", True, NAN, "inf"):
        with pytest.raises(ValueError, match="whole number"):
            non_negative_int(bad)


@pytest.mark.parametrize("value, parsed", [
    ("0", 0.0), (0, 0.0), ("2.5", 2.5), (" 2.5 ", 2.5), (2, 2.0), ("1e3", 1000.0), (10**30, 1e30),
    (1e300, 1e300),
])
def test_non_negative_float_accepts(value, parsed):
    result = non_negative_float(value)
    assert result == parsed and type(result) is float


@pytest.mark.parametrize("value", [
    -0.1, "-1", "x", "", " ", True, False, NAN, "nan", INF, "inf", "-inf", "1e400", 10**400, None, "1,5",
])
def test_non_negative_float_refuses(value):
    with pytest.raises(ValueError):
        non_negative_float(value)


def test_positive_float():
    assert positive_float("0.001") == 0.001 and positive_float(30) == 30.0
    for bad in (0, "0", -1, "0.0", "x", "", True, NAN, "inf"):
        with pytest.raises(ValueError):
            positive_float(bad)


def test_choice_is_case_and_space_insensitive():
    parse = choice("ready", "timer", "off")
    assert parse("READY") == "ready" and parse(" Timer ") == "timer" and parse("off") == "off"
    for bad in ("fast", "", "re ady", None, 1, True, "auto"):
        with pytest.raises(ValueError, match="one of: ready, timer, off"):
            parse(bad)


def test_auto_or():
    parse = auto_or(positive_int)
    for auto in ("auto", " AUTO ", "Auto", None):
        assert parse(auto) == "auto"
    assert parse("4") == 4 and parse(4.0) == 4 and parse(" 4 ") == 4
    for bad in (0, "0", "x", "", 1.5, True, NAN, "inf", "automatic"):
        with pytest.raises(ValueError, match="or 'auto'"):
            parse(bad)


def test_optional_path():
    assert optional_path(None) is None and optional_path("") is None
    assert optional_path("/tmp/t.json") == "/tmp/t.json"
    assert optional_path(pathlib.Path("/tmp/t.json")) == "/tmp/t.json"
    for bad in (5, 1.5, True, ["/tmp"]):
        with pytest.raises(ValueError, match="file path"):
            optional_path(bad)


def test_optional_target():
    def target():
        pass

    assert optional_target(None) is None and optional_target("") is None
    assert optional_target("pkg.jobs:run") == "pkg.jobs:run"
    assert optional_target(target) is target
    for bad in ("pkg.jobs", "pkg:jobs:run", ":run", "pkg.jobs:", ":", 5, True):
        with pytest.raises(ValueError, match="package.module:function"):
            optional_target(bad)


@pytest.mark.parametrize("value", [Decimal("1.5"), Fraction(3, 2)])
def test_whole_numbers_refuse_every_non_integral_number(value):
    with pytest.raises(ValueError):
        positive_int(value)


def test_every_default_is_valid_for_its_own_parser():
    for name, spec in SPECS.items():
        assert spec.parse(spec.default) == spec.default, name


def test_settings_and_specs_agree():
    assert Settings() == Settings(**{name: spec.default for name, spec in SPECS.items()})


# -- parse_one and errors -----------------------------------------------------------------------


def test_parse_one_error_names_source_and_value_on_one_line():
    with pytest.raises(SettingError) as info:
        parse_one("initial", "0", "GUNICORN_SLOWSTART_INITIAL")
    assert str(info.value) == "GUNICORN_SLOWSTART_INITIAL must be a whole number >= 1 or 'auto', got '0'"
    assert isinstance(info.value, RuntimeError)  # gunicorn prints it as one "Error:" line


def test_parse_one_unknown_name():
    with pytest.raises(SettingError, match=r"unknown slow-start setting install\(speed=\.\.\.\)") as info:
        parse_one("speed", 3, "install(speed=...)")
    assert "max_batch" in str(info.value)  # it lists the known names
    assert one_line(str(info.value))


def test_error_repr_keeps_a_multiline_value_on_one_line():
    with pytest.raises(SettingError) as info:
        resolve(environ={"GUNICORN_SLOWSTART_MODE": "fast\nready\r\u2028x"})
    assert one_line(str(info.value))
    assert str(info.value).startswith("GUNICORN_SLOWSTART_MODE must be one of: ready, timer, off, got ")


# -- resolve(): sources and precedence --------------------------------------------------------------


class FakeSetting:
    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


def fake_cfg(**values) -> SimpleNamespace:
    return SimpleNamespace(settings={f"slowstart_{k}": FakeSetting(v) for k, v in values.items()})


def test_resolve_with_nothing_gives_the_defaults():
    assert resolve(environ={}) == Settings()
    assert resolve(None, None, None, {}) == Settings()
    assert resolve(SimpleNamespace(), {}, {}, {}) == Settings()  # a cfg without settings


def test_resolve_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("GUNICORN_SLOWSTART_MAX_BATCH", "6")
    assert resolve().max_batch == 6


@pytest.mark.parametrize("source", ["cfg", "namespace", "keywords", "environ"])
def test_each_source_alone(source):
    kwargs = dict(cfg=None, namespace=None, keywords=None, environ={})
    if source == "cfg":
        kwargs["cfg"] = fake_cfg(max_batch="3", mode="timer", delay=0.5)
    elif source == "namespace":
        kwargs["namespace"] = {"slowstart_max_batch": 3, "slowstart_mode": "TIMER", "slowstart_delay": "0.5",
                               "workers": 8, "bind": "0:80"}
    elif source == "keywords":
        kwargs["keywords"] = {"max_batch": 3, "mode": "timer", "delay": 0.5}
    else:
        kwargs["environ"] = {"GUNICORN_SLOWSTART_MAX_BATCH": " 3 ", "GUNICORN_SLOWSTART_MODE": "timer",
                             "GUNICORN_SLOWSTART_DELAY": "0.5", "PATH": "/bin"}
    resolved = resolve(**kwargs)
    assert (resolved.max_batch, resolved.mode, resolved.delay) == (3, "timer", 0.5)
    assert resolved.initial == SPECS["initial"].default


SOURCES = ["cfg", "namespace", "environ", "keywords"]  # highest precedence first (module docstring)


def given_sources(present: list[str]) -> dict:
    """max_batch given by each source in ``present``, each with its own value."""
    value = {source: i + 2 for i, source in enumerate(SOURCES)}  # cfg 2, namespace 3, environ 4, keywords 5
    return dict(
        cfg=fake_cfg(max_batch=value["cfg"]) if "cfg" in present else fake_cfg(max_batch=None),
        namespace={"slowstart_max_batch": value["namespace"]} if "namespace" in present else {},
        environ={"GUNICORN_SLOWSTART_MAX_BATCH": str(value["environ"])} if "environ" in present else {},
        keywords={"max_batch": value["keywords"]} if "keywords" in present else {},
    )


@pytest.mark.parametrize("mask", range(16))
def test_precedence_cfg_then_config_file_then_environment_then_keywords_then_default(mask):
    present = [source for i, source in enumerate(SOURCES) if mask & (1 << i)]
    resolved = resolve(**given_sources(present))
    expected = {"cfg": 2, "namespace": 3, "environ": 4, "keywords": 5}[present[0]] if present else "auto"
    assert resolved.max_batch == expected


def test_unset_looking_values_fall_through():
    """None from gunicorn or the config file and an empty variable mean "not given"."""
    resolved = resolve(cfg=fake_cfg(initial=None), namespace={"slowstart_initial": None},
                       environ={"GUNICORN_SLOWSTART_INITIAL": ""}, keywords={"initial": 3})
    assert resolved.initial == 3


def test_a_higher_source_hides_a_bad_lower_one_only_if_lower_is_never_read():
    # the environment wins, so the keyword is not read ...
    assert resolve(environ={"GUNICORN_SLOWSTART_INITIAL": "2"}, keywords={"initial": 0}).initial == 2
    # ... but a bad value in the winning source is an error
    with pytest.raises(SettingError, match="GUNICORN_SLOWSTART_INITIAL"):
        resolve(environ={"GUNICORN_SLOWSTART_INITIAL": "0"}, keywords={"initial": 2})


@pytest.mark.parametrize("kwargs, source", [
    (dict(cfg=fake_cfg(max_batch="0")), "slowstart_max_batch"),
    (dict(namespace={"slowstart_max_batch": 0}), "slowstart_max_batch"),
    (dict(keywords={"max_batch": 0}), "install(max_batch=...)"),
    (dict(environ={"GUNICORN_SLOWSTART_MAX_BATCH": "0"}), "GUNICORN_SLOWSTART_MAX_BATCH"),
])
def test_errors_name_the_source_on_one_line(kwargs, source):
    kwargs.setdefault("environ", {})
    with pytest.raises(SettingError) as info:
        resolve(**kwargs)
    message = str(info.value)
    assert message.startswith(f"{source} must be a whole number >= 1 or 'auto', got ")
    assert message.endswith("0") or message.endswith("'0'")
    assert one_line(message)


def test_the_reference_error_message():
    with pytest.raises(SettingError) as info:
        resolve(environ={"GUNICORN_SLOWSTART_INITIAL": "0"})
    assert str(info.value) == "GUNICORN_SLOWSTART_INITIAL must be a whole number >= 1 or 'auto', got '0'"


@pytest.mark.parametrize("key", ["slowstart_max_bach", "slowstart_", "slowstart_MAX_BATCH",
                                 "slowstart_maxbatch"])
def test_unknown_names_in_the_config_file_are_refused(key):
    with pytest.raises(SettingError) as info:
        resolve(namespace={key: 4}, environ={})
    assert f"unknown slow-start setting {key} " in str(info.value).replace(":", " ")
    assert one_line(str(info.value))


@pytest.mark.parametrize("key, hint", [
    ("slowstart_max_bach", "slowstart_max_batch"), ("slowstart_MAX_BATCH", "slowstart_max_batch"),
    ("slowstart_maxbatch", "slowstart_max_batch"), ("slowstart_speed", None),
])
def test_unknown_config_names_suggest_the_near_miss(key, hint):
    with pytest.raises(SettingError) as info:
        resolve(namespace={key: 4}, environ={})
    message = str(info.value)
    assert (f": did you mean {hint}? (known: " in message) if hint else "did you mean" not in message


def test_unknown_environment_variables_suggest_the_near_miss():
    with pytest.raises(SettingError, match=r"GUNICORN_SLOWSTART_MAX_BACH: did you mean "
                                           r"GUNICORN_SLOWSTART_MAX_BATCH\? \(known: "):
        resolve(environ={"GUNICORN_SLOWSTART_MAX_BACH": "4"})
    with pytest.raises(SettingError, match=r"install\(max_batch=\.\.\.\)\?"):
        sm.check_keywords({"max_bach": 4})


@pytest.mark.parametrize("key", ["GUNICORN_SLOWSTART_MAX_BACH", "GUNICORN_SLOWSTART_",
                                 "GUNICORN_SLOWSTART_SPEED"])
def test_unknown_environment_variables_are_refused(key):
    with pytest.raises(SettingError) as info:
        resolve(environ={key: "4"})
    assert f"unknown slow-start setting {key} " in str(info.value).replace(":", " ")
    assert one_line(str(info.value))


def test_unknown_names_are_refused_even_when_empty_or_none():
    with pytest.raises(SettingError, match="GUNICORN_SLOWSTART_SPEED"):
        resolve(environ={"GUNICORN_SLOWSTART_SPEED": ""})
    with pytest.raises(SettingError, match="slowstart_speed"):
        resolve(namespace={"slowstart_speed": None}, environ={})


def test_other_names_are_left_alone():
    env = {"GUNICORN_CMD_ARGS": "-w 4", "GUNICORN_SLOWSTARTX": "1", "SLOWSTART_MODE": "x",
           "gunicorn_slowstart_mode": "x"}
    namespace = {"workers": 4, "slowstart": 1, "install": object(), "SLOWSTART_MODE": "x"}
    assert resolve(namespace=namespace, environ=env) == Settings()


def test_an_environment_variable_in_the_wrong_case_is_refused():
    with pytest.raises(SettingError, match="GUNICORN_SLOWSTART_Max_Batch"):
        resolve(environ={"GUNICORN_SLOWSTART_Max_Batch": "4"})


def test_check_keywords():
    assert sm.check_keywords({"max_batch": "4", "mode": "Timer"}) == {"max_batch": 4, "mode": "timer"}
    with pytest.raises(SettingError, match=r"install\(speed=\.\.\.\)"):
        sm.check_keywords({"speed": 1})


def test_values_already_parsed_parse_again_to_themselves():
    """gunicorn's cfg and install() keywords hold parsed values; resolve() parses them again."""
    def target():
        pass

    parsed = dict(mode="timer", initial=2, max_batch="auto", cpus=3, delay=0.0, ready_timeout=1.5,
                  boot_timeout=0.0, max_boot_failures=0, min_free_mb=100.0, growth="double",
                  timeline="/tmp/t.json", long_worker=target, long_workers="auto")
    assert resolve(fake_cfg(**parsed), environ={}) == Settings(**parsed)
    assert resolve(keywords=parsed, environ={}) == Settings(**parsed)


# -- registration with gunicorn ------------------------------------------------------------------


def registered() -> dict[str, list[type]]:
    found: dict[str, list[type]] = {}
    for cls in gunicorn.config.KNOWN_SETTINGS:
        if (cls.name or "").startswith("slowstart_"):
            found.setdefault(cls.name, []).append(cls)
    return found


def test_every_spec_is_registered_once_with_its_flag():
    found = registered()
    assert set(found) == {f"slowstart_{name}" for name in SPECS}
    for name, spec in SPECS.items():
        (cls,) = found[f"slowstart_{name}"]
        assert issubclass(cls, gunicorn.config.Setting)
        assert cls.cli == ["--slowstart-" + name.replace("_", "-")]
        assert cls.section == "Slow Start"
        assert cls.default is None  # so resolve() can tell "not given" from a value
        assert cls.meta == spec.meta
        assert env_name(name) in cls.desc and cls.short


def test_a_fresh_config_knows_the_settings_and_validates_them():
    cfg = gunicorn.config.Config()
    for name in SPECS:
        assert cfg.settings[f"slowstart_{name}"].get() is None
    cfg.set("slowstart_max_batch", " 4 ")
    cfg.set("slowstart_mode", "TIMER")
    cfg.set("slowstart_timeline", None)
    assert cfg.slowstart_max_batch == 4 and cfg.slowstart_mode == "timer" and cfg.slowstart_timeline is None
    with pytest.raises(SettingError) as info:
        cfg.set("slowstart_max_batch", "0")
    assert str(info.value) == "slowstart_max_batch must be a whole number >= 1 or 'auto', got '0'"
    with pytest.raises(SettingError, match="slowstart_growth must be one of"):
        cfg.set("slowstart_growth", "fast")


def test_flags_parse_like_gunicorn_and_reach_resolve():
    """The path of ``gunicorn-slowstart --slowstart-max-batch 4``: argparse, cfg.set(), resolve()."""
    cfg = gunicorn.config.Config(prog="gunicorn-slowstart")
    parser = cfg.parser()
    args = parser.parse_args(["--slowstart-max-batch", "4", "--slowstart-mode", "timer",
                              "--slowstart-ready-timeout", "2.5", "app:app"])
    for key, value in vars(args).items():
        if value is not None and key != "args":
            cfg.set(key.lower(), value)
    resolved = resolve(cfg, {"slowstart_max_batch": 9}, {"max_batch": 8},
                       {"GUNICORN_SLOWSTART_MAX_BATCH": "7", "GUNICORN_SLOWSTART_DELAY": "1"})
    assert resolved.max_batch == 4 and resolved.mode == "timer"
    assert resolved.ready_timeout == 2.5 and resolved.delay == 1.0
    text = parser.format_help()
    for name in SPECS:
        assert "--slowstart-" + name.replace("_", "-") in text
