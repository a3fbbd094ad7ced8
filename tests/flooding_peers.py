"""Two aiortc peers in this process (the layer is process-wide, so tests run this as a child)
with SCTP `--kind`, the sender hostile: it leaves one TSN out and sends FLOOD_BYTES of chunks
above it, messages numbered far ahead on the channel's stream (never deliverable). Then its
honest channel sends one message (the TSN left out). Prints one JSON line: what the receiver
held at most, what it refused, and whether the honest message arrived.

    python -m tests.flooding_peers --kind bbr
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

from aiortc import RTCDataChannel
from aiortc.rtcsctptransport import SCTP_DATA_FIRST_FRAG, SCTP_DATA_LAST_FRAG, DataChunk

from fileshare import sctp
from fileshare.sctp import association
from tests import peer_pair

CHUNK = 1000
FLOOD_BYTES = 24 * 2**20  # three times the window
WEBRTC_BINARY = 53


def held(receiver: Any) -> tuple[int, int]:
    """Bytes and chunks the receiver holds for reassembly."""
    streams = receiver._inbound_streams.values()
    held_bytes = sum(len(c.user_data) for s in streams for c in s.reassembly)
    return held_bytes, association.held_chunks(receiver)


async def run() -> dict[str, object]:
    arrived: list[bytes] = []
    came = asyncio.Event()

    def on_channel(channel: RTCDataChannel) -> None:
        @channel.on("message")
        def on_message(message: bytes) -> None:
            arrived.append(message)
            came.set()

    sender, receiver, channel = await peer_pair.open_pair(on_channel)
    tx: Any = sender.sctp
    rx: Any = receiver.sctp
    hole = tx._local_tsn
    most = (0, 0)
    for n in range(FLOOD_BYTES // CHUNK):
        chunk = DataChunk(flags=SCTP_DATA_FIRST_FRAG | SCTP_DATA_LAST_FRAG)
        chunk.tsn = (hole + 1 + n) % 2**32
        chunk.stream_id, chunk.stream_seq, chunk.protocol = channel.id, 30_000, WEBRTC_BINARY
        chunk.user_data = n.to_bytes(4, "big") * (CHUNK // 4)
        await tx._send_chunk(chunk)
        if n % 8 == 0:
            await asyncio.sleep(0.001)  # let the receiver read (loopback drops the rest)
            most = max(most, held(rx))
    await asyncio.sleep(0.5)
    most = max(most, held(rx))
    channel.send(b"honest")  # takes the TSN left out
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(came.wait(), 5)
    result = {
        "most_held_bytes": most[0],
        "most_held_chunks": most[1],
        "refused": getattr(rx, "_chunks_refused", 0),
        "arrived": [m.decode() for m in arrived],
        "window": association.RECEIVE_WINDOW,
    }
    await sender.close()
    await receiver.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("bbr", "reno"), required=True)
    sctp.install(parser.parse_args().kind)
    print(json.dumps(asyncio.run(run())), flush=True)


if __name__ == "__main__":
    main()
