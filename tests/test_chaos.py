"""Chaos: a signal at a random moment of the ramp must always leave the master in a clean state.

Each trial is seeded (``random.Random(seed)``): the seed, the delay and the
signals are in every assertion message, so a failing trial can be replayed
alone: ``CHAOS_SEED=<base> pytest 'tests/test_chaos.py::test_signal_at_a_random_moment_of_the_ramp[trial<n>]'``
(seed = base + n; the base defaults to ``BASE_SEED``).
A trial starts a master with 8 workers, waits a random moment of the ramp
(0-1.5 s after the first fork), sends one signal (sometimes two in a row),
then checks the end state:

* TERM, INT, QUIT: the master exits with 0 within graceful_timeout + 1 s and
  no process it started is left;
* HUP, TTIN, TTOU: the master settles on the expected number of ready
  workers (8; +1 per TTIN, -1 per TTOU; HUP re-reads ``workers`` from the
  config, so it resets the count to 8), each counted once, no zombie
  children; then SIGTERM stops it cleanly.
"""

from __future__ import annotations

import os
import random
import signal
import time

import psutil
import pytest
from support import ready_at, running, try_get, wait_for

pytestmark = pytest.mark.slow

TRIALS = 30
BASE_SEED = int(os.environ.get("CHAOS_SEED", "20240611"))
WORKERS = 8
GRACEFUL = 5  # the fixture's --graceful-timeout
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
STOPPING = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
ENV = {"GUNICORN_SLOWSTART_MAX_BATCH": "2"}


def plan(trial: int) -> tuple[int, float, list[signal.Signals]]:
    """The seed, the delay after the first fork and the signals of one trial.

    The first signal cycles through the six so that 30 trials cover each five
    times; the rest (when, and whether a second signal follows) is random.
    """
    seed = BASE_SEED + trial
    rng = random.Random(seed)
    delay = rng.uniform(0.0, 1.5)
    sigs = [SIGNALS[trial % len(SIGNALS)]]
    if rng.random() < 0.35:
        sigs.append(rng.choice(SIGNALS))
    return seed, delay, sigs


def expected_workers(sigs) -> int:
    count = WORKERS
    for sig in sigs:
        if sig == signal.SIGHUP:
            count = WORKERS  # gunicorn's reload re-reads cfg.workers
        elif sig == signal.SIGTTIN:
            count += 1
        elif sig == signal.SIGTTOU and count > 1:
            count -= 1
    return count


def handled(log: str, sigs) -> bool:
    """The master logged handling every signal we sent (so the timeline is not stale)."""
    for sig in set(sigs):
        name = signal.Signals(sig).name[3:].lower()
        if log.count(f"Handling signal: {name}") < list(sigs).count(sig):
            return False
    return True


def stable(predicate, hold: float):
    """A predicate that is true once ``predicate`` has held for ``hold`` s in a row."""
    since = [None]

    def check():
        if not predicate():
            since[0] = None
            return False
        now = time.monotonic()
        since[0] = since[0] or now
        return now - since[0] >= hold

    return check


