"""An ASGI app whose import holds ~100 MiB, like a framework plus an ML model or big tables.

For the memory comparison of ``fork_from = "template"`` against forking from
the master (``benchmarks/startup.py --app examples.heavy:app``).  At import it
burns ``EXAMPLE_BOOT_CPU`` seconds of CPU (``examples.app``), then builds
``EXAMPLE_HEAVY_MB`` MiB (default 100) without any download: half as Python
objects (a lookup table of tuples and strings, what imported modules and
their data mostly are), half as one read-only buffer (model weights).
Requests never touch the data, as a real app touches little of it per request.

    gunicorn -k uvicorn_worker.UvicornWorker -w 8 -c python:gunicorn_slowstart.conf examples.heavy:app
"""

import os

from examples.app import app  # noqa: F401  (importing it burns the boot CPU)

HEAVY_MB = float(os.environ.get("EXAMPLE_HEAVY_MB", "100"))
_ENTRY_BYTES = 200  # a dict slot, a key string, a tuple, an int and a value string, roughly

TABLE = {f"token-{i:08d}": (i, f"value-{i:08d}-" * 3) for i in range(int(HEAVY_MB / 2 * 2**20 / _ENTRY_BYTES))}
WEIGHTS = bytes(range(256)) * int(HEAVY_MB / 2 * 2**20 / 256)  # resident: every page is written
