"""Asyncio client of the signaling server: requests with replies, and a stream of peer events."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from typing import Any, TypeGuard, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import msgspec

from fsproto import schema
from fsproto.schema import PeerId

Event = schema.ServerMessage | schema.Relayed
Reply = TypeVar("Reply", bound=schema.ServerMessage)

# The largest frame we read from the server (aiohttp closes with 1009 past it): the server's own
# hard limit on a client's message, which is also the most it relays; a hostile server cannot
# make us buffer more than this per frame.
MAX_SERVER_MESSAGE_BYTES = 262144
# A WebSocket ping this often, and no pong within half of it, closes a connection that a dead
# path would otherwise keep "open" for TCP's minutes: the reconnect starts within seconds.
HEARTBEAT_SECONDS = 10.0


def routed(url: str, session_id: str) -> str:
    """`url` with `?s=<session number>`: a front that knows the instance tags (the number
    begins with its creator's) sends the connection to the instance holding the session, so
    relays stay inside one process; any other server ignores the parameter."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "s"] + [("s", session_id)]
    return urlunsplit(parts._replace(query=urlencode(query)))


class SignalError(Exception):
    """The server refused a request; `code` is one of schema.ErrorCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class ServerUnreachable(ConnectionError):
    """No signaling server answers at `url` (refused, unreachable, timed out, or not one)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"no signaling server at {url} ({reason})")
        self.url = url
        self.reason = reason


def _refusal(status: int) -> str:
    """Why an HTTP answer to our upgrade is not a signaling server for us, in words."""
    if status == 429:
        return "HTTP 429: too many connections from this address, try again shortly"
    if status == 503:
        return "HTTP 503: the server is busy or restarting, try again shortly"
    return f"HTTP {status}: not a WebSocket endpoint"


class ConnectionClosed(Exception):
    """The connection to the server ended; `code` is the WebSocket close code, `reason` ours
    when we hung up on a server that broke the protocol (`broken`: worth no reconnect) or that
    stopped answering our heartbeat."""

    def __init__(self, code: int | None, reason: str | None = None, broken: bool = False) -> None:
        super().__init__(reason or f"signaling connection closed (code {code})")
        self.code = code
        self.broken = broken


