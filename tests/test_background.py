"""Background boots: workers beyond the window boot at SCHED_IDLE and are raised when their turn comes.

The policy's rules with plain values, the simulator's verdicts, and a real master whose
workers' scheduling policies are read from the kernel while they boot.
"""

from __future__ import annotations

import contextlib
import os

import psutil
import pytest
from support import APPS, ROOT, cgroup, get, wait_for

from benchmarks import simulate as sim
from gunicorn_slowstart import priority
from gunicorn_slowstart.policy import HTTP, LONG, PolicyConfig, SlowStartPolicy


def policy(**kw) -> SlowStartPolicy:
    kw.setdefault("max_batch", 2)
    kw.setdefault("background", 1)
    p = SlowStartPolicy(PolicyConfig(**kw), 0.0)
    p.cpu_idle(2.0, 0.0)
    p.restart(0.0)
    return p


def spawn(p: SlowStartPolicy, decision, now: float, first_key: int) -> list[int]:
    keys = list(range(first_key, first_key + decision.spawn))
    for key in keys:
        p.spawned(key, now)
    return keys


def test_first_step_one_foreground_the_rest_background_and_the_tail_merged():
    """3 workers, 2 idle CPUs: all three at once, only the first in the foreground."""
    p = policy()
    d = p.decide(0.0, 3)
    assert d.spawn == 3 and d.promote == ()
    spawn(p, d, 0.0, 0)
    assert [p.is_background(k) for k in range(3)] == [False, True, True]
    p.ready(0, 1.0)
    d = p.decide(1.0, 0)
    assert set(d.promote) == {1, 2}  # nothing left to fork: every boot shares the CPUs
    assert not p.is_background(1) and not p.is_background(2)


def test_after_the_first_response_the_oldest_background_boot_takes_each_free_place():
    p = policy()
    d = p.decide(0.0, 16)
    assert d.spawn == 3  # the window (2 idle CPUs) and one background boot
    spawn(p, d, 0.0, 0)
    p.ready(0, 1.0)
    d = p.decide(1.0, 13)
    assert d.promote == (1, 2)  # the window's two places, oldest first
    assert d.spawn == 1
    spawn(p, d, 1.0, 3)
    assert p.is_background(3)  # the new one waits in the background
    p.ready(1, 1.5)
    d = p.decide(1.5, 12)
    assert d.promote == (3,) and d.spawn == 1


def test_background_boots_are_timed_from_their_promotion():
    """A boot that waited in the background neither looks slow nor goes stale while it waits."""
    p = policy(ready_timeout=5.0)
    spawn(p, p.decide(0.0, 16), 0.0, 0)
    assert p.decide(4.9, 16).stale == ()
    p.ready(0, 5.5)  # the probe took 5.5 s; keys 1, 2 waited
    d = p.decide(6.0, 13)
    assert d.stale == () and set(d.promote) == {1, 2}
    p.ready(1, 8.0)  # 2 s after its promotion: not slow against the probe's 5.5 s
    assert not p.ramp.slowed
    assert p.decide(10.9, 12).stale == ()


def test_a_boot_that_waited_in_the_background_is_no_measure_of_a_boot():
    """The first response's boot crashes late; the oldest background boot, half booted at idle
    priority, is promoted and is the ramp's first ready.  Its time since promotion is half a
    boot: as the ramp's reference it made every whole boot after it look slow, and the ramp
    lost its tail merge and idle growth (``slowed``) though nothing contended."""
    p = policy()
    spawn(p, p.decide(0.0, 8), 0.0, 0)
    p.exited(0, 0.9)  # not expected: a boot failure
    assert p.decide(0.9, 6).promote == (1,)
    p.ready(1, 1.45)  # 0.55 s after its promotion, 1.45 s after its fork
    assert p.ramp.probe_boot == pytest.approx(1.45)  # the first response is out; a whole boot bounds it
    d = p.decide(1.45, 6)
    assert d.promote == (2,)
    spawn(p, d, 1.45, 10)
    p.ready(2, 1.9)
    p.ready(10, 2.45)  # a whole, uncontended 1.0 s boot
    assert not p.ramp.slowed
    assert p.ramp.boot_times == [pytest.approx(1.0)]  # only whole boots are samples


