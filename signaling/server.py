"""The aiohttp shell around the session rules: WebSocket connections, HTTP probes and metrics.

Each connection has its own reader and a bounded outbound queue drained by its own writer, so a
slow or hostile client can only fill its own queue (and is then dropped): it never stalls others.
The writer task and the queue exist only while frames are queued, and the message rate bucket
only once the client sent something: an idle connection holds no more than it must (memory per
idle socket is a capacity figure, see loadtest/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Final

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from signaling import schema, sessions
from signaling.config import Config
from signaling.limits import ConnectionLimiter, TokenBucket
from signaling.metrics import Metrics
from signaling.schema import ErrorCode, PeerId, ProtocolError
from signaling.sessions import SessionRecord
from signaling.store import Bus, Change, MemoryBus, MemoryStore, SessionStore, peer_channel
from turn import credentials

log = logging.getLogger("fileshare.signal")

CLOSE_RESTART: Final = 1012  # "service restart": come back (to another instance)
CLOSE_TRY_LATER: Final = 1013
CLOSE_REPLACED: Final = 4000  # the same peer rejoined on a newer connection
SWEEP_SECONDS: Final = 1.0


class BusEvent(msgspec.Struct, array_like=True):
    """What travels between instances to reach one peer's connection."""

    kind: str  # "frame": send it; "presence": send it and recheck the session; "closed"; "kick"
    frame: bytes
    conn: str = ""  # for "kick": the connection to drop
    sent: float = 0.0  # when the relayed message arrived, for the relay latency histogram


_bus_encode = msgspec.msgpack.Encoder().encode
_bus_decode = msgspec.msgpack.Decoder(BusEvent).decode


@dataclass(eq=False, slots=True)
class Connection:
    id: str
    ip: str
    ws: web.WebSocketResponse
    server: SignalingServer = field(repr=False)
    bucket: TokenBucket | None = None  # from the first message on
    queue: deque[tuple[bytes, float]] | None = field(default=None, repr=False)  # while writing
    session_id: str | None = None
    peer_id: PeerId | None = None
    deadline_hint: float = 0.0
    last_touch: float = 0.0
    refused_messages: int = 0
    closing: bool = False
    writer: asyncio.Task[None] | None = field(default=None, repr=False)  # while writing

    def on_bus(self, data: bytes) -> None:
        """The bus handler of this connection's peer channel (a bound method: no closure)."""
        self.server._on_bus(self, data)


