"""What a netsim run found, as plain data: each scenario's checks (expected against observed)
and its measurements. The runner fills these in; `netsim.report` renders them."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


class Status(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"  # an expectation was not met
    ERROR = "error"  # the scenario could not run to the end (a crash, a timeout)
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Check:
    """One expectation: `observed` met `expected` or not."""

    name: str
    ok: bool
    expected: str
    observed: str


Metric = float | int | str


@dataclass
class ScenarioResult:
    """`kind` is the scenario's family (lan, path, udp_blocked, resume, encryption, throughput,
    calibration, rebind). Well-known metric names: `path` (host/srflx/prflx/relay), `transport`
    (udp/tcp/tls), `nat_a`, `nat_b`, `expected_path`, `goodput_mbit`, `rate_mbit`, `rtt_ms`,
    `loss_percent`, `ratio`, `resent_chunks`, `total_chunks`, `bytes`, `seconds`."""

    name: str
    kind: str
    description: str
    status: Status = Status.PASSED
    duration_s: float = 0.0
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, Metric] = field(default_factory=dict)
    logs_dir: str | None = None  # kept for a scenario that did not pass
    error: str | None = None
    timeline: dict[str, Any] | None = None  # goodput over time, faults marked (netsim.timeline)

    def check(self, name: str, ok: bool, expected: object, observed: object) -> bool:
        self.checks.append(Check(name, ok, str(expected), str(observed)))
        if not ok and self.status is Status.PASSED:
            self.status = Status.FAILED
        return ok

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScenarioResult:
        """What `to_json` wrote (a report.json's results, a worker's answer)."""
        checks = [Check(**check) for check in data["checks"]]
        return cls(**{**data, "status": Status(data["status"]), "checks": checks})


@dataclass
class RunReport:
    """One run: where it ran and how links were impaired (netem, or this kernel's fallback)."""

    started: str  # ISO 8601, UTC
    backend: str  # "netns" or "docker"
    link_mechanism: str
    results: list[ScenarioResult] = field(default_factory=list)
    duration_s: float = 0.0
    matrix: list[str] = field(default_factory=list)  # what the run set out to run, in order
    shard: dict[str, int] | None = None  # {"index": K, "count": N} of `netsim run --shard K/N`
    stopped: str | None = None  # the signal that stopped the run (SIGINT, SIGTERM) before its end
    not_run: int = 0  # scenarios of the run that a stop left out

    @property
    def ok(self) -> bool:
        """Every scenario passed (or was skipped), and the run was not stopped before its end."""
        passed = all(r.status in (Status.PASSED, Status.SKIPPED) for r in self.results)
        return passed and self.stopped is None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["results"] = [result.to_json() for result in self.results]
        data["ok"] = self.ok
        return data