def test_long_workers_and_other_modes_never_boot_in_the_background():
    p = policy()
    d = p.decide(0.0, 0, 3)
    for key in range(d.spawn_long):
        p.spawned(("long", key), 0.0, LONG)
    assert not any(p.is_background(("long", k)) for k in range(d.spawn_long))
    for mode in ("timer", "off"):
        q = policy(mode=mode)
        spawn(q, q.decide(0.0, 4), 0.0, 0)
        assert not any(q.is_background(k) for k in range(4))
    plain = policy(background=0)
    assert plain.decide(0.0, 3).spawn == 2  # no background: the first step is the idle CPUs


def test_hold_still_promotes():
    p = policy()
    spawn(p, p.decide(0.0, 3), 0.0, 0)
    p.ready(0, 1.0)
    p.set_hold(True)
    assert set(p.decide(1.0, 0).promote) == {1, 2}
    assert p.booting_count(HTTP) == 2


# -- the simulator ------------------------------------------------------------------------------


def test_three_on_two_cores_first_after_one_boot_all_after_one_and_a_half():
    """Where equal priorities must choose (first + all >= 3 boots), background boots give both."""
    stock = sim.simulate("off", 3, 2, fork_cost=0.0, detect_lag=0.0)
    ready = sim.simulate("ready", 3, 2, fork_cost=0.0, detect_lag=0.0, background=1)
    assert ready.first_ready == pytest.approx(1.0)
    assert ready.all_ready == pytest.approx(1.5)
    assert ready.all_ready <= stock.all_ready


def test_no_cell_without_neighbours_is_slower_than_stock():
    """With a quota or without: under one, the boots are confined to its whole CPUs."""
    rows = sim.run_grid([2, 8, 16], ns=[1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 32], overhead=sim.CONTENTION, background=1)
    ready = [r for r in rows if r["mode"] == "ready" and r["neighbours"] == 0]
    assert any(r["quota"] is not None for r in ready)
    assert all(r["vs_stock"] <= 1.0 + 1e-9 for r in ready), [
        (r["cores"], r["quota"], r["n"], round(r["vs_stock"], 3)) for r in ready if r["vs_stock"] > 1.0]
    assert all(r["first_ready"] <= 1.1 * r["lone_boot"] for r in ready)


def test_confinement_under_a_quota_below_the_cores():
    """As many CPUs as the quota holds whole, the idlest first; none without such a quota."""
    assert priority.confinement(None, {0, 1}) is None
    assert priority.confinement(2.0, {0, 1}) is None
    assert priority.confinement(1.0, {0, 1}) == (0,)
    assert priority.confinement(0.5, {0, 1}) == (0,)
    assert priority.confinement(1.0, {0, 1}, {0: 5.0, 1: 90.0}) == (1,)
    assert priority.confinement(2.5, range(8), {3: 9.0, 6: 8.0, 1: 8.0}) == (1, 3)
    assert priority.confinement(4.0, {2, 5, 7, 9, 11}) == (2, 5, 7, 9)
    assert "quota" not in (priority.unavailable(1.0, 2) or "")


def test_sixteen_on_two_cores_beats_stocks_contention_in_the_background():
    stock = sim.simulate("off", 16, 2, overhead=sim.CONTENTION)
    ready = sim.simulate("ready", 16, 2, overhead=sim.CONTENTION, background=1)
    assert ready.all_ready <= 0.95 * stock.all_ready


def test_idle_priority_is_what_the_kernel_gives():
    """The mechanism itself, on this machine: a forked child lowered and raised back."""
    if priority.unavailable():
        pytest.skip(priority.unavailable())
    pid = os.fork()
    if pid == 0:  # the child waits to be killed
        try:
            os.read(os.pipe()[0], 1)
        finally:
            os._exit(0)
    try:
        prios = priority.Priorities()
        assert prios.lower(pid) and priority.policy_of(pid) == os.SCHED_IDLE
        assert prios.ready(pid) and priority.policy_of(pid) == os.SCHED_OTHER
        assert pid not in prios.lowered
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


# -- a real master ------------------------------------------------------------------------------

THREADED_APP = '''
import subprocess
import sys
import threading

_stop = threading.Event()
threading.Thread(target=_stop.wait, name="pool-thread", daemon=True).start()  # started at import
# a helper process started at import; it exits when the worker does (its stdin closes)
_helper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)

from examples.app import app  # noqa: E402  (burns EXAMPLE_BOOT_CPU at import)
'''


def _policies(srv) -> dict[int, set[int]]:
    """Worker pid -> the scheduling policies of its threads (the kernel's answer)."""
    found = {}
    for proc in srv.children():
        try:
            if "worker [" not in " ".join(proc.cmdline()):
                continue
        except psutil.Error:
            continue
        found[proc.pid] = {priority.policy_of(tid) for tid in priority.threads(proc.pid)} - {None}
    return found


