"""Which chunks of a file are held: one bit per chunk, so a resumable transfer of a million
chunks costs 125 kB in memory and on disk, and finding the next hole skips full bytes in C."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# Bytes that still have a hole; a regex search runs in C, so full regions cost almost nothing.
_NOT_FULL = re.compile(rb"[^\xff]")
# Runs of empty bytes, runs of full bytes, and single mixed bytes: ranges() walks these.
_RUNS = re.compile(rb"\x00+|\xff+|[\x01-\xfe]")


def _nbytes(count: int) -> int:
    return (count + 7) >> 3


class ChunkBitmap:
    """A set of chunk indices in [0, count), stored as bits (chunk i is bit i % 8, LSB first, of
    byte i // 8). Bits past `count` in the last byte are always zero, so `to_bytes` is canonical
    and two bitmaps with the same chunks are equal byte for byte."""

    __slots__ = ("_bits", "_count", "_held")

    def __init__(self, count: int) -> None:
        if count < 0:
            raise ValueError(f"chunk count must not be negative: {count}")
        self._count = count
        self._bits = bytearray(_nbytes(count))
        self._held = 0

    @property
    def count(self) -> int:
        """Number of chunks in the file."""
        return self._count

    @property
    def held(self) -> int:
        """Number of chunks held; a counter, so progress reports cost nothing."""
        return self._held

    @property
    def complete(self) -> bool:
        return self._held == self._count

    def add(self, index: int) -> bool:
        """Mark a chunk held; True if it was new, so duplicates from a peer can be told apart."""
        if not 0 <= index < self._count:
            raise IndexError(f"chunk {index} out of range for {self._count} chunks")
        byte, mask = index >> 3, 1 << (index & 7)
        if self._bits[byte] & mask:
            return False
        self._bits[byte] |= mask
        self._held += 1
        return True

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or not 0 <= index < self._count:
            return False
        return bool(self._bits[index >> 3] & (1 << (index & 7)))

    def missing(self, start: int = 0) -> Iterator[int]:
        """Indices not held, ascending, from `start`. The walk reads the live bitmap, so chunks
        added while iterating are skipped if not yet reached; full bytes are skipped in C."""
        if start < 0:
            raise ValueError(f"start must not be negative: {start}")
        bits, count = self._bits, self._count
        pos = start >> 3
        first_bit = start & 7
        while pos < len(bits):
            found = _NOT_FULL.search(bits, pos)
            if found is None:
                return
            i = found.start()
            base = i << 3
            for bit in range(first_bit if i == start >> 3 else 0, 8):
                if base + bit >= count:
                    return
                if not bits[i] & (1 << bit):
                    yield base + bit
            pos = i + 1

    def ranges(self) -> list[tuple[int, int]]:
        """Held chunks as sorted, disjoint, half-open [start, end) runs: the compact form a
        receiver sends to tell the sender what it already has."""
        data = bytes(self._bits)
        out: list[tuple[int, int]] = []
        run_start: int | None = None
        for match in _RUNS.finditer(data):
            s = match.start()
            value = data[s]
            if value == 0:
                if run_start is not None:
                    out.append((run_start, s << 3))
                    run_start = None
            elif value == 0xFF:
                if run_start is None:
                    run_start = s << 3
            else:
                for bit in range(8):
                    index = (s << 3) + bit
                    if value & (1 << bit):
                        if run_start is None:
                            run_start = index
                    elif run_start is not None:
                        out.append((run_start, index))
                        run_start = None
        if run_start is not None:
            # Only reachable when the last byte is full, i.e. count is a multiple of 8.
            out.append((run_start, self._count))
        return out

    @classmethod
    def from_ranges(cls, count: int, ranges: Iterable[tuple[int, int]]) -> ChunkBitmap:
        """Rebuild from [start, end) runs, which may come from a peer: each must satisfy
        0 <= start < end <= count (ValueError otherwise); order and overlaps do not matter."""
        bitmap = cls(count)
        bits = bitmap._bits
        for start, end in ranges:
            if not 0 <= start < end <= count:
                raise ValueError(f"bad chunk range [{start}, {end}) for {count} chunks")
            full_lo, full_hi = (start + 7) >> 3, end >> 3
            if full_lo < full_hi:
                bits[full_lo:full_hi] = b"\xff" * (full_hi - full_lo)
                edges = [*range(start, full_lo << 3), *range(full_hi << 3, end)]
            else:
                edges = list(range(start, end))
            for index in edges:
                bits[index >> 3] |= 1 << (index & 7)
        bitmap._held = int.from_bytes(bits, "little").bit_count()
        return bitmap

    def to_bytes(self) -> bytes:
        """One bit per chunk, ceil(count / 8) bytes: what the state store keeps."""
        return bytes(self._bits)

    @classmethod
    def from_bytes(cls, count: int, data: bytes) -> ChunkBitmap:
        """Inverse of `to_bytes`; refuses a wrong length or bits set past `count`, since either
        means the data belongs to a different file."""
        bitmap = cls(count)
        if len(data) != len(bitmap._bits):
            raise ValueError(
                f"bitmap of {count} chunks needs {len(bitmap._bits)} bytes, got {len(data)}"
            )
        if count & 7 and data[-1] >> (count & 7):
            raise ValueError(f"bitmap has chunks set past its count {count}")
        bitmap._bits[:] = data
        bitmap._held = int.from_bytes(data, "little").bit_count()
        return bitmap

    def __eq__(self, other: object) -> bool:
        # Defining __eq__ leaves __hash__ None: a mutable bitmap must not be a dict key.
        if not isinstance(other, ChunkBitmap):
            return NotImplemented
        return self._count == other._count and self._bits == other._bits

    def __repr__(self) -> str:
        return f"ChunkBitmap(count={self._count}, held={self._held})"
