"""A ready-made gunicorn config: ``gunicorn -c python:gunicorn_slowstart.conf app:app``.

Slow start with every setting from the environment (``GUNICORN_SLOWSTART_*``)
or its default.  To combine it with settings of your own, write a config file
that calls ``install(globals())`` instead (see ``examples/slowstart.conf.py``).
"""

from gunicorn_slowstart import install

install(globals())
