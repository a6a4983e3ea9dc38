"""What one respawn costs the master, after 1,000 ... 100,000 of them.

The master is single-threaded: whatever it does per event, it does instead
of reaping and respawning.  This drives the master's real objects (the
``SlowStartPolicy``, the ``StatusReporter`` with its ``Timeline``, writing the
timeline file as the arbiter does at the end of every ramp) through N respawn
events of a server with ``--workers`` workers, each event as the arbiter sees
a ``--max-requests`` recycle: a ramp starts, a worker is forked, steps,
becomes ready, the ramp ends (the file is written), the worker exits.

At each checkpoint it prints the mean cost of the last ``WINDOW`` events
(CPU time of this process, so other load on the machine matters less) and
the process's RSS.  Both must stay flat as the history grows::

    python -m benchmarks.master_cost                      # 1k, 10k, 100k events
    python -m benchmarks.master_cost --checkpoints 1000 5000 --no-file

The timeline goes to a temporary directory (``--dir``; /dev/shm by default,
where fsync is cheap, so the figure is the master's CPU, not the disk's).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import psutil

from gunicorn_slowstart.keys import ProcKey
from gunicorn_slowstart.policy import HTTP, PolicyConfig, SlowStartPolicy
from gunicorn_slowstart.status import StatusReporter

WINDOW = 1000  # events averaged at each checkpoint


class Master:
    """The arbiter's bookkeeping for one respawn, without the fork."""

    def __init__(self, workers: int, path: str | None, interval: float) -> None:
        self.interval = interval
        self.policy = SlowStartPolicy(PolicyConfig(max_batch=2), 0.0)
        self.status = StatusReporter(logging.getLogger("master_cost"), 0.0, time.time())
        self.status.configure(path, {"mode": "ready", "cap": 2, "cpus": 2, "target": workers})
        self.now = 0.0
        self.next_pid = 1000
        self.alive: list[int] = []
        for _ in range(workers):
            self._start(ramp=False)

    def _start(self, ramp: bool = True) -> int:
        pid, self.next_pid = self.next_pid, self.next_pid + 1
        if ramp:
            self.status.ramp_started(self.now, 1, "respawn")
        self.policy.decide(self.now, 1)
        self.policy.spawned(pid, self.now, HTTP)
        self.status.spawned(ProcKey(HTTP, pid), self.now, pid)
        self.status.step(self.now, self.policy.window, 2, 1, len(self.alive))
        self.now += self.interval / 2
        self.policy.ready(pid, self.now)
        self.status.ready(ProcKey(HTTP, pid), self.now, self.interval / 2)  # the boot time, as the arbiter passes it
        self.alive.append(pid)
        self.status.step(self.now, self.policy.window, 2, 0, len(self.alive))
        if ramp:
            self.status.ramp_done(self.now, len(self.alive), len(self.alive))
        return pid

    def respawn(self) -> None:
        """The oldest worker reached max_requests: it exits, a new one is ramped in."""
        self.now += self.interval / 2
        pid = self.alive.pop(0)
        self.policy.exited(pid, self.now, expected=False)
        self.status.exited(ProcKey(HTTP, pid), self.now, 0, None)
        self._start()


def run(checkpoints: list[int], workers: int, path: str | None,
        interval: float = 1.0) -> list[tuple[int, float, float]]:
    master = Master(workers, path, interval)
    proc = psutil.Process()
    rows, done = [], 0
    for checkpoint in sorted(checkpoints):
        while done < checkpoint - WINDOW:
            master.respawn()
            done += 1
        started = time.process_time()
        while done < checkpoint:
            master.respawn()
            done += 1
        per_event = (time.process_time() - started) / WINDOW
        rows.append((checkpoint, per_event * 1e6, proc.memory_info().rss / 2**20))
        print(f"{checkpoint:>8} events: {per_event * 1e6:9.1f} us/event   RSS {rows[-1][2]:7.1f} MiB"
              f"   timeline {os.path.getsize(path) if path else 0:>8} bytes", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    parser.add_argument("--no-file", action="store_true", help="record, but write no timeline file")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between respawns, on the master's clock (default 1: every ramp is written)")
    args = parser.parse_args(argv)
    if min(args.checkpoints) < WINDOW:
        parser.error(f"checkpoints must be at least {WINDOW}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = None if args.no_file else os.path.join(tmp, "timeline.json")
        rows = run(args.checkpoints, args.workers, path, args.interval)
    first, last = rows[0], rows[-1]
    print(f"cost ratio last/first: {last[1] / first[1]:.2f}; RSS growth: {last[2] - first[2]:+.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
