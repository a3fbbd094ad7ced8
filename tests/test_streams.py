"""The streams and data channels a peer may make a receiver keep, sans I/O: at most MOST_STREAMS
whatever stream ids its chunks name or it asks to add (RFC 9260 6.5, RFC 6525), and DCEP that
stock aiortc asserted on (a repeated OPEN, an ACK for no channel, names or text not UTF-8) is
dropped or decoded as a browser does, never raised."""

from __future__ import annotations

import gc
import struct
import tracemalloc
from typing import Any

import pytest
from aiortc.rtcsctptransport import (
    SCTP_CAUSE_INVALID_STREAM,
    SCTP_DATA_FIRST_FRAG,
    SCTP_DATA_LAST_FRAG,
    WEBRTC_BINARY,
    WEBRTC_DCEP,
    WEBRTC_STRING,
    Chunk,
    DataChunk,
    ErrorChunk,
    ForwardTsnChunk,
    StreamAddOutgoingParam,
    StreamResetResponseParam,
)

from fileshare.sctp import association, streams
from fileshare.sctp.held import TSN_MODULO
from fileshare.sctp.streams import MOST_STREAMS
from tests.tuned_association import tuned

BASE_TSN = 1000
WHOLE = SCTP_DATA_FIRST_FRAG | SCTP_DATA_LAST_FRAG
DATA_CHANNEL_OPEN, DATA_CHANNEL_ACK = 3, 2
# What MOST_STREAMS streams, with a channel on each, may keep on top of their chunks' data.
STREAM_COST = 4096


class Peer:
    """A tuned receiver fed chunks as a peer would send them; what it sends back."""

    def __init__(self) -> None:
        self.receiver = receiver = tuned()
        receiver._last_received_tsn = BASE_TSN - 1
        self.next_tsn = BASE_TSN
        self.sent: list[Any] = []
        self.channels: list[Any] = []

        async def send_chunk(chunk: Chunk) -> None:
            self.sent.append(chunk)

        async def send_reconfig_param(param: Any) -> None:
            self.sent.append(param)

        async def flush() -> None:
            """The DCEP ACK would leave here; only that it was queued matters."""

        async def nothing() -> None:
            """Stock resets streams after delivery; none is asked for here."""

        receiver._send_chunk = send_chunk
        receiver._send_reconfig_param = send_reconfig_param
        receiver._data_channel_flush = flush
        receiver._reset_deferred_streams = nothing
        receiver.on("datachannel", self.channels.append)

    async def message(self, stream_id: int, pp_id: int, data: bytes) -> None:
        chunk = DataChunk(flags=WHOLE)
        chunk.tsn, chunk.stream_id = self.next_tsn % TSN_MODULO, stream_id
        chunk.stream_seq, chunk.protocol, chunk.user_data = 0, pp_id, data
        self.next_tsn += 1
        await association._receive_data_chunk(self.receiver, chunk)

    def errors(self) -> list[tuple[int, bytes]]:
        return [p for c in self.sent if isinstance(c, ErrorChunk) for p in c.params]

    def acknowledged_through(self) -> int:
        return int(self.receiver._last_received_tsn)


def dcep_open(label: bytes, protocol: bytes = b"") -> bytes:
    return struct.pack("!BBHLHH", DATA_CHANNEL_OPEN, 0, 0, 0, len(label), len(protocol)) + (
        label + protocol
    )


async def test_our_init_offers_most_streams() -> None:
    assert tuned()._inbound_streams_max == MOST_STREAMS


async def test_data_on_a_stream_not_negotiated_is_acknowledged_refused_and_discarded() -> None:
    peer = Peer()
    await peer.message(MOST_STREAMS, WEBRTC_BINARY, b"x" * 100)
    assert peer.acknowledged_through() == BASE_TSN  # acknowledged, so never sent again
    assert peer.errors() == [(SCTP_CAUSE_INVALID_STREAM, struct.pack("!HH", MOST_STREAMS, 0))]
    assert MOST_STREAMS not in peer.receiver._inbound_streams
    await peer.message(0, WEBRTC_DCEP, dcep_open(b"fileshare"))
    assert [c.label for c in peer.channels] == ["fileshare"]  # the negotiated stream works


