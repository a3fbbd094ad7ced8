"""One WebSocket connection's life as a sans-I/O state machine: bytes, ticks and flow-control
news in; bytes to write and what to do with the transport out. No socket, no clock, no loop:
tests/test_wscore.py drives every limit by feeding bytes and ticks.

Everything a client can make a connection hold is bounded in bytes (the request head, an
incomplete frame, the fragments of a message, the frames waiting for a slow reader) or in rate
(frames per second, control frames per second, as token buckets that exist only while the
client talks); a client over a bound is failed with 1008 or 1009, and every refusal is reported
through `on_rejected` with one label per reason.

The work a client makes the server do is paid in bytes read: from the connection's own byte
budget and from its address's (`budget`, shared by all its connections). A budget in debt does
not fail the client: `read_pause` tells the shell how long to stop reading it (backpressure:
TCP holds the rest), so one busy address cannot crowd the others out of the event loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from signaling import frames, handshake
from signaling.limits import TokenBucket

HEAD: Final = 0  # reading the request head
OPEN: Final = 1
CLOSING: Final = 2  # our close frame is sent: waiting for the client's (or its end of stream)
CLOSED: Final = 3  # was open; the transport is closing or gone
DONE: Final = 4  # never opened: refused over HTTP (the answer is out, waiting for the client to go)
HTTP: Final = 5  # handed to the HTTP server, which answers it; still timed here
FAILED: Final = 6  # was open, failed (RFC 6455 section 7.1.7): nothing more is read
UPGRADED: Final = (OPEN, CLOSING, CLOSED, FAILED)
REFUSED_TICKS: Final = 2  # head-wheel ticks (0.5 s) a refused connection may linger
# A failed one: its close frame may wait behind a busy client's (or a proxy's) own buffers.
LINGER_TICKS: Final = 4

# What the transport should do once the output is written:
KEEP: Final = 0
CLOSE: Final = 1  # close it (after the output)
LINGER: Final = 2  # send end-of-stream, and close when the client does (or the next tick)
ABORT: Final = 3  # drop it, output and all
HAND_OFF: Final = 4  # give it, with the bytes read (the head so far), to the HTTP server


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may cost. Ticks of the head wheel time HEAD, HTTP and DONE; ticks of
    the heartbeat wheel (half a heartbeat interval each) time the other states."""

    paths: frozenset[str]
    pages: frozenset[str] = frozenset()  # of `paths`: without an upgrade, a page (HAND_OFF)
    max_message_bytes: int = 262144  # a message (all its fragments) or a frame over it: 1009
    max_fragments: int = 64
    send_queue_bytes: int = 262144  # frames waiting for a slow reader over it: 1013
    flush_bytes: int = 65536  # written at once, not at the end of the loop's turn, over it
    frames_per_second: float = 200.0
    frame_burst: float = 1000.0
    control_per_second: float = 1.0  # pings and pongs from the client
    control_burst: float = 10.0
    bytes_per_second: float = 262144.0  # read from the client once open; over it, reading waits
    byte_burst: float = 524288.0
    head_ticks: int = 5  # the request head must be complete by then (and an HTTP request done)
    ping_after: int = 2  # a connection silent for a whole interval is pinged,
    dead_after: int = 3  # and dropped if nothing came back half an interval later
    close_ticks: int = 2  # the client has this long to end a closing connection


FREE_FRAMES: Final = 64  # frames between two ticks that need no rate buckets
FREE_BYTES: Final = 16384  # a read (or a frame being read) this big needs them


def head_ticks(seconds: float, tick_seconds: float) -> int:
    return max(1, math.ceil(seconds / tick_seconds))


