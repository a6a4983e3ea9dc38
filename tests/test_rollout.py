"""The generation state machine (``rollout.py``) and the pieces of the SIGHUP path that are
pure: plain values in, decisions out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gunicorn_slowstart.arbiter import _config_error
from gunicorn_slowstart.policy import HTTP, BackoffConfig, PolicyConfig, SlowStartPolicy
from gunicorn_slowstart.rollout import Rollout
from gunicorn_slowstart.settings import SettingError, resolve

# -- gunicorn's halt on exit 3 / 4 -----------------------------------------------------------


def test_first_start_keeps_gunicorns_fail_fast():
    rollout = Rollout()
    rollout.spawned(10)
    assert rollout.halts(10, never_give_up=False)


def test_never_give_up_means_no_halt_even_on_a_first_start():
    rollout = Rollout()
    rollout.spawned(10)
    assert not rollout.halts(10, never_give_up=True)


def test_once_a_worker_served_a_boot_error_is_a_boot_failure():
    rollout = Rollout()
    rollout.spawned(10)
    rollout.ready(10)
    rollout.spawned(11)  # a respawn
    assert not rollout.halts(11, never_give_up=False)
    rollout.exited(10)
    assert not rollout.halts(11, never_give_up=False), "the policy halts when none serves, not gunicorn"


def test_a_reload_before_anything_served_is_still_not_halted_by_gunicorn():
    rollout = Rollout()
    rollout.spawned(10)
    rollout.begin_reload(1)
    rollout.spawned(11)
    assert not rollout.halts(11, never_give_up=False)
    assert rollout.halts(10, never_give_up=False)  # the first start's worker still fails fast


# -- reloads ------------------------------------------------------------------------------------


def served(rollout: Rollout, *pids: int) -> None:
    for pid in pids:
        rollout.spawned(pid)
        rollout.ready(pid)


def test_the_first_failure_of_the_new_generation_abandons_a_reload_by_default():
    rollout = Rollout()
    served(rollout, 1, 2)
    assert rollout.begin_reload(1) == 2
    rollout.spawned(3)
    assert rollout.in_reload(3) and not rollout.in_reload(1)
    assert rollout.boot_failed(3, "worker 3 died")
    reload = rollout.abandon()
    assert (reload.generation, reload.failures, reload.last_failure) == (2, 1, "worker 3 died")
    assert rollout.serving == 1 and rollout.reload_failed == 2 and rollout.reload is None
    assert not rollout.in_reload(3)


def test_old_workers_failing_do_not_count_against_the_reload():
    rollout = Rollout()
    served(rollout, 1)
    rollout.spawned(2)  # booting when SIGHUP came
    rollout.begin_reload(1)
    assert not rollout.boot_failed(2, "old")
    assert rollout.reload.failures == 0


def test_max_failures_counts_the_new_generation_and_zero_never_abandons():
    rollout = Rollout()
    served(rollout, 1)
    rollout.begin_reload(3)
    answers = []
    for pid in (10, 11, 12):
        rollout.spawned(pid)
        answers.append(rollout.boot_failed(pid, f"worker {pid}"))
    assert answers == [False, False, True]
    rollout.abandon()
    rollout.begin_reload(0)
    for pid in range(20, 60):
        rollout.spawned(pid)
        assert not rollout.boot_failed(pid, "x")


def test_a_completed_reload_serves_and_the_next_sighup_tries_again_after_a_failure():
    rollout = Rollout()
    served(rollout, 1)
    rollout.begin_reload(1)
    rollout.spawned(2)
    assert rollout.boot_failed(2, "x")
    rollout.abandon()
    assert rollout.begin_reload(1) == 3
    served(rollout, 4)
    assert rollout.reload.ready == 1
    rollout.reload_done()
    assert rollout.serving == 3 and rollout.reload_failed is None and rollout.reload is None


def test_a_second_sighup_supersedes_a_reload_in_progress():
    rollout = Rollout()
    served(rollout, 1)
    rollout.begin_reload(1)
    rollout.spawned(2)
    rollout.begin_reload(1)
    assert not rollout.in_reload(2)
    assert not rollout.boot_failed(2, "the superseded generation")


@given(st.lists(st.sampled_from(["spawn", "ready", "fail", "exit", "hup", "done"]), max_size=60),
       st.integers(min_value=0, max_value=3))
def test_invariants_under_any_event_order(events, max_failures):
    """Serving never runs ahead of the newest generation; a reload is abandoned at most once;
    a halt never applies once a worker was ready."""
    rollout = Rollout()
    pid = 0
    live: list[int] = []
    for event in events:
        if event == "spawn":
            pid += 1
            rollout.spawned(pid)
            live.append(pid)
        elif event == "ready" and live:
            rollout.ready(live[-1])
        elif event == "fail" and live:
            victim = live.pop()
            if rollout.boot_failed(victim, "x"):
                assert rollout.reload is not None
                rollout.abandon()
                assert rollout.reload is None
            rollout.exited(victim)
        elif event == "exit" and live:
            rollout.exited(live.pop(0))
        elif event == "hup":
            rollout.begin_reload(max_failures)
        elif event == "done":
            rollout.reload_done()
        assert 1 <= rollout.serving <= rollout.generation
        if rollout.ever_served:
            assert not any(rollout.halts(p, never_give_up=False) for p in live)
        assert set(rollout.of) == set(live)


# -- a serving server is never exhausted ----------------------------------------------------------


def test_http_exhaustion_halts_only_while_no_worker_is_ready():
    policy = SlowStartPolicy(PolicyConfig(max_batch=2, http_backoff=BackoffConfig(max_failures=2)), 0.0)
    policy.spawned(1, 0.0)
    policy.ready(1, 1.0)
    now = 2.0
    for pid in (2, 3, 4):
        policy.spawned(pid, now)
        policy.exited(pid, now + 0.5)
        now = policy.backoff[HTTP].next_at
        decision = policy.decide(now, 1)
        assert HTTP not in decision.exhausted and decision.spawn == 1, decision
    assert policy.backoff[HTTP].failures == 3  # past max_failures, still retrying
    policy.exited(1, now)  # the last serving worker is gone
    assert HTTP in policy.decide(now, 2).exhausted


# -- refused config files: one line ----------------------------------------------------------------


def test_config_errors_are_one_line():
    invalid = "Invalid value for slowstart_max_batch: 0\n\nError: slowstart_max_batch must be >= 1, got 0\n"
    assert _config_error(SystemExit(1), invalid) == "slowstart_max_batch must be >= 1, got 0"
    failed = ("Failed to read config file: /etc/g.py\nTraceback (most recent call last):\n  File ...\n"
              "NameError: name 'x' is not defined\n")
    assert _config_error(SystemExit(1), failed) == ("Failed to read config file: /etc/g.py: "
                                                    "NameError: name 'x' is not defined")
    assert _config_error(SystemExit("Error: gunicorn-slowstart: unknown slow-start setting install(a=...)"),
                         "") == "gunicorn-slowstart: unknown slow-start setting install(a=...)"
    assert _config_error(SettingError("slowstart_x is bad"), "") == "slowstart_x is bad"
    assert _config_error(ValueError("odd"), "") == "ValueError: odd"
    assert _config_error(SystemExit(2), "") == "the config file exited with status 2"


def test_reload_settings_defaults_and_values():
    settings = resolve(environ={})
    assert settings.reload_max_failures == "auto" and settings.reload_surge == "auto"
    settings = resolve(environ={"GUNICORN_SLOWSTART_RELOAD_MAX_FAILURES": "0",
                                "GUNICORN_SLOWSTART_RELOAD_SURGE": "2"})
    assert settings.reload_max_failures == 0 and settings.reload_surge == 2


# -- the record of a failed reload ------------------------------------------------------------------


def test_timeline_marks_the_failed_reload_and_the_file_still_loads(tmp_path):
    from gunicorn_slowstart.timeline import Timeline, load

    t = Timeline(100.0, 1.79e9)
    t.ramp_started(100.0, 2, "start")
    t.ramp_done(101.0)
    t.reload_failed(101.5, 2, 1, "ignored: the last ramp is not a reload")
    t.ramp_started(102.0, 2, "reload")
    t.reload_failed(102.5, 2, 1, "worker 7 died 0.4 s after fork (exit code 3)")
    data = t.to_dict()
    assert "failed" not in data["ramps"][0]
    assert data["ramps"][1]["failed"] == {"t": 2.5, "generation": 2, "serving": 1,
                                          "cause": "worker 7 died 0.4 s after fork (exit code 3)"}
    assert data["ramps"][1]["end"] == 2.5
    path = tmp_path / "t.json"
    t.write(str(path))
    assert load(str(path))["ramps"][1]["failed"]["generation"] == 2


class _Log:
    prefix = "svc."

    def __init__(self) -> None:
        self.sent: list[tuple[str, float]] = []

    def gauge(self, name: str, value: float) -> None:
        self.sent.append((name, value))

    def warning(self, *args) -> None:
        raise AssertionError(args)


def test_status_says_reload_failed_to_statsd_and_systemd(monkeypatch, tmp_path):
    import socket

    from gunicorn_slowstart import status as status_mod

    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        log = _Log()
        reporter = status_mod.StatusReporter(log, 0.0, 0.0)
        reporter.ramp_started(1.0, 4, "reload")
        reporter.reload_failed(2.0, 2, 1, "worker 7 died")
        assert sock.recv(4096) == b"STATUS=reload failed, serving generation 1"
    assert log.sent == [("gunicorn.slowstart.reload_failed", 1), ("gunicorn.slowstart.generation", 1)]
    reporter.reload_done(3)
    assert log.sent[-2:] == [("gunicorn.slowstart.reload_failed", 0), ("gunicorn.slowstart.generation", 3)]
