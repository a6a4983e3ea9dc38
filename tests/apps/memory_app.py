"""An ASGI app whose workers each hold real memory, like an app with a model or a big cache.

``MEMAPP_MB`` (default 60) MiB are allocated and touched at import, so each
worker's USS grows by that much before it is ready.  ``GET /grow?mb=N`` makes
the worker that answers hold N MiB more (a leak); ``GET /`` answers its pid.
``MEMAPP_CRASH_IF`` names a file whose existence makes new workers exit 1 at
import (a broken environment).
"""

import os

from examples.asgi import lifespan, reply

if os.path.exists(os.environ.get("MEMAPP_CRASH_IF", "/nonexistent")):
    os._exit(1)  # a broken environment: new workers die at import

PAGE = 4096
held = [bytearray(int(float(os.environ.get("MEMAPP_MB", "60")) * 2**20))]
for i in range(0, len(held[0]), PAGE):  # touch every page: resident, charged to the cgroup
    held[0][i] = 1


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["type"] != "http":
        return
    if scope["path"] == "/grow":
        mb = int(dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)["mb"])
        block = bytearray(mb * 2**20)
        for i in range(0, len(block), PAGE):
            block[i] = 1
        held.append(block)
    await reply(send, f"{os.getpid()}\n".encode())
