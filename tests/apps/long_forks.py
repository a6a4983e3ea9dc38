"""A long-worker target that forks a child of its own, as job runners do.

The child's pid goes to ``$FAULT_DIR/child.<pid>``; the child sleeps (and
ignores nothing), so only a signal to its process group stops it.
"""
import os
import time


def run() -> None:
    child = os.fork()
    if child == 0:
        time.sleep(3600)
        os._exit(0)
    with open(os.path.join(os.environ["FAULT_DIR"], f"child.{child}"), "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(0.5)


def crash_soon() -> None:
    """Ready, then crash 0.2 s later: a pool whose broker is down."""
    time.sleep(0.2)
    raise SystemExit(1)
