"""Nothing stock gunicorn gives is lost: its statsd metrics in every mode, its hooks in ready and
timer mode (worker_abort included).

Four real masters run side by side (stock gunicorn without the plugin, and
slow start in ``off``, ``ready`` and ``timer`` mode), each sending statsd to
its own UDP socket on 127.0.0.1.  Once stock gunicorn has sent its metrics
(worker gauge, request counters, and the backlog histogram on gunicorn >= 24),
every mode must have sent at least the same names.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

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
            wait_for(lambda mode=mode: "gunicorn.slowstart.ready" in recv_names(sockets[mode], names[mode]), 10,
                     f"{mode}: gunicorn.slowstart.ready among {sorted(names[mode])}; {servers[mode].tail()}")
        assert "slow start: " not in servers["stock"].log()
    finally:
        for sock in sockets.values():
            sock.close()


def _answers(port: int) -> bool:
    try:
        return get(port, timeout=2)[0] == 200
    except OSError:
        return False


HOOKS = '''
import os


def _log(name):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(name + "\\n")


def on_starting(server): _log("on_starting")
def when_ready(server): _log("when_ready")
def on_reload(server): _log("on_reload")
def pre_fork(server, worker): _log("pre_fork")
def post_fork(server, worker): _log("post_fork")
def post_worker_init(worker): _log("post_worker_init")
def worker_int(worker): _log("worker_int")
def worker_abort(worker): _log("worker_abort")
def child_exit(server, worker): _log("child_exit")
def worker_exit(server, worker): _log("worker_exit")
def nworkers_changed(server, new, old): _log("nworkers_changed")
def on_exit(server): _log("on_exit")
'''


INSTALL = "from gunicorn_slowstart import install\ninstall(globals())\n"
HOOK_SERVERS = (("stock", "", {}), ("ready", INSTALL, {}),
                ("timer", INSTALL, {"GUNICORN_SLOWSTART_MODE": "timer", "GUNICORN_SLOWSTART_DELAY": "0.2"}))


def hook_servers(server, tmp_path, app: str, workers: int, args: tuple = ()) -> tuple[dict, Callable]:
    """Stock gunicorn and slow start in ready and timer mode, each logging its hook calls."""
    servers, logs = {}, {}
    for name, head, env in HOOK_SERVERS:
        conf = tmp_path / f"{name}.conf.py"
        conf.write_text(head + HOOKS)
        logs[name] = tmp_path / f"{name}.hooks"
        servers[name] = server(workers=workers, boot_cpu=0.05, worker_class="sync", app=app, config=str(conf),
                               env={"HOOK_LOG": str(logs[name]), **env}, args=("--log-level", "debug", *args))

    def calls(name: str) -> list[str]:
        return logs[name].read_text().split() if logs[name].exists() else []

    return servers, calls


def test_every_gunicorn_hook_stock_calls_is_called_in_ready_and_timer_mode(server, tmp_path):
    """Start, TTIN, SIGHUP, then SIGINT (quick stop): stock gunicorn and slow start side by side."""
    import signal

    servers, calls = hook_servers(server, tmp_path, "wsgi_app:app", workers=2)

    # SIGHUP goes back to the configured 2 workers, as stock gunicorn does
    for step, sig, inits in (("start", None, 2), ("TTIN", signal.SIGTTIN, 3), ("HUP", signal.SIGHUP, 5)):
        for srv in servers.values():
            if sig is not None:
                srv.signal(sig)
        for name in servers:
            wait_for(lambda name=name, inits=inits: calls(name).count("post_worker_init") >= inits, 60,
                     f"{name}: {inits} workers initialised after {step}")
    for name, srv in servers.items():
        wait_for(lambda name=name: calls(name).count("child_exit") >= 3, 30, f"{name}: the old workers' exits")
        srv.signal(signal.SIGINT)
    for srv in servers.values():
        assert srv.wait_exit(30) == 0
    stock = calls("stock")
    assert set(stock) == {"on_starting", "when_ready", "on_reload", "pre_fork", "post_fork", "post_worker_init",
                          "worker_int", "child_exit", "worker_exit", "nworkers_changed", "on_exit"}
    for mode in ("ready", "timer"):
        slow = calls(mode)
        assert set(stock) <= set(slow), f"missing in {mode} mode: {sorted(set(stock) - set(slow))}"
        for hook in ("on_starting", "when_ready", "on_reload", "on_exit"):
            assert slow.count(hook) == stock.count(hook) == 1, (mode, hook)
        for hook in ("pre_fork", "post_fork", "post_worker_init", "child_exit", "worker_exit"):
            assert slow.count(hook) == stock.count(hook) == 5, (mode, hook)  # 3 old workers, then 2 new ones
        assert slow.count("nworkers_changed") == stock.count("nworkers_changed") == 3, mode  # start, TTIN, HUP
        assert slow.count("worker_int") == stock.count("worker_int") == 2, mode
        for line in ("[DEBUG] 2 workers", "[DEBUG] 3 workers", "[INFO] Handling signal: ttin",
                     "[INFO] Hang up: Master", "[INFO] Handling signal: int", "[INFO] Shutting down: Master"):
            assert line in servers["stock"].log() and line in servers[mode].log(), (mode, line)


def test_worker_abort_runs_for_a_ready_worker_that_hangs_past_the_timeout(server, tmp_path):
    """A ready worker stuck in a request past gunicorn's --timeout gets SIGABRT from the master's
    murder_workers; the worker_abort hook runs in it and a replacement is forked, in every mode."""
    import signal

    servers, calls = hook_servers(server, tmp_path, "abort_app:app", workers=1, args=("--timeout", "3"))
    for name in servers:
        wait_for(lambda name=name: calls(name).count("post_worker_init") >= 1, 60, f"{name}: the worker ready")
    clients = []
    try:
        for srv in servers.values():
            client = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            client.sendall(b"GET /hang HTTP/1.0\r\nHost: x\r\n\r\n")
            clients.append(client)
        for name, srv in servers.items():
            wait_for(lambda name=name: "worker_abort" in calls(name), 30, f"{name}: worker_abort after --timeout")
            wait_for(lambda name=name: calls(name).count("post_worker_init") >= 2, 60, f"{name}: a new worker")
            assert "[CRITICAL] WORKER TIMEOUT (pid:" in srv.log(), name
    finally:
        for client in clients:
            client.close()
    for name, srv in servers.items():
        assert _answers(srv.port), name
        srv.signal(signal.SIGINT)
        assert srv.wait_exit(30) == 0, name
        assert calls(name).count("worker_abort") >= 1 and calls(name).count("child_exit") >= 1, name
