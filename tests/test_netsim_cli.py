"""`netsim clean` removes namespaces of dead runs, and nothing else."""

from __future__ import annotations

import subprocess
import sys

from netsim import netns
from tests.conftest import require_binary, require_root


def test_leftovers_are_only_our_dead_runs() -> None:
    alive = netns.RUN_PREFIX  # this very process
    names = [f"{alive}-lo1", "fs999999999-e2e3", "fsx-1", "someone-elses", "fs12"]
    assert netns.leftovers(names) == ["fs999999999-e2e3"]


def test_clean_removes_a_dead_runs_namespace() -> None:
    require_root()
    require_binary("ip")
    dead = "fs999999999-clean1"
    subprocess.run(["ip", "netns", "add", dead], check=True)
    try:
        with netns.isolated_loopback("keep") as ours:
            done = subprocess.run(
                [sys.executable, "-m", "netsim", "clean"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert f"removing namespace {dead}" in done.stdout
            remaining = netns.namespaces()
            assert dead not in remaining
            assert ours in remaining  # a live run's namespace is left alone
    finally:
        subprocess.run(["ip", "netns", "delete", dead], check=False, capture_output=True)
