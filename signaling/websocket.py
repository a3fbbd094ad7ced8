"""WebSocket connections for tens of thousands of idle clients: one asyncio.Protocol per socket,
with __slots__, and no task, timer, queue or buffer of its own while idle.

aiohttp's server costs ~14 KB per idle WebSocket (request, handler task and its frames, reader,
queue, heartbeat timer), and memory per idle socket is a capacity figure (loadtest/README.md).
So a connection here reads its request head and takes a WebSocket upgrade on one of the
endpoint's paths itself (`signaling.handshake`); anything else is handed, with the bytes already
read, to aiohttp's own protocol (probes, metrics). Frames are parsed by `signaling.frames`; frames
out leave at the end of the event loop's turn, one write per connection, while the transport
takes them, and wait in a bounded queue while it pushes back; one `Wheel` ticks every connection
for heartbeats and timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Collection
from typing import Final, cast

from signaling import frames, handshake
from signaling.wheel import Wheel

HEAD: Final = 0  # reading the request head
OPEN: Final = 1
CLOSING: Final = 2  # our close frame is sent: waiting for the client's (or its end of stream)
CLOSED: Final = 3  # was open; the transport is closing or gone
DONE: Final = 4  # never opened: refused over HTTP, or handed to aiohttp

# In ticks of the wheel, one every half heartbeat interval:
PING_AFTER: Final = 2  # a connection silent for a whole interval is pinged,
DEAD_AFTER: Final = 3  # and dropped if nothing came back half an interval later
HEAD_TICKS: Final = 3  # the request head must be complete by then
CLOSE_TICKS: Final = 2  # the client has this long to end a closing connection

Http = Callable[[], asyncio.Protocol]


class Endpoint:
    """What the connections of one server share: their paths and limits, the wheel that ticks
    them, and aiohttp's protocol factory for every other request."""

    def __init__(
        self,
        paths: Collection[str],
        max_message_bytes: int,
        send_queue_frames: int,
        heartbeat_seconds: float,
        pages: Collection[str] = (),
    ) -> None:
        self.paths = frozenset(paths)
        # WebSocket paths that also serve a page: a request there without an upgrade goes to
        # aiohttp (the web app at "/" shares its origin and path with the signaling socket).
        self.pages = frozenset(pages)
        self.max_message_bytes = max_message_bytes
        self.send_queue_frames = send_queue_frames
        self.wheel: Wheel[WebSocket] = Wheel(heartbeat_seconds / 2)
        self.http: Http | None = None
        self._emptied: asyncio.Event | None = None  # while closing all
        self._corked: list[WebSocket] = []  # connections with frames written in this turn

    def cork(self, ws: WebSocket) -> None:
        """`ws` has frames to send: they go at the end of this turn of the event loop, all in
        one write, however many were made (a burst of relays costs one system call)."""
        if not self._corked:
            asyncio.get_running_loop().call_soon(self._uncork)
        self._corked.append(ws)

    def _uncork(self) -> None:
        corked, self._corked = self._corked, []
        for ws in corked:
            ws.send_out()

    async def close_all(self, code: int, reason: bytes, timeout: float) -> None:
        """Close every connection (after the frames queued for it), wait up to `timeout` for
        the clients to end them, then abort the rest."""
        self._emptied = asyncio.Event()
        for ws in self.wheel:
            ws.close(code, reason)
        if len(self.wheel):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._emptied.wait(), timeout)
        for ws in self.wheel:
            ws.transport.abort()

    def left(self, ws: WebSocket, slot: set[WebSocket]) -> None:
        """A connection ended or went to aiohttp."""
        Wheel.remove(ws, slot)
        if self._emptied is not None and not len(self.wheel):
            self._emptied.set()


