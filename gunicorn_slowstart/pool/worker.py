"""The long worker process's main: import the target, call it, exit with its outcome.

Runs in a fork of the pool manager.  It leads its own process group (so the
pool's signals reach the target's own children), dies with the manager, and
tells the manager it is ready through a pipe (``api.ready``): at once, or when
a ``@reports_ready`` target calls ``ready()`` after its set-up.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Any

from .api import READY_FD_ENV, ready
from .process import die_with_parent, own_group, set_title
from .target import load_target


def long_worker_main(manager: Any, slot: int, ready_w: int) -> None:
    """The long worker process: import the target, call it, exit with its outcome."""
    code = 1
    try:
        own_group(0)
        die_with_parent(signal.SIGKILL)
        if os.getppid() != manager.pid:
            os._exit(1)  # the manager died before the parent-death signal was armed
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD,
                    signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
            signal.signal(sig, signal.SIG_DFL)
        manager.sock.close()
        os.close(manager.wake_r)
        for child in manager.children.values():
            if child.ready_fd >= 0:
                os.close(child.ready_fd)
        set_title(f"long worker [{manager.pool.name}] #{slot}")
        os.environ[READY_FD_ENV] = str(ready_w)
        target = load_target(manager.target)
        if not getattr(target, "slowstart_reports_ready", False):
            ready()
        result = target(*manager.pool.args)
        code = result if isinstance(result, int) and not isinstance(result, bool) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