class SignalClient:
    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[schema.ServerMessage]] = {}
        self._events: asyncio.Queue[Event | ConnectionClosed] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(), name="signal-client-reader")

    @classmethod
    async def connect(cls, url: str, timeout: float = 10.0) -> SignalClient:
        """Open the WebSocket; ServerUnreachable when nothing (or not a signaling server)
        answers at `url` within `timeout`."""
        http = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(timeout):
                ws = await http.ws_connect(
                    url,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout),
                    heartbeat=HEARTBEAT_SECONDS,
                    max_msg_size=MAX_SERVER_MESSAGE_BYTES,
                )
        except aiohttp.WSServerHandshakeError as exc:
            await http.close()
            raise ServerUnreachable(url, _refusal(exc.status)) from exc
        except aiohttp.ClientConnectorError as exc:
            await http.close()
            errno = exc.os_error.errno
            reason = os.strerror(errno).lower() if errno else type(exc.os_error).__name__
            raise ServerUnreachable(url, reason) from exc
        except TimeoutError as exc:
            await http.close()
            raise ServerUnreachable(url, f"no answer in {timeout:g} s") from exc
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def _read(self) -> None:
        """Every frame from the server is hostile: one that is not a valid message (or is too
        large) ends the connection with a one-line reason, never a decoder's traceback."""
        reason: str | None = None
        broken = True
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.ERROR:
                    if isinstance(msg.data, aiohttp.ServerTimeoutError):  # the heartbeat's
                        reason = f"no answer from the signaling server for {HEARTBEAT_SECONDS} s"
                        broken = False
                        break
                    reason = f"the signaling server broke the protocol ({msg.data})"
                    break
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    continue
                try:
                    event = schema.decode_server(msg.data)
                except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                    reason = f"the signaling server sent an invalid message ({str(exc)[:200]})"
                    break
                request_id = getattr(event, "re", None)
                waiter = None if request_id is None else self._pending.pop(request_id, None)
                if waiter is not None and not waiter.done() and _is_reply(event):
                    waiter.set_result(event)
                else:
                    self._events.put_nowait(event)
        finally:
            if reason is not None and broken:
                await self._ws.close(code=aiohttp.WSCloseCode.PROTOCOL_ERROR)
            closed = ConnectionClosed(self._ws.close_code, reason, broken and reason is not None)
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(closed)
            self._pending.clear()
            self._events.put_nowait(closed)

    async def request(self, msg: msgspec.Struct, timeout: float = 10.0) -> schema.ServerMessage:
        """Send a request carrying a fresh id and wait for its reply; an error reply raises."""
        request_id = next(self._ids)
        msg.id = request_id  # type: ignore[attr-defined]
        waiter: asyncio.Future[schema.ServerMessage] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = waiter
        await self.send(msg)
        async with asyncio.timeout(timeout):  # not wait_for: 3.11's can swallow a cancellation
            reply = await waiter
        if isinstance(reply, schema.Error):
            raise SignalError(reply.code, reply.message)
        return reply

    async def _ask(self, msg: msgspec.Struct, expected: type[Reply]) -> Reply:
        """request(), and a reply of another type than `expected` is a server breaking the
        protocol: we hang up (ConnectionClosed), as for an invalid frame."""
        reply = await self.request(msg)
        if not isinstance(reply, expected):
            await self._ws.close(code=aiohttp.WSCloseCode.PROTOCOL_ERROR)
            raise ConnectionClosed(
                self._ws.close_code,
                f"the signaling server answered {type(msg).__name__} with {type(reply).__name__}",
            )
        return reply

    async def send(self, msg: msgspec.Struct) -> None:
        if self._ws.closed:
            raise ConnectionClosed(self._ws.close_code)
        await self._ws.send_bytes(schema.encode(msg))

    async def send_raw(self, data: bytes | str) -> None:
        """For tests and tools: a frame as is, valid or not."""
        if isinstance(data, str):
            await self._ws.send_str(data)
        else:
            await self._ws.send_bytes(data)

    async def create(
        self, access: schema.Access = "token", instance: str | None = None, runs: bool = False
    ) -> schema.SessionCreated:
        """`instance`: this process's nonce, `runs`: ask for run ids (see schema.JoinSession)."""
        msg = schema.CreateSession(v=schema.VERSION, access=access, instance=instance, runs=runs)
        return await self._ask(msg, schema.SessionCreated)

    async def join(
        self,
        session_id: str,
        token: str | None = None,
        instance: str | None = None,
        runs: bool = False,
    ) -> schema.SessionJoined:
        msg = schema.JoinSession(
            v=schema.VERSION, sessionId=session_id, token=token, instance=instance, runs=runs
        )
        return await self._ask(msg, schema.SessionJoined)

    async def rejoin(
        self,
        session_id: str,
        peer_id: PeerId,
        key: str,
        instance: str | None = None,
        runs: bool = False,
    ) -> schema.SessionJoined:
        msg = schema.RejoinSession(
            v=schema.VERSION,
            sessionId=session_id,
            peerId=peer_id,
            reconnectKey=key,
            instance=instance,
            runs=runs,
        )
        return await self._ask(msg, schema.SessionJoined)

    async def refresh_credentials(self) -> schema.Credentials:
        """Fresh ICE servers (a new TURN credential) for the session, once both peers are in."""
        return await self._ask(schema.RefreshCredentials(v=schema.VERSION), schema.Credentials)

    async def leave(self) -> None:
        await self._ask(schema.LeaveSession(v=schema.VERSION), schema.Left)

    async def ping(self) -> None:
        """A round trip: what we sent before it has been handled by the server once it returns."""
        await self._ask(schema.Ping(v=schema.VERSION), schema.Pong)

    async def relay(self, kind: str, payload: dict[str, Any]) -> None:
        """Send an offer, answer, ice_candidate or signal payload to the other peer."""
        cls = _RELAY_CLASSES[kind]
        await self.send(cls(v=schema.VERSION, payload=msgspec.Raw(msgspec.json.encode(payload))))

    async def next_event(self, timeout: float | None = 10.0) -> Event:
        """The next message that is not a reply; raises ConnectionClosed once the server hung up."""
        async with asyncio.timeout(timeout):  # not wait_for: 3.11's can swallow a cancellation
            event = await self._events.get()
        if isinstance(event, ConnectionClosed):
            self._events.put_nowait(event)
            raise event
        return event

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Skip events until the server hangs up; returns its close code."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    await self.next_event(timeout)
                except ConnectionClosed as closed:
                    return closed.code

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._http.close()

    async def __aenter__(self) -> SignalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_RELAY_CLASSES: dict[str, type[schema.RelayMessage]] = {
    "offer": schema.Offer,
    "answer": schema.Answer,
    "ice_candidate": schema.IceCandidate,
    "signal": schema.Signal,
}


def _is_reply(event: Event) -> TypeGuard[schema.ServerMessage]:
    return not isinstance(event, schema.Relayed)


def payload_of(event: schema.Relayed) -> Any:
    return msgspec.json.decode(event.payload)
