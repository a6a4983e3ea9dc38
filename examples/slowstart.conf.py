# gunicorn -k uvicorn_worker.UvicornWorker -w 8 -c examples/slowstart.conf.py examples.app:app
from gunicorn_slowstart import install

install(globals())          # slow start with the defaults; keywords override them

slowstart_timeline = "startup.json"   # the master's record of the ramp (a gunicorn setting)


def when_ready(server):     # your own hooks keep working, before or after install()
    server.log.info("example config: master ready")
