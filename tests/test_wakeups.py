"""``Wakeups``: the kernel (inotify) wakes the master when a booting worker's heartbeat is touched.

The pure parts are exercised on real descriptors (a real inotify instance, a real unlinked
file touched by a real forked child, real signals); the last test looks at a real master:
it watches exactly its booting workers, none once they are ready, and no worker inherits
the watch or the wake-up pipe.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import tempfile
import time

import pytest
from support import GUNICORN_MAJOR, run_python, wait_for

from gunicorn_slowstart.wakeups import Wakeups

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@pytest.fixture
def heartbeat():
    """An unlinked file held open, as gunicorn's WorkerTmp is."""
    fd, name = tempfile.mkstemp(prefix="wgunicorn-")
    os.unlink(name)
    yield fd
    os.close(fd)


def _touch_from_child(fd: int) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        now = time.monotonic()
        os.utime(fd, (now, now))  # what WorkerTmp.notify() does
        os._exit(0)
    os.waitpid(pid, 0)


def test_a_touch_by_another_process_wakes_the_wait_and_is_drained(heartbeat):
    wakeups = Wakeups(signal_pipe=False)
    try:
        assert wakeups.watch(1, heartbeat) and wakeups.watching(1) and wakeups.watched()
        (inotify,) = wakeups.fds()
        assert not _readable(inotify)
        _touch_from_child(heartbeat)
        assert _readable(inotify)
        started = time.monotonic()
        assert wakeups.wait(30.0) == []  # returns at once: the event is there
        assert time.monotonic() - started < 30.0
        assert not _readable(inotify)  # drained: the next wait sleeps
    finally:
        wakeups.close()
    assert wakeups.fds() == [] and not wakeups.watched()


def test_a_worker_no_longer_booting_wakes_nothing(heartbeat):
    wakeups = Wakeups(signal_pipe=False)
    try:
        assert wakeups.watch(7, heartbeat)
        wakeups.keep({8})  # 7 is ready or gone
        assert not wakeups.watching(7) and not wakeups.watched()
        wakeups.wait(0)  # the kernel says IN_IGNORED for the removed watch: one spurious look at most
        _touch_from_child(heartbeat)
        assert not _readable(wakeups.fds()[0])
    finally:
        wakeups.close()


def test_what_cannot_be_watched_is_polled():
    wakeups = Wakeups(signal_pipe=False)
    try:
        assert not wakeups.watch(1, 987654)  # no such descriptor: the arbiter polls this one
        assert not wakeups.watching(1)
    finally:
        wakeups.close()


def test_a_signal_ends_the_wait_through_the_wake_up_pipe(heartbeat):
    """gunicorn 24+ only queues a signal: the C-level handler's byte must end the wait."""
    caught = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: caught.append(1))
    wakeups = Wakeups(signal_pipe=True)
    try:
        assert wakeups.watch(1, heartbeat) and wakeups.watched() and len(wakeups.fds()) == 2
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            time.sleep(0.2)
            os.kill(os.getppid(), signal.SIGUSR1)
            os._exit(0)
        started = time.monotonic()
        wakeups.wait(30.0)
        assert time.monotonic() - started < 30.0 and caught
        os.waitpid(pid, 0)
        wakeups.poke()  # gunicorn's wakeup() from another thread
        started = time.monotonic()
        wakeups.wait(30.0)
        assert time.monotonic() - started < 30.0
    finally:
        wakeups.close()
        signal.signal(signal.SIGUSR1, previous)
    assert signal.set_wakeup_fd(-1) == -1  # put back as it was


def test_a_wake_up_fd_someone_else_owns_is_left_alone(heartbeat):
    read, write = os.pipe2(os.O_NONBLOCK)
    signal.set_wakeup_fd(write)
    wakeups = Wakeups(signal_pipe=True)
    try:
        assert not wakeups.watch(1, heartbeat)  # no way to be woken by signals: poll instead
        assert not wakeups.watched() and wakeups.fds() == []
        assert signal.set_wakeup_fd(write) == write  # still theirs
    finally:
        wakeups.close()
        signal.set_wakeup_fd(-1)
        os.close(read)
        os.close(write)


def test_taken_later_it_falls_back_to_polling(heartbeat):
    """An event loop in the master (a preloaded app) sets its own wake-up fd after ours."""
    read, write = os.pipe2(os.O_NONBLOCK)
    wakeups = Wakeups(signal_pipe=True)
    try:
        assert wakeups.watch(1, heartbeat)
        signal.set_wakeup_fd(write)
        assert not wakeups.watched()  # noticed before the next wait
        assert signal.set_wakeup_fd(write) == write and wakeups.fds() == []
    finally:
        wakeups.close()
        signal.set_wakeup_fd(-1)
        os.close(read)
        os.close(write)


def test_a_forked_child_keeps_nothing(heartbeat):
    wakeups = Wakeups(signal_pipe=True)
    try:
        assert wakeups.watch(1, heartbeat)
        fds = wakeups.fds()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            closed = all(_closed(fd) for fd in fds)
            clean = closed and signal.set_wakeup_fd(-1) == -1 and not wakeups.watched()
            os.write(write, b"1" if clean else b"0")
            os._exit(0)
        os.close(write)
        assert os.read(read, 1) == b"1"
        os.close(read)
        os.waitpid(pid, 0)
        assert wakeups.watched()  # the parent's are untouched
    finally:
        wakeups.close()


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


