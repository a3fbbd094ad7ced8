"""A run of the scenario matrix: choose the scenarios, run them (up to `jobs` at once where
`netsim.schedule` allows: throughput and calibration always alone), show progress, and write
the reports, in the matrix's order. Exit status 1 when any expectation failed.

With plain namespaces each scenario runs in a process of its own (`netsim.worker`). SIGINT or
SIGTERM stops the run: no scenario is started any more, those under way are torn down (one
SIGINT each; SIGKILL after GRACE_S), what they left is removed, and the run reports what ran,
says that it was stopped, and exits 130 (SIGINT) or 143 (SIGTERM)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from rich.console import Console

from netsim import (
    docker_backend,
    docker_host,
    linkbed,
    report,
    runner,
    scenario,
    schedule,
    shards,
    stopping,
    worker,
)
from netsim.link import mechanism
from netsim.results import RunReport, ScenarioResult, Status

GRACE_S: Final = 90.0  # for a stopped scenario's teardown, before its process is killed
Queue = list[tuple[scenario.Scenario, int]]  # in order, each with how many may run beside it


def _suite(path: Path | None) -> scenario.Suite:
    return scenario.load(path or scenario.DEFAULT_FILE)


def list_scenarios(path: Path | None, names: list[str], full: bool) -> int:
    console = Console()
    try:
        chosen = _suite(path).select(names, full)
    except (OSError, ValueError) as exc:
        console.print(f"netsim: {exc}", markup=False)
        return 2
    for item in chosen:
        extra = " (full)" if item.full else ""
        line = f"{item.name:44} {item.kind.value:12} {item.description}{extra}"
        print(line)
    return 0


def main(
    path: Path | None,
    names: list[str],
    full: bool,
    out: Path,
    backend: str,
    shard: shards.Shard | None = None,
    jobs: int = 1,
    file_mib: float | None = None,
) -> int:
    if not sys.stdout.isatty() and isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows in CI logs as it happens
    console = Console(width=None if sys.stdout.isatty() else 120)
    try:
        suite = path or scenario.DEFAULT_FILE
        chosen = _suite(suite).select(names, full)
        if file_mib is not None:
            chosen = [dataclasses.replace(item, file_mib=file_mib) for item in chosen]
        matrix = [item.name for item in chosen]
        if shard is not None:
            kinds = [(item.name, item.kind.value) for item in chosen]
            mine = set(shards.pick(kinds, shard, shards.load_durations()))
            chosen = [item for item in chosen if item.name in mine]
    except (OSError, ValueError) as exc:
        console.print(f"netsim: {exc}", markup=False)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    with stopping.Stop().installed() as stop, contextlib.ExitStack() as stack:
        if backend == "docker":
            try:
                stack.enter_context(docker_backend.active([out]))
            except docker_host.EngineUnavailable as exc:
                console.print(f"netsim: no Docker backend here: {exc}", markup=False)
                return 2
        run = _Run(out, console, stop, suite if backend == "netns" else None)
        status = run.all(chosen, backend, matrix, shard, jobs if backend == "netns" else 1)
    return stop.status or status


@dataclasses.dataclass
class _Run:
    """`suite`: the scenario file, when scenarios run in workers; None: in this process (the
    Docker backend's engine and containers are this process's)."""

    out: Path
    console: Console
    stop: stopping.Stop
    suite: Path | None

    def all(
        self,
        chosen: list[scenario.Scenario],
        backend: str,
        matrix: list[str],
        shard: shards.Shard | None,
        jobs: int,
    ) -> int:
        started = time.monotonic()
        run = RunReport(
            started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            backend=backend,
            link_mechanism=mechanism(linkbed.netem_available()),
            matrix=matrix,
            shard=None if shard is None else {"index": shard.index, "count": shard.count},
        )
        part = "" if shard is None else f" (shard {shard} of a matrix of {len(matrix)})"
        count = f"{len(chosen)} scenario(s){part}"
        self.console.print(f"netsim: {count}; {report.header(run)}", markup=False)
        by_name = {item.name: item for item in chosen}
        kinds = [(item.name, item.kind.value) for item in chosen]
        steps = schedule.plan(kinds, shards.estimate(kinds, shards.load_durations()))
        queue = [(by_name[n], jobs) for n in steps.together] + [
            (by_name[n], 1) for n in steps.alone
        ]
        done: dict[str, ScenarioResult] = {}

        def show(result: ScenarioResult) -> None:
            done[result.name] = result
            line = f"[{len(done)}/{len(chosen)}] {result.name}: {by_name[result.name].description}"
            mark = "ok" if result.status is Status.PASSED else result.status.value.upper()
            figures = report.figures(result)
            self.console.print(
                f"{line}\n    {mark} in {result.duration_s:.1f} s  {figures}", markup=False
            )

        if self.suite is None:
            self._in_place(queue, show)
        else:
            self._in_workers(queue, self.suite, show)
        run.results = [done[item.name] for item in chosen if item.name in done]
        run.duration_s = round(time.monotonic() - started, 1)
        if self.stop.signal is not None:
            run.stopped, run.not_run = self.stop.signal.name, len(chosen) - len(done)
            self.console.print(
                f"netsim: stopped by {run.stopped}; reporting what ran", markup=False
            )
        return _report(run, self.out, self.console)

    def _in_workers(
        self, queue: Queue, suite: Path, show: Callable[[ScenarioResult], None]
    ) -> None:
        """Each scenario of `queue` in a worker of its own, in this order, each started once
        fewer than its number run; `show` each result as it comes. Once stopped: no new one,
        one SIGINT to those under way, SIGKILL to those still there GRACE_S later."""
        stopping.adopt_orphans()  # what a worker leaves is ours to reap
        running: list[worker.Running] = []
        deadline: float | None = None
        while queue or running:
            if self.stop.signal is None:
                while queue and len(running) < queue[0][1]:
                    running.append(worker.start(queue.pop(0)[0], suite, self.out / "logs"))
            elif deadline is None:
                queue.clear()
                deadline = time.monotonic() + GRACE_S
                if running:
                    self.console.print(
                        f"netsim: {self.stop.signal.name}: stopping {len(running)} scenario(s)"
                        f" under way (killed if not gone in {GRACE_S:.0f} s)",
                        markup=False,
                    )
                for each in running:
                    each.interrupt()
            elif time.monotonic() > deadline:
                for each in running:
                    each.kill()
            for each in [each for each in running if each.ended()]:
                running.remove(each)
                result, swept = each.collect(self.stop.signal)
                if swept:
                    self.console.print(
                        f"netsim: {each.item.name} left {swept.processes} process(es) and "
                        f"{len(swept.namespaces)} namespace(s) behind: removed",
                        markup=False,
                    )
                show(result)
            time.sleep(0.05)

    def _in_place(self, queue: Queue, show: Callable[[ScenarioResult], None]) -> None:
        """One after another in this process: a stop interrupts the one under way where it is
        (its blocks unwind), and its result says so."""
        for item, _ in queue:
            if self.stop.signal is not None:
                return
            started = time.monotonic()
            try:
                with self.stop.in_place():
                    result = runner.run_one(item, self.out / "logs")
            except KeyboardInterrupt:
                how = self.stop.signal or signal.SIGINT  # (a signal raised it: it is set)
                seconds = time.monotonic() - started
                workdir = self.out / "logs" / item.name
                result = worker.error_result(item, seconds, worker.under_way(how), workdir)
            show(result)


def _report(run: RunReport, out: Path, console: Console) -> int:
    report.print_table(run, console)
    written = report.write_all(run, out)
    console.print("reports: " + ", ".join(str(p) for p in written.values()), markup=False)
    return 0 if run.ok else 1


def merge(dirs: list[Path], out: Path, durations: Path | None) -> int:
    """`netsim merge`: the shards' report.json files joined into the reports of one run; with
    `durations`, that file refreshed with the durations measured."""
    console = Console(width=None if sys.stdout.isatty() else 120)
    try:
        parts = [shards.report_from_json(json.loads((d / "report.json").read_text())) for d in dirs]
        run = shards.merge(parts)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        console.print(f"netsim merge: {exc}", markup=False)
        return 2
    console.print(f"netsim: {len(dirs)} shards joined; {report.header(run)}", markup=False)
    if durations is not None:
        known = shards.load_durations(durations)
        text = json.dumps(shards.updated_durations(run, known), indent=1) + "\n"
        durations.write_text(text)
    return _report(run, out, console)
