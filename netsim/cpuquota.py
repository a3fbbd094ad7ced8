"""A CPU budget per process, so that a benchmark on one small machine can show what N machines
would: each signaling instance gets its own share of a core (a cgroup v1 `cpu` group with a CFS
quota), whatever else runs.

The group is a child of the `cpu` hierarchy named with the run's prefix (`fs<pid>-...`), and is
always removed when the block ends: its processes go back to the root group first. A short CFS
period keeps a throttled process's pause short (at most period - quota), so the quota limits
throughput without adding a 100 ms stall to the latency it measures.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CPU_HIERARCHY = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 10_000


@dataclass(frozen=True)
class Quota:
    """`cpus` cores' worth of time in every period of `period_us` microseconds."""

    cpus: float
    period_us: int = PERIOD_US

    def __post_init__(self) -> None:
        if not 0 < self.cpus <= (os.cpu_count() or 1):
            raise ValueError(f"a CPU quota of {self.cpus} cores is not possible here")
        if not 1_000 <= self.period_us <= 1_000_000:
            raise ValueError("the CFS period must be 1 ms to 1 s")

    @property
    def quota_us(self) -> int:
        return max(1_000, round(self.cpus * self.period_us))


@dataclass(frozen=True)
class QuotaGroup:
    path: Path

    def add(self, pid: int) -> None:
        """Move a process (all its threads) into the group."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_seconds(self) -> float:
        """How long the group's processes waited for their quota so far."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "throttled_time":
                return int(value) / 1e9
        return 0.0


class QuotaUnavailable(RuntimeError):
    """No writable cgroup v1 `cpu` hierarchy here (not root, or a cgroup v2 host)."""


def require_hierarchy(root: Path = CPU_HIERARCHY) -> None:
    if not (root / "cpu.cfs_quota_us").exists() or not os.access(root, os.W_OK):
        raise QuotaUnavailable(f"no writable cgroup v1 cpu hierarchy at {root}")


@contextlib.contextmanager
def quota_group(name: str, quota: Quota, root: Path = CPU_HIERARCHY) -> Iterator[QuotaGroup]:
    """A cgroup of the run's prefix with `quota`, removed when the block ends."""
    require_hierarchy(root)
    path = root / f"fs{os.getpid()}-{name}"
    path.mkdir()
    try:
        (path / "cpu.cfs_period_us").write_text(str(quota.period_us))
        (path / "cpu.cfs_quota_us").write_text(str(quota.quota_us))
        yield QuotaGroup(path)
    finally:
        remove(path, root)


def remove(path: Path, root: Path = CPU_HIERARCHY) -> None:
    """Move what is left in the group back to the root group, then remove it."""
    for pid in (path / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):  # (it may have exited meanwhile)
            (root / "cgroup.procs").write_text(pid)
    path.rmdir()


def leftovers(root: Path = CPU_HIERARCHY) -> list[Path]:
    """Groups of this project's runs whose process is gone (what `netsim clean` removes)."""
    found = []
    for path in root.glob("fs*-*"):
        pid = path.name[2:].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and path.is_dir():
            found.append(path)
    return found
