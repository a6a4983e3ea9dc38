"""``python -m gunicorn_slowstart.probe FILE``: is the server ready enough?

Theory of operation
-------------------
An ``exec`` probe for Kubernetes (startupProbe, readinessProbe) or any
supervisor: it reads the master's status file (``slowstart_status_file``, see
``statusfile.py``), never a worker, so a busy worker cannot fail it and it
costs no request.  Exit 0 when ready enough, 1 otherwise, with one line
saying why (Kubernetes shows it in the pod's events); 2 for bad arguments.

Not ready when: the file is missing or unreadable (the master has not
written it yet), older than ``--max-age`` seconds (the master is stuck or
gone), names a master pid that is not running, says ``stopping``, or has
fewer ready workers than ``--min-ready K`` (default 1) or
``--min-ready-fraction F`` of the target, or is in a state named by
``--fail-on STATE`` (e.g. ``--fail-on 'reload failed'`` for a deploy
pipeline that wants to know the new code was rolled back; by default a
server that rolled a reload back still serves, so a readiness probe passes).
The probe runs in the server's container (same pid namespace), as an
``exec`` probe does.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

from .statusfile import STATES, read

OK, NOT_READY = 0, 1


def verdict(data: dict[str, Any], now: float, min_ready: int | None = None,
            min_fraction: float | None = None, max_age: float | None = None,
            pid_alive: bool = True, fail_on: tuple[str, ...] = ()) -> tuple[bool, str]:
    """(ready enough?, one line): pure, from a status record and the wall-clock time."""
    ready, target, state = int(data["ready"]), int(data["target"]), str(data["state"])
    age = now - float(data["updated_at"])
    detail = f" ({data['detail']})" if data.get("detail") else ""
    if max_age is not None and age > max_age:
        return False, f"status file is {age:.1f} s old (more than --max-age {max_age:g} s): master stuck or gone"
    if not pid_alive:
        return False, f"master pid {data['pid']} is not running"
    if state == "stopping":
        return False, f"server is stopping ({ready}/{target} ready)"
    if state in fail_on:
        return False, f"state {state} (--fail-on){detail}; {ready}/{target} workers ready"
    need = _needed(target, min_ready, min_fraction)
    if ready < need:
        return False, f"{ready}/{target} workers ready, need {need}; state {state}{detail}"
    return True, f"{ready}/{target} workers ready; state {state}{detail}"


def _needed(target: int, min_ready: int | None, min_fraction: float | None) -> int:
    if min_fraction is not None:
        return max(1, math.ceil(min_fraction * target - 1e-9))
    return 1 if min_ready is None else min_ready


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # exists but not ours, or not a pid we can check: do not fail on it
    return True


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gunicorn_slowstart.probe",
                                     description="Exit 0 if the gunicorn-slowstart master reports enough "
                                                 "ready workers in its status file, else 1.")
    parser.add_argument("file", help="the master's status file (slowstart_status_file)")
    need = parser.add_mutually_exclusive_group()
    need.add_argument("--min-ready", type=_count, metavar="K", help="at least K workers ready (default 1)")
    need.add_argument("--min-ready-fraction", type=_fraction, metavar="F",
                      help="at least this fraction of the target ready, e.g. 0.5")
    parser.add_argument("--max-age", type=_seconds, metavar="S",
                        help="fail when the file was not rewritten for S seconds (the master writes it "
                             "at least every 2 s)")
    parser.add_argument("--fail-on", action="append", choices=STATES, default=[], metavar="STATE",
                        help="also fail while the master reports this state (repeatable), e.g. 'reload failed'")
    args = parser.parse_args(argv)
    try:
        data = read(args.file)
        ok, line = verdict(data, time.time(), args.min_ready, args.min_ready_fraction, args.max_age,
                           _pid_alive(data.get("pid")), tuple(args.fail_on))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        ok, line = False, f"cannot read status file {args.file}: {exc}"
    print(("ready: " if ok else "not ready: ") + line, file=sys.stdout if ok else sys.stderr)
    return OK if ok else NOT_READY


if __name__ == "__main__":
    sys.exit(main())
