"""CPU quota groups for the scale-out benchmark: a real cgroup v1 `cpu` group that holds a real
process to its quota, and is always removed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netsim import cpuquota
from netsim.processes import stop
from tests.conftest import IN_CI, require_root


def test_quota_arithmetic() -> None:
    assert cpuquota.Quota(0.25).quota_us == 2_500
    assert cpuquota.Quota(0.25, period_us=100_000).quota_us == 25_000
    assert cpuquota.Quota(0.01).quota_us == 1_000  # the kernel's smallest quota
    for bad in (0.0, -1.0, 1000.0):
        with pytest.raises(ValueError, match="not possible"):
            cpuquota.Quota(bad)


def test_a_process_is_held_to_its_quota_and_the_group_removed() -> None:
    require_root()
    try:
        cpuquota.require_hierarchy()
    except cpuquota.QuotaUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with cpuquota.quota_group("test", cpuquota.Quota(0.1)) as group:
            group.add(spin.pid)
            assert str(spin.pid) in (group.path / "cgroup.procs").read_text().split()
            before = _cpu_seconds(spin.pid)
            time.sleep(2.0)
            used = _cpu_seconds(spin.pid) - before
            assert used < 2.0 * 0.1 * 1.5, used  # 0.1 CPU, with room for a noisy machine
            assert group.throttled_seconds() > 0
        assert not group.path.exists()
        root_procs = (cpuquota.CPU_HIERARCHY / "cgroup.procs").read_text().split()
        assert str(spin.pid) in root_procs  # back where it was, still running
        assert spin.poll() is None
    finally:
        stop(spin)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
