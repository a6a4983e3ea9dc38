"""A long-worker target whose module fails at import in every worker."""
raise RuntimeError("job queue unreachable")


def run():
    pass
