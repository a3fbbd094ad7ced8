"""A sender that misbehaves on purpose, for faults an honest peer cannot produce on the wire
(DTLS would stop a third party): `python -m tests.hostile_sender MODE send ARGS...`.

- tamper: chunk 2 of every file leaves with one flipped ciphertext bit;
- traversal: the first file is announced as `../escape.txt`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from fileshare import cli, protocol, transfer
from fileshare.protocol import ChunkToSend, Sender


def tamper() -> None:
    honest_seal = Sender.seal

    def seal(self: Sender, chunk: ChunkToSend, data: bytes) -> bytes:
        frame = bytearray(honest_seal(self, chunk, data))
        if chunk.index == 2:
            frame[-1] ^= 1
        return bytes(frame)

    Sender.seal = seal  # type: ignore[method-assign]


def traversal() -> None:
    honest_collect = transfer.collect_sources

    def collect(paths: list[Path], chunk_size: int = transfer.CHUNK_SIZE) -> list[transfer.Source]:
        sources = honest_collect(paths, chunk_size)
        first = sources[0].manifest
        name = "../escape.txt"
        evil = msgspec.structs.replace(
            first, name=name, fileId=protocol.stable_file_id(name, first.size, first.checksum)
        )
        return [transfer.Source(sources[0].path, evil), *sources[1:]]

    transfer.collect_sources = collect
    cli.app.collect_sources = collect  # type: ignore[attr-defined]


if __name__ == "__main__":
    {"tamper": tamper, "traversal": traversal}[sys.argv[1]]()
    sys.exit(cli.main(sys.argv[2:]))