class WebSocketCore:
    """Subclasses give an upgrade and a message their meaning through the `on_*` hooks, and
    carry the output to a transport (`signaling.websocket`)."""

    __slots__ = (
        "_input",
        "_out",
        "_paused",
        "_rates",
        "action",
        "budget",
        "quiet",
        "state",
    )

    @property
    def limits(self) -> Limits:
        """Given by the subclass: the shell shares one among all its connections."""
        raise NotImplementedError

    def __init__(self) -> None:
        self.state = HEAD
        self.quiet = 0  # ticks since the client was last heard (or since the state began)
        self.action = KEEP
        self._paused = False  # the transport pushes back
        # The request head so far (for HAND_OFF: all that was read), then the frame reader:
        self._input: bytearray | frames.FrameReader | None = None
        self._out: _Output | None = None
        self._rates: _Rates | None = None  # from the first frame until idle again
        # The byte budget of the client's address, shared with its other connections:
        self.budget: TokenBucket | None = None

    # --- hooks ------------------------------------------------------------------------------

    def on_request(self, request: handshake.Request) -> bytes | None:
        """A valid upgrade request: an HTTP answer refuses it, None accepts it."""
        return None

    def on_open(self, request: handshake.Request) -> None:
        """The upgrade is answered: the connection is open."""

    def on_message(self, data: bytes) -> None:
        """A whole text or binary message."""

    def on_rejected(self, reason: str, detail: str) -> None:
        """A limit or a rule of the protocol refused the client (`reason`: one metric label)."""

    def on_output(self) -> None:
        """Bytes were queued: the shell writes them (now, or at the end of the loop's turn)."""

    # --- inputs -----------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        state = self.state
        if state == OPEN:
            pinged = self.quiet >= self.limits.ping_after  # nothing came since our ping
            self.quiet = 0
            self._read_frames(data, now, pinged)
            if self.state == OPEN:
                self._charge(len(data), now)
        elif state == HEAD:
            self._read_head(data, now)
        elif state == CLOSING:
            self._read_frames(data, now, False)  # for the client's close frame
        # Refused, handed off or closed: what the client still sends is not ours.

    def advance(self, now: float) -> None:
        """A visit of the wheel the state belongs to: heartbeat an open connection, time out
        every other state."""
        self.quiet += 1
        limits, state = self.limits, self.state
        if state == OPEN:
            if self.quiet == limits.ping_after:
                self._write(frames.PING)
            elif self.quiet >= limits.dead_after:
                self.action = ABORT
            if self._rates is not None and self._rates.idle(now):
                self._rates = None
            if self._reader is not None:
                self._reader.frames = 0  # frames are counted from one tick to the next
        elif state == HEAD:
            if self.quiet >= limits.head_ticks:
                self.on_rejected("head_timeout", "request head not complete in time")
                self.action = ABORT
        elif state == HTTP:
            if self.quiet >= limits.head_ticks:
                self.on_rejected("http_timeout", "HTTP request not done in time")
                self.action = ABORT
        elif state in (DONE, FAILED):
            if self.quiet >= (REFUSED_TICKS if state == DONE else LINGER_TICKS):
                self.action = ABORT
        elif self.quiet >= limits.close_ticks:
            self.action = ABORT

    def read_pause(self, now: float) -> float:
        """Seconds the client should not be read: until its connection's and its address's
        byte budgets are out of debt (0: read on)."""
        rates, budget = self._rates, self.budget
        pause = rates.bytes.debt_seconds(now) if rates is not None else 0.0
        if budget is not None:
            pause = max(pause, budget.debt_seconds(now))
        return pause

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def take_output(self) -> list[bytes] | None:
        """The bytes to write now: none while the transport pushes back, unless the connection
        is ending (the transport then takes them as its last)."""
        if self._out is None or (self._paused and self.action == KEEP and self.state != DONE):
            return None
        out, self._out = self._out, None
        return out

    def refuse(self, response: bytes, then: int = LINGER) -> None:
        """Answer over HTTP, no upgrade: the client reads the answer, then goes (LINGER), or
        the answer is written and the connection closed at once (CLOSE: nothing of the client
        was read, nothing it sends is)."""
        self.state, self.quiet, self._input = DONE, 0, None
        self._put(response)
        self.action = then

    # --- sending ----------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """A text message, unless the connection is closing."""
        if self.state == OPEN:
            self._write(frames.encode(payload))

    def close(self, code: int, reason: bytes = b"") -> None:
        """Send the close frame, after every queued frame. The connection ends when the client
        answers with its own (or ends the stream); one that does neither is aborted by a tick."""
        if self.state != OPEN:
            return
        self.state, self.quiet = CLOSING, 0
        if self._reader is not None:
            self._reader.skip_data()
        self._put(frames.close_frame(code, reason))

    def _write(self, frame: bytes) -> None:
        queued = self.queued
        if queued + len(frame) <= self.limits.send_queue_bytes or not queued:
            self._put(frame)
            return
        self._out = None
        self._fail("slow_consumer", frames.CLOSE_TRY_LATER, "slow consumer")

    def _put(self, data: bytes) -> None:
        out = self._out
        if out is None:
            out = self._out = _Output()
        out.append(data)
        out.size += len(data)
        self.on_output()

    @property
    def queued(self) -> int:
        """Bytes waiting to be written."""
        return self._out.size if self._out is not None else 0

    # --- the opening handshake --------------------------------------------------------------

    def _read_head(self, data: bytes, now: float) -> None:
        head = self._head
        if head is None:
            head = self._input = bytearray(data)
        else:
            head += data
        # Only the new bytes (and the 3 before them) can complete the head: a head dripped in
        # byte by byte is not searched again from its start each time.
        end = head.find(handshake.END_OF_HEAD, max(0, len(head) - len(data) - 3))
        if (end < 0 and len(head) > handshake.MAX_HEAD) or end > handshake.MAX_HEAD:
            self.on_rejected("head_too_large", "request head too large")
            self.refuse(handshake.Refused(431, "request head too large").response())
            return
        if end < 0:
            return
        try:
            request = handshake.parse(bytes(head[:end]))
        except handshake.Refused as refused:
            self.on_rejected("bad_request", refused.reason)
            self.refuse(refused.response())
            return
        rest = bytes(head[end + len(handshake.END_OF_HEAD) :])
        path = request.line.path
        if path not in self.limits.paths or (
            path in self.limits.pages and "websocket" not in request.tokens("upgrade")
        ):
            self.state, self.quiet, self.action = HTTP, 0, HAND_OFF
            return
        self._upgrade(request, rest, now)

    def _upgrade(self, request: handshake.Request, rest: bytes, now: float) -> None:
        try:
            answer = handshake.accept(request)
        except handshake.Refused as refused:
            self.on_rejected("bad_request", refused.reason)
            self.refuse(refused.response())
            return
        refusal = self.on_request(request)
        if refusal is not None:
            self.refuse(refusal)
            return
        self._input = None
        self._put(answer)
        self.state, self.quiet = OPEN, 0
        self._input = frames.FrameReader(self.limits.max_message_bytes, self.limits.max_fragments)
        self.on_open(request)
        if rest:  # frames the client sent without waiting for the answer
            self.receive(rest, now)

    # --- frames -----------------------------------------------------------------------------

    def _read_frames(self, data: bytes, now: float, pinged: bool) -> None:
        """`pinged`: our ping is unanswered, and its pong costs no control-frame token."""
        reader = self._reader
        assert reader is not None
        limits = self.limits
        rates, parsed = self._rates, reader.frames
        # Without buckets yet, the frames since the last tick count against the burst.
        budget = int(rates.frames.level(now)) if rates else int(limits.frame_burst) - parsed
        events = reader.feed(data, budget)
        if rates is not None:
            rates.frames.take(now, reader.frames - parsed)
        elif reader.frames >= min(FREE_FRAMES, limits.frame_burst // 2):
            rates = self._rates = self._rates_from(now)
        for event in events:
            if isinstance(event, frames.Close):
                self._closed_by_client(event.code)
                return
            if self.state == FAILED:
                return
            if self.state != OPEN:  # closing: only the client's close frame matters
                continue
            if isinstance(event, frames.Message):
                self.on_message(event.data)
            elif isinstance(event, frames.Failure):
                self._fail(event.label, event.code, event.reason)
            elif isinstance(event, frames.Pong) and pinged:
                pinged = False  # the answer to our ping: hearing it was all it was for
            elif not (rates or (rates := self._rates_from(now))).controls.take(now):
                self._fail("control_flood", frames.CLOSE_POLICY, "too many control frames")
            elif isinstance(event, frames.Ping):
                self._write(frames.encode(event.data, frames.OP_PONG))

    def _charge(self, size: int, now: float) -> None:
        """Bytes read from an open connection: paid from the address's budget, and from the
        connection's own once it reads more than a quiet client (no bucket for an idle one)."""
        if self.budget is not None:
            self.budget.charge(now, size)
        rates = self._rates
        if rates is None:
            reader = self._reader
            if size < FREE_BYTES and (reader is None or reader.buffered() < FREE_BYTES):
                return
            rates = self._rates_from(now)
        rates.bytes.charge(now, size)

    def _rates_from(self, now: float) -> _Rates:
        """Buckets for a client that talks more than a quiet one, charged with the frames it
        sent since the last tick (a connection that only answers heartbeats and sets up a
        session never needs them: memory per idle socket)."""
        rates = self._rates = _Rates(self.limits)
        assert self._reader is not None
        rates.frames.take(now, min(self._reader.frames, self.limits.frame_burst))
        return rates

    def _fail(self, label: str, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): the close frame goes after what is
        queued; what the client sends from now on is never read or parsed (the shell stops
        reading: a flood goes on costing nothing), and the connection is aborted after
        LINGER_TICKS of the head wheel, time for the client to read the close frame (closing
        with its flood unread would reset the connection at once and lose the frame)."""
        self.on_rejected(label, reason)
        if self.state != OPEN:
            return
        self.state, self.quiet, self._input = FAILED, 0, None
        self.action = LINGER
        self._put(frames.close_frame(code, reason.encode()))

    def _closed_by_client(self, code: int | None) -> None:
        """Answer an open connection's close with the client's own code (RFC 6455 section
        5.5.1), and close the TCP connection: the server closes it first (section 7.1.1)."""
        if self.state == OPEN:
            self._put(frames.close_frame(code))
        self.state, self.quiet, self._input = CLOSED, 0, None
        self.action = CLOSE

    @property
    def _head(self) -> bytearray | None:
        head = self._input
        return head if isinstance(head, bytearray) else None

    @property
    def _reader(self) -> frames.FrameReader | None:
        reader = self._input
        return reader if isinstance(reader, frames.FrameReader) else None

    def buffered(self) -> int:
        """Bytes this connection holds for its client: its head or frames being read, and the
        frames waiting to be written."""
        head = len(self._head) if self._head is not None else 0
        reading = self._reader.buffered() if self._reader is not None else 0
        return head + reading + self.queued


class _Rates:
    """A talking client's token buckets: frames, control frames, and bytes."""

    __slots__ = ("bytes", "controls", "frames")

    def __init__(self, limits: Limits) -> None:
        self.frames = TokenBucket(limits.frames_per_second, limits.frame_burst)
        self.controls = TokenBucket(limits.control_per_second, limits.control_burst)
        self.bytes = TokenBucket(limits.bytes_per_second, limits.byte_burst)

    def idle(self, now: float) -> bool:
        """All full again: forgetting them changes nothing."""
        return self.frames.full(now) and self.controls.full(now) and self.bytes.full(now)


class _Output(list[bytes]):
    """Frames waiting to be written, and their bytes (only while there are some)."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        super().__init__()
        self.size = 0
