"""The receive window, sans I/O: what a peer can make the receiver hold is bounded in bytes and
chunks whatever it sends (RFC 9260 6.2: drop above the window, give up the highest held for a
chunk that fills a hole), an honest sender's data all arrives through it, and the sender keeps
within the window its peer advertises (6.2.1)."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from aiortc.rtcsctptransport import (
    SCTP_DATA_FIRST_FRAG,
    SCTP_DATA_LAST_FRAG,
    DataChunk,
    SackChunk,
    serialize_packet,
)

from fileshare.sctp import association
from fileshare.sctp.association import MOST_HELD_CHUNKS, RECEIVE_WINDOW
from fileshare.sctp.held import TSN_MODULO
from tests.tuned_association import tuned

WHOLE = SCTP_DATA_FIRST_FRAG | SCTP_DATA_LAST_FRAG


class Receiving:
    """A tuned receiver: chunk n is TSN base + n; what it delivers and the SACKs it sends."""

    def __init__(self) -> None:
        self.receiver = receiver = tuned()
        self.base = receiver._last_received_tsn = 1000
        self.delivered: list[bytes] = []
        self.sacks: list[SackChunk] = []

        async def deliver(stream_id: int, pp_id: int, data: bytes) -> None:
            self.delivered.append(data)

        async def send_chunk(chunk: SackChunk) -> None:
            serialize_packet(5000, 5000, 1, chunk)  # it must pack (16-bit gap offsets)
            self.sacks.append(chunk)

        async def nothing() -> None:
            """Stock resets streams after delivery; none is asked for here."""

        receiver._receive = deliver
        receiver._send_chunk = send_chunk
        receiver._reset_deferred_streams = nothing

    async def data(self, n: int, payload: bytes, flags: int = WHOLE, seq: int = 0) -> None:
        """Chunk n as one packet: received, then SACKed now (as every packet that changed the
        gap report's edges or was dropped is)."""
        chunk = DataChunk(flags=flags)
        chunk.tsn, chunk.stream_id, chunk.stream_seq = (self.base + n) % TSN_MODULO, 1, seq
        chunk.protocol, chunk.user_data = 53, payload
        await association._receive_data_chunk(self.receiver, chunk)
        await association._sack_now(self.receiver)

    def held_bytes(self) -> int:
        return RECEIVE_WINDOW - int(self.receiver._advertised_rwnd)

    def held_chunks(self) -> int:
        return association.held_chunks(self.receiver)


async def test_chunks_above_a_hole_never_filled_hold_at_most_the_window() -> None:
    """100,000 chunks of 1,000 bytes (95 MiB) above chunk 1, which never comes."""
    rx = Receiving()
    tracemalloc.start()
    try:
        for n in range(2, 100_002):
            await rx.data(n, bytes(1000), seq=n)
            if len(rx.sacks) > 100:
                del rx.sacks[:-1]
        gc.collect()
        held_memory = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert rx.held_bytes() <= RECEIVE_WINDOW
    assert rx.held_chunks() == RECEIVE_WINDOW // 1000
    assert rx.receiver._chunks_refused == 100_000 - RECEIVE_WINDOW // 1000
    assert held_memory < RECEIVE_WINDOW + MOST_HELD_CHUNKS * association.CHUNK_COST
    assert rx.sacks[-1].advertised_rwnd == RECEIVE_WINDOW % 1000
    assert rx.delivered == []


async def test_one_byte_chunks_are_bounded_by_their_count_and_cost() -> None:
    """Tiny chunks fill no byte window: the count bounds them, and each costs at most
    CHUNK_COST bytes of memory (what MOST_HELD_CHUNKS is sized by)."""
    rx = Receiving()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2, MOST_HELD_CHUNKS + 5_002):
            await rx.data(n, b"x", seq=n)
            rx.sacks.clear()
        gc.collect()
        per_chunk = (tracemalloc.get_traced_memory()[0] - before) / MOST_HELD_CHUNKS
    finally:
        tracemalloc.stop()
    assert rx.held_chunks() == MOST_HELD_CHUNKS
    assert rx.receiver._chunks_refused == 5_000
    assert per_chunk <= association.CHUNK_COST, per_chunk


async def test_a_message_without_an_end_holds_at_most_the_window() -> None:
    """In order, every fragment a middle one: the cumulative TSN moves, nothing is delivered."""
    rx = Receiving()
    await rx.data(1, bytes(1000), flags=SCTP_DATA_FIRST_FRAG)
    for n in range(2, 20_001):
        await rx.data(n, bytes(1000), flags=0)
        rx.sacks.clear()
    assert rx.held_bytes() <= RECEIVE_WINDOW and rx.delivered == []
    assert rx.receiver._chunks_refused == 20_000 - RECEIVE_WINDOW // 1000


