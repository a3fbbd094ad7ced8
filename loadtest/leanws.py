"""A lean asyncio WebSocket client for the capacity benchmark: one Protocol per connection, no
streams, frames parsed in place. Tens of thousands of these fit in one process, and a message
costs the load generator far less than it costs the server, so the server is what is measured.

Client frames carry a zero masking key: legal on the wire (the key's bits are the client's
choice), and it spares the generator from XOR-ing every byte in Python. Benchmark use only."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import cast

_ZERO_MASK = b"\x00\x00\x00\x00"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


def frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 2**16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    return head + _ZERO_MASK + payload


class LeanSocket(asyncio.Protocol):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.inbox: deque[bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.on_message: Callable[[bytes], None] | None = None
        self.closed = False
        self.close_code: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[: self.buffer.find(b"\r\n")])
            del self.buffer[: end + 4]
            if b" 101 " not in status:
                self.upgraded.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self.upgraded.set_result(None)
        self._parse()

    def _parse(self) -> None:
        buf, pos, end = self.buffer, 0, len(self.buffer)
        while end - pos >= 2:
            opcode, length, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if end - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            if opcode == OP_PING:
                self.send(payload, OP_PONG)
            elif opcode == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.abort()
            elif opcode != OP_PONG:
                self._deliver(payload)
        del buf[:pos]

    def _deliver(self, payload: bytes) -> None:
        if self.on_message is not None:
            self.on_message(payload)
            return
        self.inbox.append(payload)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"closed ({self.close_code})"))
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the upgrade"))

    def send(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(frame(payload, opcode))

    async def recv(self, timeout: float = 10.0) -> bytes:
        while not self.inbox:
            if self.closed:
                raise ConnectionError(f"closed ({self.close_code})")
            self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiter, timeout)
        return self.inbox.popleft()

    def close(self) -> None:
        self.send((1000).to_bytes(2, "big"), OP_CLOSE)
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(
    port: int, source: str = "127.0.0.1", path: str = "/ws", timeout: float = 10.0
) -> LeanSocket:
    """Open and upgrade one connection to 127.0.0.1:`port` from loopback address `source`
    (several sources spread the connections over more ephemeral ports)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
        _, proto = await loop.create_connection(LeanSocket, sock=sock)
    except BaseException:
        sock.close()
        raise
    key = base64.b64encode(os.urandom(16))
    assert proto.transport is not None
    proto.transport.write(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        await asyncio.wait_for(proto.upgraded, timeout)
    except BaseException:
        proto.abort()
        raise
    return proto
