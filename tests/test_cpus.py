"""Usable CPU detection and the idle-CPU sampler.

Most tests build fake cgroup v1/v2 trees (with a fake /proc/self/cgroup and
/proc/self/mountinfo) under tmp_path and pass it as ``root``; a few check the
real thing: a real affinity mask, a real /proc/stat.  The tests inside a real
CPU-limited cgroup are in test_cgroup_limits.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import run_python

from gunicorn_slowstart.cpus import IdleCpuSampler, cpu_report, usable_cpus

HOST = {"host_count": 8, "affinity": 8}  # a big fake host, so that the cgroup decides


# -- fake trees ---------------------------------------------------------------


def write(root: Path, path: str, text: str | bytes) -> Path:
    """Write ``text`` at ``root/path``, creating parent directories."""
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        target.write_bytes(text)
    else:
        target.write_text(text)
    return target


def mount(point: str, fstype: str, options: str, mount_root: str = "/") -> str:
    """One /proc/self/mountinfo line."""
    return f"30 20 0:26 {mount_root} {point} rw,nosuid,relatime shared:9 - {fstype} {fstype} {options}"


def v2_tree(root: Path, path: str = "/app/web", mount_root: str = "/") -> Path:
    """A pure cgroup v2 host; returns the mount point (inside root)."""
    write(root, "proc/self/cgroup", f"0::{path}\n")
    write(root, "proc/self/mountinfo", mount("/sys/fs/cgroup", "cgroup2", "rw,nsdelegate") + "\n")
    base = root / "sys/fs/cgroup"
    (base / os.path.relpath(path, mount_root)).mkdir(parents=True, exist_ok=True)
    return base


def v1_tree(root: Path, path: str = "/app/web", *, comount: bool = True, acct_path: str | None = None,
            mount_root: str = "/") -> tuple[Path, Path]:
    """A cgroup v1 host; returns the cpu and cpuacct mount points (the same when co-mounted)."""
    acct_path = acct_path or path
    if comount:
        lines = [f"4:cpu,cpuacct:{path}", f"3:memory:{path}", "1:name=systemd:/", "0::/"]
        mounts = [mount("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct", mount_root)]
        cpu = acct = root / "sys/fs/cgroup/cpu,cpuacct"
    else:
        lines = [f"5:cpuacct:{acct_path}", f"4:cpu:{path}", "1:name=systemd:/", "0::/"]
        mounts = [mount("/sys/fs/cgroup/cpu", "cgroup", "rw,cpu", mount_root),
                  mount("/sys/fs/cgroup/cpuacct", "cgroup", "rw,cpuacct", mount_root)]
        cpu, acct = root / "sys/fs/cgroup/cpu", root / "sys/fs/cgroup/cpuacct"
    mounts += [mount("/sys/fs/cgroup/systemd", "cgroup", "rw,xattr,name=systemd"),
               mount("/sys/fs/cgroup/unified", "cgroup2", "rw")]
    write(root, "proc/self/cgroup", "\n".join(lines) + "\n")
    write(root, "proc/self/mountinfo", "\n".join(mounts) + "\n")
    (cpu / os.path.relpath(path, mount_root)).mkdir(parents=True, exist_ok=True)
    (acct / os.path.relpath(acct_path, mount_root)).mkdir(parents=True, exist_ok=True)
    return cpu, acct


def set_v1_quota(directory: Path, quota: str | int, period: str | int = 100000) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (directory / "cpu.cfs_period_us").write_text(f"{period}\n")


# -- sources and their minimum --------------------------------------------------


def test_no_cgroup_limit_v1(tmp_path: Path) -> None:
    cpu, _ = v1_tree(tmp_path)
    set_v1_quota(cpu / "app/web", -1)
    set_v1_quota(cpu / "app", -1)
    (cpu / "app/web/cpu.shares").write_text("2\n")  # a tiny weight is not a limit
    report = cpu_report(str(tmp_path), **HOST)
    assert (report.usable, report.cgroup_quota) == (8, None)
    assert report.source == "host CPU count 8"


def test_v2_max_is_no_limit(tmp_path: Path) -> None:
    base = v2_tree(tmp_path)
    (base / "app/web/cpu.max").write_text("max 100000\n")
    (base / "app/web/cpu.weight").write_text("1\n")
    assert usable_cpus(str(tmp_path), **HOST) == 8
    assert cpu_report(str(tmp_path), **HOST).cgroup_quota is None


def test_v2_quota_one_and_a_half_rounds_down(tmp_path: Path) -> None:
    base = v2_tree(tmp_path)
    (base / "app/web/cpu.max").write_text("150000 100000\n")
    report = cpu_report(str(tmp_path), **HOST)
    assert (report.usable, report.cgroup_quota) == (1, 1.5)
    assert report.source == f"cgroup v2 quota 1.50 CPU at {base / 'app/web'}"


def test_v1_quota_two_and_a_half_rounds_down(tmp_path: Path) -> None:
    cpu, _ = v1_tree(tmp_path)
    set_v1_quota(cpu / "app/web", 250000, 100000)
    report = cpu_report(str(tmp_path), **HOST)
    assert (report.usable, report.cgroup_quota) == (2, 2.5)
    assert report.source.startswith("cgroup v1 quota 2.50 CPU at ")


@pytest.mark.parametrize("version", [1, 2])
def test_half_a_cpu_is_still_one(tmp_path: Path, version: int) -> None:
    if version == 1:
        cpu, _ = v1_tree(tmp_path)
        set_v1_quota(cpu / "app/web", 50000)
    else:
        (v2_tree(tmp_path) / "app/web/cpu.max").write_text("50000 100000\n")
    report = cpu_report(str(tmp_path), **HOST)
    assert (report.usable, report.cgroup_quota) == (1, 0.5)


def test_quota_of_2_7_is_2_and_exact_integers_stay(tmp_path: Path) -> None:
    base = v2_tree(tmp_path)
    (base / "app/web/cpu.max").write_text("270000 100000")
    assert usable_cpus(str(tmp_path), **HOST) == 2
    (base / "app/web/cpu.max").write_text("300000 100000")
    assert usable_cpus(str(tmp_path), **HOST) == 3


@pytest.mark.parametrize("version", [1, 2])
def test_parent_limit_smaller_than_child_wins(tmp_path: Path, version: int) -> None:
    if version == 1:
        cpu, _ = v1_tree(tmp_path)
        set_v1_quota(cpu / "app/web", 400000)
        set_v1_quota(cpu / "app", 200000)
        set_v1_quota(cpu, -1)
        parent = cpu / "app"
    else:
        base = v2_tree(tmp_path)
        (base / "app/web/cpu.max").write_text("400000 100000")
        (base / "app/cpu.max").write_text("200000 100000")
        parent = base / "app"
    report = cpu_report(str(tmp_path), **HOST)
    assert (report.usable, report.cgroup_quota) == (2, 2.0)
    assert report.source.endswith(f"at {parent}")


def test_limit_at_the_mount_root_applies(tmp_path: Path) -> None:
    base = v2_tree(tmp_path)
    (base / "cpu.max").write_text("100000 100000")
    assert usable_cpus(str(tmp_path), **HOST) == 1


def test_hybrid_host_takes_the_smaller_of_v1_and_v2(tmp_path: Path) -> None:
    cpu, _ = v1_tree(tmp_path)  # also mounts cgroup2 at /sys/fs/cgroup/unified, path "/"
    set_v1_quota(cpu / "app/web", 300000)
    (tmp_path / "sys/fs/cgroup/unified").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/unified/cpu.max").write_text("100000 100000")
    assert cpu_report(str(tmp_path), **HOST).source.startswith("cgroup v2 quota 1.00")


V2_GARBAGE = ["", "\n", "garbage", "100000", "max 100000 extra", "0 100000", "100000 0", "-5 100000",
              "abc 100000", "100000 abc", "1.5 100000"]


@pytest.mark.parametrize("text", V2_GARBAGE)
def test_malformed_cpu_max_means_no_limit(tmp_path: Path, text: str) -> None:
    (v2_tree(tmp_path) / "app/web/cpu.max").write_text(text)
    assert usable_cpus(str(tmp_path), **HOST) == 8


@pytest.mark.parametrize("quota,period", [("garbage", "100000"), ("50000", "0"), ("50000", ""),
                                          ("", ""), ("0", "100000"), ("50000", "-100000"),
                                          ("-2", "100000"), ("5e4", "100000")])
def test_malformed_v1_quota_means_no_limit(tmp_path: Path, quota: str, period: str) -> None:
    cpu, _ = v1_tree(tmp_path)
    set_v1_quota(cpu / "app/web", quota, period)
    assert usable_cpus(str(tmp_path), **HOST) == 8


def test_binary_garbage_means_no_limit(tmp_path: Path) -> None:
    write(tmp_path, "sys/fs/cgroup/app/web/cpu.max", b"\xff\xfe\x00\x80")
    v2_tree(tmp_path)
    assert usable_cpus(str(tmp_path), **HOST) == 8


def test_unreadable_file_is_logged_at_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base = v2_tree(tmp_path)
    (base / "app/web/cpu.max").mkdir()  # reading a directory fails even as root
    (base / "app/cpu.max").write_text("100000 0")
    with caplog.at_level(logging.DEBUG, logger="gunicorn_slowstart"):
        assert usable_cpus(str(tmp_path), **HOST) == 8
    messages = [r.getMessage() for r in caplog.records if r.name == "gunicorn_slowstart.cpus"]
    assert any("cannot read" in m and "cpu.max" in m for m in messages)
    assert any("ignoring CFS quota" in m for m in messages)
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


@pytest.mark.parametrize("missing", ["proc/self/cgroup", "proc/self/mountinfo", "sys"])
def test_missing_cgroup_files_mean_no_limit(tmp_path: Path, missing: str) -> None:
    cpu, _ = v1_tree(tmp_path)
    set_v1_quota(cpu / "app/web", 50000)
    target = tmp_path / missing
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    assert usable_cpus(str(tmp_path), **HOST) == 8


def test_empty_root_means_no_limit(tmp_path: Path) -> None:
    report = cpu_report(str(tmp_path), host_count=3, affinity=5)
    assert (report.usable, report.cgroup_quota, report.affinity) == (3, None, 5)


def test_garbage_proc_files_mean_no_limit(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "nonsense\n::\n7\n")
    write(tmp_path, "proc/self/mountinfo", "a b c\n - cgroup2\n\n")
    assert usable_cpus(str(tmp_path), **HOST) == 8


@pytest.mark.parametrize("version", [1, 2])
def test_container_mount_root_is_the_own_cgroup(tmp_path: Path, version: int) -> None:
    """No cgroup namespace: /proc/self/cgroup says /docker/abc and so does the mount's root,
    so the quota sits at the mount point itself, not at mount_point/docker/abc."""
    if version == 1:
        cpu, _ = v1_tree(tmp_path, "/docker/abc", mount_root="/docker/abc")
        set_v1_quota(cpu, 50000)
    else:
        base = v2_tree(tmp_path, "/docker/abc", mount_root="/docker/abc")
        write(tmp_path, "proc/self/mountinfo",
              mount("/sys/fs/cgroup", "cgroup2", "rw", mount_root="/docker/abc") + "\n")
        (base / "cpu.max").write_text("50000 100000")
        cpu = base
    report = cpu_report(str(tmp_path), **HOST)
    assert report.usable == 1
    assert report.source.endswith(f"at {cpu}")
    assert not (cpu / "docker").exists()


def test_container_nested_cgroup_below_the_mount_root(tmp_path: Path) -> None:
    cpu, _ = v1_tree(tmp_path, "/docker/abc/worker", mount_root="/docker/abc")
    set_v1_quota(cpu / "worker", 300000)
    set_v1_quota(cpu, 150000)
    assert cpu_report(str(tmp_path), **HOST).source.endswith(f"at {cpu}")
    assert usable_cpus(str(tmp_path), **HOST) == 1


def test_missing_cgroup_dir_falls_back_to_the_mount_point(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/not/visible/here\n")
    write(tmp_path, "proc/self/mountinfo", mount("/sys/fs/cgroup", "cgroup2", "rw") + "\n")
    write(tmp_path, "sys/fs/cgroup/cpu.max", "100000 100000")
    assert usable_cpus(str(tmp_path), **HOST) == 1


def test_escaped_mount_point(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/\n")
    write(tmp_path, "proc/self/mountinfo", mount("/cg\\040roups", "cgroup2", "rw") + "\n")
    write(tmp_path, "cg roups/cpu.max", "100000 100000")
    assert usable_cpus(str(tmp_path), **HOST) == 1


def test_host_count_and_affinity_parameters(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert usable_cpus(root, host_count=1, affinity=8) == 1
    report = cpu_report(root, host_count=8, affinity=3)
    assert (report.usable, report.source) == (3, "affinity mask of 3 CPU")
    (v2_tree(tmp_path) / "app/web/cpu.max").write_text("400000 100000")
    assert usable_cpus(root, host_count=8, affinity=3) == 3
    assert usable_cpus(root, host_count=2, affinity=8) == 2
    assert cpu_report(root, host_count=4, affinity=4).source.startswith("cgroup v2")  # a tie names the quota


def test_defaults_come_from_os() -> None:
    report = cpu_report()
    assert report.host == os.cpu_count()
    assert report.affinity == len(os.sched_getaffinity(0))
    assert 1 <= report.usable <= report.host


settings_fs = settings(max_examples=60, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings_fs
@given(quota=st.integers(1000, 10**7), period=st.integers(1000, 10**6), host=st.integers(1, 256))
def test_quota_property(tmp_path: Path, quota: int, period: int, host: int) -> None:
    (v2_tree(tmp_path) / "app/web/cpu.max").write_text(f"{quota} {period}\n")
    assert usable_cpus(str(tmp_path), host_count=host, affinity=host) == min(host, max(1, quota // period))


@settings_fs
@given(text=st.text(max_size=40), period=st.text(max_size=12))
def test_arbitrary_text_never_raises(tmp_path: Path, text: str, period: str) -> None:
    cpu, _ = v1_tree(tmp_path)  # a hybrid host: v1 cpu plus cgroup2 at /sys/fs/cgroup/unified
    write(tmp_path, "sys/fs/cgroup/unified/cpu.max", text)
    set_v1_quota(cpu / "app/web", text, period)
    assert 1 <= usable_cpus(str(tmp_path), **HOST) <= 8


# -- the real process ------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity masks on this platform")
def test_real_affinity_of_one_cpu() -> None:
    code = ("import os; os.sched_setaffinity(0, {0})\n"
            "from gunicorn_slowstart.cpus import usable_cpus, cpu_report\n"
            "print(usable_cpus()); print(cpu_report().affinity)")
    assert run_python(code).split() == ["1", "1"]


# -- IdleCpuSampler ----------------------------------------------------------------


def proc_stat(root: Path, user: int, system: int, idle: int, iowait: int = 0, steal: int = 0) -> None:
    write(root, "proc/stat", f"cpu  {user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0\n"
                             f"cpu0 {user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0\nintr 1 2 3\n")


def test_sampler_from_proc_stat(tmp_path: Path) -> None:
    proc_stat(tmp_path, 100, 100, 800)
    sampler = IdleCpuSampler(str(tmp_path), usable=4)
    assert sampler.mode == "proc"
    assert sampler.sample(10.0) is None  # first call: nothing to compare with
    proc_stat(tmp_path, 150, 150, 850, iowait=50)  # 100 busy, 100 idle (iowait counts as idle)
    assert sampler.sample(11.0) == pytest.approx(2.0)
    proc_stat(tmp_path, 250, 250, 850, iowait=50)  # all busy
    assert sampler.sample(12.0) == 0.0


def test_sampler_proc_stat_edge_cases(tmp_path: Path) -> None:
    proc_stat(tmp_path, 100, 100, 800)
    sampler = IdleCpuSampler(str(tmp_path), usable=2)
    sampler.sample(1.0)
    assert sampler.sample(2.0) is None  # no ticks passed
    assert sampler.sample(2.0) is None  # no time passed
    write(tmp_path, "proc/stat", "cpu garbage\n")
    assert sampler.sample(3.0) is None
    proc_stat(tmp_path, 100, 100, 900)
    assert sampler.sample(4.0) is None  # the sample after an unreadable one starts afresh
    proc_stat(tmp_path, 100, 100, 1000)
    assert sampler.sample(5.0) == pytest.approx(2.0)
    (tmp_path / "proc/stat").unlink()
    assert sampler.sample(6.0) is None


def test_sampler_v2_quota(tmp_path: Path) -> None:
    base = v2_tree(tmp_path)
    (base / "app/web/cpu.max").write_text("200000 100000")
    stat = base / "app/web/cpu.stat"
    stat.write_text("usage_usec 1000000\nuser_usec 800000\nsystem_usec 200000\n")
    proc_stat(tmp_path, 0, 0, 100)  # the host looks idle; it must not matter
    sampler = IdleCpuSampler(str(tmp_path), usable=8)
    assert sampler.mode == "cgroup"
    assert sampler.sample(100.0) is None
    stat.write_text("usage_usec 1500000\nuser_usec 1\nsystem_usec 1\n")  # 0.5 CPU-s in 1 s
    assert sampler.sample(101.0) == pytest.approx(1.5)
    stat.write_text("usage_usec 9500000\n")  # more than the quota (a burst): nothing idle
    assert sampler.sample(102.0) == 0.0
    stat.write_text("usage_usec 0\n")  # a reset counter: clamp, never above the quota
    assert sampler.sample(103.0) == 2.0
    stat.write_text("user_usec 5\n")
    assert sampler.sample(104.0) is None


def test_sampler_reads_the_ancestor_that_holds_the_quota(tmp_path: Path) -> None:
    base = v2_tree(tmp_path)
    (base / "app/cpu.max").write_text("100000 100000")
    (base / "app/web/cpu.stat").write_text("usage_usec 0\n")
    parent = base / "app/cpu.stat"
    parent.write_text("usage_usec 0\n")
    sampler = IdleCpuSampler(str(tmp_path), usable=8)
    sampler.sample(0.0)
    parent.write_text("usage_usec 250000\n")  # siblings used a quarter of the parent's quota
    assert sampler.sample(1.0) == pytest.approx(0.75)


def test_sampler_v1_comounted_cpuacct(tmp_path: Path) -> None:
    cpu, _ = v1_tree(tmp_path)
    set_v1_quota(cpu / "app/web", 50000)
    usage = cpu / "app/web/cpuacct.usage"
    usage.write_text("1000000000\n")
    sampler = IdleCpuSampler(str(tmp_path), usable=8)
    assert sampler.mode == "cgroup"
    sampler.sample(5.0)
    usage.write_text("1100000000\n")  # 0.1 CPU-s in 0.5 s = 0.2 CPU
    assert sampler.sample(5.5) == pytest.approx(0.3)


def test_sampler_v1_separate_mirrored_cpuacct(tmp_path: Path) -> None:
    cpu, acct = v1_tree(tmp_path, comount=False)
    set_v1_quota(cpu / "app", 150000)
    (acct / "app/web/cpuacct.usage").write_text("7\n")
    usage = acct / "app/cpuacct.usage"
    usage.write_text("0\n")
    sampler = IdleCpuSampler(str(tmp_path), usable=8)
    assert sampler.mode == "cgroup"
    sampler.sample(0.0)
    usage.write_text("2000000000\n")  # 1 CPU of the 1.5 over 2 s
    assert sampler.sample(2.0) == pytest.approx(0.5)


def test_sampler_v1_cpuacct_not_mirrored_uses_proc_stat_within_the_quota(tmp_path: Path) -> None:
    cpu, acct = v1_tree(tmp_path, comount=False, acct_path="/")
    set_v1_quota(cpu / "app/web", 50000)
    (acct / "cpuacct.usage").write_text("0\n")  # the whole host's usage: not ours
    proc_stat(tmp_path, 0, 0, 100)
    sampler = IdleCpuSampler(str(tmp_path), usable=4)
    assert sampler.mode == "proc"
    sampler.sample(0.0)
    proc_stat(tmp_path, 0, 0, 200)  # the host is idle, but we may only use half a CPU
    assert sampler.sample(1.0) == 0.5


def test_sampler_falls_back_when_usage_is_unreadable(tmp_path: Path) -> None:
    base = v2_tree(tmp_path)
    (base / "app/web/cpu.max").write_text("100000 100000")
    (base / "app/web/cpu.stat").mkdir()
    proc_stat(tmp_path, 0, 0, 100)
    assert IdleCpuSampler(str(tmp_path), usable=2).mode == "proc"


def test_sampler_real_proc_stat() -> None:
    sampler = IdleCpuSampler()
    assert sampler.sample(time.monotonic()) is None
    time.sleep(0.2)  # the measured interval itself
    idle = sampler.sample(time.monotonic())
    assert idle is not None
    assert 0.0 <= idle <= usable_cpus() + 0.5
