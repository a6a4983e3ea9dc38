"""Run processes inside a CPU-limited cgroup: the container case, on a bare host.

A server in a container with ``--cpus 0.5`` still sees every host CPU in
``os.cpu_count()`` but gets half a CPU of time.  The benchmark and the tests
need that situation for real, so ``CpuLimit`` creates a temporary child of
our own cgroup with a CFS quota, lets processes be moved into it, and on exit
moves anything still inside back to the parent (it never kills) and removes
the directory.

cgroup v2 is used when our v2 cgroup can delegate the ``cpu`` controller to a
child; otherwise the v1 ``cpu`` hierarchy.  When v1 ``cpuacct`` is a separate
hierarchy that mirrors ``cpu`` (our path is the same in both), a twin cgroup
is made there too, so that the CPU usage of the limited processes can be
measured (``IdleCpuSampler`` relies on that, as it does in real containers).

Command line (runs one command under the limit, then cleans up)::

    python -m benchmarks.cpulimit 0.5 -- gunicorn -w 8 app:app
"""

from __future__ import annotations

import argparse
import logging
import os
import posixpath
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

if __package__ in (None, ""):  # run as a file (python benchmarks/cpulimit.py): import the project from here
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunicorn_slowstart.cgroup import CgroupDir, find_cgroup, read_text  # noqa: E402

log = logging.getLogger("benchmarks.cpulimit")

PERIOD_US = 100_000
RMDIR_ATTEMPTS = 40  # with the back-off below, at most about 3.5 s before giving up


class CpuLimitUnavailable(RuntimeError):
    """A CPU-limited cgroup cannot be made here; the message says why."""


class _CgroupLimit:
    """Enter: a new cgroup with the limits (v2 where it can, else v1); exit: remove it.

    Subclasses provide ``prefix``, ``_dirs`` ((path, controller) of each cgroup made),
    ``_try_v2(name)`` (None on success, else why not), ``_setup_v1(name, reason)`` and
    ``_cleanup()`` (the cgroups it could not remove)."""

    prefix: str

    def __enter__(self):
        if os.geteuid() != 0:
            raise CpuLimitUnavailable("not root: creating cgroups needs root (or a delegated subtree)")
        name = f"{self.prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            reason = self._try_v2(name)
            if reason is not None:
                self._setup_v1(name, reason)
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        left = self._cleanup()
        if left and exc_type is None:
            raise RuntimeError(f"could not remove cgroup(s) {left}; processes kept moving in?")

    def preexec_fn(self) -> Callable[[], None]:
        """For ``subprocess.Popen(preexec_fn=...)``: the child moves itself in before exec,
        so not even its first instruction runs unlimited."""
        files = [posixpath.join(path, "cgroup.procs") for path, _ in self._dirs]

        def move_self() -> None:
            pid = str(os.getpid())
            for name in files:
                with open(name, "w") as fh:
                    fh.write(pid)

        return move_self


