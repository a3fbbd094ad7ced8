"""`netsim run` stopped through its own process only (SIGINT or SIGTERM to its PID, as `kill`,
`timeout` or the end of a CI job does; SIGKILL): every scenario under way is torn down, nothing
is left (no `fs<pid>-` namespace, no process of a worker's session), no traceback is shown, and a
stopped run says so and fails. Real runs of two short scenarios of the default matrix."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netsim import netns, report, scenario, shards, stopping, worker
from netsim.results import Check, RunReport, ScenarioResult, Status
from tests.conftest import SEES_DEAD_RUNS, require_binary, require_root

SCENARIOS = ("cgnat-x-cone", "cone-x-cone")  # about 10 s each, both at once with --jobs 2
ROOT = Path(__file__).resolve().parent.parent
BOUND_S = 60.0  # a stopped run is gone well within this (its workers' grace is 90 s)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent and session of a process; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[3])


def _gone(pid: int) -> bool:
    stat = _stat(pid)
    return stat is None or stat[0] == "Z"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[1] == pid:
            found.append(int(entry.name))
    return found


def _alive(session: int) -> list[int]:
    """Processes of a worker's session that are not zombies (init here does not reap)."""
    return [pid for pid, state in stopping.members(session).items() if state != "Z"]


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    out: Path
    output: Path
    workers: list[int]

    def text(self) -> str:
        return self.output.read_text()

    def left(self) -> tuple[list[str], dict[int, list[int]]]:
        names = netns.namespaces()
        mine = [n for pid in (self.proc.pid, *self.workers) for n in netns.of_process(pid, names)]
        return mine, {pid: left for pid in self.workers if (left := _alive(pid))}

    def assert_clean(self) -> None:
        names, processes = self.left()
        assert not names, f"namespaces left: {names}"
        assert not processes, f"processes left: {processes}"


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """`netsim run` of SCENARIOS with --jobs 2, once both workers have begun to build their
    networks (each has a namespace)."""
    require_root()
    for program in ("nft", "turnserver", "iptables", "conntrack", "tc"):
        require_binary(program)
    out, output = tmp_path / "out", tmp_path / "output.txt"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "netsim", "run", *SCENARIOS, "--jobs", "2", "--out", str(out)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    started = Run(proc, out, output, [])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            started.workers = _children(proc.pid)
            names = netns.namespaces()
            if len(started.workers) == 2 and all(
                netns.of_process(w, names) for w in started.workers
            ):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"no two workers with namespaces:\n{started.text()}")
        yield started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stopped(run: Run, how: signal.Signals) -> float:
    """Signal the run's own process; the seconds it took to end."""
    sent = time.monotonic()
    os.kill(run.proc.pid, how)
    run.proc.wait(BOUND_S)
    return time.monotonic() - sent


def _assert_reported_stopped(run: Run, how: signal.Signals) -> None:
    text = run.text()
    assert "Traceback" not in text, text
    assert f"STOPPED by {how.name}" in text, text
    data = json.loads((run.out / "report.json").read_text())
    assert data["ok"] is False and data["stopped"] == how.name
    under_way = [r for r in data["results"] if r["status"] == "error"]
    assert all(r["error"] == f"stopped by {how.name} while under way" for r in under_way), data


@pytest.mark.parametrize("after", [0.0, 2.5], ids=["building", "transferring"])
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_to_the_run_alone_stops_everything(
    run: Run, how: signal.Signals, after: float
) -> None:
    """`after`: seconds after both workers made their first namespace (the scenarios take
    about 5 s from there)."""
    time.sleep(after)
    assert all(_stat(w) for w in run.workers), "a scenario ended before the signal"
    took = _stopped(run, how)
    assert run.proc.returncode == 128 + how, run.text()
    print(f"{how.name} {after} s in: run gone {took:.1f} s after the signal")
    run.assert_clean()
    _assert_reported_stopped(run, how)