async def test_a_chunk_too_far_ahead_to_report_is_dropped_and_answered_at_once() -> None:
    rx = Receiving()
    await rx.data(association.MOST_TSN_AHEAD + 1, b"far")
    assert rx.receiver._chunks_refused == 1 and rx.held_chunks() == 0
    await rx.data(association.MOST_TSN_AHEAD, b"near", seq=1)  # the furthest a SACK reports
    assert rx.held_chunks() == 1
    assert rx.sacks[-1].gaps == [(association.MOST_TSN_AHEAD, association.MOST_TSN_AHEAD)]


async def test_a_full_window_gives_up_its_highest_chunks_for_one_that_fills_a_hole() -> None:
    """Chunk 1 is lost and the window fills above it; chunk 1's retransmission takes the room
    of the highest held (reneged: the sender re-sends them after its T3 timer), and in the end
    every message arrives once, in order."""
    rx = Receiving()
    size = 100_000
    count = RECEIVE_WINDOW // size  # 83 fit
    for n in range(2, count + 2):
        await rx.data(n, n.to_bytes(4, "big") * (size // 4), seq=n - 1)
    assert rx.held_chunks() == count and rx.receiver._chunks_refused == 0
    top = rx.sacks[-1].gaps[-1][1]
    await rx.data(1, (1).to_bytes(4, "big") * (size // 4), seq=0)
    assert rx.receiver._chunks_refused == 1  # the highest gave its room
    assert rx.sacks[-1].gaps == [] and rx.sacks[-1].cumulative_tsn == rx.base + top - 1
    assert len(rx.delivered) == count
    await rx.data(top, top.to_bytes(4, "big") * (size // 4), seq=top - 1)  # sent again
    assert [int.from_bytes(d[:4], "big") for d in rx.delivered] == list(range(1, count + 2))
    assert rx.held_bytes() == 0 and rx.held_chunks() == 0


async def test_a_held_chunk_already_delivered_is_not_given_up() -> None:
    """An unordered message above a hole is delivered at once; giving up its TSN would take
    it again when re-sent, and deliver it twice."""
    rx = Receiving()
    unordered = WHOLE | 0x04
    await rx.data(3, b"u", flags=unordered)
    assert rx.delivered == [b"u"]
    rx.receiver._advertised_rwnd = 10  # the window is full
    await rx.data(2, bytes(100))
    assert rx.receiver._chunks_refused == 1 and 3 + rx.base in rx.receiver._sack_misordered


class Sent:
    """A tuned Reno sender whose packets are counted, not sent, and whose congestion window
    does not limit it (`send` repeats until it stops: each round adds at most a burst)."""

    def __init__(self, peer_rwnd: int) -> None:
        self.sender = sender = tuned("reno")
        sender._cc.cwnd = 10**9
        sender._peer_rwnd = peer_rwnd  # as its INIT told
        sender._association_state = sender.State.ESTABLISHED
        sender._search.offer(())  # no path MTU probes
        self.chunks: list[Any] = []

        async def send_chunk(chunk: Any) -> None:
            self.chunks.append(chunk)

        sender._send_chunk = send_chunk

    async def send(self) -> None:
        sent = -1
        while sent != len(self.chunks):
            sent = len(self.chunks)
            await self.sender._transmit()

    async def queue(self, size: int) -> None:
        await association._send(self.sender, 1, 53, bytes(size))
        await self.send()

    async def sack(self, upto: Any, advertised: int) -> None:
        sack = SackChunk()
        sack.cumulative_tsn, sack.advertised_rwnd = upto.tsn, advertised
        await association._receive_sack_chunk(self.sender, sack)
        await self.send()


async def test_the_sender_keeps_within_the_window_its_peer_advertises() -> None:
    tx = Sent(peer_rwnd=10_000)
    await tx.queue(1_000_000)
    flight = sum(len(c.user_data) for c in tx.chunks)
    assert 10_000 - len(tx.chunks[0].user_data) < flight <= 10_000
    await tx.sack(tx.chunks[1], advertised=50_000)
    assert tx.sender._flight_size <= 50_000
    assert tx.sender._flight_size > 50_000 - len(tx.chunks[0].user_data)


async def test_a_closed_window_lets_one_chunk_probe_it() -> None:
    """RFC 9260 6.2.1 A: with nothing outstanding, one chunk goes though the window is 0."""
    tx = Sent(peer_rwnd=0)
    await tx.queue(100_000)
    assert len(tx.chunks) == 1
    await tx.sack(tx.chunks[0], advertised=0)
    assert len(tx.chunks) == 2 and tx.sender._flight_size == len(tx.chunks[1].user_data)
