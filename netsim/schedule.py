"""Which scenarios of a run may overlap (sans-I/O). Throughput and calibration scenarios measure
rates and delays: they run alone, with nothing else of the run beside them. The others judge
what happened (a path, a resume, bytes on the wire), mostly waiting on timers (a 40 s cut, a
60 s outage, ICE checks): up to `jobs` of them run at once, longest first, so the long waits
overlap the short scenarios instead of adding to them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

MEASURING: Final = frozenset({"throughput", "calibration"})


@dataclass(frozen=True)
class Plan:
    together: list[str]  # may run `jobs` at a time, in this order
    alone: list[str]  # one after another, after the others, in the matrix's order


def plan(scenarios: Sequence[tuple[str, str]], seconds: Mapping[str, float]) -> Plan:
    """(name, kind) pairs in the matrix's order, and each one's expected seconds."""
    shared = [name for name, kind in scenarios if kind not in MEASURING]
    order = {name: i for i, (name, _) in enumerate(scenarios)}
    return Plan(
        together=sorted(shared, key=lambda n: (-seconds.get(n, 0.0), order[n])),
        alone=[name for name, kind in scenarios if kind in MEASURING],
    )
