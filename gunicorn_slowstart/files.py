"""Every file the project writes goes through ``write_atomic``.

Theory of operation
-------------------
The master runs as whatever user starts gunicorn, often root, and writes to
paths from its settings (the timeline, a status file; the CLI writes charts).
A path that names something other than a regular file must never be turned
into one: ``/dev/null`` replaced by a JSON file, a FIFO a log shipper reads
from, a directory.  So a write goes ahead only where the path is absent or a
regular file; anything else (symbolic link, character or block device, FIFO,
socket, directory) is refused with ``UnsafePath``, an ``OSError``, and left
exactly as it was.  Callers log one warning and carry on: a file the project
cannot write never stops a server that serves.

The write itself is atomic: a temporary file in the same directory
(``mkstemp``), fsync, ``os.replace``, fsync of the directory.  If something
replaces a regular file with a link or a FIFO between the check and the
rename, ``os.replace`` replaces that directory entry; it never writes into a
link's target or a FIFO's reader.

Decisions: a symbolic link in a *parent* directory is followed (``/var/log``
is a link on many systems, and the directory is the administrator's choice);
only the final name must not be one.  A path that is empty or only
whitespace is refused (``" "`` is almost always a quoting mistake, not a file
name anyone wants).
"""

from __future__ import annotations

import os
import stat
import tempfile

KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISDIR, "a directory"))


class UnsafePath(OSError):
    """The path names something that is not a regular file: it is left as it is."""


def check_writable(path: str | os.PathLike) -> str:
    """``path`` as a string if it is absent or a regular file; else ``UnsafePath`` saying what it is."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise UnsafePath(f"refusing to write to {text!r}: the path is blank")
    try:
        mode = os.lstat(text).st_mode
    except FileNotFoundError:
        return text
    if stat.S_ISREG(mode):
        return text
    what = next((name for test, name in KINDS if test(mode)), "not a regular file")
    raise UnsafePath(f"refusing to write to {text}: it is {what}, not a regular file")


def write_atomic(path: str | os.PathLike, data: str | bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically, only if ``path`` is absent or a regular file.

    Raises ``UnsafePath`` (an ``OSError``) for anything else, and ``OSError`` when the
    directory cannot be written; the path is then left as it was.
    """
    target = check_writable(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".slowstart-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(directory)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
