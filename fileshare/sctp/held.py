"""The receiver's TSNs held above the cumulative TSN, as runs, for the SACK's Gap Ack Blocks.

A SACK reports the TSNs received past a hole as runs (RFC 9260 3.3.4). Sorting every held
TSN for each SACK cost the receiver 9 % of its time on loopback (py-spy, 200 MiB, where the
socket's drops keep hundreds of TSNs held for a round trip); kept as runs, a new TSN costs a
binary search over the few runs, usually nothing (it extends the highest run), and a SACK
costs one step per run.

The set of held TSNs (`_sack_misordered`) stays the truth: stock aiortc's FORWARD-TSN and
INIT handling replace or filter it, and only ever remove TSNs from it. So `sync` compares the
runs' count with the set's size and rebuilds the runs from the set when they differ.
"""

from __future__ import annotations

import bisect

from aiortc.rtcsctptransport import tsn_plus_one

TSN_MODULO = 2**32


def gap_blocks(cumulative: int, held: set[int]) -> list[tuple[int, int]]:
    """Gap Ack Blocks (offsets from `cumulative`) for the TSNs `held` above it, by sorting:
    what `HeldRuns` rebuilds from, and its reference in the tests."""
    blocks: list[list[int]] = []
    for offset in sorted((tsn - cumulative) % TSN_MODULO for tsn in held):
        if blocks and offset == blocks[-1][1] + 1:
            blocks[-1][1] = offset
        else:
            blocks.append([offset, offset])
    return [(first, last) for first, last in blocks]


class HeldRuns:
    """Runs of consecutive held TSNs, [first, last] in serial-number order (all lie within
    half the TSN space above the cumulative TSN, so their order does not change as it moves)."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []
        self.count = 0

    def sync(self, cumulative: int, held: set[int]) -> None:
        """Rebuild from `held` if something other than `add` and `advance` changed it."""
        if self.count != len(held):
            self.runs = [
                [(cumulative + first) % TSN_MODULO, (cumulative + last) % TSN_MODULO]
                for first, last in gap_blocks(cumulative, held)
            ]
            self.count = len(held)

    def add(self, cumulative: int, tsn: int) -> None:
        """`tsn`, newly held: above `cumulative` + 1, not held before."""
        runs = self.runs
        self.count += 1
        if runs and runs[-1][1] == (tsn - 1) % TSN_MODULO:  # extends the highest run
            runs[-1][1] = tsn
            return
        offset = (tsn - cumulative) % TSN_MODULO
        index = bisect.bisect_left(runs, offset, key=lambda run: (run[0] - cumulative) % TSN_MODULO)
        joins_lower = index > 0 and tsn_plus_one(runs[index - 1][1]) == tsn
        joins_upper = index < len(runs) and tsn_plus_one(tsn) == runs[index][0]
        if joins_lower and joins_upper:
            runs[index - 1][1] = runs[index][1]
            del runs[index]
        elif joins_lower:
            runs[index - 1][1] = tsn
        elif joins_upper:
            runs[index][0] = tsn
        else:
            runs.insert(index, [tsn, tsn])

    def advance(self, cumulative: int) -> int | None:
        """The cumulative TSN has reached `cumulative`: if the lowest run starts right after
        it, remove that run and return its last TSN (the new cumulative TSN)."""
        if not self.runs or self.runs[0][0] != tsn_plus_one(cumulative):
            return None
        first, last = self.runs.pop(0)
        self.count -= (last - first) % TSN_MODULO + 1
        return last

    def blocks(self, cumulative: int, most: int) -> list[tuple[int, int]]:
        """The lowest `most` runs as Gap Ack Blocks (offsets from `cumulative`)."""
        return [
            ((first - cumulative) % TSN_MODULO, (last - cumulative) % TSN_MODULO)
            for first, last in self.runs[:most]
        ]

    def highest(self) -> int | None:
        """The highest TSN held (None: nothing is held above the cumulative TSN)."""
        return self.runs[-1][1] if self.runs else None

    def drop_highest(self) -> None:
        """The highest TSN held is given up (the receive buffer is full, RFC 9260 6.2)."""
        run = self.runs[-1]
        if run[0] == run[1]:
            self.runs.pop()
        else:
            run[1] = (run[1] - 1) % TSN_MODULO
        self.count -= 1
