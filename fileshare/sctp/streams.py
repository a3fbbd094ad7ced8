"""The streams a peer may send on and the data channels it may open, bounded.

Stock aiortc offers a peer 65,535 inbound streams and grants every request to add more
(RFC 6525 5.2.5); it makes reassembly state for any stream a DATA or FORWARD TSN chunk names,
and a data channel for every DCEP OPEN (RFC 8832), kept until the peer resets that stream, which
it may never do. A transfer uses one channel; a peer could open the rest (1.7 KB each on the
receiver, measured with 2,000: 110 MB for all), and every chunk received after cost a scan of
every stream (`association.held_chunks`). And stock's DCEP handling asserts: a repeated OPEN,
an ACK for no channel, a label or a string message that is not UTF-8 raised in the receive
loop, which ended the association.

Here (the same wire, within RFC 9260 and 8832):
- our INIT offers MOST_STREAMS inbound streams, and a request to add streams beyond them is
  denied (RFC 6525 result 2);
- a DATA chunk on a stream the association did not negotiate is acknowledged, answered with an
  ERROR (Invalid Stream Identifier; at most ten a second) and discarded (RFC 9260 6.5); a
  FORWARD TSN's entries for such streams are skipped;
- a DCEP OPEN on a stream with a channel, or whose label or protocol is not UTF-8, and an ACK
  for no channel, are dropped; a string message is decoded as browsers do (WHATWG UTF-8 decode:
  a bad sequence becomes U+FFFD) rather than raising.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import rtcsctptransport as stock
from aiortc.rtcsctptransport import (
    DataChunk,
    ErrorChunk,
    ForwardTsnChunk,
    StreamAddOutgoingParam,
    StreamResetResponseParam,
)

from fileshare.sctp.originals import ORIGINALS

MOST_STREAMS = 16  # inbound streams we offer; a transfer uses one, a browser's id is 0 or 1
# At most one ERROR per this many seconds: a packet can carry dozens of chunks on streams not
# negotiated, and an ERROR each (a DTLS record and a datagram apiece) would send back more
# packets and bytes than came in.
ERROR_INTERVAL = 0.1
RECONFIG_RESULT_DENIED = 2  # RFC 6525 4.4
DCEP_OPEN_HEADER = struct.Struct("!BBHLHH")  # RFC 8832 5.1: type ... label and protocol lengths

Transport = Any  # RTCSctpTransport with this layer's state


def attach(self: Transport) -> None:
    """Offer MOST_STREAMS inbound streams in our INIT (or INIT ACK)."""
    self._inbound_streams_max = MOST_STREAMS
    self._streams_refused = 0  # DATA chunks on streams not negotiated (stats)
    self._stream_error_time = None  # when the last ERROR for one left (loop time)


def negotiated(self: Transport, stream_id: int) -> bool:
    count: int = self._inbound_streams_count
    return stream_id < count


async def refuse(self: Transport, chunk: DataChunk) -> None:
    """RFC 9260 6.5: a DATA chunk on a stream not negotiated, its TSN already acknowledged, is
    discarded and answered with an ERROR naming the stream (at most one per ERROR_INTERVAL)."""
    self._streams_refused += 1
    now = self._loop.time()
    last = self._stream_error_time
    if last is not None and now - last < ERROR_INTERVAL:
        return
    self._stream_error_time = now
    error = ErrorChunk()
    error.params = [(stock.SCTP_CAUSE_INVALID_STREAM, struct.pack("!HH", chunk.stream_id, 0))]
    await self._send_chunk(error)


async def _receive_forward_tsn_chunk(self: Transport, chunk: ForwardTsnChunk) -> None:
    chunk.streams = [entry for entry in chunk.streams if negotiated(self, entry[0])]
    await ORIGINALS["_receive_forward_tsn_chunk"](self, chunk)


async def _receive_reconfig_param(self: Transport, param: Any) -> None:
    if (
        isinstance(param, StreamAddOutgoingParam)
        and self._inbound_streams_count + param.new_streams > MOST_STREAMS
    ):
        self._reconfig_response_seq = param.request_sequence
        denied = StreamResetResponseParam(param.request_sequence, RECONFIG_RESULT_DENIED)
        await self._send_reconfig_param(denied)
        return
    await ORIGINALS["_receive_reconfig_param"](self, param)


def _names_decode(open_message: bytes) -> bool:
    """Whether a DCEP OPEN's label and protocol are UTF-8 (stock decodes them strictly)."""
    *_, label_length, protocol_length = DCEP_OPEN_HEADER.unpack_from(open_message)
    label_end = DCEP_OPEN_HEADER.size + label_length
    try:
        open_message[DCEP_OPEN_HEADER.size : label_end].decode()
        open_message[label_end : label_end + protocol_length].decode()
    except UnicodeDecodeError:
        return False
    return True


async def _data_channel_receive(self: Transport, stream_id: int, pp_id: int, data: bytes) -> None:
    if pp_id == stock.WEBRTC_DCEP and data:
        kind, has_channel = data[0], stream_id in self._data_channels
        if kind == stock.DATA_CHANNEL_ACK and not has_channel:
            return
        if (
            kind == stock.DATA_CHANNEL_OPEN
            and len(data) >= DCEP_OPEN_HEADER.size
            and (has_channel or not _names_decode(data))
        ):
            return
    elif pp_id == stock.WEBRTC_STRING:
        try:
            data.decode()
        except UnicodeDecodeError:
            data = data.decode(errors="replace").encode()
    await ORIGINALS["_data_channel_receive"](self, stream_id, pp_id, data)


# The functions this module wraps, each by its name on RTCSctpTransport.
REPLACEMENTS: dict[str, Callable[..., Awaitable[None]]] = {
    "_receive_forward_tsn_chunk": _receive_forward_tsn_chunk,
    "_receive_reconfig_param": _receive_reconfig_param,
    "_data_channel_receive": _data_channel_receive,
}
