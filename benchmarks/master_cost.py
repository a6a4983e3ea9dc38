"""What one respawn costs the real master, after 1,000 ... 100,000 of them.

The master is single-threaded: whatever it does per event, it does instead
of reaping and respawning.  This builds a real ``SlowStartArbiter`` (from a
real gunicorn application and config, with the timeline and the status file
on) and puts it through N respawn events of a ``--workers`` server, each one
a real worker process that exits and is replaced:

1. the oldest worker gets SIGTERM and exits with code 0, as a worker reaching
   ``--max-requests`` does (its exit is its own decision, not the master's);
2. the arbiter's ``reap_workers()`` (gunicorn's reap, with the arbiter's
   exit-status peek), then ``manage_workers()``: the exit recorded
   (``_on_exit``: policy, status reporter, timeline, rollout), a respawn ramp
   started, the policy asked, and one worker forked by gunicorn's own
   ``spawn_worker()`` (``os.fork``, its heartbeat file, ``WORKERS``);
3. the new worker notifies its heartbeat as every stock worker class does
   when ready; ``manage_workers()`` sees it (``_on_ready``), the ramp ends and
   the timeline and status file are written as on a real server.

This driver plays gunicorn's main loop (which calls the same two methods
after a SIGCHLD): what is *not* exercised is that loop's signal queue and
``murder_workers``, sockets and HTTP, an application's boot, and statsd.
The workers are ``RespawnWorker``: a real gunicorn ``Worker`` forked by the
master, which notifies at once and waits for SIGTERM, instead of loading an
application.  No part of the master is replaced.

At each checkpoint it prints the master's mean CPU time per event over the
last ``--window`` events (``time.process_time``: this process only, the fork
included, the children's work not; other load on the machine matters less
than for wall time), the part of it spent inside ``os.fork()`` itself (timed
by a wrapper that calls the real one: the rest is the bookkeeping, plus the
copy-on-write faults a fork leaves the parent) and the master's RSS.  They
must stay flat as the history grows::

    python -m benchmarks.master_cost                      # 1k, 10k, 100k events
    python -m benchmarks.master_cost --checkpoints 1000 5000 --no-file

The timeline and status file go to a temporary directory (``--dir``;
/dev/shm by default, where fsync is cheap, so the figure is the master's
CPU, not the disk's).  The log goes to /dev/null at level info (formatted,
as on a real server).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import tempfile
import time

import psutil
from gunicorn.app.base import BaseApplication
from gunicorn.workers.base import Worker

WINDOW = 1000  # events averaged at each checkpoint
WAIT = 30.0  # seconds: a worker that neither exits nor notifies within this is an error


class ForkClock:
    """CPU time the master spends inside ``os.fork()``: wraps the real one while installed."""

    def __init__(self) -> None:
        self.spent = 0.0
        self.real = os.fork

    def fork(self) -> int:
        started = time.process_time()
        pid = self.real()
        if pid:
            self.spent += time.process_time() - started
        return pid

    def __enter__(self) -> ForkClock:
        os.fork = self.fork
        return self

    def __exit__(self, *exc) -> None:
        os.fork = self.real


class RespawnWorker(Worker):
    """A real gunicorn worker that is ready at once: it notifies its heartbeat (the
    master's readiness signal), tells the driver, and exits 0 on SIGTERM."""

    ready_fd: int | None = None  # the driver's pipe: one byte once notified (no polling)

    def init_process(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        self.tmp.notify()
        if self.ready_fd is not None:
            os.write(self.ready_fd, b"r")
        for _ in range(int(WAIT * 20)):  # bounded: a worker whose master is gone goes too
            if os.getppid() != self.ppid:
                break
            time.sleep(0.05)
        os._exit(0)


class _App(BaseApplication):
    def __init__(self, options: dict) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):  # never called: the workers load no application
        raise RuntimeError("RespawnWorker loads no application")


class Driver:
    """A real SlowStartArbiter, driven through respawn events as gunicorn's loop would."""

    def __init__(self, workers: int, directory: str | None) -> None:
        from gunicorn_slowstart.arbiter import SlowStartArbiter
        from gunicorn_slowstart.hooks import install

        self.ready_r, ready_w = os.pipe()
        files = {} if directory is None else {"timeline": os.path.join(directory, "timeline.json"),
                                             "status_file": os.path.join(directory, "status.json")}
        self.timeline = files.get("timeline")
        install({}, **files)
        app = _App({"workers": workers, "worker_class": "benchmarks.master_cost.RespawnWorker",
                    "errorlog": os.devnull, "loglevel": "info", "bind": "127.0.0.1:0"})
        self.arbiter = SlowStartArbiter(app)
        self.arbiter.pid = os.getpid()
        self.arbiter.LISTENERS = []
        self.arbiter.worker_class.ready_fd = ready_w  # the class gunicorn loaded (python -m: another copy)
        self.workers = workers

    def start(self) -> None:
        """The first ramp: manage_workers() until every worker is ready."""
        self._settle()

    def respawn(self) -> None:
        """The oldest worker exits (code 0); the master reaps it and ramps a new one in."""
        arbiter = self.arbiter
        victim = min(arbiter.WORKERS.items(), key=lambda item: item[1].age)[0]
        os.kill(victim, signal.SIGTERM)
        os.waitid(os.P_PID, victim, os.WEXITED | os.WNOWAIT)  # blocks (no CPU) until it has exited
        arbiter.reap_workers()
        self._settle()

    def _settle(self) -> None:
        arbiter = self.arbiter
        deadline = time.monotonic() + WAIT
        while True:
            arbiter.manage_workers()
            current = arbiter._current()
            if len(current) == self.workers and not any(arbiter._booting(pid) for pid in current):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not {self.workers} ready workers after {WAIT} s: {len(current)} current, "
                                   f"{sum(map(arbiter._booting, current))} booting")
            readable, _, _ = select.select([self.ready_r], [], [], 0.05)  # a worker notified, or look again
            if readable:
                os.read(self.ready_r, 4096)

    def close(self) -> None:
        """Kill the workers this driver forked (by pid) and reap them."""
        for pid in list(self.arbiter.WORKERS):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        self.arbiter.WORKERS.clear()


