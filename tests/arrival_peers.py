"""Two tuned aiortc peers in this process (the layer is process-wide, so tests run this as a
child): one sends `--bytes` on a data channel, then closes; prints one JSON line with the
records each side's Arrival handled, whether the data arrived whole, and whether the other
side's DTLS transport closed on the peer's close_notify (taken by the Arrival, ended by
stock's task) within `--wait` seconds.

    python -m tests.arrival_peers [--bytes N] [--wait S]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time

from aiortc import RTCDataChannel, RTCPeerConnection

from fileshare import sctp
from fileshare.sctp import arrival
from tests import peer_pair


def _arrival(pc: RTCPeerConnection) -> arrival.Arrival:
    assert pc.sctp is not None
    found = getattr(pc.sctp.transport.transport._connection, arrival.ARRIVAL)
    assert isinstance(found, arrival.Arrival)
    return found


async def run(total: int, wait: float) -> dict[str, object]:
    sent, received = hashlib.sha256(), hashlib.sha256()
    whole = asyncio.Event()
    count = 0

    def take(message: bytes | str) -> None:
        nonlocal count
        assert isinstance(message, bytes)
        received.update(message)
        count += len(message)
        if count >= total:
            whole.set()

    def attach(incoming: RTCDataChannel) -> None:
        incoming.on("message", take)

    sender, receiver, channel = await peer_pair.open_pair(attach)
    for index in range(0, total, 2**16):
        piece = index.to_bytes(8, "big") * (min(2**16, total - index) // 8)
        sent.update(piece)
        channel.send(piece)
        while channel.bufferedAmount > 2**20:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(whole.wait(), 60)
    handled = [_arrival(sender).handled, _arrival(receiver).handled]
    assert receiver.sctp is not None
    dtls = receiver.sctp.transport
    await sender.close()
    started = time.monotonic()
    while dtls.state != "closed" and time.monotonic() - started < wait:
        await asyncio.sleep(0.05)
    result = {
        "handled": handled,
        "whole": sent.hexdigest() == received.hexdigest(),
        "closed": dtls.state == "closed",
    }
    await receiver.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bytes", type=int, default=2**21)
    parser.add_argument("--wait", type=float, default=5.0)
    args = parser.parse_args()
    sctp.install("bbr")
    print(json.dumps(asyncio.run(run(args.bytes - args.bytes % 8, args.wait))), flush=True)


if __name__ == "__main__":
    main()
