"""The SHA-256 of a file the receiver writes, taken as its chunks arrive.

A file is checked whole before it is saved. Re-reading it all for that cost 0.5 s at the end of
a 750 MB transfer here (SHA-256 at 1.4 GB/s), and a second per 1.4 GB: time in which the user
waits and the link is idle. On one connection chunks arrive in order, so the digest can follow
the writes; the check then reads from disk only what it has not seen in order: the chunks a
resumed `.part` held before this process started, and everything after them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

READ_BLOCK: Final = 1024 * 1024


class PrefixDigest:
    """SHA-256 over the file's first `offset` bytes, extended by each write that starts there."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.offset = 0

    def wrote(self, offset: int, data: bytes) -> None:
        """`data` was written at `offset`; taken only if it continues the hashed prefix."""
        if offset == self.offset:
            self._digest.update(data)
            self.offset += len(data)

    def finish(self, path: Path, read_so_far: Callable[[int], None] | None = None) -> str:
        """The whole file's digest: the rest is read from `path` (blocking: run it in a
        thread), `read_so_far` told the bytes read after each block. Once only: the digest is
        consumed. A fresh one hashes a whole file (the sender's manifest)."""
        done = 0
        with path.open("rb") as f:
            f.seek(self.offset)
            while block := f.read(READ_BLOCK):
                self._digest.update(block)
                done += len(block)
                if read_so_far is not None:
                    read_so_far(done)
        return self._digest.hexdigest()
