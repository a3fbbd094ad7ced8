"""The receiver's whole-file digest follows the writes and reads from disk only the rest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fileshare.prefixdigest import PrefixDigest

CHUNK = 65_536


def _chunks(count: int) -> list[bytes]:
    return [os.urandom(CHUNK) for _ in range(count - 1)] + [os.urandom(1_000)]


def _file(path: Path, chunks: list[bytes]) -> Path:
    path.write_bytes(b"".join(chunks))
    return path


def test_in_order_writes_are_hashed_as_they_come_and_nothing_is_read(tmp_path: Path) -> None:
    chunks = _chunks(20)
    digest = PrefixDigest()
    for index, data in enumerate(chunks):
        digest.wrote(index * CHUNK, data)
    # The file on disk differs from what was written: only the writes count, so nothing of the
    # file was read again (the whole point: no second pass over a large file).
    stale = _file(tmp_path / "f.part", [bytes(len(c)) for c in chunks])
    assert digest.finish(stale) == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_a_resumed_part_is_read_from_where_the_writes_stopped_following(tmp_path: Path) -> None:
    """Chunks 3-5 were on disk before this process started; 0-2 and 6+ arrive now."""
    chunks = _chunks(12)
    part = _file(tmp_path / "f.part", chunks)
    digest = PrefixDigest()
    for index in [0, 1, 2, *range(6, 12)]:
        digest.wrote(index * CHUNK, chunks[index])
    assert digest.offset == 3 * CHUNK
    assert digest.finish(part) == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_a_chunk_out_of_order_is_not_taken(tmp_path: Path) -> None:
    chunks = _chunks(4)
    digest = PrefixDigest()
    digest.wrote(2 * CHUNK, chunks[2])
    assert digest.offset == 0
    assert (
        digest.finish(_file(tmp_path / "f", chunks)) == hashlib.sha256(b"".join(chunks)).hexdigest()
    )


def test_an_altered_write_makes_the_digest_differ(tmp_path: Path) -> None:
    """What was written is what is checked: a chunk that differs from the sender's file (the
    sender's file changed while sent) fails the check, as the re-read did."""
    chunks = _chunks(3)
    digest = PrefixDigest()
    digest.wrote(0, chunks[0])
    digest.wrote(CHUNK, bytes(CHUNK))
    digest.wrote(2 * CHUNK, chunks[2])
    assert (
        digest.finish(_file(tmp_path / "f", chunks)) != hashlib.sha256(b"".join(chunks)).hexdigest()
    )