# -- a real master ------------------------------------------------------------------------------


def _inotify_watches(pid: int) -> int | None:
    """How many inotify watches process ``pid`` holds (None: it has no inotify descriptor)."""
    found = None
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    found = (found or 0) + sum(line.startswith("inotify ") for line in f)
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_real_master_watches_its_booting_workers_only(server):
    srv = server(workers=3, boot_cpu=1.0, env={"GUNICORN_SLOWSTART_INITIAL": "1"})
    seen = wait_for(lambda: _inotify_watches(srv.pid), 30, "the master watching a booting worker")
    assert seen >= 1
    timeline = srv.wait_ready(60)
    assert all(p["ready"] is not None for p in timeline["processes"])
    wait_for(lambda: _inotify_watches(srv.pid) == 0, 10, "no watch left once all are ready")
    for worker in srv.workers():
        assert _inotify_watches(worker) is None, f"worker {worker} inherited the master's inotify descriptor"
    if GUNICORN_MAJOR >= 24:  # the wake-up pipe is the master's, not a worker's
        master_pipes = {os.readlink(f"/proc/{srv.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{srv.pid}/fd")}
        for worker in srv.workers():
            worker_fds = {os.readlink(f"/proc/{worker}/fd/{fd}") for fd in os.listdir(f"/proc/{worker}/fd")}
            shared = {p for p in master_pipes & worker_fds if p.startswith("pipe:")}
            assert not shared, f"worker {worker} shares pipes {shared} with the master"
    srv.signal(signal.SIGTTIN)  # a fourth worker: watched while it boots, signals still handled
    srv.wait_ready(60, count=2)
    wait_for(lambda: _inotify_watches(srv.pid) == 0, 10, "no watch left after TTIN's ramp")


def test_a_signal_handler_poking_while_the_master_closes_does_not_deadlock():
    """gunicorn 23's signal handlers (``signal``, ``handle_chld``) call ``wakeup()``, which pokes,
    in the main thread: a SIGCHLD arriving while that same thread holds the lock in ``close()``
    (a late child at shutdown) or ``_fail()`` must not block it on a lock it holds itself."""
    code = r'''
import os, signal, tempfile
from gunicorn_slowstart import wakeups as mod
fd, name = tempfile.mkstemp(); os.unlink(name)
w = mod.Wakeups(signal_pipe=False)
assert w.watch(1, fd)
signal.signal(signal.SIGUSR1, lambda *_: w.poke())  # gunicorn 23: handler -> wakeup() -> poke()
real_close, sent = os.close, []
def close(fd):
    if not sent:
        sent.append(1)
        os.kill(os.getpid(), signal.SIGUSR1)  # arrives while close() holds the lock
    real_close(fd)
os.close = close
w.close()
print("closed")
'''
    import subprocess
    try:
        out = run_python(code)
    except subprocess.TimeoutExpired:
        pytest.fail("the master deadlocked: a signal handler's poke() waited on the lock close() held")
    assert out.strip() == "closed"


class _Tmp:
    """gunicorn's WorkerTmp, as far as the arbiter reads it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def last_update(self) -> float:
        return os.fstat(self.fd).st_mtime


def test_a_worker_that_notified_before_its_watch_is_looked_at_next_tick(heartbeat):
    """A template's fork (the app already loaded) can notify before the master, which learns
    its pid from the template's reply, adds the watch: no event will come for that notify, so
    the master must not wait WATCHED_TICK (or longer) for it."""
    from types import SimpleNamespace
    from unittest import mock

    from gunicorn.arbiter import Arbiter

    from gunicorn_slowstart import arbiter as arbiter_mod
    from gunicorn_slowstart.boots import Boots
    from gunicorn_slowstart.policy import PolicyConfig, SlowStartPolicy
    from gunicorn_slowstart.rollout import Rollout

    arbiter = arbiter_mod.SlowStartArbiter.__new__(arbiter_mod.SlowStartArbiter)
    arbiter.log, arbiter.status = mock.Mock(), mock.Mock()
    arbiter.slowstart = SimpleNamespace(mode="ready", memory_admission=False)
    arbiter.policy = SlowStartPolicy(PolicyConfig(max_batch=4), 0.0)
    arbiter._pool_link, arbiter.templates, arbiter._wake_at = None, None, None
    arbiter._terminating, arbiter._guard_look, arbiter._tracked, arbiter.WORKERS = {}, None, {}, {}
    arbiter._reloading, arbiter.rollout, arbiter._place = False, Rollout(), lambda key, now: None
    arbiter._wakeups = Wakeups(signal_pipe=False)
    arbiter._boots = Boots()
    fd, name = tempfile.mkstemp(prefix="wgunicorn-")
    os.unlink(name)
    files = {os.getpid(): heartbeat, os.getppid(): fd}  # two live pids, two heartbeat files

    def fork(notified: bool):
        def spawn_worker(self):
            pid = os.getppid() if notified else os.getpid()
            self.WORKERS[pid] = SimpleNamespace(tmp=_Tmp(files[pid]))
            if notified:
                _touch_from_child(files[pid])  # the child notified before spawn_worker() returned
            return pid
        return spawn_worker

    try:
        with mock.patch.object(Arbiter, "spawn_worker", fork(False)):
            arbiter.spawn_worker()
        assert arbiter._wakeups.watching(os.getpid())  # its notify will be an event
        assert arbiter._timeout(1.0) == arbiter_mod.WATCHED_TICK
        with mock.patch.object(Arbiter, "spawn_worker", fork(True)):
            arbiter.spawn_worker()
        assert arbiter._timeout(1.0) == arbiter_mod.RAMP_TICK  # no event will come for the other: look
    finally:
        arbiter._wakeups.close()
        os.close(fd)


def _wakes(pid: int) -> int:
    """How often the master's main thread went to sleep (its voluntary context switches)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))