class CpuLimit(_CgroupLimit):
    """A temporary cgroup whose processes get at most ``cpus`` CPUs of time."""

    def __init__(self, cpus: float, prefix: str = "slowstart-") -> None:
        if not cpus * PERIOD_US >= 1000:  # the kernel's minimum quota is 1 ms
            raise ValueError(f"cpus must be at least 0.01, not {cpus!r}")
        self.cpus = cpus
        self.prefix = prefix
        self.path: str | None = None  # the cgroup carrying the quota
        self.version: int | None = None
        self._dirs: list[tuple[str, str]] = []  # (created dir, parent to move processes back to)
        self._enabled_cpu_in: str | None = None  # a v2 subtree_control we switched "+cpu" on in

    @property
    def quota_us(self) -> int:
        return int(self.cpus * PERIOD_US)

    # -- set-up -------------------------------------------------------------

    def _try_v2(self, name: str) -> str | None:
        """Make the cgroup in v2; None on success, else why not (for the error message)."""
        where = find_cgroup("/", None)
        if where is None:
            return "no cgroup2 hierarchy"
        if "cpu" not in (read_text(posixpath.join(where.path, "cgroup.controllers")) or "").split():
            return f"cgroup2 at {where.path} has no cpu controller"
        reason = self._enable_v2_cpu(where.path)
        if reason is not None:
            return reason
        try:
            self._make(where.path, name)
            _write(posixpath.join(self._dirs[-1][0], "cpu.max"), f"{self.quota_us} {PERIOD_US}")
        except OSError as exc:
            self._cleanup()
            return f"cgroup2 at {where.path}: {exc}"
        self.path, self.version = self._dirs[-1][0], 2
        return None

    def _enable_v2_cpu(self, parent: str) -> str | None:
        control = posixpath.join(parent, "cgroup.subtree_control")
        if "cpu" in (read_text(control) or "").split():
            return None
        try:
            _write(control, "+cpu")
        except OSError as exc:  # EBUSY: the parent holds processes (the "no internal processes" rule)
            return f"cannot enable cpu in {control}: {exc}"
        self._enabled_cpu_in = control
        return None

    def _setup_v1(self, name: str, v2_reason: str) -> None:
        where = find_cgroup("/", "cpu")
        if where is None:
            raise CpuLimitUnavailable(f"no writable cpu controller: {v2_reason}; no cgroup v1 cpu hierarchy")
        try:
            self._make(where.path, name)
            _write(posixpath.join(self._dirs[-1][0], "cpu.cfs_period_us"), str(PERIOD_US))
            _write(posixpath.join(self._dirs[-1][0], "cpu.cfs_quota_us"), str(self.quota_us))
        except OSError as exc:  # EROFS, EACCES; EINVAL when a parent's quota is smaller
            raise CpuLimitUnavailable(f"cannot limit CPU under {where.path}: {exc}") from exc
        self.path, self.version = self._dirs[-1][0], 1
        self._make_cpuacct_twin(where, name)

    def _make_cpuacct_twin(self, cpu: CgroupDir, name: str) -> None:
        acct = find_cgroup("/", "cpuacct")
        if acct is None or acct.mount == cpu.mount or acct.rel != cpu.rel:
            return  # co-mounted (nothing to do) or not mirrored (a twin would measure nothing useful)
        try:
            self._make(acct.path, name)
        except OSError as exc:
            log.debug("no cpuacct twin under %s: %s", acct.path, exc)

    def _make(self, parent: str, name: str) -> None:
        path = posixpath.join(parent, name)
        os.mkdir(path)
        self._dirs.append((path, parent))

    # -- use ----------------------------------------------------------------

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the cgroup."""
        for path, _ in self._dirs:
            _write(posixpath.join(path, "cgroup.procs"), str(pid))

    def pids(self) -> list[int]:
        """The processes now inside the (quota) cgroup."""
        return _read_pids(posixpath.join(self.path, "cgroup.procs")) if self.path else []

    # -- tear-down ----------------------------------------------------------

    def _cleanup(self) -> list[str]:
        """Evacuate and remove every directory we made; return the ones that would not go."""
        left = [path for path, parent in reversed(self._dirs) if not _evacuate_and_remove(path, parent)]
        self._dirs = []
        if self._enabled_cpu_in:
            try:
                _write(self._enabled_cpu_in, "-cpu")
            except OSError as exc:  # still used by another child: leave it on
                log.debug("left cpu enabled in %s: %s", self._enabled_cpu_in, exc)
            self._enabled_cpu_in = None
        for path in left:
            log.warning("cgroup %s left behind", path)
        return left


class MemoryLimit(_CgroupLimit):
    """A temporary cgroup with a memory limit (MiB) and/or a pids limit (tasks).

    The small-pod case: the server sees the host's memory but may use
    ``memory_mb``; the kernel OOM-kills inside the cgroup beyond it.  cgroup v2
    is used when our v2 cgroup can delegate the controllers; otherwise the v1
    ``memory`` and ``pids`` hierarchies (a child of our own cgroup in each).
    On exit, processes still inside are moved back (never killed) and the
    directories removed.  ``oom_kills()`` reads the kernel's count of OOM
    kills inside the cgroup (v1 ``memory.oom_control``, v2 ``memory.events``).
    """

    def __init__(self, memory_mb: float | None = None, pids: int | None = None,
                 prefix: str = "slowstart-") -> None:
        if memory_mb is None and pids is None:
            raise ValueError("give memory_mb, pids or both")
        if memory_mb is not None and not memory_mb >= 4:
            raise ValueError(f"memory_mb must be at least 4, not {memory_mb!r}")
        if pids is not None and not pids >= 1:
            raise ValueError(f"pids must be at least 1, not {pids!r}")
        self.memory_mb = memory_mb
        self.pids_max = pids
        self.prefix = prefix
        self.version: int | None = None
        self.memory_path: str | None = None
        self.pids_path: str | None = None
        self._dirs: list[tuple[str, str]] = []
        self._enabled_in: list[tuple[str, str]] = []  # (subtree_control, controller) we switched on

    @property
    def controllers(self) -> list[str]:
        return [c for c, v in (("memory", self.memory_mb), ("pids", self.pids_max)) if v is not None]

    def _try_v2(self, name: str) -> str | None:
        where = find_cgroup("/", None)
        if where is None:
            return "no cgroup2 hierarchy"
        available = (read_text(posixpath.join(where.path, "cgroup.controllers")) or "").split()
        missing = [c for c in self.controllers if c not in available]
        if missing:
            return f"cgroup2 at {where.path} lacks {', '.join(missing)}"
        control = posixpath.join(where.path, "cgroup.subtree_control")
        for controller in self.controllers:
            if controller not in (read_text(control) or "").split():
                try:
                    _write(control, "+" + controller)
                except OSError as exc:
                    return f"cannot enable {controller} in {control}: {exc}"
                self._enabled_in.append((control, controller))
        try:
            path = posixpath.join(where.path, name)
            os.mkdir(path)
            self._dirs.append((path, where.path))
            if self.memory_mb is not None:
                _write(posixpath.join(path, "memory.max"), str(int(self.memory_mb * 2**20)))
                _write_if_exists(posixpath.join(path, "memory.swap.max"), "0")
                self.memory_path = path
            if self.pids_max is not None:
                _write(posixpath.join(path, "pids.max"), str(self.pids_max))
                self.pids_path = path
        except OSError as exc:
            self._cleanup()
            return f"cgroup2 at {where.path}: {exc}"
        self.version = 2
        return None

    def _setup_v1(self, name: str, v2_reason: str) -> None:
        for controller in self.controllers:
            where = find_cgroup("/", controller)
            if where is None:
                raise CpuLimitUnavailable(f"no writable {controller} controller: {v2_reason}; "
                                          f"no cgroup v1 {controller} hierarchy")
            path = posixpath.join(where.path, name)
            try:
                os.mkdir(path)
                self._dirs.append((path, where.path))
                if controller == "memory":
                    _write(posixpath.join(path, "memory.limit_in_bytes"), str(int(self.memory_mb * 2**20)))
                    _write_if_exists(posixpath.join(path, "memory.memsw.limit_in_bytes"),
                                     str(int(self.memory_mb * 2**20)))
                    self.memory_path = path
                else:
                    _write(posixpath.join(path, "pids.max"), str(self.pids_max))
                    self.pids_path = path
            except OSError as exc:
                raise CpuLimitUnavailable(f"cannot limit {controller} under {where.path}: {exc}") from exc
        self.version = 1

    def set_memory(self, memory_mb: float) -> None:
        """Change the memory limit of the live cgroup (a pod resized, memory freed).
        v1 needs the memory+swap limit raised before, and lowered after, the memory limit."""
        if self.memory_path is None:
            raise ValueError("this cgroup has no memory limit to change")
        value = str(int(memory_mb * 2**20))
        if self.version == 2:
            _write(posixpath.join(self.memory_path, "memory.max"), value)
        else:
            order = ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
            for name in order if memory_mb > self.memory_mb else reversed(order):
                (_write if name == "memory.limit_in_bytes" else _write_if_exists)(
                    posixpath.join(self.memory_path, name), value)
        self.memory_mb = memory_mb

    def pids(self) -> list[int]:
        path = self.memory_path or self.pids_path
        return _read_pids(posixpath.join(path, "cgroup.procs")) if path else []

    def oom_kills(self) -> int | None:
        """OOM kills inside the memory cgroup so far (None: the kernel does not say)."""
        if self.memory_path is None:
            return None
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in (read_text(posixpath.join(self.memory_path, name)) or "").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "oom_kill" and parts[1].isdigit():
                return int(parts[1])
        return None

    def usage_mb(self) -> float | None:
        if self.memory_path is None:
            return None
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        text = read_text(posixpath.join(self.memory_path, name))
        return int(text) / 2**20 if text and text.strip().isdigit() else None

    def _cleanup(self) -> list[str]:
        left = [path for path, parent in reversed(self._dirs) if not _evacuate_and_remove(path, parent)]
        self._dirs = []
        for control, controller in reversed(self._enabled_in):
            try:
                _write(control, "-" + controller)
            except OSError as exc:
                log.debug("left %s enabled in %s: %s", controller, control, exc)
        self._enabled_in = []
        for path in left:
            log.warning("cgroup %s left behind", path)
        return left


def _write_if_exists(path: str, text: str) -> None:
    """Optional knobs (swap limits): absent when swap accounting is off; that is fine."""
    if os.path.exists(path):
        try:
            _write(path, text)
        except OSError as exc:
            log.debug("could not write %s: %s", path, exc)


def _evacuate_and_remove(path: str, parent: str) -> bool:
    """Move members back to ``parent`` and rmdir, retrying: a process may fork meanwhile,
    and a moved or exiting task can keep the cgroup busy for a moment."""
    for attempt in range(RMDIR_ATTEMPTS):
        for member_file in ("cgroup.procs", "tasks"):  # "tasks": v1 threads left behind
            for pid in _read_pids(posixpath.join(path, member_file)):
                _move(pid, posixpath.join(parent, member_file))
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            log.debug("rmdir %s (attempt %d): %s", path, attempt + 1, exc)
            time.sleep(min(0.005 * 2**attempt, 0.1))
    return False


def _move(pid: int, procs_file: str) -> None:
    try:
        _write(procs_file, str(pid))
    except OSError as exc:  # ESRCH: it exited meanwhile
        log.debug("could not move %d to %s: %s", pid, procs_file, exc)


def _read_pids(path: str) -> list[int]:
    text = read_text(path, log) or ""
    return [int(line) for line in text.split() if line.isdigit()]


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.cpulimit CPUS -- CMD ARGS...``: exit with the command's status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpulimit",
                                     description="Run a command in a cgroup limited to CPUS CPUs.")
    parser.add_argument("cpus", type=float, help="CPU quota, e.g. 0.5 or 1.5")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    try:
        with CpuLimit(args.cpus) as limit:
            print(f"cpulimit: {args.cpus} CPU in cgroup v{limit.version} {limit.path}", file=sys.stderr)
            return _run(command, limit)
    except CpuLimitUnavailable as exc:
        print(f"cpulimit: unavailable: {exc}", file=sys.stderr)
        return 2


def _run(command: list[str], limit: CpuLimit) -> int:
    """Run the command, passing SIGINT/SIGTERM on to it, and wait for it."""
    child = subprocess.Popen(command, preexec_fn=limit.preexec_fn())
    forward = lambda signum, frame: child.send_signal(signum)  # noqa: E731
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