@pytest.mark.slow
def test_a_real_ramp_boots_in_the_background_and_serves_at_normal_priority(server, tmp_path):
    """3 workers: beyond the first, boots start at SCHED_IDLE while the first response boots;
    once ready, every thread of every worker (one started at import) and the process each
    started at import are SCHED_OTHER."""
    if priority.unavailable():
        pytest.skip(priority.unavailable())
    code = tmp_path / "code"
    code.mkdir()
    (code / "threaded_app.py").write_text(THREADED_APP)
    srv = server(app="threaded_app:app", workers=3, boot_cpu=1.0,
                 env={"PYTHONPATH": os.pathsep.join([str(code), str(ROOT), str(APPS)])})
    seen_idle: set[int] = set()

    def booting_seen() -> bool:
        for pid, policies in _policies(srv).items():
            if os.SCHED_IDLE in policies:
                seen_idle.add(pid)
        return "workers ready in" in srv.log()

    wait_for(booting_seen, 60, "the ramp", interval=0.02)
    assert seen_idle, srv.tail()
    assert "in the background" in srv.log()
    final = _policies(srv)
    assert len(final) == 3 and all(p == {os.SCHED_OTHER} for p in final.values()), final
    assert all(len(priority.threads(pid)) >= 2 for pid in final)  # the import's thread was raised too
    helpers = [child.pid for pid in final for child in psutil.Process(pid).children()]
    assert len(helpers) == 3 and all(priority.policy_of(pid) == os.SCHED_OTHER for pid in helpers)
    assert get(srv.port)[0] == 200


@pytest.mark.slow
def test_under_a_quota_boots_share_its_cpus_and_serve_on_all(server, tmp_path):
    """1 CPU of quota on 2+ cores: every booting worker runs on one CPU (the background boot
    yields to the foreground one there instead of spending the quota elsewhere); ready
    workers, their threads and the process each started get the master's whole mask back."""
    from benchmarks.cpulimit import CpuLimit

    home = os.sched_getaffinity(0)
    if priority.unavailable() or len(home) < 2:
        pytest.skip(priority.unavailable() or "needs 2 CPUs")
    code = tmp_path / "code"
    code.mkdir()
    (code / "threaded_app.py").write_text(THREADED_APP)
    seen: dict[int, set[frozenset[int]]] = {}
    idle: set[int] = set()
    with cgroup(CpuLimit(1.0), "CPU") as limit:
        srv = server(app="threaded_app:app", workers=3, boot_cpu=0.5, preexec_fn=limit.preexec_fn(),
                     env={"PYTHONPATH": os.pathsep.join([str(code), str(ROOT), str(APPS)])})

        def booting_seen() -> bool:
            for pid, policies in _policies(srv).items():
                with contextlib.suppress(OSError):
                    seen.setdefault(pid, set()).add(frozenset(os.sched_getaffinity(pid)))
                if os.SCHED_IDLE in policies:
                    idle.add(pid)
            return "workers ready in" in srv.log()

        wait_for(booting_seen, 90, "the ramp", interval=0.02)
        log = srv.log()
        assert "booting workers share CPU" in log and "in the background" in log, srv.tail()
        assert idle, srv.tail()
        assert all(any(len(mask) == 1 for mask in masks) for pid, masks in seen.items() if pid in idle), seen
        final = _policies(srv)
        assert len(final) == 3 and all(p == {os.SCHED_OTHER} for p in final.values()), final
        for pid in final:
            procs = [pid, *(child.pid for child in psutil.Process(pid).children())]
            masks = {frozenset(os.sched_getaffinity(tid)) for proc in procs for tid in priority.threads(proc)}
            assert masks == {frozenset(home)}, (pid, masks)
        assert get(srv.port)[0] == 200
        srv.stop()


def test_a_reload_raises_the_last_ramps_background_boots_and_its_first_worker_boots_in_front():
    p = policy(max_batch=4)
    spawn(p, p.decide(0.0, 3), 0.0, 0)  # 0 in front, 1 and 2 in the background
    p.cpu_idle(4.0, 0.4)
    p.restart(0.5)  # SIGHUP during the ramp; 4 CPUs idle by now
    d = p.decide(0.5, 2)
    assert set(d.promote) == {1, 2}  # the old generation is no longer held back
    new = spawn(p, d, 0.5, 10)
    assert new == [10, 11]
    assert not p.is_background(10) and p.is_background(11)  # the new first response boots in front


