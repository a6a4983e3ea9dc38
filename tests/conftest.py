import pytest
from support import Server


@pytest.fixture
def server(tmp_path):
    """Start real gunicorn masters; every one is stopped (by pid) after the test."""
    started = []

    def start(**kwargs) -> Server:
        srv = Server(tmp_path / f"s{len(started)}", **kwargs)
        srv.tmp.mkdir()
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        left = srv.stop()
        assert srv.orphans_expected or not left, f"processes left behind (killed now): {left}"