@pytest.mark.slow
def test_a_loading_template_and_booting_long_workers_wake_the_master_by_their_reports(server):
    """A template and long workers report over sockets (the template's, the pool manager's):
    while they load the master waits on those (and wakes every WATCHED_TICK for time-outs), not
    every RAMP_TICK: 40 passes of its loop a second would come out of the CPU they boot on.
    Counted as the master's voluntary context switches, which its timeline's fsyncs add to
    (a few a second): seconds-long loads keep that noise well below a poll's 40."""
    srv = server(workers=1, boot_cpu=3.0, env={"GUNICORN_SLOWSTART_FORK_FROM": "template",
                                               "GUNICORN_SLOWSTART_LONG_WORKER": "examples.jobs:run",
                                               "GUNICORN_SLOWSTART_LONG_WORKERS": "2",
                                               "EXAMPLE_JOB_BOOT_CPU": "3.0"})

    def rows(kind: str) -> list[dict]:
        if kind == "template":
            return srv.timeline().get("templates", [])
        return [p for p in srv.timeline().get("processes", []) if p["kind"] == kind]

    def wakes_while(what: str, loading, loaded) -> float:
        wait_for(loading, 60, f"{what} loading")
        wakes, started = _wakes(srv.pid), time.monotonic()
        wait_for(loaded, 60, f"{what} loaded")
        return (_wakes(srv.pid) - wakes) / (time.monotonic() - started)

    rate = wakes_while("the template", lambda: rows("template") and rows("template")[0]["loaded"] is None,
                       lambda: rows("template")[0]["loaded"] is not None)
    assert rate < 25, f"the master woke {rate:.0f} times a second while the template loaded (a 25 ms poll: 40)"
    rate = wakes_while("two long workers",
                       lambda: len(rows("long")) == 2 and all(p["ready"] is None for p in rows("long")),
                       lambda: any(p["ready"] is not None for p in rows("long")))
    assert rate < 25, f"the master woke {rate:.0f} times a second while long workers booted (a 25 ms poll: 40)"
    wait_for(lambda: all(p["ready"] is not None for p in rows("long")), 60, "both long workers ready")


def test_a_booting_long_worker_waits_on_reports_where_it_can_else_ticks():
    """The wait's length while only a long worker boots: WATCHED_TICK (for its time-outs)
    once the descriptors are open, RAMP_TICK where they cannot be (its report would wait)."""
    from types import SimpleNamespace
    from unittest import mock

    from gunicorn_slowstart import arbiter as arbiter_mod
    from gunicorn_slowstart.boots import Boots
    from gunicorn_slowstart.keys import ProcKey
    from gunicorn_slowstart.policy import LONG, PolicyConfig, SlowStartPolicy

    arbiter = arbiter_mod.SlowStartArbiter.__new__(arbiter_mod.SlowStartArbiter)
    arbiter.slowstart = SimpleNamespace(mode="ready")
    arbiter.policy = SlowStartPolicy(PolicyConfig(max_batch=4), 0.0)
    arbiter._pool_link = SimpleNamespace(fileno=lambda: 99)
    arbiter.templates, arbiter._wake_at, arbiter._terminating, arbiter._guard_look = None, None, {}, None
    arbiter._boots = Boots()
    key = ProcKey(LONG, 0)
    arbiter._boots.add(key, 0.0)
    arbiter.policy.spawned(key, 0.0, LONG)
    arbiter._wakeups = Wakeups(signal_pipe=False)
    try:
        assert arbiter._evented() and arbiter._wakeups.usable()
        assert arbiter._report_fds() == [99]
        assert arbiter._timeout(1.0) == arbiter_mod.WATCHED_TICK
        arbiter._wakeups.close()
        with mock.patch.object(Wakeups, "_opened", lambda self: False):  # no inotify here
            assert not arbiter._evented()
            assert arbiter._timeout(1.0) == arbiter_mod.RAMP_TICK
        arbiter._boots.pop(key)
        assert arbiter._timeout(1.0) == 1.0  # nothing boots: gunicorn's own second
    finally:
        arbiter._wakeups.close()
