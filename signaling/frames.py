"""RFC 6455 frames, server side and sans-I/O: client bytes in, events out; server frames out.

No socket and no clock here, so every rule of the wire format is tested by feeding bytes
(tests/test_frames.py), and the asyncio layer (`signaling.websocket`) stays a thin shell.
A reader holds bytes only while a frame or a fragmented message is incomplete.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

# The per-byte XOR of every frame, in C: 64 KB in about a microsecond (in Python, as websockets'
# fallback and our own former code do it: 0.5-0.9 ms, the bulk of relaying big messages).
try:
    from websockets.speedups import apply_mask
except ImportError:  # a platform without its wheel
    from websockets.utils import apply_mask

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_INVALID_DATA: Final = 1007  # e.g. a text message that is not UTF-8
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_RESTART: Final = 1012  # "service restart": come back (to another instance)
CLOSE_TRY_LATER: Final = 1013

MAX_CONTROL_PAYLOAD: Final = 125
_MAX_REASON: Final = MAX_CONTROL_PAYLOAD - 2
_PART_OVERHEAD: Final = 41  # a bytes object and its list slot, for a fragment of no bytes


@dataclass(slots=True)
class Message:
    """A whole data message (its fragments joined); text messages are valid UTF-8."""

    data: bytes
    text: bool


@dataclass(slots=True)
class Ping:
    data: bytes


@dataclass(slots=True)
class Pong:
    data: bytes


@dataclass(slots=True)
class Close:
    """The peer's close frame; `code` is None when it carried no status code."""

    code: int | None
    reason: str


@dataclass(slots=True)
class Failure:
    """The client broke the protocol: fail the connection with this close code."""

    code: int
    reason: str
    label: str = "ws_error"  # the rejection it is counted as


Event = Message | Ping | Pong | Close | Failure


