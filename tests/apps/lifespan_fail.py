"""An ASGI app whose lifespan startup fails: uvicorn exits the worker with code 3."""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
