"""A long-worker target that holds real memory, like a job runner that loads a model.

``MEMJOB_MB`` (default 60) MiB are allocated and touched at import, so each long
worker's USS grows by that much before it is ready; ``run`` then idles until the
pool stops it (bounded: a test's server lives far less).
"""

import os
import time

PAGE = 4096
held = bytearray(int(float(os.environ.get("MEMJOB_MB", "60")) * 2**20))
for i in range(0, len(held), PAGE):  # touch every page: resident, charged to the cgroup
    held[i] = 1


def run() -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.5)
