"""The example ASGI app, except that one boot in three dies at import (boots 0, 3, 6, ...)."""
import os

from fault_claim import claim_boot

if claim_boot() % 3 == 0:
    os._exit(1)

from examples.app import app  # noqa: E402, F401
