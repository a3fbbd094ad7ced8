"""The sending shell (`transfer.SendSide`) ends as soon as it has handled the receiver's last
confirmation. It used to ask the pipe for one more wait first, and with nothing left to send
that wait ran its whole 1-second timeout: every transfer ended a second late (bench-links'
timeline: the sender's `done` 1.0 s after the receiver's last message)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Any

from fileshare import transfer
from tests.test_protocol import Wire


class LoopbackWire(Wire):
    """The real receiving core of `Wire`, whose replies queue in `replies` for the sender."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(files)
        self.replies: deque[str | bytes] = deque()

    def deliver_control(self, raw: bytes, to_receiver: bool) -> None:
        if to_receiver:
            super().deliver_control(raw, to_receiver)
        else:
            self.replies.append(raw.decode())


class LoopbackPipe:
    """The sender's pipe and channel in one, joined to a `LoopbackWire`: what the sender sends
    is handled at once, the receiver's replies are its messages. Each `wait` notes whether the
    transfer was already done when it was asked for."""

    readyState = "open"  # the DataChannel's attributes, as aiortc names them
    bufferedAmount = 0
    bufferedAmountLowThreshold = 0

    def __init__(self, wire: LoopbackWire) -> None:
        self.wire = wire
        self.channel = self
        self.messages = wire.replies
        self.last_heard = time.monotonic()
        self.waits_after_done = 0

    def send(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            self.wire.flush([data], None, durable=True)
        elif data != transfer.KEEPALIVE:
            self.wire.deliver_control(data.encode(), to_receiver=True)

    def take(self) -> str | bytes | None:
        return self.messages.popleft() if self.messages else None

    async def wait(self, timeout: float = 1.0) -> None:
        self.waits_after_done += self.wire.sender.done
        await asyncio.sleep(0)


class Collected:
    def __init__(self) -> None:
        self.events: list[str] = []

    def emit(self, event: str, **fields: Any) -> None:
        self.events.append(event)


async def test_the_sender_ends_once_the_last_confirmation_is_in(tmp_path: Path) -> None:
    files = {"a.bin": b"x" * 70_000, "b.bin": b"y"}
    wire = LoopbackWire(files)
    sources = []
    for m in wire.manifests:
        path = tmp_path / m.name
        path.write_bytes(files[m.name])
        sources.append(transfer.Source(path, m))
    pipe = LoopbackPipe(wire)
    side = transfer.SendSide(wire.sender, sources, Collected())
    async with asyncio.timeout(10):
        await side._run(pipe)  # type: ignore[arg-type]
    side.close()
    assert wire.finished and wire.sender.done and wire.receiver.done
    assert pipe.waits_after_done == 0
    assert bytes(wire.disk["a.bin"]) == files["a.bin"]
