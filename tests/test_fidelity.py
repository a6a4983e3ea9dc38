"""Nothing stock gunicorn gives is lost: its statsd metrics in every mode.

Four real masters run side by side (stock gunicorn without the plugin, and
slow start in ``off``, ``ready`` and ``timer`` mode), each sending statsd to
its own UDP socket on 127.0.0.1.  Once stock gunicorn has sent its metrics
(worker gauge, request counters, and the backlog histogram on gunicorn >= 24),
every mode must have sent at least the same names.
"""

from __future__ import annotations

import socket

import pytest
from support import GUNICORN_MAJOR, get, wait_for

pytestmark = pytest.mark.slow

MODES = ("stock", "off", "ready", "timer")


def recv_names(sock: socket.socket, names: set[str]) -> set[str]:
    """Add the metric names of every datagram waiting on ``sock`` (``name:value|type``)."""
    while True:
        try:
            data = sock.recv(65536).decode()
        except BlockingIOError:
            return names
        names.update(line.split(":", 1)[0] for line in data.splitlines() if ":" in line)


def test_stock_statsd_metrics_are_sent_in_every_mode(server):
    sockets, servers, names = {}, {}, {}
    args_extra = ("--enable-backlog-metric",) if GUNICORN_MAJOR >= 24 else ()
    try:
        for mode in MODES:
            sock = sockets[mode] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            names[mode] = set()
            args = ("--statsd-host", f"127.0.0.1:{sock.getsockname()[1]}", *args_extra)
            env = {"GUNICORN_SLOWSTART_MODE": mode, "GUNICORN_SLOWSTART_DELAY": "0.2"}
            if mode == "stock":
                env = {"GUNICORN_SLOWSTART_TIMELINE": ""}
            servers[mode] = server(workers=2, boot_cpu=0.05, worker_class="sync", app="wsgi_app:app",
                                   config="" if mode == "stock" else "python:gunicorn_slowstart.conf",
                                   env=env, args=args)
        for mode, srv in servers.items():
            wait_for(lambda srv=srv: _answers(srv.port), 60, f"{mode}: a response")
        expected = {"gunicorn.workers", "gunicorn.requests", "gunicorn.request.duration",
                    "gunicorn.request.status.200"}
        if GUNICORN_MAJOR >= 24:
            expected.add("gunicorn.backlog")
        wait_for(lambda: expected <= recv_names(sockets["stock"], names["stock"]), 20,
                 f"stock gunicorn's metrics {sorted(expected)}")
        stock = names["stock"]
        for mode in MODES[1:]:
            try:
                wait_for(lambda mode=mode: stock <= recv_names(sockets[mode], names[mode]), 20,
                         f"{mode}: every metric stock gunicorn sent")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: missing {sorted(stock - names[mode])}") from None
            assert "gunicorn.slowstart.ready" in names[mode]
        assert "slow start: " not in servers["stock"].log()
    finally:
        for sock in sockets.values():
            sock.close()


def _answers(port: int) -> bool:
    try:
        return get(port, timeout=2)[0] == 200
    except OSError:
        return False
