"""An ASGI app whose worker dies ``FLAP_AFTER`` s (default 0.3) after its lifespan startup:
it becomes ready (uvicorn notifies on its first tick, within 0.1 s), then exits with ``FLAP_CODE``."""
import asyncio
import os

from examples.asgi import lifespan, reply

AFTER = float(os.environ.get("FLAP_AFTER", "0.3"))
CODE = int(os.environ.get("FLAP_CODE", "1"))  # 0: the worker chose to go, as with max_requests


async def _die_soon() -> None:
    await asyncio.sleep(AFTER)
    os._exit(CODE)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send, _schedule_death)
    await reply(send, b"ok")


def _schedule_death() -> None:
    asyncio.get_running_loop().create_task(_die_soon())
