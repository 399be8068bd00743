"""A CPU cap per process through Linux cgroups, for benchmarks/frontend_bench.py --scale --cpu-cap: each
capped process gets a cgroup of its own with a quota of F CPUs, so that on a small machine a frontend
process stands for one core of a larger one and the workers and load generator keep the rest.

Needs a writable cgroup file system (root, or a delegated subtree): cgroup v1's cpu controller or
cgroup v2 with the cpu controller enabled. CpuCapError says what is missing otherwise.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 10_000  # a short period: a capped process waits at most ~10 ms for its next share, not 100


class CpuCapError(RuntimeError):
    pass


class CpuCaps:
    """``cap(pid)`` moves ``pid`` into a new cgroup limited to ``cpus`` CPUs; ``close()`` removes the
    cgroups (their processes go back to the parent group first)."""

    def __init__(self, cpus: float, root: Path = CGROUP_ROOT) -> None:
        if cpus <= 0:
            raise CpuCapError(f"a CPU cap must be > 0 CPUs, got {cpus}")
        self.cpus = cpus
        self.parent, self.v2 = _find_cpu_hierarchy(root)
        self.groups: list[Path] = []

    def cap(self, pid: int) -> Path:
        group = self.parent / f"parm-cap-{os.getpid()}-{len(self.groups)}"
        try:
            group.mkdir()
            self.groups.append(group)
            quota = max(1000, round(self.cpus * PERIOD_US))
            if self.v2:
                (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
            (group / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            raise CpuCapError(f"could not cap process {pid} in {group}: {exc}") from exc
        return group

    def close(self) -> None:
        for group in self.groups:
            with contextlib.suppress(OSError):  # a process that has exited needs no moving
                for pid in (group / "cgroup.procs").read_text().split():
                    (self.parent / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                group.rmdir()
        self.groups.clear()


def _find_cpu_hierarchy(root: Path) -> tuple[Path, bool]:
    """(the directory to create cgroups in, whether it is cgroup v2)."""
    v1 = root / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
        return v1, False
    controllers = root / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        subtree = root / "cgroup.subtree_control"
        with contextlib.suppress(OSError):
            if not _lists_cpu(subtree):
                subtree.write_text("+cpu")  # let the groups made below have a cpu controller
        if os.access(root, os.W_OK) and _lists_cpu(subtree):
            return root, True
    raise CpuCapError(f"no writable cgroup cpu controller under {root} (needs root or a delegated cgroup); "
                      "run --scale without --cpu-cap, or on a machine with more cores")


def _lists_cpu(subtree_control: Path) -> bool:
    with contextlib.suppress(OSError):
        return "cpu" in {name.lstrip("+") for name in subtree_control.read_text().split()}
    return False
