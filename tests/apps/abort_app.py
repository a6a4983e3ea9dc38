"""A WSGI app whose ``/hang`` request never returns (bounded at 60 s): the worker stops
notifying, and gunicorn's master aborts it (SIGABRT) after ``--timeout``."""
import os
import time


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/hang":
        time.sleep(60)
    body = f"hello from worker {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
