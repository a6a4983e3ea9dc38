"""What the master tells the world during a ramp: statsd, systemd STATUS=, the timeline file."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from support import ROOT, peak_booting, recv_all, wait_for

pytestmark = pytest.mark.slow


def test_statsd_gauges_and_boot_histogram(server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        srv = server(workers=3, boot_cpu=0.2, args=("--statsd-host", f"127.0.0.1:{port}",
                                                    "--statsd-prefix", "svc"))
        srv.wait_ready()
        seen: list[str] = []
        wait_for(lambda: seen.extend(recv_all(sock)) or any("boot_duration" in s for s in seen)
                 and "svc.gunicorn.slowstart.ready:3|g" in seen, 10, "slow-start metrics")
    assert any(s.startswith("svc.gunicorn.slowstart.booting:") and s.endswith("|g") for s in seen)
    durations = [s for s in seen if s.startswith("svc.gunicorn.slowstart.boot_duration:")]
    # sent through gunicorn's own Statsd.histogram(): "|h" in gunicorn >= 24, "|ms" in 23
    assert len(durations) == 3 and all(s.endswith(("|h", "|ms")) for s in durations)


def test_systemd_status_lines(server, tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        srv = server(workers=4, boot_cpu=0.3, env={"NOTIFY_SOCKET": path, "GUNICORN_SLOWSTART_MAX_BATCH": "1"})
        srv.wait_ready()
        seen: list[str] = []
        wait_for(lambda: seen.extend(recv_all(sock)) or "STATUS=4/4 workers ready" in seen, 10, "final STATUS")
    assert "READY=1" in seen
    ramp = [s for s in seen if s.startswith("STATUS=ramp: ")]
    assert "STATUS=ramp: 0/4 ready, 1 booting" in ramp and "STATUS=ramp: 3/4 ready, 1 booting" in ramp


def test_timeline_from_a_config_file_setting(server, tmp_path):
    out = tmp_path / "from-config.json"
    conf = tmp_path / "c.py"
    conf.write_text(f"from gunicorn_slowstart import install\ninstall(globals())\nslowstart_timeline = {str(out)!r}\n")
    srv = server(workers=2, boot_cpu=0.1, config=str(conf), env={"GUNICORN_SLOWSTART_TIMELINE": ""})
    wait_for(lambda: srv.summary_done(), 30, "ramp")
    data = wait_for(lambda: out.exists() and json.loads(out.read_text()), 5, "timeline file")
    assert len(data["processes"]) == 2 and peak_booting(data["processes"]) <= max(2, data["meta"]["cap"])
    summary = subprocess.run([sys.executable, "-m", "gunicorn_slowstart.timeline", "summary", str(out)],
                             capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert summary.returncode == 0 and "2/2 workers ready in" in summary.stdout


def test_timeline_never_written_through_a_symlink(server, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "timeline-link.json"
    link.symlink_to(target)
    srv = server(workers=2, boot_cpu=0.1, env={"GUNICORN_SLOWSTART_TIMELINE": str(link)})
    wait_for(lambda: srv.summary_done(), 30, "ramp")
    wait_for(lambda: "cannot write timeline" in srv.log(), 5, "a warning about the link")
    assert target.read_text() == "keep me"