def test_a_worker_that_could_not_be_lowered_counts_as_raised():
    p = policy(ready_timeout=5.0)
    spawn(p, p.decide(0.0, 3), 0.0, 0)
    p.raised(1, 0.1)
    assert not p.is_background(1)
    assert p.decide(5.2, 0).stale == (0, 1)  # its clock runs from the moment it was known to run


def test_off_mode_raises_every_background_boot():
    p = policy()
    spawn(p, p.decide(0.0, 3), 0.0, 0)
    p.reconfigure(PolicyConfig(mode="off", max_batch=2, background=1))
    assert set(p.decide(0.1, 0).promote) == {1, 2}


def test_tree_finds_a_workers_children_and_falls_back_to_psutil(monkeypatch):
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        found = priority.tree(os.getpid())
        assert found[0] == os.getpid() and child.pid in found
        real_open = open

        def no_children_file(path, *args, **kwargs):  # a kernel without CONFIG_PROC_CHILDREN
            if str(path).endswith("/children"):
                raise FileNotFoundError(path)
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr("builtins.open", no_children_file)
        found = priority.tree(os.getpid())
        assert found[0] == os.getpid() and child.pid in found
    finally:
        child.stdin.close()
        child.wait(10)


class _Refusing(priority.Priorities):
    """A kernel (or a security policy) that refuses to raise: what the master must survive."""

    def raise_(self, pid: int) -> bool:
        if pid not in self.lowered:
            return True
        self.broken = f"cannot raise worker {pid}'s priority: Operation not permitted"
        return False


def _arbiter_with(prios):
    from unittest import mock

    from gunicorn_slowstart.arbiter import SlowStartArbiter
    from gunicorn_slowstart.boots import Boots
    from gunicorn_slowstart.keys import ProcKey

    arbiter = SlowStartArbiter.__new__(SlowStartArbiter)
    arbiter.log, arbiter.status, arbiter.rollout = mock.Mock(), mock.Mock(), mock.Mock()
    arbiter.status.meta = {"background": 1}
    arbiter._terminate = mock.Mock()
    arbiter._priorities, arbiter._boots, arbiter._ramp = prios, Boots(), None
    arbiter.policy = policy()
    for pid in (100, 101):
        arbiter.policy.spawned(ProcKey(HTTP, pid), 0.0)
        arbiter._boots.add(ProcKey(HTTP, pid), 0.0)
    prios.lowered.add(101)
    return arbiter, ProcKey


def test_a_worker_that_cannot_be_raised_is_stopped_not_served_and_background_boots_end():
    arbiter, key = _arbiter_with(_Refusing())
    arbiter._on_ready(101, 1.0)
    assert "cannot raise worker 101" in arbiter.log.error.call_args[0][1]
    arbiter._terminate.assert_called_once()
    assert arbiter._terminate.call_args[0][0] == 101 and arbiter._terminate.call_args[1]["expected"]
    arbiter.status.ready.assert_not_called()  # it never counts as ready: it is stopped before it serves
    arbiter.rollout.ready.assert_not_called()
    assert arbiter.policy.config.background == 0 and arbiter.status.meta["background"] == 0
    arbiter._promote((key(HTTP, 100),))  # a promotion that fails stops that worker too
    assert arbiter._terminate.call_count == 1  # 100 was never lowered: nothing to raise


def test_a_reload_that_turns_background_boots_off_ends_the_confinement():
    """SIGHUP with background_boots = off (or mode timer, an explicit initial / max_batch): the
    next boots are not confined to the quota's whole CPUs any more."""
    from types import SimpleNamespace
    from unittest import mock

    from gunicorn_slowstart.arbiter import SlowStartArbiter
    from gunicorn_slowstart.cpus import CpuReport

    arbiter = SlowStartArbiter.__new__(SlowStartArbiter)
    arbiter.log, arbiter._background_said = mock.Mock(), None
    arbiter._confine_quota, arbiter._idle_per_cpu = None, {}
    arbiter._priorities = priority.Priorities()
    arbiter._priorities.home = {0, 1, 2, 3}
    arbiter._cpu_report = mock.Mock(spec=CpuReport, host=4, affinity=4, cgroup_quota=1.0)
    on = SimpleNamespace(background_boots="auto", mode="ready", max_batch="auto", initial="auto")
    with mock.patch("gunicorn_slowstart.arbiter.priority_unavailable", return_value=None):
        assert arbiter._background(on) == 1  # a master that may raise workers back: confined under the quota
    arbiter._choose_confinement()
    assert arbiter._priorities.confine_to is not None and len(arbiter._priorities.confine_to) == 1
    for off in ({"background_boots": "off"}, {"mode": "timer"}, {"initial": 2}, {"max_batch": 2}):
        assert arbiter._background(SimpleNamespace(**{**vars(on), **off})) == 0
        arbiter._choose_confinement()  # the reload's ramp
        assert arbiter._priorities.confine_to is None, off


