"""Available memory: the smaller of cgroup headroom and MemAvailable, on fake and real trees."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gunicorn_slowstart.memory import available_memory_mb

MIB = 2**20
GIB = 2**30
V1_UNLIMITED = 9223372036854771712  # what an unlimited v1 cgroup reports on x86-64


def write(root: Path, path: str, text: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def mount(point: str, fstype: str, options: str, mount_root: str = "/") -> str:
    return f"35 31 0:32 {mount_root} {point} rw,nosuid,relatime shared:9 - {fstype} {fstype} {options}"


def meminfo(root: Path, total_mib: int = 16384, available_mib: int = 8192) -> None:
    write(root, "proc/meminfo", f"MemTotal:       {total_mib * 1024} kB\nMemFree:  1 kB\n"
                                f"MemAvailable:   {available_mib * 1024} kB\nBuffers: 5 kB\n")


def v2(root: Path, path: str = "/app/web", mount_root: str = "/") -> Path:
    write(root, "proc/self/cgroup", f"0::{path}\n")
    write(root, "proc/self/mountinfo", mount("/sys/fs/cgroup", "cgroup2", "rw", mount_root) + "\n")
    base = root / "sys/fs/cgroup"
    (base / path.removeprefix(mount_root).lstrip("/")).mkdir(parents=True, exist_ok=True)
    return base


def v1(root: Path, path: str = "/app/web", mount_root: str = "/") -> Path:
    write(root, "proc/self/cgroup", f"9:memory:{path}\n4:cpu,cpuacct:/\n0::/\n")
    write(root, "proc/self/mountinfo",
          mount("/sys/fs/cgroup/memory", "cgroup", "rw,memory", mount_root) + "\n"
          + mount("/sys/fs/cgroup/unified", "cgroup2", "rw") + "\n")
    base = root / "sys/fs/cgroup/memory"
    (base / path.removeprefix(mount_root).lstrip("/")).mkdir(parents=True, exist_ok=True)
    return base


def v2_limit(directory: Path, limit: str | int, current: str | int, inactive_file: int = 0) -> None:
    (directory / "memory.max").write_text(f"{limit}\n")
    (directory / "memory.current").write_text(f"{current}\n")
    (directory / "memory.stat").write_text(f"anon 1\nfile 2\ninactive_file {inactive_file}\nactive_file 3\n")


def v1_limit(directory: Path, limit: int | str, usage: int | str, inactive_file: int = 0) -> None:
    (directory / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (directory / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (directory / "memory.stat").write_text(f"cache 1\ninactive_file 999999999999\n"
                                           f"total_inactive_file {inactive_file}\n")


def test_v2_limit_minus_usage(tmp_path: Path) -> None:
    meminfo(tmp_path)
    v2_limit(v2(tmp_path) / "app/web", GIB, 256 * MIB)
    assert available_memory_mb(str(tmp_path)) == 768.0


def test_v2_inactive_file_cache_is_reclaimable(tmp_path: Path) -> None:
    meminfo(tmp_path)
    v2_limit(v2(tmp_path) / "app/web", GIB, 512 * MIB, inactive_file=256 * MIB)
    assert available_memory_mb(str(tmp_path)) == 768.0


def test_v2_max_means_meminfo(tmp_path: Path) -> None:
    meminfo(tmp_path, available_mib=3000)
    v2_limit(v2(tmp_path) / "app/web", "max", 256 * MIB)
    assert available_memory_mb(str(tmp_path)) == 3000.0


def test_v1_limit_minus_usage(tmp_path: Path) -> None:
    meminfo(tmp_path)
    v1_limit(v1(tmp_path) / "app/web", 512 * MIB, 128 * MIB)
    assert available_memory_mb(str(tmp_path)) == 384.0


def test_v1_hierarchical_inactive_file_is_subtracted(tmp_path: Path) -> None:
    meminfo(tmp_path)
    v1_limit(v1(tmp_path) / "app/web", 512 * MIB, 256 * MIB, inactive_file=128 * MIB)
    assert available_memory_mb(str(tmp_path)) == 384.0


@pytest.mark.parametrize("limit", [V1_UNLIMITED, 2**60, 17000 * MIB])  # the last is above MemTotal
def test_v1_unlimited_values_mean_meminfo(tmp_path: Path, limit: int) -> None:
    meminfo(tmp_path, total_mib=16384, available_mib=5000)
    v1_limit(v1(tmp_path) / "app/web", limit, 128 * MIB)
    assert available_memory_mb(str(tmp_path)) == 5000.0


@pytest.mark.parametrize("version", [1, 2])
def test_memavailable_smaller_than_cgroup_headroom(tmp_path: Path, version: int) -> None:
    meminfo(tmp_path, available_mib=100)
    if version == 1:
        v1_limit(v1(tmp_path) / "app/web", 4 * GIB, 0)
    else:
        v2_limit(v2(tmp_path) / "app/web", 4 * GIB, 0)
    assert available_memory_mb(str(tmp_path)) == 100.0


@pytest.mark.parametrize("version", [1, 2])
def test_parent_limit_smaller_than_child(tmp_path: Path, version: int) -> None:
    meminfo(tmp_path)
    if version == 1:
        base = v1(tmp_path)
        v1_limit(base / "app/web", 4 * GIB, 100 * MIB)
        v1_limit(base / "app", GIB, 900 * MIB)  # siblings use most of the parent's budget
        v1_limit(base, V1_UNLIMITED, 10 * GIB)
    else:
        base = v2(tmp_path)
        v2_limit(base / "app/web", "max", 100 * MIB)
        v2_limit(base / "app", GIB, 900 * MIB)
    assert available_memory_mb(str(tmp_path)) == 124.0


def test_usage_above_the_limit_is_zero_not_negative(tmp_path: Path) -> None:
    meminfo(tmp_path)
    v2_limit(v2(tmp_path) / "app/web", 100 * MIB, 120 * MIB)
    assert available_memory_mb(str(tmp_path)) == 0.0


def test_container_mount_root(tmp_path: Path) -> None:
    meminfo(tmp_path)
    base = v1(tmp_path, "/docker/abc", mount_root="/docker/abc")
    v1_limit(base, 256 * MIB, 56 * MIB)
    assert available_memory_mb(str(tmp_path)) == 200.0


def test_cgroup_without_meminfo(tmp_path: Path) -> None:
    v2_limit(v2(tmp_path) / "app/web", GIB, 0)
    assert available_memory_mb(str(tmp_path)) == 1024.0


def test_meminfo_only(tmp_path: Path) -> None:
    meminfo(tmp_path, available_mib=1234)
    assert available_memory_mb(str(tmp_path)) == 1234.0


def test_nothing_readable_is_none(tmp_path: Path) -> None:
    assert available_memory_mb(str(tmp_path)) is None


@pytest.mark.parametrize("limit,usage", [("garbage", 0), (GIB, "garbage"), ("", ""), (GIB, None),
                                         ("-1", 0), ("1.5e9", 0)])
def test_garbage_cgroup_files_mean_no_limit(tmp_path: Path, limit: object, usage: object,
                                            caplog: pytest.LogCaptureFixture) -> None:
    meminfo(tmp_path, available_mib=777)
    directory = v2(tmp_path) / "app/web"
    v2_limit(directory, limit, usage)
    if usage is None:
        (directory / "memory.current").unlink()
    with caplog.at_level(logging.DEBUG, logger="gunicorn_slowstart"):
        assert available_memory_mb(str(tmp_path)) == 777.0
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_unreadable_limit_file(tmp_path: Path) -> None:
    meminfo(tmp_path, available_mib=777)
    directory = v2(tmp_path) / "app/web"
    (directory / "memory.max").mkdir()  # reading a directory fails, even as root
    (directory / "memory.current").write_text("0\n")
    assert available_memory_mb(str(tmp_path)) == 777.0


def test_garbage_memory_stat_subtracts_nothing(tmp_path: Path) -> None:
    directory = v2(tmp_path) / "app/web"
    v2_limit(directory, GIB, 512 * MIB)
    (directory / "memory.stat").write_text("inactive_file lots\nnonsense\n")
    assert available_memory_mb(str(tmp_path)) == 512.0


def test_garbage_meminfo(tmp_path: Path) -> None:
    write(tmp_path, "proc/meminfo", "MemAvailable: many kB\nMemTotal\n\x00\n")
    assert available_memory_mb(str(tmp_path)) is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.text(max_size=24), usage=st.text(max_size=24), info=st.text(max_size=60))
def test_arbitrary_text_never_raises(tmp_path: Path, limit: str, usage: str, info: str) -> None:
    write(tmp_path, "proc/meminfo", info)
    directory = v1(tmp_path) / "app/web"
    (directory / "memory.limit_in_bytes").write_text(limit)
    (directory / "memory.usage_in_bytes").write_text(usage)
    result = available_memory_mb(str(tmp_path))
    assert result is None or result >= 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(0, 2**40), usage=st.integers(0, 2**40), available=st.integers(0, 2**20))
def test_smaller_of_headroom_and_memavailable(tmp_path: Path, limit: int, usage: int, available: int) -> None:
    meminfo(tmp_path, total_mib=2**21, available_mib=available)
    v2_limit(v2(tmp_path) / "app/web", limit, usage)
    assert available_memory_mb(str(tmp_path)) == min(max(0, limit - usage) / MIB, float(available))


def test_real_machine() -> None:
    free = available_memory_mb()
    assert free is not None
    total_mib = next(int(line.split()[1]) / 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    assert 0 < free <= total_mib


def test_anon_resident_from_statm(tmp_path: Path) -> None:
    """resident - shared pages (statm's 2nd and 3rd fields), in MiB; None when unreadable."""
    import os

    from gunicorn_slowstart.memory import PAGE, anon_resident_mb

    write(tmp_path, "proc/42/statm", f"{10 * 2**20 // PAGE} {3 * 2**20 // PAGE} {2**20 // PAGE} 1 0 5 0\n")
    assert anon_resident_mb(42, str(tmp_path)) == 2.0
    write(tmp_path, "proc/43/statm", "garbage\n")
    assert anon_resident_mb(43, str(tmp_path)) is None
    assert anon_resident_mb(44, str(tmp_path)) is None  # gone
    assert anon_resident_mb(os.getpid()) > 1  # this interpreter, for real