class SignalingServer:
    def __init__(self, config: Config, store: SessionStore, bus: Bus) -> None:
        self.config = config
        self.policy = config.policy
        self.store = store
        self.bus = bus
        self.metrics = Metrics()
        self.limiter = ConnectionLimiter(
            config.connections_per_second, config.connection_burst, config.max_connections_per_ip
        )
        self.connections: set[Connection] = set()
        self.draining = False
        self._conn_ids = itertools.count(1)
        self._sweeper: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()

    # --- application ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.handle_ws)
        app.router.add_get("/ws", self.handle_ws)
        app.router.add_get("/healthz", self.handle_healthz)
        app.router.add_get("/readyz", self.handle_readyz)
        app.router.add_get("/metrics", self.handle_metrics)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _: web.Application) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="session-sweeper")

    async def _on_cleanup(self, _: web.Application) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.bus.close()
        await self.store.close()

    async def handle_healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "instance": self.config.instance_id})

    async def handle_readyz(self, _: web.Request) -> web.Response:
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        if not await self.store.ping():
            return web.json_response({"status": "store unreachable"}, status=503)
        return web.json_response({"status": "ready"})

    async def handle_metrics(self, _: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    def client_ip(self, request: web.Request) -> str:
        peer = request.remote or "unknown"
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded and peer in self.config.trusted_proxies:
            return forwarded.split(",")[-1].strip() or peer
        return peer

    # --- connections ---------------------------------------------------------------------------

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            return web.json_response(
                {"code": ErrorCode.SHUTTING_DOWN, "message": "server is restarting"}, status=503
            )
        ip = self.client_ip(request)
        ws = web.WebSocketResponse(
            heartbeat=self.config.heartbeat_seconds,
            max_msg_size=self.config.hard_message_bytes,
            compress=False,
            decode_text=False,
        )
        await ws.prepare(request)
        refusal = self.limiter.admit(ip, time.monotonic())
        if refusal is not None:
            self.metrics.rejections.labels(refusal).inc()
            message = "too many connections from your address, try again later"
            await ws.send_frame(
                schema.error(ErrorCode.TOO_MANY_CONNECTIONS, message), WSMsgType.TEXT
            )
            await ws.close(code=CLOSE_TRY_LATER, message=b"too many connections")
            return ws
        conn = Connection(f"{self.config.instance_id}:{next(self._conn_ids)}", ip, ws, self)
        self.connections.add(conn)
        self.metrics.connections.inc()
        self.metrics.connections_total.inc()
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._read_loop(conn)
        finally:
            conn.closing = True  # nothing more is sent to it
            self.connections.discard(conn)
            self.metrics.connections.dec()
            self.limiter.release(ip)
            await self._detach(conn, dropped=True)
            await self._stop_writer(conn)
            if task is not None:
                self._handlers.discard(task)
        return ws

    async def _read_loop(self, conn: Connection) -> None:
        async for msg in conn.ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                try:
                    await self._on_frame(conn, msg.data)
                except ProtocolError as exc:
                    self._refuse(conn, exc)
                except Exception:
                    log.exception("internal error on connection %s", conn.id)
                    self._refuse(conn, ProtocolError(ErrorCode.INTERNAL_ERROR, "internal error"))
            elif msg.type == WSMsgType.ERROR:
                too_big = getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG
                reason = "too_large" if too_big else "ws_error"
                self.metrics.rejections.labels(reason).inc()
                log.info("connection %s closed by protocol error: %s", conn.id, reason)

    def _refuse(self, conn: Connection, exc: ProtocolError) -> None:
        self.metrics.rejections.labels(exc.code.value).inc()
        self._send(conn, schema.error(exc.code, exc.message, exc.request_id))

    def _send(self, conn: Connection, frame: bytes, received_at: float = 0.0) -> None:
        """Queue a frame, starting the writer if none runs; a client whose queue is full is too
        slow to keep and is dropped."""
        if conn.closing:
            return
        if conn.queue is None:
            conn.queue = deque()
        elif len(conn.queue) >= self.config.send_queue_frames:
            self.metrics.rejections.labels(ErrorCode.SLOW_CONSUMER.value).inc()
            log.info("dropping slow connection %s", conn.id)
            self._close_soon(conn, CLOSE_TRY_LATER, b"slow consumer")
            return
        conn.queue.append((frame, received_at))
        if conn.writer is None:
            conn.writer = asyncio.create_task(self._write_queued(conn))

    def _close_soon(self, conn: Connection, code: int, reason: bytes) -> None:
        if conn.closing:
            return
        conn.closing = True
        if conn.writer is not None:
            conn.writer.cancel()
        self._spawn(self._close_ws(conn, code, reason))

    @staticmethod
    async def _close_ws(conn: Connection, code: int, reason: bytes) -> None:
        await conn.ws.close(code=code, message=reason)

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        """Run side work that must not block the caller (a bus handler, a queue push)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _write_queued(self, conn: Connection) -> None:
        """Send the queued frames in order, then end (the next frame starts a new writer)."""
        latency = self.metrics.relay_latency
        queue = conn.queue
        try:
            while queue:
                frame, received_at = queue.popleft()
                await conn.ws.send_frame(frame, WSMsgType.TEXT)
                if received_at:
                    latency.observe(time.time() - received_at)
        except (ConnectionError, RuntimeError):
            conn.closing = True  # the connection is gone: its reader ends and cleans up
        finally:
            if conn.queue is queue and not queue:  # (a cancelled writer leaves the rest unsent)
                conn.queue = None
            conn.writer = None

    async def _stop_writer(self, conn: Connection) -> None:
        if conn.writer is None:
            return
        conn.writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await conn.writer

    # --- messages ------------------------------------------------------------------------------

    async def _on_frame(self, conn: Connection, data: bytes) -> None:
        if conn.closing:
            return
        received_at = time.time()
        self.metrics.messages_received.inc()
        if conn.bucket is None:
            conn.bucket = TokenBucket(self.config.messages_per_second, self.config.message_burst)
        if not conn.bucket.take(time.monotonic()):
            conn.refused_messages += 1
            if conn.refused_messages >= self.config.flood_close_after:
                self.metrics.rejections.labels("flood").inc()
                self._close_soon(conn, WSCloseCode.POLICY_VIOLATION, b"message flood")
                return
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many messages, slow down")
        msg = schema.decode_client(data, self.config.max_message_bytes)
        match msg:
            case schema.Offer() | schema.Answer() | schema.IceCandidate() | schema.Signal():
                await self._relay(conn, msg, received_at)
            case schema.Ping():
                self._send(conn, schema.encode(schema.Pong(v=schema.VERSION, re=msg.id)))
            case schema.CreateSession():
                await self._create(conn, msg)
            case schema.JoinSession():
                await self._join(conn, msg)
            case schema.RejoinSession():
                await self._rejoin(conn, msg)
            case schema.LeaveSession():
                await self._leave(conn, msg)

    def _joined(self, conn: Connection, request_id: int | None) -> tuple[str, PeerId]:
        if conn.session_id is None or conn.peer_id is None:
            raise ProtocolError(ErrorCode.NOT_JOINED, "join a session first", request_id)
        return conn.session_id, conn.peer_id

    def _not_joined(self, conn: Connection, request_id: int | None) -> None:
        if conn.session_id is not None:
            raise ProtocolError(
                ErrorCode.ALREADY_JOINED, "this connection is in a session already", request_id
            )

    async def _relay(self, conn: Connection, msg: schema.RelayMessage, received_at: float) -> None:
        session_id, peer_id = self._joined(conn, msg.id)
        event = BusEvent("frame", schema.relayed(msg, peer_id), sent=received_at)
        delivered = await self.bus.publish(
            peer_channel(session_id, sessions.other_peer(peer_id)), _bus_encode(event)
        )
        if not delivered:
            raise ProtocolError(
                ErrorCode.PEER_UNAVAILABLE, "the other peer is not connected", msg.id
            )
        self.metrics.messages_relayed.labels(str(msg.__struct_config__.tag)).inc()
        if received_at - conn.last_touch > self.policy.idle_seconds / 20:
            conn.last_touch = received_at
            await self.store.update(session_id, _touch(received_at))

    async def _create(self, conn: Connection, msg: schema.CreateSession) -> None:
        self._not_joined(conn, msg.id)
        now = time.time()
        for _ in range(8):
            session_id = sessions.new_session_id()
            created = sessions.create(session_id, conn.ip, conn.id, now, msg.access)
            if await self.store.insert(created.record):
                break
        else:
            raise ProtocolError(ErrorCode.INTERNAL_ERROR, "could not allocate a session", msg.id)
        until = now + self.policy.lifetime_seconds
        if not await self.store.claim_ip_slot(
            conn.ip, session_id, until, self.config.max_sessions_per_ip
        ):
            await self.store.delete(session_id)
            raise ProtocolError(
                ErrorCode.SESSION_LIMIT, "your address has too many open sessions", msg.id
            )
        await self._attach(conn, session_id, "a", created.record)
        self.metrics.sessions_created.inc()
        log.info("session %s created by %s", session_id, conn.id)
        reply = schema.SessionCreated(
            v=schema.VERSION,
            sessionId=session_id,
            token=created.token,
            peerId="a",
            reconnectKey=created.reconnect_key,
            expiresAt=now + self.policy.lifetime_seconds,
            iceServers=self._ice_servers(session_id, now),
            re=msg.id,
        )
        self._send(conn, schema.encode(reply))

    async def _join(self, conn: Connection, msg: schema.JoinSession) -> None:
        self._not_joined(conn, msg.id)
        now = time.time()
        result = await self.store.update(
            msg.sessionId, _apply(lambda r: sessions.join(r, msg.token, conn.id, now, self.policy))
        )
        await self._admit(conn, msg.sessionId, msg.id, result, now)

    async def _rejoin(self, conn: Connection, msg: schema.RejoinSession) -> None:
        self._not_joined(conn, msg.id)
        now = time.time()
        result = await self.store.update(
            msg.sessionId,
            _apply(
                lambda r: sessions.rejoin(
                    r, msg.peerId, msg.reconnectKey, conn.id, now, self.policy
                )
            ),
        )
        await self._admit(conn, msg.sessionId, msg.id, result, now)

    async def _admit(
        self,
        conn: Connection,
        session_id: str,
        request_id: int | None,
        result: Change[tuple[Admission, SessionRecord]] | None,
        now: float,
    ) -> None:
        """Finish a join or rejoin: answer, and tell the other peer."""
        outcome = None if result is None else result.value[0]
        if outcome is None or isinstance(outcome, sessions.Refused):
            if outcome is not None and outcome.burned and result is not None:
                await self._end_session(result.value[1], "burned")
            if outcome is not None and outcome.reason == "full":
                raise ProtocolError(ErrorCode.SESSION_FULL, "the session has two peers", request_id)
            self.metrics.failed_joins.inc()
            # Unknown session, expired session and wrong secret answer alike: no oracle.
            raise ProtocolError(ErrorCode.SESSION_NOT_FOUND, "no such session", request_id)
        assert result is not None
        record = result.value[1]
        channel = peer_channel(session_id, outcome.peer_id)
        if outcome.replaced_conn:
            await self.bus.publish(
                channel, _bus_encode(BusEvent("kick", b"", outcome.replaced_conn))
            )
        await self._attach(conn, session_id, outcome.peer_id, record)
        self.metrics.sessions_joined.labels("rejoin" if outcome.rejoined else "join").inc()
        log.info(
            "peer %s of session %s %s on %s",
            outcome.peer_id,
            session_id,
            "rejoined" if outcome.rejoined else "joined",
            conn.id,
        )
        reply = schema.SessionJoined(
            v=schema.VERSION,
            sessionId=session_id,
            peerId=outcome.peer_id,
            reconnectKey=outcome.reconnect_key,
            peerPresent=outcome.peer_present,
            rejoined=outcome.rejoined,
            expiresAt=record.created_at + self.policy.lifetime_seconds,
            iceServers=self._ice_servers(session_id, now),
            re=request_id,
        )
        self._send(conn, schema.encode(reply))
        notice = schema.PeerJoined(
            v=schema.VERSION, peerId=outcome.peer_id, rejoined=outcome.rejoined
        )
        await self.bus.publish(
            peer_channel(session_id, sessions.other_peer(outcome.peer_id)),
            _bus_encode(BusEvent("presence", schema.encode(notice))),
        )

    async def _leave(self, conn: Connection, msg: schema.LeaveSession) -> None:
        session_id, _ = self._joined(conn, msg.id)
        record = await self.store.get(session_id)
        await self._detach(conn, dropped=False)
        if record is not None:
            await self._end_session(record, "peer_left")
        self._send(conn, schema.encode(schema.Left(v=schema.VERSION, re=msg.id)))

    # --- session membership --------------------------------------------------------------------

    async def _attach(
        self, conn: Connection, session_id: str, peer_id: PeerId, record: SessionRecord
    ) -> None:
        conn.session_id, conn.peer_id = session_id, peer_id
        conn.deadline_hint = record.deadline(self.policy)
        conn.last_touch = time.time()
        await self.bus.subscribe(peer_channel(session_id, peer_id), conn.on_bus)
        self.metrics.local_peers.inc()

    def _forget(self, conn: Connection) -> tuple[str, PeerId] | None:
        """Take the connection out of its session at once, before anything awaits."""
        session_id, peer_id = conn.session_id, conn.peer_id
        if session_id is None or peer_id is None:
            return None
        conn.session_id = conn.peer_id = None
        self.metrics.local_peers.dec()
        return session_id, peer_id

    async def _detach(self, conn: Connection, dropped: bool) -> None:
        """Leave the session's channel; after a drop, keep the peer's place for the grace period."""
        membership = self._forget(conn)
        if membership is None:
            return
        session_id, peer_id = membership
        await self.bus.unsubscribe(peer_channel(session_id, peer_id), conn.on_bus)
        if dropped:
            await self._record_drop(conn, session_id, peer_id)

    def _detach_soon(self, conn: Connection) -> None:
        """From a bus handler, which must not await: forget now, unsubscribe in the background."""
        membership = self._forget(conn)
        if membership is not None:
            channel = peer_channel(*membership)
            self._spawn(self.bus.unsubscribe(channel, conn.on_bus))

    async def _record_drop(self, conn: Connection, session_id: str, peer_id: PeerId) -> None:
        now = time.time()

        def drop(record: SessionRecord) -> Change[bool]:
            dropped = sessions.drop(record, peer_id, conn.id, now)
            return Change(dropped, "save" if dropped else "none")

        try:
            result = await self.store.update(session_id, drop)
        except Exception:  # the store being down must not stop the cleanup of others
            log.warning("could not record the drop of %s in the store", conn.id)
            return
        if result is not None and result.value:
            notice = schema.PeerLeft(
                v=schema.VERSION, peerId=peer_id, graceSeconds=self.policy.grace_seconds
            )
            await self.bus.publish(
                peer_channel(session_id, sessions.other_peer(peer_id)),
                _bus_encode(BusEvent("presence", schema.encode(notice))),
            )

    async def _end_session(self, record: SessionRecord, reason: str) -> None:
        """Delete the session everywhere and tell whoever is still connected to it."""
        await self.store.delete(record.id)
        await self.store.release_ip_slot(record.owner_ip, record.id)
        self.metrics.sessions_closed.labels(reason).inc()
        log.info("session %s ended: %s", record.id, reason)
        frame = schema.encode(schema.SessionClosed(v=schema.VERSION, reason=reason))
        for peer_id in ("a", "b"):
            await self.bus.publish(
                peer_channel(record.id, peer_id), _bus_encode(BusEvent("closed", frame))
            )

    def _on_bus(self, conn: Connection, data: bytes) -> None:
        event = _bus_decode(data)
        if event.kind == "kick":
            if event.conn == conn.id:
                self._kick(conn)
            return
        self._send(conn, event.frame, event.sent)
        if event.kind == "presence":
            conn.deadline_hint = 0.0  # recheck at the next sweep: a grace period may have begun
        elif event.kind == "closed":
            self._detach_soon(conn)

    def _kick(self, conn: Connection) -> None:
        """Another connection took this peer's place; stop routing to this one and close it."""
        self._detach_soon(conn)
        self._close_soon(conn, CLOSE_REPLACED, b"replaced by a newer connection")

    def _ice_servers(self, session_id: str, now: float) -> list[schema.IceServer]:
        servers = []
        if self.config.stun_urls:
            servers.append(schema.IceServer(urls=list(self.config.stun_urls)))
        if self.config.turn_urls:
            cred = credentials.issue(
                self.config.turn_secret, session_id, self.config.turn_ttl_seconds, now
            )
            servers.append(
                schema.IceServer(
                    urls=list(self.config.turn_urls),
                    username=cred.username,
                    credential=cred.password,
                )
            )
        return servers

    # --- time ----------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.sweep(time.time())
            except Exception:
                log.exception("session sweep failed")

    async def sweep(self, now: float) -> None:
        """End sessions of local peers whose deadline passed; forget idle limiter state."""
        self.limiter.forget_idle(time.monotonic())
        if isinstance(self.store, MemoryStore):
            self.store.purge()
        for conn in [c for c in self.connections if c.session_id and c.deadline_hint <= now]:
            session_id = conn.session_id
            if session_id is None:  # the session ended while this sweep awaited
                continue
            record = await self.store.get(session_id)
            if record is None:  # gone from the store without a word (e.g. Redis was flushed)
                frame = schema.encode(schema.SessionClosed(v=schema.VERSION, reason="expired"))
                self._send(conn, frame)
                await self._detach(conn, dropped=False)
            elif (reason := record.end_reason(now, self.policy)) is not None:
                await self._end_session(record, reason)
            else:
                conn.deadline_hint = record.deadline(self.policy)

    # --- shutdown ------------------------------------------------------------------------------

    async def drain(self) -> None:
        """SIGTERM: refuse new work, flush what is queued, then ask every client to reconnect."""
        self.draining = True
        log.info("draining %d connections", len(self.connections))
        writers = [c.writer for c in self.connections if c.writer is not None]
        if writers:
            await asyncio.wait(writers, timeout=self.config.drain_seconds)
        closes = [
            c.ws.close(code=CLOSE_RESTART, message=b"server restarting, reconnect")
            for c in list(self.connections)
        ]
        await asyncio.gather(*closes, return_exceptions=True)
        handlers = list(self._handlers)
        if handlers:
            await asyncio.wait(handlers, timeout=self.config.drain_seconds)


Admission = sessions.Joined | sessions.Refused


def _apply(
    rule: Callable[[SessionRecord], Admission],
) -> Callable[[SessionRecord], Change[tuple[Admission, SessionRecord]]]:
    """Run a join rule inside the store's atomic update; a burned session is deleted there."""

    def change(record: SessionRecord) -> Change[tuple[Admission, SessionRecord]]:
        outcome = rule(record)
        burned = isinstance(outcome, sessions.Refused) and outcome.burned
        return Change((outcome, record), "delete" if burned else "save")

    return change


def _touch(now: float) -> Callable[[SessionRecord], Change[None]]:
    def change(record: SessionRecord) -> Change[None]:
        sessions.touch(record, now)
        return Change(None)

    return change


def open_backend(config: Config) -> tuple[SessionStore, Bus]:
    if not config.redis_url:
        return MemoryStore(config.policy), MemoryBus()
    from signaling import redis_store

    client = redis_store.connect(config.redis_url)
    return redis_store.RedisStore(client, config.policy), redis_store.RedisBus(client)