def test_a_worker_gone_before_it_is_confined_does_not_end_background_boots():
    """gunicorn 23 reaps in its SIGCHLD handler: a worker that died at once is gone before the
    master confines it.  That is its boot failure, not a kernel refusing to confine."""
    prios = priority.Priorities()
    prios.confine_to = (0,)
    gone = psutil.Popen(["true"])
    gone.wait()  # reaped: its pid names nothing now
    assert prios.confine(gone.pid) and prios.broken is None


def test_release_also_frees_a_thread_started_while_it_went_through_the_threads(monkeypatch):
    """A serving gthread worker starts pool threads as requests come: one started by a thread
    not yet released inherits the confined mask, and must not serve on fewer CPUs for ever."""
    prios = priority.Priorities()
    prios.home, prios.confined = {0, 1, 2, 3}, {100: (1,)}
    listed = iter([[100], [100, 101]])  # thread 101 appears after the first listing
    monkeypatch.setattr(priority, "tree", lambda pid: [pid])
    monkeypatch.setattr(priority, "threads", lambda pid: next(listed, [100, 101]))
    masks = {100: {1}, 101: {1}}
    monkeypatch.setattr(priority.os, "sched_getaffinity", lambda tid: masks[tid])
    monkeypatch.setattr(priority.os, "sched_setaffinity", lambda tid, cpus: masks.__setitem__(tid, set(cpus)))
    prios.release(100)
    assert masks == {100: {0, 1, 2, 3}, 101: {0, 1, 2, 3}}


def test_a_worker_that_pins_itself_keeps_its_cpus(monkeypatch):
    """A post_fork hook that pins each worker to a CPU (NUMA, cache locality): before the
    master confines it, or after, the worker serves on the CPU it chose, not the master's mask."""
    masks = {}
    monkeypatch.setattr(priority.os, "sched_getaffinity", lambda tid: masks[tid])
    monkeypatch.setattr(priority.os, "sched_setaffinity", lambda tid, cpus: masks.__setitem__(tid, set(cpus)))
    monkeypatch.setattr(priority, "tree", lambda pid: [pid])
    monkeypatch.setattr(priority, "threads", lambda pid: [pid])
    prios = priority.Priorities()
    prios.home, prios.confine_to = {0, 1, 2, 3}, (0,)
    masks[100] = {3}  # pinned by its post_fork before the master looked
    assert prios.confine(100) and masks[100] == {3}
    prios.release(100)
    assert masks[100] == {3}
    masks[101] = {0, 1, 2, 3}
    assert prios.confine(101) and masks[101] == {0}
    masks[101] = {2}  # its post_fork pinned it after the master confined it
    prios.release(101)
    assert masks[101] == {2}
    masks[102] = {0, 1, 2, 3}
    assert prios.confine(102) and masks[102] == {0}
    prios.release(102)  # a worker that left its mask alone gets the master's back
    assert masks[102] == {0, 1, 2, 3}


def test_a_boot_that_cannot_be_confined_boots_in_front_and_background_boots_end(monkeypatch):
    """sched_setaffinity refused (a cpuset changed under the master): that boot is not lowered
    (unconfined, it would spend the quota on a free core) and no later boot is either."""
    import errno

    prios = priority.Priorities()
    prios.confine_to = (0,)

    def refuse(pid, cpus):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(priority.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(priority.os, "sched_setaffinity", refuse)
    arbiter, key = _arbiter_with(prios)
    arbiter._confine_quota = 1.0
    lowered = []
    monkeypatch.setattr(prios, "lower", lambda pid: lowered.append(pid) or True)
    arbiter.policy.spawned(key(HTTP, 102), 0.0)
    assert arbiter.policy.is_background(key(HTTP, 102))
    arbiter._place(key(HTTP, 102), 0.0)
    assert "cannot confine worker 102 to CPUs 0" in arbiter.log.error.call_args[0][1]
    assert lowered == [] and not arbiter.policy.is_background(key(HTTP, 102))
    assert arbiter.policy.config.background == 0 and arbiter.status.meta["background"] == 0
    assert prios.confine_to is None and arbiter._confine_quota is None
    arbiter.status.background.assert_not_called()