class FrameReader:
    """Parses what a client sends; nothing is read after its close frame.

    After a Failure nothing more is read: the connection is failed (RFC 6455 section 7.1.7), and
    what the client sends after it costs no parsing. After `skip_data` (a close the server
    started) only the client's close frame matters: a server waits for it before closing the
    connection (section 7.1.1), or a client that is still writing its close would lose ours.
    Data frames are then skipped unread and unbuffered, and no failure is reported; a client
    that sends more than its frame budget meanwhile is taken as gone (a Close event)."""

    __slots__ = (
        "_buffer",
        "_done",
        "_parts",
        "_size",
        "_skip",
        "_skipping",
        "_text",
        "frames",
        "limit",
        "max_fragments",
    )

    def __init__(self, limit: int, max_fragments: int = 64) -> None:
        self.limit = limit  # largest message, in bytes, fragments included
        self.max_fragments = max_fragments  # frames per message: empty ones cost memory too
        self._buffer: bytearray | None = None  # an incomplete frame
        self._parts: list[bytes] | None = None  # a fragmented message in progress
        self._text = False
        self._size = 0
        self._skipping = False
        self._skip = 0  # bytes of a skipped frame still to come
        self._done = False
        self.frames = 0  # frames parsed so far, for the caller's rate limit

    def skip_data(self) -> None:
        """From now on, only look for the close frame."""
        self._skipping = True
        self._parts, self._size = None, 0

    def buffered(self) -> int:
        """Bytes held: an incomplete frame and the fragments of an unfinished message."""
        held = len(self._buffer) if self._buffer is not None else 0
        parts = len(self._parts) if self._parts is not None else 0
        return held + self._size + parts * _PART_OVERHEAD

    def feed(self, data: bytes, budget: int = 1 << 62) -> list[Event]:
        """The events of the complete frames in `data`, at most `budget` frames: a client that
        sends more fails with a Failure(CLOSE_POLICY), before the rest is even parsed."""
        if self._done:
            return []
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        if self._buffer is not None:
            self._buffer += data
            buf: bytes | bytearray = self._buffer
        else:
            buf = data
        events: list[Event] = []
        consumed = self._parse(buf, events, budget)
        if consumed >= len(buf) or self._done:
            self._buffer = None
        elif buf is self._buffer:
            del self._buffer[:consumed]
        else:
            self._buffer = bytearray(memoryview(buf)[consumed:])
        return events

    def _parse(self, buf: bytes | bytearray, events: list[Event], budget: int) -> int:
        """Append the events of every complete frame in `buf`; return the bytes consumed."""
        pos, end = 0, len(buf)
        while end - pos >= 2 and not self._done:
            if budget <= 0:  # the rest of `buf` is never parsed
                if self._skipping:
                    events.append(Close(None, ""))
                else:
                    events.append(Failure(CLOSE_POLICY, "too many frames", "frame_flood"))
                self._done = True
                break
            b0, b1 = buf[pos], buf[pos + 1]
            opcode, fin, length, head = b0 & 0x0F, bool(b0 & 0x80), b1 & 0x7F, pos + 2
            if length == 126:
                if end - head < 2:
                    break
                length, head = int.from_bytes(buf[head : head + 2], "big"), head + 2
            elif length == 127:
                if end - head < 8:
                    break
                length, head = int.from_bytes(buf[head : head + 8], "big"), head + 8
            masked = bool(b1 & 0x80)
            if not self._skipping:
                try:
                    self._check_header(b0, masked, length)
                except _Failed as failed:
                    events.append(failed.event)
                    self._done = True
                    break
            need = length + 4 if masked else length
            if self._skipping and (opcode != OP_CLOSE or length > MAX_CONTROL_PAYLOAD):
                if opcode == OP_CLOSE:  # not a valid close frame, but the client is closing
                    events.append(Close(None, ""))
                    self._done = True
                elif end - head >= need:
                    pos, budget, self.frames = head + need, budget - 1, self.frames + 1
                    continue
                else:
                    self._skip = need - (end - head)
                    self.frames += 1
                return end
            if end - head < need:
                break
            body = buf[head + 4 : head + need] if masked else buf[head : head + need]
            payload = apply_mask(body, buf[head : head + 4]) if masked else bytes(body)
            pos, budget, self.frames = head + need, budget - 1, self.frames + 1
            self._frame(opcode, fin, payload, events)
        return pos

    def _check_header(self, b0: int, masked: bool, length: int) -> None:
        """Refuse a frame by its header alone, before waiting for (or holding) its payload."""
        opcode, fin = b0 & 0x0F, bool(b0 & 0x80)
        if b0 & 0x70:
            raise _Failed(CLOSE_PROTOCOL_ERROR, "reserved bits set without an extension")
        if not masked:
            raise _Failed(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        if length >> 63:
            raise _Failed(CLOSE_PROTOCOL_ERROR, "frame length out of range")
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise _Failed(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            if not fin:
                raise _Failed(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise _Failed(CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes")
            return
        if opcode == OP_CONTINUATION:
            if self._parts is None:
                raise _Failed(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._parts is not None:
                raise _Failed(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
        else:
            raise _Failed(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if self._size + length > self.limit:
            raise _Failed(CLOSE_TOO_BIG, f"message over {self.limit} bytes", "too_large")
        if self._parts is not None and len(self._parts) >= self.max_fragments:
            raise _Failed(
                CLOSE_POLICY, f"message in more than {self.max_fragments} fragments", "fragments"
            )

    def _frame(self, opcode: int, fin: bool, payload: bytes, events: list[Event]) -> None:
        if opcode == OP_CLOSE:
            self._done = True
            try:
                events.append(_close_event(payload, strict=not self._skipping))
            except _Failed as failed:  # a faulty close frame still closes
                events += (failed.event, Close(None, ""))
            return
        if self._skipping:  # a ping or pong after a failure: nobody listens any more
            return
        if opcode == OP_PING:
            events.append(Ping(payload))
        elif opcode == OP_PONG:
            events.append(Pong(payload))
        elif opcode != OP_CONTINUATION and fin:  # the common case: a message in one frame
            self._message(payload, opcode == OP_TEXT, events)
        elif opcode != OP_CONTINUATION:
            self._parts, self._text, self._size = [payload], opcode == OP_TEXT, len(payload)
        else:
            assert self._parts is not None  # checked with the header
            self._parts.append(payload)
            self._size += len(payload)
            if fin:
                data, text = b"".join(self._parts), self._text
                self._parts, self._size = None, 0
                self._message(data, text, events)

    def _message(self, data: bytes, text: bool, events: list[Event]) -> None:
        if text and not data.isascii():
            try:
                data.decode()
            except UnicodeDecodeError:
                events.append(Failure(CLOSE_INVALID_DATA, "text message is not valid UTF-8"))
                self._done = True
                return
        events.append(Message(data, text))


class _Failed(Exception):
    """Raised inside the reader, reported as a Failure event."""

    def __init__(self, code: int, reason: str, label: str = "ws_error") -> None:
        super().__init__(reason)
        self.event = Failure(code, reason, label)


def _close_event(payload: bytes, strict: bool) -> Close:
    """The client's close frame; not `strict` (after a failure), a faulty one closes as well."""
    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
    if strict and len(payload) == 1:
        raise _Failed(CLOSE_PROTOCOL_ERROR, "close frame with a one-byte payload")
    if strict and code is not None and not valid_close_code(code):
        raise _Failed(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        if strict:
            raise _Failed(CLOSE_INVALID_DATA, "close reason is not valid UTF-8") from None
        reason = ""
    return Close(code if code is None or valid_close_code(code) else None, reason)


def valid_close_code(code: int) -> bool:
    """Codes a close frame may carry (RFC 6455 section 7.4, and the IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


# --- server frames (never masked) ---------------------------------------------------------------


def encode(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def close_frame(code: int | None, reason: bytes = b"") -> bytes:
    """A close frame; the reason is cut to fit a control frame (at a UTF-8 boundary)."""
    if code is None:
        return encode(b"", OP_CLOSE)
    reason = reason[:_MAX_REASON].decode(errors="ignore").encode()
    return encode(code.to_bytes(2, "big") + reason, OP_CLOSE)


PING: Final = encode(b"", OP_PING)
