"""A run of the scenario matrix: choose the scenarios, run them (up to `jobs` at once where
`netsim.schedule` allows: throughput and calibration always alone), show progress, and write
the reports, in the matrix's order. Exit status 1 when any expectation failed."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from rich.console import Console

from netsim import docker_backend, docker_host, linkbed, report, runner, scenario, schedule, shards
from netsim.link import mechanism
from netsim.results import RunReport, ScenarioResult, Status


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
        chosen = _suite(path).select(names, full)
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
    with contextlib.ExitStack() as stack:
        if backend == "docker":
            try:
                stack.enter_context(docker_backend.active([out]))
            except docker_host.EngineUnavailable as exc:
                console.print(f"netsim: no Docker backend here: {exc}", markup=False)
                return 2
        return _run(chosen, out, backend, console, matrix, shard, jobs if backend == "netns" else 1)


def _run(
    chosen: list[scenario.Scenario],
    out: Path,
    backend: str,
    console: Console,
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
    console.print(f"netsim: {len(chosen)} scenario(s){part}; {report.header(run)}", markup=False)
    by_name = {item.name: item for item in chosen}
    kinds = [(item.name, item.kind.value) for item in chosen]
    steps = schedule.plan(kinds, shards.estimate(kinds, shards.load_durations()))
    done: dict[str, ScenarioResult] = {}

    def show(result: ScenarioResult) -> None:
        done[result.name] = result
        line = f"[{len(done)}/{len(chosen)}] {result.name}: {by_name[result.name].description}"
        mark = "ok" if result.status is Status.PASSED else result.status.value.upper()
        figures = report.figures(result)
        console.print(f"{line}\n    {mark} in {result.duration_s:.1f} s  {figures}", markup=False)

    interrupted = False
    try:
        if jobs > 1 and len(steps.together) > 1:
            _overlapping([by_name[n] for n in steps.together], out, jobs, show)
        else:
            for name in steps.together:
                show(runner.run_one(by_name[name], out / "logs"))
        for name in steps.alone:
            show(runner.run_one(by_name[name], out / "logs"))
    except KeyboardInterrupt:  # everything of the scenarios under way is gone by now
        interrupted = True
        console.print("netsim: interrupted; reporting what ran", markup=False)
    run.results = [done[item.name] for item in chosen if item.name in done]
    run.duration_s = round(time.monotonic() - started, 1)
    if interrupted:
        run.matrix = [r.name for r in run.results]  # what ran is what is reported
    status = _report(run, out, console)
    return 130 if interrupted else status


def _overlapping(
    items: list[scenario.Scenario], out: Path, jobs: int, show: Callable[[ScenarioResult], None]
) -> None:
    """`items` in `jobs` worker processes (spawned, so each has a process id, and with it a
    namespace prefix, of its own), in this order; `show` each result as it comes."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(runner.run_one, item, out / "logs") for item in items]
        for future in as_completed(futures):
            show(future.result())


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