@pytest.mark.parametrize("trial", range(TRIALS), ids=lambda t: f"trial{t}")
def test_signal_at_a_random_moment_of_the_ramp(server, trial):
    seed, delay, sigs = plan(trial)
    names = "+".join(signal.Signals(s).name for s in sigs)
    srv = server(workers=WORKERS, boot_cpu=0.15, env=ENV)

    def ctx() -> str:
        return f"seed={seed} delay={delay:.3f} signals={names}\n{srv.tail(40)}"

    def waited(predicate, timeout: float, what: str, interval: float = 0.05):
        try:
            return wait_for(predicate, timeout, what, interval)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {ctx()}") from None

    waited(lambda: "slow start: spawned" in srv.log(), 20, "first fork", interval=0.01)
    time.sleep(delay)  # the deliberate random moment of the ramp
    srv.remember_children()
    sent_at = 0.0
    hup_wall = None
    for i, sig in enumerate(sigs):
        if i and sigs[i - 1] not in STOPPING:
            # two pending signals are handled lowest number first (HUP before TTOU), whatever
            # order they were sent in: wait for the first, so the expected count is the real one
            waited(lambda done=sigs[:i]: handled(srv.log(), done), 10, "the previous signal handled", 0.005)
        if sig == signal.SIGHUP:
            hup_wall = time.time()
        srv.signal(sig)
        if sig in STOPPING and not sent_at:
            sent_at = time.monotonic()
        srv.remember_children()

    if sent_at:
        deadline = sent_at + GRACEFUL + 1
        while srv.proc.poll() is None and time.monotonic() < deadline:
            srv.remember_children()
            time.sleep(0.02)
        code = srv.proc.poll()
        assert code == 0, f"master exit {code} (None: still running {GRACEFUL + 1} s after the signal); {ctx()}"
        forked = {p["pid"] for p in srv.timeline().get("processes", [])}
        left = running(srv.known | forked)
        assert not left, f"left behind after the master exited: {left}; {ctx()}"
    else:
        target = expected_workers(sigs)
        waited(lambda: handled(srv.log(), sigs), 10, "the signals handled")
        wall_t0 = waited(lambda: srv.timeline().get("wall_t0"), 5, "timeline")
        t_hup = None if hup_wall is None else hup_wall - wall_t0

        def settled() -> bool:
            procs = srv.timeline().get("processes", [])
            live = [p for p in procs if p["exit"] is None]
            if len(live) != target or any(p["ready"] is None for p in live):
                return False
            if t_hup is not None and any(p["fork"] < t_hup for p in live):
                return False  # a worker of the generation before the reload is still counted
            return sorted(p["pid"] for p in live) == srv.workers()

        try:
            wait_for(stable(settled, 0.3), 20, f"{target} ready workers, each once")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {ctx()}") from None
        zombies = [c.pid for c in srv.children() if _status(c) == psutil.STATUS_ZOMBIE]
        assert not zombies, f"zombie children once settled: {zombies}; {ctx()}"
        assert len(srv.workers()) == target, ctx()
        srv.signal(signal.SIGTERM)
        code = srv.wait_exit(GRACEFUL + 1)
        assert code == 0, f"master exit {code}; {ctx()}"
        left = running(srv.known | {p["pid"] for p in srv.timeline().get("processes", [])})
        assert not left, f"left behind: {left}; {ctx()}"
    log = srv.log()
    assert "Traceback" not in log and "Unhandled exception" not in log, ctx()


def _status(proc: psutil.Process) -> str | None:
    try:
        return proc.status()
    except psutil.NoSuchProcess:
        return None


# -- the record of a shutdown --------------------------------------------------------------


@pytest.mark.parametrize("sig, ignore_term", [
    (signal.SIGTERM, False),
    pytest.param(signal.SIGTERM, True),
    pytest.param(signal.SIGINT, False),
    pytest.param(signal.SIGQUIT, False),
], ids=["TERM", "TERM-worker-ignores-TERM", "INT", "QUIT"])
def test_timeline_records_every_exit_at_shutdown(server, tmp_path, sig, ignore_term):
    """After the master is gone, its timeline shows every worker it forked as exited, on time.

    uvicorn workers ignore SIGQUIT (uvicorn-worker only flags itself), so INT
    and QUIT end with gunicorn's SIGKILL after the graceful timeout, as does a
    worker that ignores SIGTERM.
    """
    env = {}
    if ignore_term:
        (tmp_path / "fault").mkdir()
        env = {"FAULT_DIR": str(tmp_path / "fault"), "FAULT_HANG_BOOT": "1", "FAULT_HANG_IGNORE_TERM": "1"}
    srv = server(app="fault_hang:app" if ignore_term else "examples.app:app", workers=2, boot_cpu=0.1,
                 env=env)
    wall_t0 = wait_for(lambda: srv.timeline().get("wall_t0"), 20, "the timeline")
    # the two forks may come together (initial = auto) and claim their boots in either order
    wait_for(lambda: len(srv.timeline().get("processes", [])) == 2
             and any(p["ready"] is not None for p in srv.timeline()["processes"]), 20,
             "a ready worker and a second fork")
    t_sig = time.time() - wall_t0
    srv.signal(sig)
    assert srv.wait_exit(GRACEFUL + 1) == 0, srv.tail()
    procs = srv.timeline()["processes"]
    assert all(p["exit"] is not None for p in procs), procs
    for proc in procs:
        if proc["exit_signal"] in (None, sig):  # it left on the signal itself: at once
            assert proc["exit"] - t_sig < 3.0, (t_sig, proc)  # well before the 5 s graceful timeout


