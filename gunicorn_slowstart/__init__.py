"""gunicorn-slowstart: start gunicorn workers in readiness-paced, CPU-capped steps.

    # slowstart.conf.py
    from gunicorn_slowstart import install
    install(globals(), max_batch=4)

See the README for the settings and how readiness is detected.
"""

from .hooks import install
from .policy import PolicyConfig, SlowStartPolicy
from .pool import LongWorkerPool, ready, reports_ready

__all__ = ["install", "LongWorkerPool", "ready", "reports_ready", "PolicyConfig", "SlowStartPolicy"]
__version__ = "0.1.0"
