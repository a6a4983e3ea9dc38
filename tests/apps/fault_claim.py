"""Boot numbering shared by the fault apps: each worker import claims the next number.

``FAULT_DIR`` names a directory the test created.  Claims are atomic across
processes: ``os.open(..., O_CREAT | O_EXCL)`` succeeds for exactly one claimant
of each number, so concurrent boots never share one.
"""
import os


def claim_boot() -> int:
    """This boot's number: 0 for the first worker to boot, 1 for the next, ..."""
    directory = os.environ["FAULT_DIR"]
    n = 0
    while True:
        try:
            fd = os.open(os.path.join(directory, f"boot.{n}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            n += 1
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return n

