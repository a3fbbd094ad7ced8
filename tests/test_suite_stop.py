"""The suite ended by SIGTERM (a CI job's end or timeout, `kill`) removes what its fixtures
made, as Ctrl-C does: a child pytest holding a namespace is sent SIGTERM. A fork of the
suite's process that is sent SIGTERM (pyroute2's helpers) ends at once instead."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from netsim import netns
from tests.conftest import require_root

ROOT = Path(__file__).resolve().parent.parent
CHILD_TESTS = """
import time

import pytest

from netsim import netns


@pytest.fixture
def namespace():
    with netns.isolated_loopback("term") as name:
        yield name


def test_holds_a_namespace(namespace):
    with open(HELD, "w") as held:
        held.write(namespace)
    time.sleep(60)
"""
FORKING_TESTS = """
import os
import signal
import time


def test_a_fork_sent_sigterm_ends_at_once():
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    time.sleep(0.5)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGTERM
"""
PYTEST_INTERRUPTED = 2
COMMAND = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]


def test_sigterm_unwinds_the_suite_and_its_fixtures(tmp_path: Path) -> None:
    require_root()
    child = tmp_path / "test_child.py"
    held = tmp_path / "held"
    child.write_text(f"HELD = {str(held)!r}\n" + CHILD_TESTS)
    proc = subprocess.Popen(
        [*COMMAND, "-p", "tests.conftest", str(child)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not held.exists():  # the test runs: its fixture's namespace is made
            assert time.monotonic() < deadline and proc.poll() is None, "it never ran"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        left = (Path("/run/netns") / held.read_text()).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for name in netns.of_process(proc.pid, netns.namespaces()):
            netns.delete(name)
    assert not left, output
    assert proc.returncode == PYTEST_INTERRUPTED, output
    assert "Traceback" not in output


def test_a_fork_of_the_suite_sent_sigterm_ends_without_running_the_suite(tmp_path: Path) -> None:
    """Raising KeyboardInterrupt in the fork too, the handler unwound the fork through pytest:
    it reported an interrupted session of its own (and, under xdist, its worker's)."""
    child = tmp_path / "test_fork.py"
    child.write_text(FORKING_TESTS)
    done = subprocess.run(
        [*COMMAND, "-p", "tests.conftest", str(child)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout and "KeyboardInterrupt" not in done.stdout + done.stderr
