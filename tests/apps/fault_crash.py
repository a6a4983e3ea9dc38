"""An app that dies at import in every worker, with exit code 1 (not a gunicorn boot error)."""
import os

os._exit(1)
