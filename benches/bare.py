"""The ceiling for `make bench`: a bare aiortc DataChannel moving N bytes, nothing else (no
encryption beyond DTLS, no files, no acks), paced the same way fileshare paces itself.

    python -m benches.bare send --server URL --bytes N --message-size S
    python -m benches.bare receive --server URL --session ID --token TOKEN

The sender prints {"session": ..., "token": ...}; the receiver prints {"bytes", "seconds"}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from fileshare.peer import rtc_configuration
from fileshare.signal_client import SignalClient, payload_of
from fileshare.transfer import HIGH_WATER, LOW_WATER
from fsproto import schema


async def _relayed(client: SignalClient, kind: str) -> dict[str, str]:
    while True:
        event = await client.next_event(60)
        if isinstance(event, schema.Relayed) and event.type == kind:
            payload: dict[str, str] = payload_of(event)
            return payload


async def send(server: str, total: int, size: int) -> None:
    async with await SignalClient.connect(server) as client:
        created = await client.create()
        print(json.dumps({"session": created.sessionId, "token": created.token}), flush=True)
        while not isinstance(await client.next_event(60), schema.PeerJoined):
            pass
        pc = RTCPeerConnection(rtc_configuration(created.iceServers))
        channel = pc.createDataChannel("bench", ordered=True)
        opened = asyncio.Event()
        drained = asyncio.Event()
        done = asyncio.Event()
        channel.on("open", opened.set)
        channel.on("bufferedamountlow", drained.set)
        channel.on("message", lambda _: done.set())
        await pc.setLocalDescription(await pc.createOffer())
        await client.relay("offer", {"sdp": pc.localDescription.sdp})
        answer = await _relayed(client, "answer")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await opened.wait()
        channel.bufferedAmountLowThreshold = LOW_WATER
        block = bytes(size)
        sent = 0
        while sent < total:
            if channel.bufferedAmount > HIGH_WATER:
                drained.clear()
                await drained.wait()
                continue
            piece = block[: min(size, total - sent)]
            channel.send(piece)
            sent += len(piece)
        await asyncio.wait_for(done.wait(), 600)  # the receiver says it has everything
        await pc.close()


async def receive(server: str, session: str, token: str, expected: int) -> None:
    async with await SignalClient.connect(server) as client:
        joined = await client.join(session, token)
        pc = RTCPeerConnection(rtc_configuration(joined.iceServers))
        finished = asyncio.Event()
        received = 0
        started = 0.0

        @pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            def on_message(message: bytes | str) -> None:
                nonlocal received, started
                if not started:
                    started = time.perf_counter()
                received += len(message)
                if received >= expected and not finished.is_set():
                    finished.set()
                    channel.send("done")

            channel.on("message", on_message)

        offer = await _relayed(client, "offer")
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await client.relay("answer", {"sdp": pc.localDescription.sdp})
        await asyncio.wait_for(finished.wait(), 600)
        elapsed = time.perf_counter() - started
        print(json.dumps({"bytes": received, "seconds": elapsed}), flush=True)
        await asyncio.sleep(0.5)  # let "done" leave
        await pc.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["send", "receive"])
    parser.add_argument("--server", required=True)
    parser.add_argument("--bytes", type=int, default=256 * 2**20)
    parser.add_argument("--message-size", type=int, default=64 * 1024)
    parser.add_argument("--session", default="")
    parser.add_argument("--token", default="")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.role == "send":
        asyncio.run(send(args.server, args.bytes, args.message_size))
    else:
        asyncio.run(receive(args.server, args.session, args.token, args.bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
