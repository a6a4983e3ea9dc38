"""The startup benchmark's medians, ratios, report and JSON, from made-up runs (no server).

``test_benchmark_smoke.py`` runs the real thing; this checks the arithmetic and the
shape of what it prints and writes, for the cases a quick run never meets (failed
runs, reloads, leftovers, the template row).
"""

from __future__ import annotations

import json

import pytest

from benchmarks import startup as bench


def run(spec: bench.RunSpec, all_ready: float, first: float, *, error: str | None = None,
        reload: bench.ReloadResult | None = None, pss: float | None = None) -> bench.RunResult:
    stats = bench.StartupStats(requests=20, ok_requests=18, failed=1, refused=1, timeouts=1, p50_ms=2.0,
                               p99_ms=9.0, listening=0.3)
    return bench.RunResult(
        n=spec.n, mode=spec.mode, repeat=spec.repeat, role=spec.role, pid=10, port=20,
        memory=None if pss is None else bench.Memory(50.0, 60.0, pss),
        log_tail="    | the log" if error else None, ok=error is None, error=error, first_response=first,
        first_ready=first - 0.01, all_ready=all_ready, long_ready=None, ramp_end=all_ready, startup=stats,
        peak_booting=2, boot=None, master_cpu=0.4, master_cpu_at_ready=0.3, workers_cpu=8.0, peak_rss_mib=400.0,
        peak_processes=17, server_meta={"cpus": 2, "cap": None if spec.mode == "off" else 2}, leftovers=[],
        reload=reload, wall=12.0, requests_raw=[], timeline=None)


def reload_result(duration: float, error: str | None = None) -> bench.ReloadResult:
    return bench.ReloadResult(ok=error is None, error=error, hup=10.0, duration=duration, requests=100, failed=0,
                              p50_ms=3.0, p99_ms=5.0, max_ms=6.0, peak_rss_mib=700.0, peak_processes=33,
                              ramp=None, raw=[])


@pytest.fixture
def opts() -> bench.Options:
    return bench.parse_args(["-w", "4", "--repeat", "2", "--reload", "--memory", "--fork-from", "master,template"])


def runs_for(opts: bench.Options) -> list[bench.RunResult]:
    """off is slow to its first answer, ready fast; the first template run failed."""
    times = {"off": (8.0, 6.0), "timer": (12.0, 1.2), "timer-template": (11.0, 1.1), "ready": (9.0, 1.0),
             "ready-template": (7.0, 0.5)}
    runs = []
    for spec in bench.plan(opts):
        if spec.role == "lone":
            runs.append(run(spec, 1.1 + spec.repeat / 10, 1.0))
            continue
        total, first = times[spec.mode]
        failed = spec.mode == "ready-template" and spec.repeat == 0
        runs.append(run(spec, total + spec.repeat, first, error="deadline: boom" if failed else None,
                        reload=None if failed else reload_result(2.0 + spec.repeat),
                        pss=300.0 if spec.mode == "ready-template" else 600.0))
    return runs


def test_medians_ratios_and_bounds(opts: bench.Options) -> None:
    rows, bounds = bench.summarize_runs(runs_for(opts), opts)
    by_mode = {row.mode: row for row in rows}
    assert [row.mode for row in rows] == ["off", "timer", "timer-template", "ready", "ready-template"]
    ready, template = by_mode["ready"], by_mode["ready-template"]
    assert (ready.runs, ready.ok_runs, ready.all_ready, ready.first_response) == (2, 2, 9.5, 1.0)
    assert (template.runs, template.ok_runs, template.all_ready) == (2, 1, 8.0)  # the failed run is left out
    assert ready.all_vs_off == round(9.5 / 8.5, 3) and ready.first_vs_timer == round(1.0 / 1.2, 3)
    assert template.pss_vs_ready == 0.5 and ready.pss_vs_ready is None
    assert by_mode["off"].server_cap is None and ready.server_cap == 2
    assert bounds.lone == 1.15 and bounds.cpu == {4: round(4 * 1.0 / bounds.capacity_cpus, 3)}
    assert ready.all_vs_bound == round(9.5 / max(1.15, bounds.cpu[4]), 3)
    assert ready.reload.duration == 2.5 and (ready.reload.runs, ready.reload.ok_runs) == (2, 2)


def test_json_is_flat_and_keeps_each_ratio_on_its_row(opts: bench.Options) -> None:
    runs = runs_for(opts)
    rows, bounds = bench.summarize_runs(runs, opts)
    medians = json.loads(json.dumps([row.to_json() for row in rows]))
    by_mode = {row["mode"]: row for row in medians}
    assert "all_vs_off" not in by_mode["off"] and "pss_vs_ready" not in by_mode["ready"]
    assert by_mode["ready"]["all_vs_off"] is not None and by_mode["ready-template"]["pss_vs_ready"] == 0.5
    assert by_mode["ready"]["reload"]["duration"] == 2.5
    assert bounds.to_json()["per_n"] == {"4": {"lone": 1.15, "cpu": bounds.cpu[4]}}
    record = runs[1].to_json()
    assert list(record)[:9] == ["n", "mode", "repeat", "role", "pid", "port", "workers_uss_mib",
                                "workers_pss_mib", "tree_pss_mib"]
    assert record["failed"] == 1 and record["p99_ms"] == 9.0 and "startup" not in record and "memory" not in record
    assert record["reload"]["duration"] == 2.0 and "log_tail" not in record
    failed = next(r for r in runs if r.error).to_json()
    assert failed["log_tail"] == "    | the log" and failed["reload"] is None and failed["ok"] is False


def test_report_lists_failed_runs_and_the_reload_table(opts: bench.Options) -> None:
    runs = runs_for(opts)
    rows, bounds = bench.summarize_runs(runs, opts)
    text = bench.report(rows, bounds, runs, opts, "HEADER")
    assert text.startswith("HEADER\nusable CPUs detected by the servers: 2")
    assert "FAILED RUNS: 1\n  N=4 ready-template repeat 1 (bench): deadline: boom" in text
    assert "SIGHUP reload" in text and "no leftover processes" in text
    line = next(line for line in text.splitlines() if line.split()[:2] == ["4", "ready"])
    assert line.split()[2:5] == ["2/2", "1.00", "9.50"]
    assert bench.describe(runs[1]).startswith("first response ")
