"""One aiortc DataChannel peer moving N bytes, nothing else: the probe for profiles and the
interop check between a tuned and a stock aiortc (`--sctp stock` leaves aiortc untouched).

    python -m benches.dc_peer send --bytes N [--sctp stock|reno|bbr]
    python -m benches.dc_peer receive --bytes N [--sctp ...]

The sender prints its offer as one JSON line and reads the answer from stdin; the receiver
reads the offer from stdin and prints its answer. Both end with {"bytes", "seconds", "sha256",
"packet", "cpu", "direct"}: the largest SCTP packet size the side's probes confirmed (0 for stock
aiortc), the process's CPU seconds while data moved (start-up left out) and the DTLS records
taken straight from the socket (`fileshare.sctp.arrival`; 0 for stock); the receiver's also
{"data_packets", "sacks"}: packets with DATA it took and SACKs it sent (0 for stock aiortc).
No ICE servers: host candidates only, so traffic stays where the processes are.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from typing import Any

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

MESSAGE = 64 * 1024
HIGH_WATER = 4 * 2**20
LOW_WATER = 1 * 2**20


def _pattern(index: int) -> bytes:
    """Message `index`: distinct bytes, so a reordering or a loss shows in the digest."""
    return index.to_bytes(8, "big") * (MESSAGE // 8)


async def _line() -> dict[str, str]:
    raw = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return dict(json.loads(raw))


def _packet(pc: RTCPeerConnection) -> int:
    search = getattr(pc.sctp, "_search", None)
    return int(search.plpmtu) if search is not None else 0


def _sacks(pc: RTCPeerConnection) -> dict[str, int]:
    """Packets received with DATA and SACKs sent for them (0 and 0 for stock aiortc)."""
    return {
        "data_packets": getattr(pc.sctp, "_data_packets", 0),
        "sacks": getattr(pc.sctp, "_sacks_sent", 0),
    }


def _segmented(pc: RTCPeerConnection) -> list[int]:
    """Packets sent in UDP_SEGMENT runs, and in how many sends (0 and 0 for stock aiortc)."""
    runs = getattr(pc.sctp, "_runs", None)
    return [runs.packets, runs.sends] if runs is not None else [0, 0]


async def _acknowledged(pc: RTCPeerConnection, most: float) -> None:
    """Until what this side sent ("done") is acknowledged, at most `most` seconds: a fixed
    half second lost it whenever its first copy was lost (the sender then waited for ever)."""
    sctp: Any = pc.sctp  # aiortc tells of no acknowledgement: its queues are looked at
    for _ in range(int(most / 0.05)):
        if not (sctp._outbound_queue or sctp._sent_queue):
            return
        await asyncio.sleep(0.05)


def _direct(pc: RTCPeerConnection) -> int:
    """DTLS records handled in the socket's callback (`fileshare.sctp.arrival`; 0 for stock)."""
    if pc.sctp is None:
        return 0
    connection = pc.sctp.transport.transport._connection
    arrival = getattr(connection, "_fileshare_arrival", None)
    return int(arrival.handled) if arrival is not None else 0


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def trace(pc: RTCPeerConnection) -> None:
    """Every half second on stderr: the sender's congestion state (for tuning by eye)."""
    while True:
        await asyncio.sleep(0.5)
        sctp = pc.sctp
        cc = getattr(sctp, "_cc", None)
        if sctp is None or cc is None:
            continue
        state = {k: v for k, v in vars(cc).items() if isinstance(v, int | float | str)}
        rate = cc.pacing_rate()
        state.update(flight=sctp._flight_size, pacing=rate or 0.0, bw=getattr(cc, "bandwidth", 0))
        state.update(cpu=time.process_time())
        print(json.dumps(state), file=sys.stderr, flush=True)


async def send(total: int, tracing: bool) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tracer = asyncio.ensure_future(trace(pc)) if tracing else None
    channel = pc.createDataChannel("probe", ordered=True)
    opened, drained, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    channel.on("open", opened.set)
    channel.on("bufferedamountlow", drained.set)
    channel.on("message", lambda _: done.set())
    await pc.setLocalDescription(await pc.createOffer())
    _say(sdp=pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription((await _line())["sdp"], "answer"))
    await opened.wait()
    channel.bufferedAmountLowThreshold = LOW_WATER
    digest = hashlib.sha256()
    started, cpu = time.perf_counter(), time.process_time()
    sent = index = 0
    while sent < total:
        if channel.bufferedAmount > HIGH_WATER:
            drained.clear()
            await drained.wait()
            continue
        piece = _pattern(index)[: total - sent]
        digest.update(piece)
        channel.send(piece)
        sent += len(piece)
        index += 1
    await asyncio.wait_for(done.wait(), 600)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    _say(
        bytes=sent,
        seconds=seconds,
        sha256=digest.hexdigest(),
        packet=_packet(pc),
        cpu=cpu,
        direct=_direct(pc),
        segmented=_segmented(pc),
    )
    if tracer is not None:
        tracer.cancel()
    await pc.close()


class Sink:
    """What the receiver holds: a count and a digest; says "done" once it has `total`."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.received = 0
        self.started = self.cpu = 0.0
        self.digest = hashlib.sha256()
        self.finished = asyncio.Event()

    def attach(self, channel: RTCDataChannel) -> None:
        channel.on("message", lambda message: self.take(channel, message))

    def take(self, channel: RTCDataChannel, message: bytes | str) -> None:
        assert isinstance(message, bytes)
        if not self.started:
            self.started, self.cpu = time.perf_counter(), time.process_time()
        self.digest.update(message)
        self.received += len(message)
        if self.received >= self.total and not self.finished.is_set():
            self.finished.set()
            channel.send("done")


async def receive(total: int) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sink = Sink(total)
    pc.on("datachannel", sink.attach)
    await pc.setRemoteDescription(RTCSessionDescription((await _line())["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    _say(sdp=pc.localDescription.sdp)
    await asyncio.wait_for(sink.finished.wait(), 600)
    seconds, cpu = time.perf_counter() - sink.started, time.process_time() - sink.cpu
    digest = sink.digest.hexdigest()
    _say(
        bytes=sink.received,
        seconds=seconds,
        sha256=digest,
        packet=_packet(pc),
        cpu=cpu,
        direct=_direct(pc),
        **_sacks(pc),
    )
    await _acknowledged(pc, 10.0)
    await pc.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["send", "receive"])
    parser.add_argument("--bytes", type=int, default=64 * 2**20)
    parser.add_argument("--sctp", choices=["stock", "reno", "bbr"], default="bbr")
    parser.add_argument("--trace", action="store_true", help="the sender's state on stderr")
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="as the CLI: uvloop"
    )
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.sctp != "stock":
        from fileshare import sctp, sockbuf

        sctp.install(args.sctp)
        sockbuf.install()  # the receive buffers the product asks for (`fileshare.peer`)
    asyncio.run(send(args.bytes, args.trace) if args.role == "send" else receive(args.bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