# -- a stop signal that lands right after a fork -----------------------------------------

def test_ttou_right_after_a_fork_leaves_no_extra_worker(server):
    srv = server(workers=2, boot_cpu=0.1)
    srv.wait_ready(30)
    for round_ in range(12):
        srv.signal(signal.SIGTTIN)
        srv.signal(signal.SIGTTOU)  # both in one batch: TTOU stops the worker TTIN just forked
        wait_for(lambda n=round_: srv.log().count("Handling signal: ttou") > n, 5, "TTOU handled")
        try:
            wait_for(lambda: len(srv.workers()) == 2, 4, "2 workers again")
        except AssertionError:
            procs = srv.timeline().get("processes", [])
            extra = [p for p in procs if p["pid"] in srv.workers()]
            raise AssertionError(f"round {round_}: {len(srv.workers())} workers for 2: {extra}\n"
                                 f"{srv.tail(12)}") from None


# -- SIGHUP with a broken deploy at a random moment --------------------------------------------

DEPLOY_TRIALS = 2


@pytest.mark.parametrize("trial", range(DEPLOY_TRIALS), ids=lambda t: f"trial{t}")
def test_broken_deploy_at_a_random_moment_never_stops_a_serving_master(server, tmp_path, trial):
    """Once a worker serves, the app is broken (import error) and SIGHUP sent at a random
    moment of the rest of the ramp: the master keeps serving; the fixed code + SIGHUP then
    settles on the full count; SIGTERM leaves nothing behind."""
    seed = BASE_SEED + 1000 + trial
    delay = random.Random(seed).uniform(0.0, 1.0)
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    srv = server(app="deploy_app:app", workers=4, boot_cpu=0.15,
                 env={**ENV, "DEPLOY_DIR": str(deploy)})

    def ctx() -> str:
        return f"seed={seed} delay={delay:.3f}\n{srv.tail(40)}"

    def waited(predicate, timeout: float, what: str):
        try:
            return wait_for(predicate, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {ctx()}") from None

    def live() -> list[dict]:
        return [p for p in srv.timeline().get("processes", []) if p["exit"] is None]

    waited(lambda: any(p["ready"] is not None for p in live()), 20, "a serving worker")
    time.sleep(delay)  # the deliberate random moment
    (deploy / "fault").write_text("import")
    wall_t0 = waited(lambda: srv.timeline().get("wall_t0"), 5, "timeline")
    t_hup = time.time() - wall_t0
    srv.signal(signal.SIGHUP)
    srv.remember_children()
    waited(lambda: "abandoned" in srv.log(), 20, "the broken reload abandoned")
    waited(stable(lambda: srv.proc.poll() is None and try_get(srv.port, timeout=2) is not None, 1.0), 10,
           "the master serving after the broken reload")
    # the target stays 4 after the abandon: all serve, or the missing places are respawned (backing off)
    abandoned = next(line for line in srv.log().splitlines() if "abandoned" in line)
    assert (f"with {WORKERS // 2} workers;" in abandoned
            or f"of {WORKERS // 2} workers serve after the abandoned reload" in srv.log()), ctx()

    (deploy / "fault").write_text("ok")
    t_fix = time.time() - wall_t0
    procs = [p for p in srv.timeline().get("processes", []) if p["kind"] == "http"]
    before = ready_at(procs, t_hup)
    probes = [t_hup + i * 0.02 for i in range(int((t_fix - t_hup) / 0.02) + 1)]
    assert min(ready_at(procs, t) for t in probes) >= before, f"fewer than {before} ready after the SIGHUP; {ctx()}"
    srv.signal(signal.SIGHUP)

    def settled() -> bool:
        procs = live()
        return (len(procs) == WORKERS // 2 and all(p["ready"] is not None and p["fork"] >= t_fix for p in procs)
                and sorted(p["pid"] for p in procs) == srv.workers())

    waited(stable(settled, 0.3), 30, "4 ready workers of the fixed code")
    srv.remember_children()
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(GRACEFUL + 1) == 0, ctx()
    left = running(srv.known | {p["pid"] for p in srv.timeline().get("processes", [])})
    assert not left, f"left behind: {left}; {ctx()}"
    log = srv.log()
    assert "Unhandled exception" not in log and "Reason:" not in log, ctx()
