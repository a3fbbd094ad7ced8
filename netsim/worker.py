"""One scenario in a process of its own: `python -m netsim.worker JOB` (JOB: a Job as JSON) runs
it as `netsim.runner.run_one` does and writes its result, as JSON, to the job's answer file.

`netsim run` starts one per scenario (`start`), in a session of its own, so that the run can stop
it (one SIGINT: its blocks unwind, its namespaces and processes go), and find and remove whatever
it left whichever way it ended (`Running.collect`). The worker starts with SIGINT and SIGTERM
blocked, so a signal that comes before its handler is in place waits for it instead of being
lost or killing it half-way; it gets SIGINT when the run's process ends, even by SIGKILL; and a
teardown that takes longer than TEARDOWN_S is cut short (everything of its session killed, its
namespaces removed), since KeyboardInterrupt can be swallowed where it lands."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

from netsim import runner, scenario, stopping
from netsim.results import ScenarioResult, Status

INTERRUPTED: Final = 128 + signal.SIGINT
_WORKER: Final = os.getpid()  # this process, not a fork of it (the same module in memory)
# For a stopped scenario to unwind (about 1 s seen) before the worker cuts it short: also how
# long an interrupt that was lost can keep it (pyroute2 parses netlink messages under bare
# `except:` clauses, and an exception in a finalizer is only printed).
TEARDOWN_S: Final = 10.0
RETRY_S: Final = 1.0  # how often a stopped worker checks that its blocks are unwinding


@dataclass(frozen=True)
class Job:
    name: str
    suite: str  # the scenario file it is in
    file_mib: float  # as the run chose it (`--file-mib`)
    logs: str  # run_one's root: its work directory is logs/name
    answer: str  # where the result goes
    parent: int  # the run's process


@dataclass
class Running:
    """A worker under way, as the run sees it."""

    item: scenario.Scenario
    proc: subprocess.Popen[bytes]
    started: float
    logs: Path
    answer: Path  # its result (JSON), once it has one
    output: Path  # what it wrote to stdout and stderr

    def ended(self) -> bool:
        return self.proc.poll() is not None

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # (not once it has ended: Popen knows)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    def collect(self, stopped: signal.Signals | None) -> tuple[ScenarioResult, stopping.Swept]:
        """Its result, once it ended, and what it left behind, removed. Without an answer (it
        was stopped, or it died) the scenario's result is an error that says so."""
        swept = stopping.sweep(self.proc.pid)
        try:
            result = ScenarioResult.from_json(json.loads(self.answer.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            result = self._unanswered(stopped)
        self.answer.unlink(missing_ok=True)
        if result.status is Status.PASSED or not self.output.stat().st_size:
            self.output.unlink()
        return result, swept

    def _unanswered(self, stopped: signal.Signals | None) -> ScenarioResult:
        seconds = time.monotonic() - self.started
        workdir = self.logs / self.item.name
        if stopped is not None:
            return error_result(self.item, seconds, under_way(stopped), workdir)
        code = self.proc.returncode
        how = f"exit status {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"
        lines = self.output.read_text(errors="replace").splitlines()
        said = f": {lines[-1]}" if lines else ""
        error = f"its process ended without a result ({how}){said}"
        return error_result(self.item, seconds, error, workdir)


def under_way(how: signal.Signals) -> str:
    return f"stopped by {how.name} while under way"


def error_result(
    item: scenario.Scenario, seconds: float, error: str, workdir: Path
) -> ScenarioResult:
    """The result of a scenario that ended without one of its own (its logs, if any, kept)."""
    result = ScenarioResult(item.name, item.kind.value, item.description, Status.ERROR)
    result.duration_s = round(seconds, 2)
    result.error = error
    result.logs_dir = str(workdir) if workdir.exists() else None
    return result


def start(item: scenario.Scenario, suite: Path, logs: Path) -> Running:
    """`item` in a worker of its own, its output in logs/NAME.worker.log."""
    logs.mkdir(parents=True, exist_ok=True)
    answer, output = logs / f"{item.name}.result.json", logs / f"{item.name}.worker.log"
    answer.unlink(missing_ok=True)
    job = Job(item.name, str(suite), item.file_mib, str(logs), str(answer), os.getpid())
    with output.open("wb") as out:
        # Blocked here, blocked in the worker until its handler is in place.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, stopping.STOPPING)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "netsim.worker", json.dumps(dataclasses.asdict(job))],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return Running(item, proc, time.monotonic(), logs, answer, output)


def _interrupted(number: int, _frame: FrameType | None) -> None:
    """The first SIGINT or SIGTERM unwinds the scenario; later ones must not cut its teardown.
    A fork of the worker (pyroute2 forks helpers, and stops them with SIGTERM) inherits this
    handler: there it ends the fork at once, which must never unwind the worker's blocks."""
    if os.getpid() != _WORKER:
        os._exit(128 + number)
    for how in stopping.STOPPING:
        signal.signal(how, signal.SIG_IGN)
    watchdog = threading.Timer(TEARDOWN_S, _cut_short)
    watchdog.daemon = True
    watchdog.start()
    signal.signal(signal.SIGALRM, _unless_unwinding)
    signal.setitimer(signal.ITIMER_REAL, RETRY_S, RETRY_S)
    raise KeyboardInterrupt


def _unless_unwinding(_number: int, _frame: FrameType | None) -> None:
    """Every RETRY_S after the stop: KeyboardInterrupt again, unless one is being handled (the
    blocks are unwinding); it was lost where it landed (a bare `except:`, an at-fork hook)."""
    if os.getpid() != _WORKER:
        return
    handled = sys.exc_info()[1]
    while handled is not None:
        if isinstance(handled, KeyboardInterrupt):
            return
        handled = handled.__context__
    raise KeyboardInterrupt


def _cut_short() -> None:
    """The teardown took too long, or the interrupt was lost: what the scenario holds goes at
    once (its processes killed, its namespaces removed), and so does the worker."""
    stopping.sweep(_WORKER)
    os._exit(INTERRUPTED)


def _forks_whole() -> None:
    """A signal that comes while this process forks (pyroute2 forks helpers) waits until the
    fork is done: else it may be raised in an at-fork hook (logging has one), where Python only
    prints it. Registered last, so run first before a fork and last after it; bare C calls, so
    that the handler runs in the code that forked, not in a hook."""
    unblock = stopping.raw_sigmask(signal.SIG_UNBLOCK, stopping.STOPPING)
    before = stopping.raw_sigmask(signal.SIG_BLOCK, stopping.STOPPING)
    os.register_at_fork(before=before, after_in_parent=unblock, after_in_child=unblock)


def main(argv: list[str]) -> int:
    job = Job(**json.loads(argv[0]))
    stopping.die_with_parent(signal.SIGINT)
    if os.getppid() != job.parent:  # the run ended before that was in place
        return INTERRUPTED
    _forks_whole()
    for how in stopping.STOPPING:
        signal.signal(how, _interrupted)
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping.STOPPING)  # one waiting comes now
        chosen = scenario.load(Path(job.suite)).select([job.name])
        item = next(s for s in chosen if s.name == job.name)
        result = runner.run_one(dataclasses.replace(item, file_mib=job.file_mib), Path(job.logs))
    except KeyboardInterrupt:
        return INTERRUPTED
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for how in stopping.STOPPING:  # done, or being stopped: nothing left to interrupt
            signal.signal(how, signal.SIG_IGN)
        stopping.sweep(os.getpid())
    answer = Path(job.answer)
    partial = answer.with_suffix(".partial")
    partial.write_text(json.dumps(result.to_json()))
    partial.replace(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