def _until(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND_S
    while not done():
        assert time.monotonic() < deadline, "not within BOUND_S"
        time.sleep(0.02)


def test_a_second_signal_says_so_without_a_traceback(run: Run) -> None:
    """The workers are held (SIGSTOP) until the run told of the second signal: it comes while
    the run is surely still stopping, however loaded the machine."""
    for each in run.workers:
        os.kill(each, signal.SIGSTOP)
    try:
        os.kill(run.proc.pid, signal.SIGINT)
        _until(lambda: "stopping 2 scenario(s) under way" in run.text())
        os.kill(run.proc.pid, signal.SIGINT)
        _until(lambda: "already stopping" in run.text())
    finally:
        for each in run.workers:
            os.kill(each, signal.SIGCONT)
    run.proc.wait(BOUND_S)
    assert run.proc.returncode == 130, run.text()
    run.assert_clean()
    _assert_reported_stopped(run, signal.SIGINT)
    assert run.text().count("already stopping") == 1


def test_a_killed_run_takes_its_workers_and_their_namespaces_with_it(run: Run) -> None:
    """SIGKILL leaves the run no say: each worker gets SIGINT from the kernel (its parent died)
    and removes its own namespaces and processes; `netsim clean` is not needed."""
    run.proc.kill()
    run.proc.wait()
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline and any(run.left()):
        time.sleep(0.2)
    run.assert_clean()
    assert all(_gone(w) for w in run.workers)


@SEES_DEAD_RUNS
def test_a_worker_that_dies_is_an_error_and_its_leftovers_go(run: Run) -> None:
    """A worker killed outright (it cannot tear anything down): the run carries on, reports that
    scenario as an error, and removes its namespaces and processes itself."""
    victim = run.workers[0]
    os.kill(victim, signal.SIGKILL)
    run.proc.wait(120)
    text = run.text()
    assert run.proc.returncode == 1, text
    assert "Traceback" not in text and "left " in text, text
    data = json.loads((run.out / "report.json").read_text())
    errors = [r["error"] for r in data["results"] if r["status"] == "error"]
    assert errors == ["its process ended without a result (killed by SIGKILL)"], data
    assert data["stopped"] is None
    run.assert_clean()


def test_a_worker_whose_scenario_swallows_the_interrupt_is_cut_short(tmp_path: Path) -> None:
    """The interrupt lost where it landed: TEARDOWN_S later the worker kills what its session
    holds, removes its namespaces and ends, as stopped."""
    require_root()
    job = worker.Job("cgnat-x-cone", str(scenario.DEFAULT_FILE), 1, str(tmp_path), "", os.getpid())
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.swallowing_worker", json.dumps(dataclasses.asdict(job))],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        assert netns.of_process(proc.pid, netns.namespaces()) and _alive(proc.pid)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(worker.TEARDOWN_S + 20) == 130
        took = time.monotonic() - sent
        assert worker.TEARDOWN_S <= took < worker.TEARDOWN_S + 10
        assert not netns.of_process(proc.pid, netns.namespaces())
        assert not _alive(proc.pid)
    finally:
        stopping.sweep(proc.pid)
        proc.kill()
        proc.wait()


# --- without root -----------------------------------------------------------------------------


def test_session_of_reads_past_a_command_name_with_spaces_and_parentheses() -> None:
    stat = "4242 (a (b) c) S 1 4242 4240 0 -1 4194560 0"
    assert stopping.session_of(stat) == (4240, "S")
    own = stopping.session_of(Path("/proc/self/stat").read_text())
    assert own[0] == os.getsid(0)


def test_a_stopped_run_is_not_ok_and_says_what_was_left_out() -> None:
    passed = ScenarioResult("a", "path", "d", checks=[Check("x", True, "1", "1")])
    stopped = RunReport("now", "netns", "tbf", [passed], stopped="SIGTERM", not_run=3)
    assert not stopped.ok and stopped.to_json()["ok"] is False
    assert report.summary(stopped).startswith(
        "STOPPED by SIGTERM: 1 scenarios (1 passed, 3 not run)"
    )
    assert 'name="stopped" value="SIGTERM (3 not run)"' in report.junit_xml(stopped)
    again = shards.report_from_json(json.loads(json.dumps(stopped.to_json())))
    assert again == stopped  # results too: what a worker answers is read back the same way
    stopped.shard = {"index": 1, "count": 1}
    with pytest.raises(ValueError, match="stopped"):
        shards.merge([stopped])


def test_an_error_result_keeps_its_status_through_json() -> None:
    result = ScenarioResult("a", "path", "d", Status.ERROR, 1.5, error="boom")
    assert ScenarioResult.from_json(json.loads(json.dumps(result.to_json()))) == result


EXITING = """
import os, signal, sys, time
from netsim import stopping

with stopping.Stop().installed() as stop:
    os.kill(os.getpid(), signal.SIGINT)
os.kill(os.getpid(), signal.SIGINT)


class Exiting:  # its finalizer runs as Python exits, after it put default actions back
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)


held = Exiting()
sys.exit(stop.status)
"""


def test_a_signal_after_the_run_stopped_is_ignored_to_its_exit() -> None:
    """Two races fresh-clone CI runs found: the scenarios ended before a second SIGINT came,
    and it killed the run (-2, no report) where it was already stopping. Once the block had
    put the default handler back; once Python had, as it exited (where a finalizer here holds
    the exit open while the signals come)."""
    out = subprocess.run(
        [sys.executable, "-c", EXITING], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert out.returncode == 130, out
    assert out.stderr == "", out.stderr


def test_an_unstopped_run_gives_the_handlers_back() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stopping.Stop().installed():
        assert signal.getsignal(signal.SIGINT) != before[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
