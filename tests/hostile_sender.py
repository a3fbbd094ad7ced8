"""A sender that misbehaves on purpose, for faults an honest peer cannot produce on the wire
(DTLS would stop a third party): `python -m tests.hostile_sender MODE send ARGS...`.

- tamper: chunk 2 of every file leaves with one flipped ciphertext bit;
- traversal: the first file is announced as `../escape.txt`;
- names: the files are announced under the names in $HOSTILE_NAMES (a JSON list), in order;
- checksum: the first file is announced with the SHA-256 of other bytes;
- eager: every file is streamed at once, before the receiver admits it, and past the window.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec

from fileshare import app, chunks, cli, protocol, transfer
from fileshare.protocol import ChunkToSend, Sender


def tamper() -> None:
    honest_seal = Sender.seal

    def seal(self: Sender, chunk: ChunkToSend, data: bytes) -> bytes:
        frame = bytearray(honest_seal(self, chunk, data))
        if chunk.index == 2:
            frame[-1] ^= 1
        return bytes(frame)

    Sender.seal = seal  # type: ignore[method-assign]


def _announce(change: Callable[[list[transfer.Source]], list[transfer.Source]]) -> None:
    honest_collect = transfer.collect_sources

    def collect(
        paths: list[Path],
        chunk_size: int = chunks.CHUNK_SIZE,
        hashed: transfer.Hashed | None = None,
        skipped: transfer.Skipped | None = None,
    ) -> list[transfer.Source]:
        return change(honest_collect(paths, chunk_size, hashed, skipped))

    transfer.collect_sources = collect
    app.collect_sources = collect  # type: ignore[attr-defined]


def _renamed(source: transfer.Source, name: str, checksum: str | None = None) -> transfer.Source:
    m = source.manifest
    checksum = checksum or m.checksum
    evil = msgspec.structs.replace(
        m, name=name, checksum=checksum, fileId=protocol.stable_file_id(name, m.size, checksum)
    )
    return transfer.Source(source.path, evil)


def traversal() -> None:
    _announce(lambda sources: [_renamed(sources[0], "../escape.txt"), *sources[1:]])


def names() -> None:
    hostile = json.loads(os.environ["HOSTILE_NAMES"])
    _announce(lambda sources: [_renamed(s, n) for s, n in zip(sources, hostile, strict=True)])


def checksum() -> None:
    other = hashlib.sha256(b"other bytes").hexdigest()
    _announce(lambda sources: [_renamed(sources[0], sources[0].manifest.name, other)])


def eager() -> None:
    protocol.SEND_WINDOW = 2**62  # type: ignore[misc]
    honest_start = Sender.start

    def start(self: Sender) -> None:
        honest_start(self)
        for f in self._files:
            if not f.complete:
                self._begin_streaming(f.manifest.fileId, [])

    Sender.start = start  # type: ignore[method-assign]


MODES: dict[str, Callable[[], None]] = {
    "tamper": tamper,
    "traversal": traversal,
    "names": names,
    "checksum": checksum,
    "eager": eager,
}

if __name__ == "__main__":
    MODES[sys.argv[1]]()
    sys.exit(cli.main(sys.argv[2:]))
