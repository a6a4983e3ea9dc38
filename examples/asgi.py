"""The ASGI plumbing the example apps (and the tests' apps) share: lifespan and a plain reply."""

from collections.abc import Callable


async def lifespan(receive, send, on_startup: Callable[[], str | None] | None = None) -> None:
    """Answer an ASGI lifespan scope until shutdown.  ``on_startup()`` runs at startup; a
    message it returns fails the startup (uvicorn's worker then exits with code 3)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            failure = on_startup() if on_startup is not None else None
            if failure:
                await send({"type": "lifespan.startup.failed", "message": failure})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def reply(send, body: bytes, status: int = 200) -> None:
    """A whole text/plain response."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
