"""A sender that misbehaves on purpose, for faults an honest peer cannot produce on the wire
(DTLS would stop a third party): `python -m tests.hostile_sender MODE send ARGS...`.

- tamper: chunk 2 of every file leaves with one flipped ciphertext bit;
- traversal: the first file is announced as `../escape.txt`;
- names: the files are announced under the names in $HOSTILE_NAMES (a JSON list), in order;
- checksum: the first file is announced with the SHA-256 of other bytes;
- eager: every file is streamed at once, before the receiver admits it, and past the window;
- channels: once connected, a data channel is opened (DCEP OPEN, and a message on it) on every
  other stream id, past the streams the receiver offered; few-channels: on 200 of them. Says
  on stderr how many it opened and, at exit, how many of those the receiver reset (closed).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from aiortc.rtcsctptransport import WEBRTC_BINARY, WEBRTC_DCEP, StreamResetOutgoingParam

from fileshare import app, chunks, cli, peer, protocol, transfer
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


def channels(count: int = 2**16 - 2) -> None:
    """Open `count` channels besides ours; at exit, say how many the receiver reset."""
    honest_connect = peer.Peer.connect
    label = b"extra"
    dcep_open = struct.pack("!BBHLHH", 3, 0, 0, 0, len(label), 0) + label  # RFC 8832 5.1
    others: list[int] = []
    reset: set[int] = set()

    async def connect(self: peer.Peer) -> peer.Link:
        link = await honest_connect(self)
        association, ours = link.pc.sctp, link.pipe.channel.id
        assert association is not None
        honest_reconfig = association._receive_reconfig_param

        async def noted(param: Any) -> None:
            if isinstance(param, StreamResetOutgoingParam):
                reset.update(param.streams)
            await honest_reconfig(param)

        association._receive_reconfig_param = noted  # type: ignore[method-assign]
        others[:] = [stream_id for stream_id in range(count + 1) if stream_id != ours][:count]
        for stream_id in others:
            await association._send(stream_id, WEBRTC_DCEP, dcep_open)
            await association._send(stream_id, WEBRTC_BINARY, b"unasked")
        print(f"hostile: {len(others)} channels opened", file=sys.stderr)
        return link

    def said() -> None:
        print(f"hostile: {len(reset.intersection(others))} reset by the receiver", file=sys.stderr)

    atexit.register(said)
    peer.Peer.connect = connect  # type: ignore[method-assign]


MODES: dict[str, Callable[[], None]] = {
    "tamper": tamper,
    "traversal": traversal,
    "names": names,
    "checksum": checksum,
    "eager": eager,
    "channels": channels,
    "few-channels": lambda: channels(200),
}

if __name__ == "__main__":
    MODES[sys.argv[1]]()
    sys.exit(cli.main(sys.argv[2:]))
