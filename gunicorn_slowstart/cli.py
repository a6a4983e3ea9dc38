"""``gunicorn-slowstart``: the ``gunicorn`` command with slow start built in.

It takes every gunicorn argument.  It registers the ``--slowstart-*`` settings
before gunicorn builds its argument parser (which the plain ``gunicorn``
command cannot do), so they are flags, valid in ``GUNICORN_CMD_ARGS`` and
config-file names.  Its ``--version`` names both versions, and a config file
given with ``-c`` is checked for slow-start names even without ``install()``.
"""

from __future__ import annotations

import argparse

from gunicorn import __version__ as gunicorn_version
from gunicorn.app.wsgiapp import WSGIApplication
from gunicorn.config import Config

from . import __version__, settings
from .hooks import activate, adopt_namespace

PROG = "gunicorn-slowstart"


def version_text() -> str:
    return f"{PROG} {__version__} (gunicorn {gunicorn_version})"


class SlowStartConfig(Config):
    """gunicorn's Config; its parser's ``--version`` names gunicorn-slowstart too.

    ``parser()`` is gunicorn's own (the same in 23 and 27) with another version
    text: argparse cannot replace an option once added without its internals.
    """

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(usage=self.usage, prog=self.prog)
        parser.add_argument("-v", "--version", action="version", default=argparse.SUPPRESS,
                            version=version_text(), help="show program's version number and exit")
        parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
        for key in sorted(self.settings, key=self.settings.__getitem__):
            self.settings[key].add_option(parser)
        return parser


class SlowStartApplication(WSGIApplication):
    def load_default_config(self) -> None:
        self.cfg = SlowStartConfig(self.usage, prog=self.prog)

    def load_config_from_module_name_or_filename(self, location: str) -> dict:
        namespace = super().load_config_from_module_name_or_filename(location)
        adopt_namespace(namespace)
        return namespace


def main() -> None:
    settings.register()
    activate()
    SlowStartApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog=PROG).run()


if __name__ == "__main__":
    main()
