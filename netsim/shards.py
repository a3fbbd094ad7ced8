"""The matrix on several machines: a deterministic, balanced slice of it per machine, and the
slices' results joined back into one run.

Balance comes from measured durations (`durations.json` beside this module, refreshed from the
results of a run with `netsim merge --durations`): longest first, each scenario to the shard
with the least work so far (ties to the lower shard), so every machine computes the same
assignment from the same file. A scenario never measured counts as the mean of its kind.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netsim.results import RunReport, ScenarioResult, Status

DURATIONS_FILE = Path(__file__).with_name("durations.json")
UNMEASURED_SECONDS = 60.0  # when nothing of a scenario's kind was ever measured


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as written on the command line
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`K/N`, 1 <= K <= N."""
    index, slash, count = text.partition("/")
    if not slash or not index.isdigit() or not count.isdigit():
        raise ValueError(f"--shard wants K/N (e.g. 2/4), not {text!r}")
    shard = Shard(int(index), int(count))
    if not 1 <= shard.index <= shard.count:
        raise ValueError(f"--shard {text}: K must be between 1 and N")
    return shard


def load_durations(path: Path = DURATIONS_FILE) -> dict[str, float]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object of scenario durations")
    return {str(name): float(seconds) for name, seconds in data.items()}


def estimate(
    scenarios: Sequence[tuple[str, str]], durations: Mapping[str, float]
) -> dict[str, float]:
    """Seconds per (name, kind): measured, else the mean of the kind's measured ones."""
    by_kind: dict[str, list[float]] = {}
    for name, kind in scenarios:
        if name in durations:
            by_kind.setdefault(kind, []).append(durations[name])
    return {
        name: durations.get(name) or statistics.fmean(by_kind.get(kind) or [UNMEASURED_SECONDS])
        for name, kind in scenarios
    }


def assign(seconds: Mapping[str, float], count: int) -> list[list[str]]:
    """Greedy longest-first bin packing into `count` shards (names, in no particular order)."""
    loads = [0.0] * count
    shards: list[list[str]] = [[] for _ in range(count)]
    for name in sorted(seconds, key=lambda n: (-seconds[n], n)):
        lightest = min(range(count), key=lambda i: (loads[i], i))
        shards[lightest].append(name)
        loads[lightest] += seconds[name]
    return shards


def pick(
    scenarios: Sequence[tuple[str, str]], shard: Shard, durations: Mapping[str, float]
) -> list[str]:
    """The names of shard K of N, in the matrix's order."""
    mine = set(assign(estimate(scenarios, durations), shard.count)[shard.index - 1])
    return [name for name, _ in scenarios if name in mine]


# --- joining the shards' results -------------------------------------------------------------


def report_from_json(data: Mapping[str, Any]) -> RunReport:
    """A report.json back into a RunReport (what `RunReport.to_json` wrote)."""
    results = [ScenarioResult.from_json(item) for item in data["results"]]
    return RunReport(
        started=data["started"],
        backend=data["backend"],
        link_mechanism=data["link_mechanism"],
        results=results,
        duration_s=data["duration_s"],
        matrix=list(data.get("matrix") or []),
        shard=data.get("shard"),
        stopped=data.get("stopped"),
        not_run=data.get("not_run", 0),
    )


def merge(reports: Iterable[RunReport]) -> RunReport:
    """One run out of its shards: every shard of one matrix exactly once, the results in the
    matrix's order; started at the first shard's start, as long as the longest shard."""
    shards = sorted(reports, key=lambda r: _shard_of(r).index)
    if not shards:
        raise ValueError("no shard results given")
    first = _shard_of(shards[0])
    for part in shards:
        if part.stopped is not None:
            raise ValueError(f"shard {_shard_of(part)} was stopped ({part.stopped}) before its end")
    indexes = [_shard_of(r).index for r in shards]
    if indexes != list(range(1, first.count + 1)):
        raise ValueError(f"shards {indexes} given; need each of 1..{first.count} once")
    for other in shards[1:]:
        if other.matrix != shards[0].matrix or _shard_of(other).count != first.count:
            raise ValueError("the shards come from different matrices")
        if (other.backend, other.link_mechanism) != (shards[0].backend, shards[0].link_mechanism):
            raise ValueError("the shards ran on different backends or link mechanisms")
    results = {r.name: r for report in shards for r in report.results}
    missing = [name for name in shards[0].matrix if name not in results]
    if missing:
        raise ValueError(f"no result for {', '.join(missing)} (a shard interrupted?)")
    return RunReport(
        started=min(r.started for r in shards),
        backend=shards[0].backend,
        link_mechanism=shards[0].link_mechanism,
        results=[results[name] for name in shards[0].matrix],
        duration_s=max(r.duration_s for r in shards),
        matrix=list(shards[0].matrix),
    )


def _shard_of(report: RunReport) -> Shard:
    if not report.shard:
        raise ValueError("a report that is not a shard's (run with --shard K/N)")
    return Shard(int(report.shard["index"]), int(report.shard["count"]))


def updated_durations(report: RunReport, known: Mapping[str, float]) -> dict[str, float]:
    """The durations file's content after this run: its scenarios' measured seconds (rounded,
    so that the committed file changes only where a duration really moved)."""
    fresh = dict(known)
    for result in report.results:
        if result.status is not Status.SKIPPED and result.duration_s > 0:
            fresh[result.name] = round(result.duration_s, 0)
    return dict(sorted(fresh.items()))
