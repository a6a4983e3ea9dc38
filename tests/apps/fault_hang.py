"""The example ASGI app, except that one boot hangs forever at import.

Only the worker that claims boot number ``FAULT_HANG_BOOT`` (default 0, the
first) hangs; every other boot is the normal example app; ``*`` makes every
boot hang.  With ``FAULT_HANG_IGNORE_TERM=1`` a hung boot also ignores
SIGTERM, so only SIGKILL ends it.  A hung boot writes its pid to
``$FAULT_DIR/hung``.
"""
import os
import signal
import time

from fault_claim import claim_boot

WHICH = os.environ.get("FAULT_HANG_BOOT", "0")

if WHICH == "*" or claim_boot() == int(WHICH):
    if os.environ.get("FAULT_HANG_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.path.join(os.environ["FAULT_DIR"], "hung"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(3600)

from examples.app import app  # noqa: E402, F401
