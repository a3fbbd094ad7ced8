"""WebSocket connections for tens of thousands of idle clients: one asyncio.Protocol per socket,
with __slots__, and no task, timer, queue or buffer of its own while idle.

aiohttp's server costs ~14 KB per idle WebSocket (request, handler task and its frames, reader,
queue, heartbeat timer), and memory per idle socket is a capacity figure (loadtest/README.md).
So a connection here reads its request head and takes a WebSocket upgrade on one of the
endpoint's paths itself; any other well-formed request is handed, with the bytes already read,
to aiohttp's own protocol (probes, metrics), which this protocol then fronts, so that every
connection is timed and counted until it ends. What a connection does is decided by its sans-I/O
core (`signaling.wscore`); this is the thin shell that carries the core's output to the
transport. Frames out leave at the end of the event loop's turn, one write per connection; two
`Wheel`s tick every connection: a fast one for request heads and HTTP requests, a slow one for
heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Final, cast

from signaling import handshake, wscore
from signaling.wheel import Wheel
from signaling.wscore import ABORT, CLOSE, DONE, HAND_OFF, HEAD, HTTP, KEEP, OPEN, Limits

Http = Callable[[], asyncio.Protocol]
HEAD_TICK_SECONDS = 0.5
# Why a connection is not read (`WebSocket.hold_reading`); reading resumes once none holds:
BUDGET: Final = 1  # its or its address's byte budget is in debt
BACKLOG: Final = 2  # the application has too much of its input waiting


class Endpoint:
    """What the connections of one server share: their limits, the wheels that tick them, and
    aiohttp's protocol factory for every other request."""

    def __init__(
        self,
        limits: Limits,
        heartbeat_seconds: float,
        head_timeout_seconds: float = 5.0,
        max_handshakes: int = 1024,
    ) -> None:
        self.limits = replace(
            limits, head_ticks=wscore.head_ticks(head_timeout_seconds, HEAD_TICK_SECONDS)
        )
        self.max_handshakes = max_handshakes  # request heads being read, from all addresses
        self.handshakes = 0
        self.wheel: Wheel[WebSocket] = Wheel(heartbeat_seconds / 2)
        self.heads: Wheel[WebSocket] = Wheel(HEAD_TICK_SECONDS, slots=1)
        self.http: Http | None = None
        self._emptied: asyncio.Event | None = None  # while closing all
        self._corked: list[WebSocket] = []  # connections with frames written in this turn

    def start(self) -> None:
        self.wheel.start()
        self.heads.start()

    def stop(self) -> None:
        self.wheel.stop()
        self.heads.stop()

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
        for ws in (*self.wheel, *self.heads):
            ws.transport.abort()

    def left(self, ws: WebSocket, slot: set[WebSocket]) -> None:
        """A connection ended, or left the head wheel."""
        Wheel.remove(ws, slot)
        if self._emptied is not None and not len(self.wheel):
            self._emptied.set()


