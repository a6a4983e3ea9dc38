"""A UvicornWorker that writes the wall time of its first heartbeat to a file.

Lets a test compare when a worker first notified with when the master saw it ready.
"""
import os
import time

from uvicorn_worker import UvicornWorker


class RecordingWorker(UvicornWorker):
    _recorded = False

    def notify(self):
        super().notify()
        if not self._recorded:
            self._recorded = True
            path = os.path.join(os.environ["NOTIFY_RECORD_DIR"], f"{os.getpid()}.notify")
            with open(path, "w") as f:
                f.write(repr(time.time()))