async def test_a_peer_naming_every_stream_is_held_to_most_streams() -> None:
    """A DCEP OPEN and a message on each of the 65,535 stream ids: at most MOST_STREAMS
    channels and streams, in bounded memory, and the rest acknowledged, in 2.6 s (stock aiortc
    made a channel for each, about 110 MB, and scanned every stream per chunk: over 120 s)."""
    peer = Peer()
    errors_sent = 0
    tracemalloc.start()
    try:
        for stream_id in range(65_535):
            await peer.message(stream_id, WEBRTC_DCEP, dcep_open(b"extra"))
            await peer.message(stream_id, WEBRTC_BINARY, b"y")
            errors_sent += len(peer.errors())
            peer.sent.clear()
            peer.channels.clear()
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    receiver = peer.receiver
    assert len(receiver._data_channels) == MOST_STREAMS
    assert len(receiver._inbound_streams) <= MOST_STREAMS
    assert receiver._streams_refused == 2 * (65_535 - MOST_STREAMS)
    assert peer.acknowledged_through() == BASE_TSN + 2 * 65_535 - 1
    assert kept < STREAM_COST * MOST_STREAMS, kept
    assert errors_sent == 1  # the clock stood still: one ERROR per ERROR_INTERVAL


async def test_errors_for_streams_not_negotiated_are_rate_limited() -> None:
    assert 0.0625 < streams.ERROR_INTERVAL <= 0.125  # so every other step below sends one
    peer = Peer()
    clock = peer.receiver._loop
    for step in range(10):
        clock.now = step * 0.0625  # exact in binary; ERROR_INTERVAL is 0.1
        await peer.message(MOST_STREAMS + step, WEBRTC_BINARY, b"z")
    assert [value for _, value in peer.errors()] == [
        struct.pack("!HH", MOST_STREAMS + step, 0) for step in range(0, 10, 2)
    ]


async def test_a_forward_tsn_naming_streams_not_negotiated_makes_no_state_for_them() -> None:
    peer = Peer()
    forward = ForwardTsnChunk()
    forward.cumulative_tsn = BASE_TSN + 10
    forward.streams = [(stream_id, 0) for stream_id in range(0, 65_535, 7)]
    await peer.receiver._receive_forward_tsn_chunk(forward)
    assert peer.acknowledged_through() == BASE_TSN + 10
    assert set(peer.receiver._inbound_streams) <= set(range(MOST_STREAMS))


@pytest.mark.parametrize(
    ("streams_before", "asked", "granted"),
    [(MOST_STREAMS - 1, 1, True), (MOST_STREAMS, 1, False), (2, 60_000, False)],
)
async def test_a_request_to_add_streams_past_the_bound_is_denied(
    streams_before: int, asked: int, granted: bool
) -> None:
    peer = Peer()
    receiver = peer.receiver
    receiver._inbound_streams_count = streams_before
    sequence = receiver._reconfig_response_seq + 1
    await receiver._receive_reconfig_param(
        StreamAddOutgoingParam(request_sequence=sequence, new_streams=asked)
    )
    (response,) = peer.sent
    assert isinstance(response, StreamResetResponseParam)
    assert response.response_sequence == sequence == receiver._reconfig_response_seq
    assert response.result == (1 if granted else streams.RECONFIG_RESULT_DENIED)
    assert receiver._inbound_streams_count == streams_before + (asked if granted else 0)


@pytest.mark.parametrize(
    "dcep",
    [
        dcep_open(b"fileshare"),  # a second OPEN on a stream with a channel
        dcep_open(b"\xff\xfe"),  # a label that is not UTF-8
        dcep_open(b"ok", b"\xc3"),  # a protocol that is not UTF-8
        bytes([DATA_CHANNEL_ACK]),  # an ACK on a stream with no channel of ours
    ],
    ids=["repeated-open", "label", "protocol", "ack"],
)
async def test_dcep_stock_asserted_on_is_dropped(dcep: bytes) -> None:
    peer = Peer()
    if dcep[0] == DATA_CHANNEL_OPEN and dcep.endswith(b"fileshare"):
        await peer.message(2, WEBRTC_DCEP, dcep_open(b"fileshare"))
        assert len(peer.channels) == 1
    await peer.message(4 if dcep[0] == DATA_CHANNEL_ACK else 2, WEBRTC_DCEP, dcep)
    assert len(peer.receiver._data_channels) == (1 if peer.channels else 0)
    assert len(peer.channels) <= 1 and not peer.errors()


async def test_a_string_that_is_not_utf8_is_decoded_as_a_browser_does() -> None:
    peer = Peer()
    await peer.message(2, WEBRTC_DCEP, dcep_open(b"fileshare"))
    (channel,) = peer.channels
    messages: list[str] = []
    channel.on("message", messages.append)
    await peer.message(2, WEBRTC_STRING, b'{"name": "a\xffb"}')
    assert messages == ['{"name": "a\ufffdb"}']