class WebSocket(wscore.WebSocketCore, asyncio.Protocol):
    """One client connection, from its first byte to its end: the transport side of the core."""

    __slots__ = ("_holds", "_slot", "endpoint", "transport")

    transport: asyncio.Transport

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__()
        self.endpoint = endpoint
        self._slot: set[WebSocket] | None = None
        self._holds = 0  # BUDGET | BACKLOG: what keeps the transport from being read

    @property
    def limits(self) -> Limits:
        return self.endpoint.limits

    # --- hooks for the server ---------------------------------------------------------------

    def on_connect(self) -> bytes | None:
        """A new connection, before any byte: an HTTP answer refuses it, None takes it."""
        return None

    def on_end(self, opened: bool) -> None:
        """The connection ended, however it ended (`opened`: it had been upgraded)."""

    # --- reading, or not ----------------------------------------------------------------------

    def hold_reading(self, why: int) -> None:
        """Stop reading the client (TCP pushes back on it) until `release_reading(why)`."""
        if not self._holds and not self.transport.is_closing():
            self.transport.pause_reading()
        self._holds |= why

    def release_reading(self, why: int) -> None:
        """Read again once nothing else holds it (a failed or closed connection stays unread)."""
        held = self._holds
        self._holds = held & ~why
        readable = self.state in (OPEN, wscore.CLOSING) and not self.transport.is_closing()
        if held and not self._holds and readable:
            self.transport.resume_reading()

    def _pay(self, now: float) -> None:
        """After a read into debt: no more reads until the debt as it stands now is paid.
        Not looked at again when that time comes (others of the address may have spent
        meanwhile): each connection then reads once and queues up behind the debt it finds,
        so an address's connections take turns, spread out, instead of all reading at the
        moment the debt is paid."""
        pause = self.read_pause(now)
        if pause > 0:
            self.hold_reading(BUDGET)
            asyncio.get_running_loop().call_later(pause, self.release_reading, BUDGET)

    # --- carrying the core's output ---------------------------------------------------------

    def on_output(self) -> None:
        if self.state == wscore.FAILED:  # also outside an input (a slow reader's 1013)
            self._act()
            return
        out = self._out
        if self.queued > self.limits.flush_bytes:
            self.send_out()
        elif out is not None and len(out) == 1:  # the first frame since the last write
            self.endpoint.cork(self)

    def send_out(self) -> None:
        """Write what the core has for the transport, unless it pushes back."""
        out = self.take_output()
        if out and not self.transport.is_closing():
            self.transport.writelines(out)

    def _act(self) -> None:
        """After an input: carry out what the core decided."""
        action = self.action
        if action == KEEP:
            return
        if action == HAND_OFF:
            self._hand_off()
            return
        if action == ABORT:
            self.transport.abort()
            return
        self.send_out()
        self.action = KEEP  # carried out
        if self.state == wscore.FAILED:
            # Nothing more is read; the close frame goes out, and the head wheel aborts the
            # connection after a short linger. No end-of-stream before it: a proxy in front
            # that sees one while its client still floods may reset the client at once, close
            # frame unread.
            self.transport.pause_reading()
            if self._slot is not None:
                self._leave_wheel()
                self._slot = self.endpoint.heads.add(self)
        elif action == CLOSE:
            self.transport.close()
        elif self.transport.can_write_eof():
            self.transport.write_eof()

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        endpoint = self.endpoint
        self._slot = endpoint.heads.add(self)
        endpoint.handshakes += 1
        refusal = self.on_connect()
        if refusal is None and endpoint.handshakes > endpoint.max_handshakes:
            self.on_rejected("handshakes", "too many request heads in progress")
            refusal = handshake.Refused(503, "busy, try again later").response()
        if refusal is not None:  # written at once, then closed: no head is waited for
            self.refuse(refusal, wscore.CLOSE)
            self._head_done()
            self._act()

    def data_received(self, data: bytes) -> None:
        state, now = self.state, time.monotonic()
        self.receive(data, now)
        if state == HEAD and self.state != HEAD:
            self._head_done()
        self._act()
        if self.state == OPEN and not self._holds & BUDGET:
            self._pay(now)

    def eof_received(self) -> None:
        """The client ended its side: so does the server (the transport closes)."""

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == HEAD:
            self._head_done()
        opened = self.state in wscore.UPGRADED
        self.state = wscore.CLOSED if opened else DONE
        self._leave_wheel()
        self._input = self._out = None
        self.on_end(opened)

    def pause_writing(self) -> None:
        self.pause()

    def resume_writing(self) -> None:
        self.resume()
        self.send_out()

    # --- time -------------------------------------------------------------------------------

    def tick(self) -> None:
        """A wheel's visit."""
        self.advance(time.monotonic())
        if self.action == ABORT:
            self.transport.abort()

    def _head_done(self) -> None:
        """The head is read (or the connection refused): it leaves the handshake count, and an
        upgraded connection moves to the heartbeat wheel."""
        self.endpoint.handshakes -= 1
        if self.state in (OPEN, wscore.CLOSING, wscore.CLOSED):  # FAILED stays for its linger
            self._leave_wheel()
            self._slot = self.endpoint.wheel.add(self)

    def _leave_wheel(self) -> None:
        if self._slot is not None:
            self.endpoint.left(self, self._slot)
            self._slot = None

    def _hand_off(self) -> None:
        """Not a WebSocket path: aiohttp serves the request, from its first byte, with this
        protocol in front of it (still counted, and timed by the head wheel)."""
        self.action = KEEP
        data, self._input = bytes(self._head or b""), None
        http = self.endpoint.http
        if http is None:
            self.refuse(handshake.Refused(404, "not found").response())
            self._act()
            return
        protocol = http()
        self.transport.set_protocol(_HttpFront(self, protocol))
        protocol.connection_made(self.transport)
        protocol.data_received(data)


class _HttpFront(asyncio.Protocol):
    """In front of aiohttp's protocol for one request: passes everything on, and tells the
    connection when it ends (so that it is counted until then; the head wheel times it)."""

    __slots__ = ("http", "ws")

    def __init__(self, ws: WebSocket, http: asyncio.Protocol) -> None:
        self.ws = ws
        self.http = http

    def data_received(self, data: bytes) -> None:
        self.http.data_received(data)

    def eof_received(self) -> bool | None:
        return self.http.eof_received()

    def pause_writing(self) -> None:
        self.http.pause_writing()

    def resume_writing(self) -> None:
        self.http.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.http.connection_lost(exc)
        self.ws.connection_lost(exc)


__all__ = ["HTTP", "OPEN", "Endpoint", "Limits", "WebSocket"]
