"""Smoke test of the startup benchmark: ``python -m benchmarks.startup --quick`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODES = ("off", "timer", "ready")

pytestmark = pytest.mark.slow


def test_quick_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.startup", "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    context = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, context

    lines = proc.stdout.splitlines()
    header = next((line for line in lines if line.split()[:2] == ["N", "mode"]), None)
    assert header is not None and "first s" in header and "ready s" in header, context
    table_rows = [row for row in map(str.split, lines) if len(row) > 3 and row[0] == "2" and row[2] == "1/1"]
    assert sorted(row[1] for row in table_rows) == sorted(MODES), context
    assert "no leftover processes" in proc.stdout, context
    assert "LEFTOVER" not in proc.stdout + proc.stderr, context

    data = json.loads(out.read_text())
    assert data["options"]["workers"] == [2]
    medians = data["medians"]
    assert sorted(row["mode"] for row in medians) == sorted(MODES)
    for row in medians:
        assert row["n"] == 2 and row["ok_runs"] == row["runs"] == 1, row
        first, ready = row["first_response"], row["all_ready"]
        assert first is not None and ready is not None, row
        assert 0 < first <= ready + 1, row
        assert 0 < ready < 60, row
        assert 1 <= row["peak_booting"] <= 2, row
        assert row["failed"] >= 0 and row["master_cpu"] > 0 and row["peak_rss_mib"] > 0, row
    by_mode = {row["mode"]: row for row in medians}
    assert by_mode["ready"]["all_vs_off"] is not None and by_mode["ready"]["first_vs_timer"] is not None
    assert data["bounds"]["per_n"]["2"]["lone"] > 0
    runs = data["runs"]
    assert len(runs) == 4 and sum(r["role"] == "lone" for r in runs) == 1
    assert [r["mode"] for r in runs if r["role"] == "bench"] == list(MODES)
    assert all(r["error"] is None and r["leftovers"] == [] for r in runs), [r["error"] for r in runs]
