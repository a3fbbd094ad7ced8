"""A transfer's goodput over time with its faults marked (sans-I/O): built from the receiver's
JSON `progress` events as the client adapter collected them (bytes held, wall-clock stamps),
never from the client's internals, so any client that prints the same events gets one. The
report plots it (`netsim.report.plot_timeline`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

MAX_POINTS: Final = 400  # bins in a timeline: a 2 GiB run stays a small report.json


@dataclass(frozen=True)
class Mark:
    """A fault as it happened: its kind and when it began and ended (wall clock, as the
    clients' event stamps)."""

    kind: str
    start: float
    end: float


def bin_seconds(duration: float) -> float:
    """At least 1 s per bin (the receiver reports about once a second), at most MAX_POINTS."""
    return max(1.0, math.ceil(duration / MAX_POINTS))


def goodput(progress: Iterable[tuple[float, int]], start: float, end: float) -> list[list[float]]:
    """[seconds since `start`, Mbit/s] per bin from (stamp, bytes held) samples: each bin gets
    the bytes newly held at the samples within it. Bytes held never go back in a resume; a
    drop in the count (a restarted receiver) adds nothing."""
    width = bin_seconds(end - start)
    count = max(1, math.ceil((end - start) / width))
    moved = [0] * count
    held = 0
    for stamp, done in sorted(progress):
        if start <= stamp <= end:
            index = min(int((stamp - start) // width), count - 1)
            moved[index] += max(0, done - held)
        held = max(held, done)
    return [[round((i + 1) * width, 3), round(b * 8 / width / 1e6, 3)] for i, b in enumerate(moved)]


def build(
    events: Iterable[Mapping[str, Any]], marks: Iterable[Mark], start: float
) -> dict[str, Any]:
    """The timeline of one transfer as plain data (report.json): `bin_s`, `goodput` as
    [end of bin (s), Mbit/s], `faults` as {kind, start, end} in seconds since `start`."""
    progress = [(float(e["ts"]), int(e["done"])) for e in events if e["event"] == "progress"]
    end = max((stamp for stamp, _ in progress), default=start)
    return {
        "bin_s": bin_seconds(end - start),
        "goodput": goodput(progress, start, end),
        "faults": [
            {"kind": m.kind, "start": round(m.start - start, 2), "end": round(m.end - start, 2)}
            for m in marks
        ],
    }
