"""``gunicorn-slowstart``: the ``gunicorn`` command with slow start built in.

It takes every gunicorn argument.  Importing the settings module first
registers the ``--slowstart-*`` flags (and makes them valid in
``GUNICORN_CMD_ARGS``) before gunicorn builds its argument parser, which the
plain ``gunicorn`` command cannot do.
"""

from __future__ import annotations

from . import settings  # noqa: F401  (registers the --slowstart-* settings)
from .hooks import activate


def main() -> None:
    from gunicorn.app.wsgiapp import run

    activate()
    run(prog="gunicorn-slowstart")


if __name__ == "__main__":
    main()
