"""``Wakeups``: what ends the master's wait while workers boot.

Theory of operation
-------------------
A booting worker is ready when it first touches its heartbeat file
(``_compat.has_notified``).  The master used to look at every booting
worker's file every ``RAMP_TICK`` (25 ms): 40 passes of gunicorn's main loop
and of the arbiter's bookkeeping a second, for the whole ramp, about half a
millisecond of the master's CPU each.  Under a 1-CPU container quota that
came out of the CPU the workers boot on (the master spent 0.2 s more than
stock's over an 8-worker ramp, most of slow start's gap to stock's all-ready
there), and a ready worker waited up to a tick before the master saw it.

Here the master asks the kernel instead.  An inotify watch (``IN_ATTRIB``:
``notify()`` is an ``os.utime``; ``IN_MODIFY`` too, for a worker class whose
notify writes) on each booting worker's heartbeat file makes one descriptor
readable the moment any of them notifies.  The file is
already unlinked, so the watch is added through ``/proc/self/fd/N``; it is
removed once the worker is ready or gone (``keep``), so serving workers'
heartbeats never wake the master.

Signals must end the same wait.  gunicorn 23's handlers write to its own
pipe, which the wait selects on too.  gunicorn 24+ only queue the signal, so
``signal.set_wakeup_fd`` points Python's C-level handler at a pipe of ours,
and the arbiter's ``wakeup()`` (which gunicorn's control-socket thread calls)
writes there as well (``poke``).  Should something else take the wake-up
fd (an event loop in a preloaded app), the master notices at its next wait
and goes back to polling: a signal is never left waiting.

Long workers and a template report over sockets (the pool manager's, the
loading template's): ``wait()`` selects on those too (``extra``), so their
readiness wakes the master as an HTTP worker's does.

An event only says "look": the arbiter still compares the mtime, so a
spurious wake is one pass, never a false ready.  Whatever cannot be watched
(not Linux, no libc, the per-user watch limit) makes ``watch()`` answer
False, and the arbiter polls every ``RAMP_TICK`` while such a worker boots,
as before.  Descriptors are opened at the first watch, after gunicorn has
daemonized, and a forked child (a worker, a template, the pool manager)
closes them and drops the wake-up fd at once (``os.register_at_fork``): a
worker's signals must not wake the master.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import signal
import sys
import threading
import weakref
from collections.abc import Hashable, Iterable

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002  # <sys/inotify.h>: written (a worker class whose notify writes)
IN_ATTRIB = 0x00000004  # metadata changed (WorkerTmp.notify's utime)
_OPEN: weakref.WeakSet[Wakeups] = weakref.WeakSet()  # to close in a forked child


def _inotify_libc() -> ctypes.CDLL | None:
    """libc with the inotify calls, or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        for name in ("inotify_init1", "inotify_add_watch", "inotify_rm_watch"):
            getattr(libc, name)
    except (OSError, AttributeError):
        return None
    return libc


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        pass  # closed under us (a forked child): nothing left to read


