"""A bare WebSocket client over a plain socket, for clients that misbehave on purpose:
ones that never read, never answer pings, break the framing, or vanish in the middle of a
frame; and raw HTTP requests, for handshakes that are wrong."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct


def upgrade_request(port: int, path: str = "/ws", extra: str = "") -> bytes:
    """A valid upgrade request; `extra` adds header lines (each ending in CRLF)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


async def http_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer until the server closes: (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str = "/ws",
        rcvbuf: int | None = None,
        extra_headers: str = "",
        then: bytes = b"",
    ) -> RawWebSocket:
        """`rcvbuf` shrinks the socket's receive buffer, so a client that stops reading backs up
        the server's writes quickly; `then` is sent right after the request, without waiting
        for the answer."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        writer.write(upgrade_request(port, path, extra_headers) + then)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.decode(errors="replace"))
        return cls(reader, writer)

    @staticmethod
    def frame(
        payload: bytes,
        opcode: int = 0x1,
        declared_length: int | None = None,
        fin: bool = True,
        rsv: int = 0,
        masked: bool = True,
    ) -> bytes:
        """A client frame; `declared_length` lets a test lie about the payload size."""
        length = len(payload) if declared_length is None else declared_length
        head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
        bit = 0x80 if masked else 0
        if length < 126:
            head += bytes([bit | length])
        elif length < 2**16:
            head += bytes([bit | 126]) + struct.pack("!H", length)
        else:
            head += bytes([bit | 127]) + struct.pack("!Q", length)
        if not masked:
            return head + payload
        mask = os.urandom(4)
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    @staticmethod
    def close_payload(code: int, reason: bytes = b"") -> bytes:
        return struct.pack("!H", code) + reason

    async def send(self, payload: bytes) -> None:
        await self.send_raw(self.frame(payload))

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """One server frame (servers do not mask): (opcode, payload)."""
        return await asyncio.wait_for(self._recv_frame(), timeout)

    async def _recv_frame(self) -> tuple[int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        assert not b1 & 0x80, "server frames are never masked"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(length)

    async def recv_close(self, timeout: float = 10.0) -> int | None:
        """Skip to the server's close frame; its code."""
        while True:
            opcode, payload = await self.recv_frame(timeout)
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Until the server has closed the connection (what is unread is dropped);
        TimeoutError if it does not."""
        with contextlib.suppress(ConnectionResetError):
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass

    def abort(self) -> None:
        self.writer.transport.abort()
