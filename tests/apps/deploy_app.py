"""An ASGI app a test can break and fix between boots, as a deploy would.

Every worker reads ``$DEPLOY_DIR/fault`` as it boots (a missing file is
``ok``) and answers with the version in ``$DEPLOY_DIR/version``:

* ``ok``: serve;
* ``import``: raise at import, as a typo in a deployed module would;
* ``lifespan``: lifespan startup fails, as when a database is unreachable
  (uvicorn exits the worker with code 3); read at lifespan time, so a test
  can end the outage while the worker is booting;
* ``crash``: die at import with exit code 1;
* ``hang``: never become ready (for ``boot_timeout``);
* ``noapp``: the module has no ``app`` (gunicorn's "App failed to load", exit 4).
"""
import os
import time

from examples.app import BOOT_CPU  # noqa: F401  (importing it burns the boot CPU)
from examples.asgi import lifespan, reply

DEPLOY_DIR = os.environ["DEPLOY_DIR"]


def _read(name: str, default: str) -> str:
    try:
        with open(os.path.join(DEPLOY_DIR, name)) as f:
            return f.read().strip() or default
    except FileNotFoundError:
        return default


FAULT = _read("fault", "ok")
VERSION = _read("version", "1")
if FAULT == "import":
    raise ImportError("cannot import name 'settings' from 'deploy_app' (a broken deploy)")
if FAULT == "crash":
    os._exit(1)
if FAULT == "hang":
    time.sleep(3600)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send, lambda: "database unreachable" if _read("fault", "ok") == "lifespan"
                              else None)
    if scope["type"] != "http":
        return
    await reply(send, f"version {VERSION} from worker {os.getpid()}\n".encode())


if FAULT == "noapp":
    del app
