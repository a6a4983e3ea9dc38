"""Burn CPU time, the way importing a heavy framework or model does."""

import time


def burn_cpu(seconds: float) -> None:
    """Spin until this process has used ``seconds`` of CPU time (not wall time)."""
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        for i in range(2000):
            x += i * i
