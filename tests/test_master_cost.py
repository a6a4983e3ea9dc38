"""The master-cost benchmark end to end, small: a real SlowStartArbiter through respawn events.

``python -m benchmarks.master_cost`` (README, Reliability) drives the real
arbiter's event path with real worker processes; here with small checkpoints,
so that the benchmark keeps working.  The figures themselves are the
benchmark's business (no timing is asserted): the shape of the report, one
real fork per event, the timeline and status file written, RSS flat.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # real forks (no HTTP), ~3 s


def test_master_cost_drives_the_real_arbiter_through_respawns(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.master_cost", "--checkpoints", "50", "150",
                           "--window", "50", "--workers", "4", "--dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    context = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, context
    rows = re.findall(r"^\s+(\d+) events:\s+([\d.]+) us/event \(\s*([\d.]+) in fork\)\s+RSS\s+([\d.]+) MiB"
                      r"\s+timeline\s+(\d+) bytes\s+workers forked (\d+)$", proc.stdout, re.M)
    assert [int(r[0]) for r in rows] == [50, 150], context
    for events, cost, in_fork, _rss, timeline, forked in rows:
        assert int(forked) == int(events) + 4, "one real fork per respawn event, after the first 4"
        assert int(timeline) > 0 and 0 < float(in_fork) < float(cost), context
    assert float(rows[1][3]) - float(rows[0][3]) < 5, "the master's RSS grows with history"
    assert not list(tmp_path.iterdir()), "the temporary timeline and status file are removed"