def run(checkpoints: list[int], workers: int, directory: str | None,
        window: int = WINDOW) -> list[tuple[int, float, float, float]]:
    """(events, master CPU us per event, of which in fork, RSS MiB) at each checkpoint."""
    driver = Driver(workers, directory)
    rows: list[tuple[int, float, float, float]] = []
    with ForkClock() as forks:
        try:
            driver.start()
            _measure(driver, forks, sorted(checkpoints), window, rows)
        finally:
            driver.close()
    return rows


def _measure(driver: Driver, forks: ForkClock, checkpoints: list[int], window: int, rows: list) -> None:
    proc = psutil.Process()
    done = 0
    for checkpoint in checkpoints:
        while done < checkpoint - window:
            driver.respawn()
            done += 1
        started, forked = time.process_time(), forks.spent
        while done < checkpoint:
            driver.respawn()
            done += 1
        per_event = (time.process_time() - started) / window
        in_fork = (forks.spent - forked) / window
        rows.append((checkpoint, per_event * 1e6, in_fork * 1e6, proc.memory_info().rss / 2**20))
        size = os.path.getsize(driver.timeline) if driver.timeline and os.path.exists(driver.timeline) else 0
        print(f"{checkpoint:>8} events: {per_event * 1e6:9.1f} us/event ({in_fork * 1e6:7.1f} in fork)"
              f"   RSS {rows[-1][3]:7.1f} MiB   timeline {size:>8} bytes"
              f"   workers forked {driver.arbiter.worker_age}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--window", type=int, default=WINDOW, help="events averaged at each checkpoint")
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    parser.add_argument("--no-file", action="store_true", help="no timeline and no status file")
    args = parser.parse_args(argv)
    if min(args.checkpoints) < args.window or args.window < 1:
        parser.error(f"checkpoints must be at least --window ({args.window})")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = run(args.checkpoints, args.workers, None if args.no_file else tmp, args.window)
    first, last = rows[0], rows[-1]
    print(f"cost ratio last/first: {last[1] / first[1]:.2f} (outside fork: "
          f"{(last[1] - last[2]) / max(first[1] - first[2], 1e-9):.2f}); RSS growth: {last[3] - first[3]:+.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