class WebSocket(asyncio.Protocol):
    """One client connection, from its first byte to its end. Subclasses give an upgrade and a
    message their meaning through the `on_*` hooks."""

    __slots__ = (
        "_head",
        "_out",
        "_pending",
        "_reader",
        "_slot",
        "endpoint",
        "quiet",
        "state",
        "transport",
    )

    transport: asyncio.Transport

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.state = HEAD
        self.quiet = 0  # wheel ticks since the client was last heard (or since the state began)
        self._head: bytearray | None = None
        self._reader: frames.FrameReader | None = None
        self._pending: deque[bytes] | None = None  # only while the transport pushes back
        self._out: list[bytes] | None = None  # only until the end of this turn of the loop
        self._slot: set[WebSocket] | None = None

    # --- hooks ------------------------------------------------------------------------------

    def on_request(self, request: handshake.Request) -> bytes | None:
        """A valid upgrade request: an HTTP answer refuses it, None accepts it."""
        return None

    def on_open(self, request: handshake.Request) -> None:
        """The upgrade is answered: the connection is open."""

    def on_message(self, data: bytes) -> None:
        """A whole text or binary message."""

    def on_violation(self, code: int, reason: str) -> None:
        """The client broke the protocol; the connection is being closed with `code`."""

    def on_slow(self) -> None:
        """The client does not read: its send queue overflowed and was dropped, and the
        connection is being closed (1013)."""

    def on_lost(self) -> None:
        """An open connection ended, however it ended."""

    # --- sending ----------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """A text message, unless the connection is closing."""
        if self.state == OPEN:
            self._write(frames.encode(payload))

    def close(self, code: int, reason: bytes = b"") -> None:
        """Send the close frame, after every queued frame. The connection ends when the client
        answers with its own (or ends the stream); one that does neither is aborted by the
        wheel."""
        if self.state != OPEN:
            return
        self.state, self.quiet = CLOSING, 0
        if self._reader is not None:
            self._reader.skip_data()
        self._flush()
        self._put(frames.close_frame(code, reason))

    def _write(self, frame: bytes) -> None:
        pending = self._pending
        if pending is None:
            self._put(frame)
        elif len(pending) < self.endpoint.send_queue_frames:
            pending.append(frame)
        else:
            pending.clear()
            self.on_slow()
            self.close(frames.CLOSE_TRY_LATER, b"slow consumer")

    def _flush(self) -> None:
        """Hand the queued frames to the transport, which takes more than its high-water mark
        (a closing connection is bounded by the wheel's timeout instead)."""
        pending, self._pending = self._pending, None
        if pending and not self.transport.is_closing():
            self.send_out()  # (what this turn wrote came first)
            self.transport.writelines(pending)

    def _put(self, data: bytes) -> None:
        """Write at the end of this turn of the loop (see `Endpoint.cork`), unless the
        transport is already going (the client vanished, and the news is on its way to
        `connection_lost`)."""
        if self._out is not None:
            self._out.append(data)
        elif not self.transport.is_closing():
            self._out = [data]
            self.endpoint.cork(self)

    def send_out(self) -> None:
        """Write what was sent in this turn of the loop."""
        out, self._out = self._out, None
        if out and not self.transport.is_closing():
            self.transport.writelines(out)

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        self._slot = self.endpoint.wheel.add(self)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == OPEN:
            self.quiet = 0
            self._read_frames(data)
        elif state == HEAD:
            self._read_head(data)
        elif state == CLOSING:
            self._read_frames(data)  # for the client's close frame
        # Refused or closed: what the client still sends is dropped.

    def eof_received(self) -> None:
        """The client ended its side: so does the server (the transport closes)."""

    def connection_lost(self, exc: Exception | None) -> None:
        opened = self.state in (OPEN, CLOSING, CLOSED)
        self.state = CLOSED if opened else DONE
        self._leave_wheel()
        self._head = self._reader = self._pending = self._out = None
        if opened:
            self.on_lost()

    def pause_writing(self) -> None:
        if self._pending is None:
            self._pending = deque()

    def resume_writing(self) -> None:
        if self.state == OPEN:
            self._flush()

    # --- time -------------------------------------------------------------------------------

    def tick(self) -> None:
        """The wheel's visit: heartbeat an open connection, time out every other state."""
        self.quiet += 1
        if self.state == OPEN:
            if self.quiet == PING_AFTER:
                self._write(frames.PING)
            elif self.quiet >= DEAD_AFTER:
                self.transport.abort()
        elif self.quiet >= (HEAD_TICKS if self.state == HEAD else CLOSE_TICKS):
            self.transport.abort()

    def _leave_wheel(self) -> None:
        if self._slot is not None:
            self.endpoint.left(self, self._slot)
            self._slot = None

    # --- the opening handshake --------------------------------------------------------------

    def _read_head(self, data: bytes) -> None:
        if self._head is None:
            self._head = bytearray(data)
        else:
            self._head += data
        head = self._head
        end = head.find(handshake.END_OF_HEAD)
        too_large = len(head) > handshake.MAX_HEAD if end < 0 else end > handshake.MAX_HEAD
        if end < 0 and not too_large:
            return
        line_end = head.find(b"\r\n")
        line = handshake.request_line(bytes(head[:line_end])) if line_end >= 0 else None
        if line is None or line.path not in self.endpoint.paths:
            self._hand_off(bytes(head))
        elif too_large:
            self._refuse(handshake.Refused(431, "request head too large").response())
        elif line.path in self.endpoint.pages and not handshake.asks_upgrade(bytes(head[:end])):
            self._hand_off(bytes(head))
        else:
            self._upgrade(bytes(head[:end]), bytes(head[end + len(handshake.END_OF_HEAD) :]))

    def _upgrade(self, head: bytes, rest: bytes) -> None:
        try:
            request = handshake.parse(head)
            answer = handshake.accept(request)
        except handshake.Refused as refused:
            self._refuse(refused.response())
            return
        refusal = self.on_request(request)
        if refusal is not None:
            self._refuse(refusal)
            return
        self._head = None
        self.transport.write(answer)
        self.state, self.quiet = OPEN, 0
        self._reader = frames.FrameReader(self.endpoint.max_message_bytes)
        self.on_open(request)
        if rest:  # frames the client sent without waiting for the answer
            self.data_received(rest)

    def _refuse(self, response: bytes) -> None:
        self.state, self.quiet, self._head = DONE, 0, None
        self.transport.write(response)
        self.transport.close()

    def _hand_off(self, data: bytes) -> None:
        """Not a WebSocket path: aiohttp serves the connection, from its first byte."""
        http = self.endpoint.http
        if http is None:
            self._refuse(handshake.Refused(404, "not found").response())
            return
        self.state, self._head = DONE, None
        self._leave_wheel()
        protocol = http()
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(data)

    # --- frames -----------------------------------------------------------------------------

    def _read_frames(self, data: bytes) -> None:
        reader = self._reader
        assert reader is not None
        for event in reader.feed(data):
            if isinstance(event, frames.Close):
                self._closed_by_client(event.code)
                return
            if self.state != OPEN:  # closing: only the client's close frame matters
                continue
            if isinstance(event, frames.Message):
                self.on_message(event.data)
            elif isinstance(event, frames.Ping):
                self._write(frames.encode(event.data, frames.OP_PONG))
            elif isinstance(event, frames.Failure):
                self.on_violation(event.code, event.reason)
                self.close(event.code, event.reason.encode())
            # a Pong: hearing from the client was all it was for

    def _closed_by_client(self, code: int | None) -> None:
        """Answer an open connection's close with the client's own code (RFC 6455 section
        5.5.1), and close the TCP connection: the server closes it first (section 7.1.1)."""
        if self.state == OPEN:
            self._flush()
            self._put(frames.close_frame(code))
        self.state, self.quiet, self._reader = CLOSED, 0, None
        self.send_out()
        self.transport.close()
