"""What a load test measured, beyond locust's own CSV: exact relay latency percentiles (locust
rounds to whole milliseconds, relays on loopback take less), refusals by error code, and where
the two peers of each session landed. The locustfile fills a Tally; `summarise` reads it back
together with locust's CSV and writes the short summary."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLES_KEPT = 100_000  # reservoir size per metric: exact enough percentiles, bounded memory


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Reservoir:
    """A uniform sample of at most SAMPLES_KEPT values, and how many there were."""

    count: int = 0
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.count += 1
        if len(self.values) < SAMPLES_KEPT:
            self.values.append(value)
        else:
            slot = random.randrange(self.count)
            if slot < SAMPLES_KEPT:
                self.values[slot] = value

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            **{f"p{q}_ms": percentile(self.values, q) * 1000 for q in (50, 95, 99)},
        }


@dataclass
class Tally:
    timings: dict[str, Reservoir] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)  # unexpected, by "name: code"
    refusals: Counter[str] = field(default_factory=Counter)  # expected, by "abuse kind: code"
    placement: Counter[str] = field(default_factory=Counter)  # "cross", "same", "unknown"

    def time(self, name: str, seconds: float) -> None:
        self.timings.setdefault(name, Reservoir()).add(seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "timings": {name: r.summary() for name, r in sorted(self.timings.items())},
            "failures": dict(self.failures),
            "refusals": dict(self.refusals),
            "placement": dict(self.placement),
        }


@dataclass
class Result:
    """One locust run: its stats rows by name, failure rows, and the tally."""

    stats: dict[str, dict[str, str]]
    failures: list[dict[str, str]]
    tally: dict[str, Any]

    @property
    def failure_count(self) -> int:
        row = self.stats.get("Aggregated", {})
        return int(row.get("Failure Count", "0") or 0)

    @property
    def request_count(self) -> int:
        return int(self.stats.get("Aggregated", {}).get("Request Count", "0") or 0)

    def count(self, name: str) -> int:
        return int(self.stats.get(name, {}).get("Request Count", "0") or 0)


def load(prefix: Path) -> Result:
    """Read `<prefix>_stats.csv`, `<prefix>_failures.csv` and `<prefix>_tally.json`."""
    with Path(f"{prefix}_stats.csv").open(newline="") as f:
        stats = {row["Name"]: row for row in csv.DictReader(f)}
    with Path(f"{prefix}_failures.csv").open(newline="") as f:
        failures = list(csv.DictReader(f))
    tally = json.loads(Path(f"{prefix}_tally.json").read_text())
    return Result(stats, failures, tally)


def render(label: str, result: Result, seconds: float) -> str:
    """The short summary of one run, as printed and written to `<prefix>_summary.txt`."""
    lines = [
        f"== {label}: {result.request_count} requests in {seconds:.0f} s, "
        f"{result.failure_count} unexpected failures"
    ]
    for name, t in result.tally["timings"].items():
        lines.append(
            f"  {name:<16} n={t['count']:<7} p50 {t['p50_ms']:7.2f} ms  "
            f"p95 {t['p95_ms']:7.2f} ms  p99 {t['p99_ms']:7.2f} ms"
        )
    sessions = result.tally["timings"].get("join", {}).get("count", 0)
    if sessions:
        lines.append(f"  sessions joined  {sessions} ({sessions / seconds:.1f}/s)")
    if result.tally["placement"]:
        lines.append(f"  peer placement   {_counts(result.tally['placement'])}")
    lines.append(f"  abuse refused    {_counts(result.tally['refusals']) or 'none'}")
    lines.append(f"  failures by code {_counts(result.tally['failures']) or 'none'}")
    return "\n".join(lines)


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counter.items()))


def save(path: Path, data: bytes) -> None:
    path.write_bytes(data)
