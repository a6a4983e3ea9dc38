"""Find this process's own cgroup directory for one controller (private helper).

Both ``cpus.py`` and ``memory.py`` need the same answer: "which directory of
which mounted cgroup file system describes *me*?"  That takes two files:

* ``/proc/self/cgroup`` names the process's cgroup path per hierarchy:
  ``0::/a/b`` for the cgroup v2 (unified) hierarchy, ``4:cpu,cpuacct:/a/b``
  for a v1 hierarchy carrying the ``cpu`` and ``cpuacct`` controllers.
* ``/proc/self/mountinfo`` says where each hierarchy is mounted *and which
  part of it* (field 4, the mount's root).  On a host the root is ``/``; in a
  container without a cgroup namespace it is often the container's own
  cgroup, e.g. ``/docker/abc``, while ``/proc/self/cgroup`` still says
  ``/docker/abc``.  The directory is therefore
  ``mount_point + (cgroup_path relative to mount_root)``.

A limit set on an ancestor constrains us as much as one on our own cgroup, so
callers walk ``CgroupDir.ancestors()`` (own directory first, then each parent
up to the mount point, above which nothing is visible).

Every path is built under ``root`` so that tests can point at a fake tree.
Nothing here raises on unreadable or malformed input: a missing answer is
``None``, logged at DEBUG, because a limit we cannot read is no limit to us.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import re
from dataclasses import dataclass

log = logging.getLogger("gunicorn_slowstart.cgroup")

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One cgroup mount from mountinfo."""

    version: int  # 1 or 2
    root: str  # the part of the hierarchy that is mounted, e.g. "/" or "/docker/abc"
    point: str  # where it is mounted, as the process sees it (not joined with root)
    options: frozenset[str]  # super options; for v1 they name the controllers


@dataclass(frozen=True)
class CgroupDir:
    """Where the process's cgroup for one hierarchy lives on the file system."""

    version: int
    path: str  # the directory to read, joined with the caller's root
    mount: str  # the mount point, joined with the caller's root
    cgroup_path: str  # as written in /proc/self/cgroup

    @property
    def rel(self) -> str:
        """Path of ``path`` inside the mount ("." for the mount point itself)."""
        return posixpath.relpath(self.path, self.mount)

    def ancestors(self) -> list[str]:
        """Own directory first, then each parent up to and including the mount point."""
        parts = [] if self.rel == "." else self.rel.split("/")
        return [posixpath.join(self.mount, *parts[:n]) for n in range(len(parts), -1, -1)]


def read_text(path: str, logger: logging.Logger = log) -> str | None:
    """The file's text, or None (logged at DEBUG) when it cannot be read for any reason."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, ValueError) as exc:  # ValueError covers UnicodeDecodeError
        logger.debug("cannot read %s: %s", path, exc)
        return None


def parse_int(text: str | None, path: str, logger: logging.Logger = log) -> int | None:
    """An integer read from ``path``, or None (logged at DEBUG) when missing or malformed."""
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        logger.debug("malformed number at %s: %r", path, text)
        return None


def under_root(root: str, path: str) -> str:
    """``path`` (absolute, as the process sees it) inside the tree at ``root``."""
    return posixpath.normpath(os.path.join(root, path.lstrip("/")))


@functools.lru_cache(maxsize=4)
def parse_mountinfo(text: str) -> tuple[Mount, ...]:
    """The cgroup (v1) and cgroup2 mounts listed in a mountinfo text; bad lines are skipped.
    Cached by text: the memory guard and admission look several times a second, and the
    mounts almost never change (a changed text is parsed again)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(Mount(
            version=2 if tail[0] == "cgroup2" else 1,
            root=_unescape(fields[3]),
            point=_unescape(fields[4]),
            options=frozenset(tail[2].split(",")),
        ))
    return tuple(mounts)


@functools.lru_cache(maxsize=4)
def parse_proc_cgroup(text: str) -> tuple[tuple[str, frozenset[str], str], ...]:
    """``(hierarchy id, controllers, path)`` per line of /proc/self/cgroup (cached by text)."""
    entries = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        controllers = frozenset(c for c in parts[1].split(",") if c)
        entries.append((parts[0], controllers, parts[2].removesuffix(" (deleted)")))
    return tuple(entries)


def find_cgroup(root: str = "/", controller: str | None = None,
                logger: logging.Logger = log) -> CgroupDir | None:
    """The process's own cgroup directory: v2 when ``controller`` is None, else the v1
    hierarchy carrying ``controller`` (e.g. "cpu", "cpuacct", "memory")."""
    proc = read_text(os.path.join(root, "proc/self/cgroup"), logger)
    info = read_text(os.path.join(root, "proc/self/mountinfo"), logger)
    if proc is None or info is None:
        return None
    cgroup_path = _own_path(parse_proc_cgroup(proc), controller)
    mounts = [m for m in parse_mountinfo(info) if _carries(m, controller)]
    if cgroup_path is None or not mounts:
        logger.debug("no %s cgroup found", _name(controller))
        return None
    return _locate(root, cgroup_path, mounts, 1 if controller else 2, logger)


def _own_path(entries: tuple[tuple[str, frozenset[str], str], ...], controller: str | None) -> str | None:
    for hier, controllers, path in entries:
        if controller is None and hier == "0" and not controllers:
            return path
        if controller is not None and controller in controllers:
            return path
    return None


def _carries(mount: Mount, controller: str | None) -> bool:
    if controller is None:
        return mount.version == 2
    return mount.version == 1 and controller in mount.options


def _locate(root: str, cgroup_path: str, mounts: list[Mount], version: int,
            logger: logging.Logger) -> CgroupDir:
    """Pick the mount whose root contains our path (the longest such root wins).

    If none contains it, or the directory we compute does not exist, the mount
    point itself is the best guess: in a container that is its own cgroup."""
    inside = [m for m in mounts if _is_within(cgroup_path, m.root)]
    mount = max(inside, key=lambda m: len(m.root)) if inside else mounts[0]
    mount_fs = under_root(root, mount.point)
    rel = posixpath.relpath(cgroup_path, mount.root) if inside else "."
    path = posixpath.normpath(posixpath.join(mount_fs, rel))
    if not os.path.isdir(path):
        logger.debug("cgroup dir %s not found; using the mount point %s", path, mount_fs)
        path = mount_fs
    return CgroupDir(version=version, path=path, mount=mount_fs, cgroup_path=cgroup_path)


def _is_within(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _name(controller: str | None) -> str:
    return f"v1 {controller}" if controller else "v2"


# -- the pids controller: tasks allowed and in use (for admission) -----------------------


def pids_limit(root: str = "/", logger: logging.Logger = log) -> tuple[int, int] | None:
    """(pids.max, pids.current) at the tightest level of our v2 or v1 ``pids`` cgroup and its
    ancestors; None when no level has a limit ("max") or nothing is readable."""
    levels = []
    for controller in (None, "pids"):
        where = find_cgroup(root, controller, logger)
        if where is None:
            continue
        for path in where.ancestors():
            limit_text = read_text(posixpath.join(path, "pids.max"), logger)
            if limit_text is None or limit_text.strip() == "max":
                continue
            limit = parse_int(limit_text, path, logger)
            current = parse_int(read_text(posixpath.join(path, "pids.current"), logger), path, logger)
            if limit is not None and current is not None and limit >= 0:
                levels.append((limit, current))
    return min(levels, key=lambda lc: lc[0] - lc[1]) if levels else None
