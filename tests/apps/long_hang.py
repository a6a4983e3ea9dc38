"""A long-worker target whose import never finishes (a hung connection at import)."""
import time

time.sleep(3600)


def run() -> None:
    pass
