"""The frame layer of the `websockets` library (its sans-I/O ServerProtocol) behind the interface
of `signaling.frames.FrameReader`, for the side-by-side measurement of the two
(`make bench-signaling --frame-layers own websockets`).

The library bounds a message's bytes, not its fragments or its control frames, and leaves the
reassembly of fragments and the UTF-8 check of text to its I/O layers: both are done here."""

from __future__ import annotations

from typing import cast

from websockets.frames import Close as LibClose
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from signaling import frames


class LibraryReader:
    __slots__ = ("_parts", "_protocol", "_skipping", "_text", "frames", "max_fragments")

    def __init__(self, limit: int, max_fragments: int = 64) -> None:
        self._protocol = ServerProtocol(state=State.OPEN, max_size=limit)
        self.max_fragments = max_fragments
        self._parts: list[bytes] | None = None
        self._text = False
        self._skipping = False
        self.frames = 0

    def skip_data(self) -> None:
        self._skipping = True
        self._parts = None

    def buffered(self) -> int:
        parts = self._parts or ()
        return len(self._protocol.reader.buffer) + sum(len(p) for p in parts)

    def feed(self, data: bytes, budget: int = 1 << 62) -> list[frames.Event]:
        protocol = self._protocol
        protocol.receive_data(data)
        protocol.data_to_send()  # its own pongs and closes: ours are sent by the core
        events: list[frames.Event] = []
        for frame in cast("list[Frame]", protocol.events_received()):
            self.frames += 1
            if budget <= 0 and not self._skipping:
                events.append(frames.Failure(frames.CLOSE_POLICY, "too many frames", "frame_flood"))
                self.skip_data()
            budget -= 1
            opcode, payload = frame.opcode, cast("bytes", frame.data)
            if opcode is Opcode.CLOSE:
                close = LibClose.parse(payload) if payload else None
                events.append(frames.Close(close.code if close else None, ""))
                return events
            if self._skipping:
                continue
            if opcode is Opcode.PING:
                events.append(frames.Ping(payload))
            elif opcode is Opcode.PONG:
                events.append(frames.Pong(payload))
            elif opcode is not Opcode.CONT:
                if frame.fin:
                    self._message(payload, opcode is Opcode.TEXT, events)
                else:
                    self._parts, self._text = [payload], opcode is Opcode.TEXT
            elif self._parts is not None:
                self._parts.append(payload)
                if len(self._parts) > self.max_fragments:
                    text = f"message in more than {self.max_fragments} fragments"
                    events.append(frames.Failure(frames.CLOSE_POLICY, text, "fragments"))
                    self.skip_data()
                elif frame.fin:
                    data, self._parts = b"".join(self._parts), None
                    self._message(data, self._text, events)
        if protocol.close_sent is not None and not self._skipping:  # the library failed it
            code, reason = protocol.close_sent.code, protocol.close_sent.reason
            label = "too_large" if code == frames.CLOSE_TOO_BIG else "ws_error"
            events.append(frames.Failure(code, reason, label))
            self.skip_data()
        return events

    def _message(self, data: bytes, text: bool, events: list[frames.Event]) -> None:
        if text and not data.isascii():
            try:
                data.decode()
            except UnicodeDecodeError:
                events.append(frames.Failure(frames.CLOSE_INVALID_DATA, "not UTF-8"))
                self.skip_data()
                return
        events.append(frames.Message(data, text))
