"""ChunkBitmap against a plain set model, its wire/disk forms, and its speed at a million chunks."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fileshare.bitmap import ChunkBitmap


def model_ranges(held: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in sorted(held):
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


@st.composite
def count_and_indices(draw: st.DrawFn) -> tuple[int, set[int]]:
    count = draw(st.integers(0, 200))
    if count == 0:
        return 0, set()
    return count, draw(st.sets(st.integers(0, count - 1)))


@st.composite
def count_and_ranges(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    count = draw(st.integers(1, 300))
    ranges = []
    for _ in range(draw(st.integers(0, 8))):
        start = draw(st.integers(0, count - 1))
        ranges.append((start, draw(st.integers(start + 1, count))))
    return count, ranges


class BitmapVsSet(RuleBasedStateMachine):
    """Every operation agrees with a set of ints, whatever the order of adds."""

    bitmap: ChunkBitmap
    model: set[int]

    @initialize(count=st.integers(0, 70))
    def start(self, count: int) -> None:
        self.bitmap = ChunkBitmap(count)
        self.model = set()

    @precondition(lambda self: self.bitmap.count > 0)
    @rule(data=st.data())
    def add(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, self.bitmap.count - 1))
        assert self.bitmap.add(index) == (index not in self.model)
        self.model.add(index)

    @rule(offset=st.integers(0, 10))
    def add_out_of_range(self, offset: int) -> None:
        with pytest.raises(IndexError):
            self.bitmap.add(self.bitmap.count + offset)
        with pytest.raises(IndexError):
            self.bitmap.add(-1 - offset)

    @rule(index=st.integers(-5, 80))
    def contains(self, index: int) -> None:
        assert (index in self.bitmap) == (index in self.model)

    @rule(start=st.integers(0, 80))
    def missing_from(self, start: int) -> None:
        expected = [i for i in range(start, self.bitmap.count) if i not in self.model]
        assert list(self.bitmap.missing(start)) == expected

    @rule()
    def round_trips(self) -> None:
        count = self.bitmap.count
        assert ChunkBitmap.from_bytes(count, self.bitmap.to_bytes()) == self.bitmap
        assert ChunkBitmap.from_ranges(count, self.bitmap.ranges()) == self.bitmap

    @invariant()
    def agrees(self) -> None:
        assert self.bitmap.held == len(self.model)
        assert self.bitmap.complete == (len(self.model) == self.bitmap.count)
        assert self.bitmap.ranges() == model_ranges(self.model)
        assert len(self.bitmap.to_bytes()) == (self.bitmap.count + 7) // 8


TestBitmapVsSet = BitmapVsSet.TestCase
TestBitmapVsSet.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(count_and_indices())
def test_ranges_and_missing_match_model(case: tuple[int, set[int]]) -> None:
    count, held = case
    bitmap = ChunkBitmap(count)
    for i in held:
        bitmap.add(i)
    assert bitmap.ranges() == model_ranges(held)
    assert list(bitmap.missing()) == [i for i in range(count) if i not in held]
    assert [i for i in range(count) if i in bitmap] == sorted(held)


@given(count_and_ranges())
def test_from_ranges_accepts_unsorted_overlapping(case: tuple[int, list[tuple[int, int]]]) -> None:
    count, ranges = case
    model = {i for start, end in ranges for i in range(start, end)}
    bitmap = ChunkBitmap.from_ranges(count, ranges)
    assert bitmap.held == len(model)
    assert bitmap.ranges() == model_ranges(model)


@pytest.mark.parametrize("bad", [(0, 0), (3, 2), (-1, 2), (5, 11), (10, 11)])
def test_from_ranges_rejects_bad_ranges(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="bad chunk range"):
        ChunkBitmap.from_ranges(10, [(0, 1), bad])


def test_from_bytes_validates_length_and_padding() -> None:
    assert ChunkBitmap.from_bytes(10, b"\xff\x03").complete
    with pytest.raises(ValueError, match="needs 2 bytes"):
        ChunkBitmap.from_bytes(10, b"\xff")
    with pytest.raises(ValueError, match="needs 2 bytes"):
        ChunkBitmap.from_bytes(10, b"\xff\x03\x00")
    with pytest.raises(ValueError, match="past its count"):
        ChunkBitmap.from_bytes(10, b"\xff\x04")
    assert ChunkBitmap.from_bytes(16, b"\xff\xff").complete
    assert ChunkBitmap.from_bytes(0, b"").complete


def test_bit_layout_is_lsb_first() -> None:
    bitmap = ChunkBitmap(12)
    for i in (0, 3, 9):
        bitmap.add(i)
    assert bitmap.to_bytes() == bytes([0b1001, 0b10])


def test_empty_and_negative_count() -> None:
    empty = ChunkBitmap(0)
    assert empty.complete and empty.held == 0
    assert list(empty.missing()) == [] and empty.ranges() == []
    with pytest.raises(ValueError, match="negative"):
        ChunkBitmap(-1)
    with pytest.raises(ValueError, match="negative"):
        list(ChunkBitmap(4).missing(-1))


def test_missing_sees_chunks_added_while_iterating() -> None:
    bitmap = ChunkBitmap(20)
    seen = []
    for i in bitmap.missing():
        seen.append(i)
        if i == 2:
            bitmap.add(3)
            bitmap.add(12)
    assert 3 not in seen and 12 not in seen and len(seen) == 18


def test_equality_and_unhashable() -> None:
    a, b = ChunkBitmap(9), ChunkBitmap(9)
    a.add(8)
    assert a != b
    b.add(8)
    assert a == b
    assert a != ChunkBitmap(10)
    with pytest.raises(TypeError):
        hash(a)


def test_million_chunks_is_fast() -> None:
    count = 1_000_000
    holes = [5, 499_999, 999_999]
    started = time.perf_counter()
    bitmap = ChunkBitmap.from_ranges(count, [(0, 5), (6, 499_999), (500_000, 999_999)])
    assert bitmap.held == count - len(holes)
    assert list(bitmap.missing()) == holes
    assert list(bitmap.missing(499_999)) == holes[1:]
    assert bitmap.ranges() == [(0, 5), (6, 499_999), (500_000, 999_999)]
    restored = ChunkBitmap.from_bytes(count, bitmap.to_bytes())
    assert restored == bitmap and len(bitmap.to_bytes()) == 125_000
    for i in holes:
        assert bitmap.add(i)
    assert bitmap.complete and list(bitmap.missing()) == []
    # Generous: these take a few milliseconds; a per-chunk Python loop would take seconds.
    assert time.perf_counter() - started < 1.0


def test_million_adds_keep_counter() -> None:
    bitmap = ChunkBitmap(1_000_000)
    for i in range(0, 1_000_000, 2):
        bitmap.add(i)
    assert bitmap.held == 500_000
    assert next(bitmap.missing()) == 1
    assert len(bitmap.ranges()) == 500_000
