"""An ASGI app whose workers each hold real memory, like an app with a model or a big cache.

``MEMAPP_MB`` (default 60) MiB are allocated and touched at import, so each
worker's USS grows by that much before it is ready.  ``GET /grow?mb=N`` makes
the worker that answers hold N MiB more (a leak); ``GET /`` answers its pid.
``MEMAPP_CRASH_IF`` names a file whose existence makes new workers exit 1 at
import (a broken environment).  ``MEMAPP_GROW_IF`` names a file whose
appearance makes every worker hold ``MEMAPP_GROW_MB`` (default 60) MiB more,
once, without a request: an app that grows after it is ready (caches warming
up).
"""

import os
import threading
import time

from examples.asgi import lifespan, reply

if os.path.exists(os.environ.get("MEMAPP_CRASH_IF", "/nonexistent")):
    os._exit(1)  # a broken environment: new workers die at import

PAGE = 4096
held = [bytearray(int(float(os.environ.get("MEMAPP_MB", "60")) * 2**20))]
for i in range(0, len(held[0]), PAGE):  # touch every page: resident, charged to the cgroup
    held[0][i] = 1


def _hold(mb: float) -> None:
    block = bytearray(int(mb * 2**20))
    for i in range(0, len(block), PAGE):
        block[i] = 1
    held.append(block)


def _grow_when_asked(path: str, mb: float) -> None:
    deadline = time.monotonic() + 600  # bounded: a test's server lives far less
    while time.monotonic() < deadline:
        if os.path.exists(path):
            _hold(mb)
            return
        time.sleep(0.05)


if os.environ.get("MEMAPP_GROW_IF"):
    threading.Thread(target=_grow_when_asked, daemon=True,
                     args=(os.environ["MEMAPP_GROW_IF"], float(os.environ.get("MEMAPP_GROW_MB", "60")))).start()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["type"] != "http":
        return
    if scope["path"] == "/grow":
        _hold(int(dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)["mb"]))
    await reply(send, f"{os.getpid()}\n".encode())
