"""Background job runners for the long-worker pool.

``run``: the import burns ``EXAMPLE_JOB_BOOT_CPU`` seconds of CPU (default:
``EXAMPLE_BOOT_CPU``, else 0.5) like loading a model; the worker is ready
when ``run`` is called, and then takes jobs until it is stopped.

``run_with_setup``: a target that does more heavy set-up inside the call and
says itself when it is ready, with ``gunicorn_slowstart.ready()``.

    # slowstart.conf.py
    from gunicorn_slowstart import LongWorkerPool, install
    install(globals(), long_workers=LongWorkerPool("examples.jobs:run", size=4))
"""

import os
import time

from examples.cpu import burn_cpu
from gunicorn_slowstart import ready, reports_ready

burn_cpu(float(os.environ.get("EXAMPLE_JOB_BOOT_CPU", os.environ.get("EXAMPLE_BOOT_CPU", "0.5"))))


def take_job() -> None:
    time.sleep(0.5)  # a real runner would block on its queue here


def run() -> None:
    while True:
        take_job()


@reports_ready
def run_with_setup() -> None:
    burn_cpu(0.2)  # e.g. warm a cache, connect to the queue
    ready()
    while True:
        take_job()
