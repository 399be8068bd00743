"""benchmarks/cpu_cap.py (frontend_bench --scale --cpu-cap): on a fake cgroup tree, a capped process
lands in a group of its own with the quota asked for, under cgroup v1 or v2, and a machine without a
writable cpu controller gets a clear error before anything starts."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from cpu_cap import PERIOD_US, CpuCapError, CpuCaps


def test_v1_cap_writes_quota_and_moves_the_process(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("-1")
    (cpu / "cgroup.procs").write_text("")
    caps = CpuCaps(0.4, root=tmp_path)
    group = caps.cap(4242)
    assert group.parent == cpu
    assert (group / "cpu.cfs_period_us").read_text() == str(PERIOD_US)
    assert (group / "cpu.cfs_quota_us").read_text() == str(round(0.4 * PERIOD_US))
    assert (group / "cgroup.procs").read_text() == "4242"
    assert caps.cap(4343) != group  # one group per process: each gets its own share
    caps.close()
    assert (cpu / "cgroup.procs").read_text() == "4343"  # moved back (the fake file keeps the last write)


def test_v2_cap_writes_cpu_max(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory")
    (tmp_path / "cgroup.subtree_control").write_text("")
    caps = CpuCaps(1.5, root=tmp_path)
    group = caps.cap(7)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu"
    assert (group / "cpu.max").read_text() == f"{round(1.5 * PERIOD_US)} {PERIOD_US}"


def test_no_cpu_controller_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory pids")
    with pytest.raises(CpuCapError, match="no writable cgroup cpu controller"):
        CpuCaps(0.4, root=tmp_path)
    with pytest.raises(CpuCapError, match="> 0"):
        CpuCaps(0, root=tmp_path)
