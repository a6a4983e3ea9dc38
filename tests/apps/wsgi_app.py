"""A WSGI app with the example's CPU cost at import, for the sync and gthread workers."""
import os

from examples.app import BOOT_CPU  # noqa: F401  (importing it burns the boot CPU)


def app(environ, start_response):
    body = f"hello from worker {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
