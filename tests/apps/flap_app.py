"""An ASGI app whose worker dies ``FLAP_AFTER`` s (default 0.3) after its lifespan startup:
it becomes ready (uvicorn notifies on its first tick, within 0.1 s), then exits with ``FLAP_CODE``."""
import asyncio
import os

AFTER = float(os.environ.get("FLAP_AFTER", "0.3"))
CODE = int(os.environ.get("FLAP_CODE", "1"))  # 0: the worker chose to go, as with max_requests


async def _die_soon() -> None:
    await asyncio.sleep(AFTER)
    os._exit(CODE)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                asyncio.get_running_loop().create_task(_die_soon())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
