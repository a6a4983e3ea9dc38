"""A small ASGI app whose import costs real CPU, like a FastAPI/Django/ML app.

``EXAMPLE_BOOT_CPU`` (seconds of CPU time, default 0.5) sets how much CPU the
import burns.  It is CPU time, not wall time: when workers contend for the
CPU, each takes longer to boot, exactly as a heavy application does.

    gunicorn -k uvicorn_worker.UvicornWorker -w 8 -c python:gunicorn_slowstart.conf examples.app:app
"""

import os

from examples.asgi import lifespan, reply
from examples.cpu import burn_cpu

BOOT_CPU = float(os.environ.get("EXAMPLE_BOOT_CPU", "0.5"))
burn_cpu(BOOT_CPU)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["type"] != "http":
        return
    await reply(send, f"hello from worker {os.getpid()}\n".encode())