class Wakeups:
    """An inotify descriptor watching booting workers' heartbeat files, and (gunicorn 24+)
    a signal wake-up pipe: ``wait()`` returns on either, or at the time-out."""

    def __init__(self, signal_pipe: bool) -> None:
        self._signal_pipe = signal_pipe  # gunicorn 24+: signals need a pipe of ours
        self._libc: ctypes.CDLL | None = None
        self._inotify = -1
        self._wake = (-1, -1)  # (read, write)
        self._watches: dict[Hashable, int] = {}
        self._failed = False  # inotify or the wake-up pipe could not be had: poll
        self._closing = threading.Lock()  # poke() comes from another thread: never write to a reused fd
        _OPEN.add(self)

    def watch(self, key: Hashable, fd: int) -> bool:
        """Wake on the next touch of the file open as ``fd`` (a booting worker's heartbeat).
        False when it cannot be watched: the caller polls for this one."""
        self.forget(key)  # a reused pid's old watch
        if not self._opened():
            return False
        wd = self._libc.inotify_add_watch(self._inotify, f"/proc/self/fd/{fd}".encode(),
                                         IN_ATTRIB | IN_MODIFY)
        if wd < 0:
            log.debug("cannot watch heartbeat fd %s: %s", fd, os.strerror(ctypes.get_errno()))
            return False
        self._watches[key] = wd
        return True

    def watching(self, key: Hashable) -> bool:
        return key in self._watches

    def watched(self) -> bool:
        """Is any boot watched, and can a signal end the wait?"""
        return bool(self._watches) and self._signals_wake()

    def can_wait(self) -> bool:
        """Can ``wait()`` end on events and on signals (opening the descriptors at the first
        call)?  For waits on ``extra`` descriptors alone: long workers' and templates' reports."""
        return self._opened() and self._signals_wake()

    def usable(self) -> bool:
        """Open and not failed: what ``can_wait()`` last found, without opening anything."""
        return self._inotify >= 0 and (not self._signal_pipe or self._wake[1] >= 0)

    def forget(self, key: Hashable) -> None:
        wd = self._watches.pop(key, None)
        if wd is not None and self._inotify >= 0:
            self._libc.inotify_rm_watch(self._inotify, wd)  # EINVAL if the file is gone: already removed

    def keep(self, keys: Iterable[Hashable]) -> None:
        """Stop watching every key not in ``keys`` (ready, gone)."""
        keys = set(keys)
        for key in [k for k in self._watches if k not in keys]:
            self.forget(key)

    def fds(self) -> list[int]:
        """The descriptors ``wait()`` selects on."""
        return [fd for fd in (self._inotify, self._wake[0]) if fd >= 0]

    def wait(self, timeout: float, extra: Iterable[int] = ()) -> list[int]:
        """Sleep until a watched file is touched, a signal arrives, one of ``extra`` is
        readable, or ``timeout`` s pass; drain ours and return the readable ``extra``."""
        poller = select.poll()
        extra = list(extra)
        for fd in self.fds() + extra:
            poller.register(fd, select.POLLIN)
        try:
            readable = {fd for fd, _ in poller.poll(max(0.0, timeout) * 1000.0)}
        except InterruptedError:  # pragma: no cover - PEP 475 retries; a handler raising ends it
            readable = set()
        for fd in self.fds():
            if fd in readable:
                _drain(fd)
        return [fd for fd in extra if fd in readable]

    def poke(self) -> None:
        """End a wait from another thread (gunicorn's ``wakeup()``).  Never blocks: gunicorn 23
        calls ``wakeup()`` from its signal handlers, which run in the main thread, maybe while
        that thread holds the lock in ``close()`` / ``_fail()``; whoever holds it is closing the
        pipe (no wait on it follows) or is another poke (its byte ends the wait)."""
        if not self._closing.acquire(blocking=False):
            return
        try:
            if self._wake[1] >= 0:
                try:
                    os.write(self._wake[1], b"\0")
                except OSError:
                    pass  # full: a wake is pending anyway
        finally:
            self._closing.release()

    def close(self) -> None:
        with self._closing:
            self._release(reset_signal_fd=True)

    # -- internals -----------------------------------------------------------------

    def _opened(self) -> bool:
        if self._inotify >= 0:
            return True
        if self._failed:
            return False
        self._libc = _inotify_libc()
        fd = -1 if self._libc is None else self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return self._fail("no inotify" if self._libc is None else os.strerror(ctypes.get_errno()))
        self._inotify = fd
        if self._signal_pipe and not self._open_signal_pipe():
            return False
        return True

    def _open_signal_pipe(self) -> bool:
        read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            previous = None
        if previous != -1:  # someone else's (or no main thread): leave it to them
            if previous is not None:
                signal.set_wakeup_fd(previous)
            os.close(read)
            os.close(write)
            return self._fail("the signal wake-up fd is taken")
        self._wake = (read, write)
        return True

    def _signals_wake(self) -> bool:
        """gunicorn 24+: is the wake-up fd still ours?  Checked before every wait, since an
        event loop in the master (a preloaded app) may set its own."""
        if not self._signal_pipe:
            return True
        if self._wake[1] < 0:
            return False
        try:
            previous = signal.set_wakeup_fd(self._wake[1], warn_on_full_buffer=False)
        except ValueError:
            return False
        if previous == self._wake[1]:
            return True
        signal.set_wakeup_fd(previous)
        return self._fail("the signal wake-up fd was taken")

    def _fail(self, why: str) -> bool:
        log.debug("slow start: polling booting workers every tick: %s", why)
        self._failed = True
        with self._closing:
            self._release(reset_signal_fd=False)
        return False

    def _release(self, reset_signal_fd: bool) -> None:
        """Close everything (the caller holds ``_closing``, or is a forked child: one thread)."""
        if reset_signal_fd and self._wake[1] >= 0:
            try:
                previous = signal.set_wakeup_fd(-1)
                if previous != self._wake[1]:
                    signal.set_wakeup_fd(previous)  # not ours: put it back
            except ValueError:
                pass  # not the main thread: the fd is closed below, a write to it fails silently
        for fd in (self._inotify, *self._wake):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._inotify, self._wake = -1, (-1, -1)
        self._watches.clear()


def _after_fork_in_child() -> None:
    for wakeups in list(_OPEN):
        wakeups._closing = threading.Lock()  # the parent's may have been held by its poking thread
        wakeups._release(reset_signal_fd=True)
        wakeups._failed = True  # a child never watches with the master's descriptors


os.register_at_fork(after_in_child=_after_fork_in_child)
