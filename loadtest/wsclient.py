"""A blocking signaling peer for locust's gevent users: websocket-client under the hood, messages
built and parsed by `fsproto.schema`, so the load speaks exactly the server's wire format.

Every socket operation is bounded by the peer's timeout, and nothing here catches more than
`Exception`: locust stops a user by raising GreenletExit (a BaseException) wherever it waits, and
a user that swallowed it would keep running and hold locust's exit forever. websocket-client's
own `WebSocket.close()` does swallow it (a bare `except:`), so `Peer.close` does the closing
handshake itself."""

from __future__ import annotations

import itertools
import select
import socket
import struct
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import msgspec
import websocket

from fsproto import schema
from loadtest import payloads


class Refused(Exception):
    """The server answered with an error frame; `code` is its ErrorCode."""

    def __init__(self, code: str) -> None:
        super().__init__(f"error {code}")
        self.code = code


class Closed(Exception):
    """The server closed the connection with WebSocket close code `code`."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed {code}")
        self.code = code


Event = schema.ServerMessage | schema.Relayed


class Peer:
    """One WebSocket connection to the signaling service. `source` binds a loopback source
    address, so that many simulated clients do not share one address's limits."""

    def __init__(self, url: str, source: str | None = None, timeout: float = 10.0) -> None:
        sock = None
        if source is not None:
            parts = urlsplit(url)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.bind((source, 0))
                sock.settimeout(timeout)
                sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
            except BaseException:  # also a kill: no descriptor left behind
                sock.close()
                raise
        try:
            self.ws = websocket.create_connection(url, timeout=timeout, socket=sock)
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        headers: dict[str, str] = self.ws.getheaders() or {}
        self.served_by = headers.get("x-served-by")
        self._ids = itertools.count(1)
        self.backlog: deque[Event] = deque()

    def fileno(self) -> int:
        return int(self.ws.sock.fileno()) if self.ws.sock is not None else -1

    def send(self, msg: msgspec.Struct) -> None:
        self.send_raw(schema.encode(msg))

    def send_raw(self, data: bytes) -> None:
        self.ws.send(data, websocket.ABNF.OPCODE_TEXT)

    def recv(self) -> Event:
        """The next message; raises Closed when the server hangs up."""
        if self.backlog:
            return self.backlog.popleft()
        try:
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            raise Closed(None) from None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise Closed(struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None)
        return schema.decode_server(data)

    def service(self) -> Event | None:
        """Read one frame of an idle connection: None for a heartbeat ping (answered)."""
        opcode, data = self.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise Closed(struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None)
        if opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
            return None
        return schema.decode_server(data)

    def request(self, msg: msgspec.Struct) -> schema.ServerMessage:
        """Send with a fresh id and return its reply; an error reply (or one for no request,
        such as a refused connection's) raises Refused. Other messages wait in `backlog`."""
        request_id = next(self._ids)
        msg.id = request_id  # type: ignore[attr-defined]
        self.send(msg)
        held: list[Event] = []
        try:
            while True:
                event = self.recv()
                if isinstance(event, schema.Error) and event.re in (request_id, None):
                    raise Refused(event.code)
                if not isinstance(event, schema.Relayed) and getattr(event, "re", -1) == request_id:
                    return event
                held.append(event)
        finally:
            self.backlog.extend(held)

    def expect(self, kind: type[Any]) -> Any:
        """The next message, which must be of `kind`."""
        event = self.recv()
        if isinstance(event, schema.Error):
            raise Refused(event.code)
        if not isinstance(event, kind):
            raise RuntimeError(f"expected {kind.__name__}, got {type(event).__name__}")
        return event

    def relay(self, kind: str, payload: dict[str, Any]) -> None:
        """Send a relay message whose payload carries its send time."""
        cls = RELAY_CLASSES[kind]
        self.send(cls(v=schema.VERSION, payload=payloads.stamped(payload)))

    def close(self, timeout: float = 1.0) -> None:
        """The closing handshake, bounded by `timeout`, then the socket is shut. Not
        websocket-client's `close()`: its bare `except:` would swallow a locust kill."""
        ws = self.ws
        try:
            if ws.connected and ws.sock is not None:
                deadline = time.monotonic() + timeout
                ws.sock.settimeout(timeout)
                ws.send_close()
                while (left := deadline - time.monotonic()) > 0:
                    ws.sock.settimeout(left)
                    if ws.recv_frame().opcode == websocket.ABNF.OPCODE_CLOSE:  # type: ignore[no-untyped-call]
                        break
        except (OSError, websocket.WebSocketException, struct.error):
            pass  # gone already, or too slow to answer: the socket is shut anyway
        finally:
            self.abort()

    def abort(self) -> None:
        """Shut the socket now, without a closing handshake."""
        self.ws.shutdown()  # type: ignore[no-untyped-call]


def readable(peers: list[Peer], timeout: float) -> list[Peer]:
    """The peers with something to read within `timeout` seconds. poll, not select: a locust
    process holds more than select's 1024 descriptors; under gevent this poll is cooperative."""
    poller = select.poll()
    by_fd = {peer.fileno(): peer for peer in peers}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000) if fd in by_fd]


RELAY_CLASSES: dict[str, type[schema.RelayMessage]] = {
    str(cls.__struct_config__.tag): cls for cls in schema.RelayMessage.__args__
}
