"""An ASGI app whose workers each hold real memory, like an app with a model or a big cache.

``MEMAPP_MB`` (default 60) MiB are allocated and touched at import, so each
worker's USS grows by that much before it is ready.  ``GET /grow?mb=N`` makes
the worker that answers hold N MiB more (a leak); ``GET /`` answers its pid.
``MEMAPP_CRASH_IF`` names a file whose existence makes new workers exit 1 at
import (a broken environment).
"""

import os

if os.path.exists(os.environ.get("MEMAPP_CRASH_IF", "/nonexistent")):
    os._exit(1)  # a broken environment: new workers die at import

PAGE = 4096
held = [bytearray(int(float(os.environ.get("MEMAPP_MB", "60")) * 2**20))]
for i in range(0, len(held[0]), PAGE):  # touch every page: resident, charged to the cgroup
    held[0][i] = 1


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/grow":
        mb = int(dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)["mb"])
        block = bytearray(mb * 2**20)
        for i in range(0, len(block), PAGE):
            block[i] = 1
        held.append(block)
    body = f"{os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
