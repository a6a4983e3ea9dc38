"""A small ASGI app whose import costs real CPU, like a FastAPI/Django/ML app.

``EXAMPLE_BOOT_CPU`` (seconds of CPU time, default 0.5) sets how much CPU the
import burns.  It is CPU time, not wall time: when workers contend for the
CPU, each takes longer to boot, exactly as a heavy application does.

    gunicorn -k uvicorn_worker.UvicornWorker -w 8 -c python:gunicorn_slowstart.conf examples.app:app
"""

import os

from examples.cpu import burn_cpu

BOOT_CPU = float(os.environ.get("EXAMPLE_BOOT_CPU", "0.5"))
burn_cpu(BOOT_CPU)


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
    body = f"hello from worker {os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
