"""benchmarks/detectlag.py: the analysis with plain values, and one real master end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # pyproject's pythonpath does this too; keep the file runnable alone
    sys.path.insert(0, str(ROOT))

from benchmarks import detectlag  # noqa: E402

WALL = 1_800_000_000.0  # wall_t0 of a made-up master
OFFSET = WALL - 100.0  # ... which started at monotonic 100.0


def stamp(pid: int, created: float, notify: float) -> dict:
    return {"pid": pid, "created": 100.0 + created, "notify": 100.0 + notify, "offset": OFFSET}


def timeline(*ready: tuple[int, float | None]) -> dict:
    return {"wall_t0": WALL, "processes": [{"kind": "http", "pid": pid, "ready": at} for pid, at in ready]}


def test_seen_is_the_timelines_ready_minus_the_notify_on_one_clock():
    stamps = [stamp(1, 0.001, 1.0), stamp(2, 0.002, 1.2)]
    rows = detectlag.worker_lags(stamps, timeline((1, 1.001), (2, 1.2035)))
    assert [r["pid"] for r in rows] == [1, 2]
    assert rows[0]["seen"] == pytest.approx(0.001) and rows[1]["seen"] == pytest.approx(0.0035)


def test_reaction_is_the_next_worker_built_after_a_notify_within_the_window():
    stamps = [stamp(1, 0.0, 1.0), stamp(2, 0.0, 1.5), stamp(3, 1.002, 2.0), stamp(4, 1.7, 2.5)]
    rows = {r["pid"]: r for r in detectlag.worker_lags(stamps, timeline((1, 1.0), (2, 1.5), (3, 2.0), (4, 2.5)))}
    assert rows[1]["reaction"] == pytest.approx(0.002)
    assert rows[2]["reaction"] is None  # 0.2 s later: not a reaction to this notify
    assert rows[3]["reaction"] is None and rows[4]["reaction"] is None  # nothing built after them


def test_a_fork_the_master_decided_before_it_saw_the_notify_is_no_reaction_to_it():
    stamps = [stamp(1, 0.0, 1.0), stamp(2, 1.0016, 1.5)]  # built 1.6 ms after 1's notify, seen at 5 ms
    rows = {r["pid"]: r for r in detectlag.worker_lags(stamps, timeline((1, 1.005), (2, 1.5)))}
    assert rows[1]["seen"] == pytest.approx(0.005) and rows[1]["reaction"] is None
    rows = {r["pid"]: r for r in detectlag.worker_lags(stamps, timeline((1, 1.002), (2, 1.5)))}
    assert rows[1]["reaction"] == pytest.approx(0.0016)  # within the timeline's rounding: kept


def test_workers_the_timeline_has_not_seen_ready_are_left_out():
    rows = detectlag.worker_lags([stamp(1, 0.0, 1.0), stamp(2, 0.0, 1.1)], timeline((1, 1.0), (2, None)))
    assert [r["pid"] for r in rows] == [1]
    assert detectlag.worker_lags([], timeline()) == []


def test_summary_in_milliseconds():
    rows = [{"seen": 0.001, "reaction": 0.002}, {"seen": 0.003, "reaction": None}, {"seen": 0.002, "reaction": 0.004}]
    summary = detectlag.summarize(rows)
    assert summary["seen"] == {"count": 3, "median_ms": 2.0, "max_ms": 3.0, "min_ms": 1.0}
    assert summary["reaction"] == {"count": 2, "median_ms": 3.0, "max_ms": 4.0, "min_ms": 2.0}
    assert detectlag.summarize([])["seen"] is None


def test_stamps_are_one_json_line_each():
    text = "\n".join(json.dumps(stamp(pid, 0.0, 1.0)) for pid in (1, 2)) + "\n\n"
    assert [s["pid"] for s in detectlag.read_stamps(text)] == [1, 2]


@pytest.mark.slow
def test_a_real_master_sees_every_stamped_worker(tmp_path: Path) -> None:
    """Three workers of a real master (ready mode): each stamped its first notify and the
    timeline saw it ready afterwards; no leftover, exit 0."""
    out = tmp_path / "lag.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.detectlag", "-w", "3", "--repeat", "1",
                           "--boot-cpu", "0.1", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["errors"] == []
    rows = data["rows"]["ready"]
    assert len(rows) == 3 and len({r["pid"] for r in rows}) == 3
    assert all(r["seen"] > -0.001 for r in rows), rows  # the timeline rounds to 1 ms: never earlier than that
    assert data["summary"]["ready"]["seen"]["count"] == 3
