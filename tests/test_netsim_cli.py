"""`netsim clean` removes namespaces of dead runs, and nothing else."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from netsim import netns
from tests.conftest import SEES_DEAD_RUNS, require_binary, require_root


def test_leftovers_are_only_our_dead_runs() -> None:
    alive = netns.RUN_PREFIX  # this very process
    names = [f"{alive}-lo1", "fs999999999-e2e3", "fsx-1", "someone-elses", "fs12"]
    assert netns.leftovers(names) == ["fs999999999-e2e3"]


@SEES_DEAD_RUNS
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


# What in a test's code reads or removes every dead run's namespaces, not only its own.
MACHINE_WIDE = ("netns.leftovers(netns.namespaces())", '"netsim", "clean"')


def test_tests_that_see_every_dead_run_take_turns() -> None:
    """Such a test beside the one whose worker is killed removed (or saw) that worker's
    namespaces before its run could: CI failed. Each carries SEES_DEAD_RUNS (one at a time)."""
    ungrouped = []
    for path in sorted(Path(__file__).parent.rglob("test_*.py")):
        source = path.read_text()
        for node in ast.parse(source).body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            code = ast.get_source_segment(source, node) or ""
            marks = [ast.unparse(d) for d in node.decorator_list]
            if any(what in code for what in MACHINE_WIDE) and "SEES_DEAD_RUNS" not in marks:
                ungrouped.append(f"{path.name}::{node.name}")
    assert not ungrouped


def test_interface_names_fit_whatever_the_pid_label_and_group_count() -> None:
    """An xdist worker's 100th group, with a five-digit PID and the label `turn`, made a
    16-character name and failed its test's set-up; the longest suffix any builder adds is 3."""
    for number in (1, 99, 100, 10**6, 2**32):
        assert len(netns.interface_base(number)) + 3 <= netns.IFNAMSIZ, number
    assert len({netns.interface_base(n) for n in range(1, 5000)}) == 4999  # all distinct


def test_a_long_lived_process_still_builds_groups_with_long_labels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real path: namespaces made at a group count far past 100, with a long label."""
    require_root()
    require_binary("ip")
    monkeypatch.setattr(netns, "_names", itertools.count(next(netns._names) + 10**6))
    with netns.namespace_group("longlabel", ("a",), ifname_suffix=3) as (base, names):
        assert len(base) + 3 <= netns.IFNAMSIZ
        assert names["a"] in netns.namespaces()
