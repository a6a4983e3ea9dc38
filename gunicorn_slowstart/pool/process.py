"""Process plumbing shared by the pool's three processes: signalling a long worker's
process group, making a process a group leader, the parent-death signal, the
process title, draining a wake-up pipe."""

from __future__ import annotations

import errno
import os
import sys


def signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def own_group(pid: int) -> None:
    """Make ``pid`` (0: this process) the leader of its own process group."""
    try:
        os.setpgid(pid, 0)
    except OSError:
        pass  # the child already did it, or already exited


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads (a long worker and its children); the pid alone if
    it leads none (it has not called setpgid yet: the manager's setpgid makes that a short instant)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        signal_pid(pid, sig)


def drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError, OSError):
        pass


def die_with_parent(sig: int) -> None:
    """Linux: get ``sig`` when the parent dies (the manager also polls its parent)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def set_title(title: str) -> None:
    from .._compat import set_proctitle

    set_proctitle(title)
