"""The signaling service over `signaling.websocket`: connections, the session flow, HTTP probes
and metrics (aiohttp serves every request that is not a WebSocket upgrade).

A connection's messages are handled in order by a task that exists only while some are waiting;
frames out leave with the next write to its socket, or wait in its bounded queue while the client
reads slowly (and a client that fills it is dropped): a slow or hostile client never stalls the
others. An idle connection holds no task, no queue and no rate bucket: memory per idle socket is
a capacity figure (loadtest/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Final

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from fsproto import schema
from fsproto.schema import ErrorCode, PeerId, ProtocolError
from signaling import frames, handshake, logs, sessions
from signaling.config import Config
from signaling.limits import AddressBuckets, ConnectionLimiter, TokenBucket
from signaling.metrics import Metrics
from signaling.pages import Pages
from signaling.sessions import SessionRecord
from signaling.store import Bus, Change, MemoryBus, MemoryStore, SessionStore, peer_channel
from signaling.websocket import BACKLOG, OPEN, Endpoint, Limits, WebSocket
from turn import credentials

log = logging.getLogger("fileshare.signal")


def _release() -> str:
    try:
        return importlib.metadata.version("fileshare")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


RELEASE: Final = _release()

CLOSE_RESTART: Final = frames.CLOSE_RESTART
CLOSE_TRY_LATER: Final = frames.CLOSE_TRY_LATER
CLOSE_REPLACED: Final = 4000  # the same peer rejoined on a newer connection
SWEEP_SECONDS: Final = 1.0
WEBSOCKET_PATHS: Final = ("/ws", "/")
# WebSocket paths that also serve a page: a request there without an upgrade goes to aiohttp (the
# web app at "/" shares its origin and path with the signaling socket).
PAGE_PATHS: Final = ("/",)


class BusEvent(msgspec.Struct, array_like=True):
    """What travels between instances to reach one peer's connection."""

    kind: str  # "frame": send it; "presence": send it and recheck the session; "closed"; "kick"
    frame: bytes
    conn: str = ""  # for "kick": the connection to drop
    sent: float = 0.0  # when the relayed message arrived, for the relay latency histogram


_bus_encode = msgspec.msgpack.Encoder().encode
_bus_decode = msgspec.msgpack.Decoder(BusEvent).decode


class Inbox(deque[tuple[bytes, float]]):
    """A connection's messages waiting for its worker (with their arrival times), and their
    bytes: over `--inbox-bytes` the socket is not read until the worker catches up."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        super().__init__()
        self.size = 0


def _peer(conn: Connection) -> str:
    peer = conn.transport.get_extra_info("peername")
    return str(peer[0]) if peer else "unknown"


class Connection(WebSocket):
    """A client of the service: its WebSocket, and its place in a session."""

    __slots__ = (
        "bucket",
        "deadline_hint",
        "id",
        "inbox",
        "ip",
        "last_touch",
        "peer_id",
        "refused_messages",
        "server",
        "session_id",
        "worker",
    )

    def __init__(self, server: SignalingServer) -> None:
        super().__init__(server.endpoint)
        self.server = server
        self.id = ""  # given when admitted
        self.ip = ""  # once counted in the limiter for its address
        self.bucket: TokenBucket | None = None  # from the first message until idle again
        self.session_id: str | None = None
        self.peer_id: PeerId | None = None
        self.deadline_hint = 0.0
        self.last_touch = 0.0
        self.refused_messages = 0
        self.inbox: Inbox | None = None  # messages waiting for the worker
        self.worker: asyncio.Task[None] | None = None  # while the inbox has messages

    @property
    def closing(self) -> bool:
        """Nothing more is sent to it or read from it."""
        return self.state != OPEN

    def on_connect(self) -> bytes | None:
        return self.server.admit_peer(self)

    def on_request(self, request: handshake.Request) -> bytes | None:
        return self.server.admit_request(self, request)

    def on_open(self, request: handshake.Request) -> None:
        self.server.opened(self)

    def on_message(self, data: bytes) -> None:
        self.server.receive(self, data)

    def on_rejected(self, reason: str, detail: str) -> None:
        self.server.rejected(self, reason, detail)

    def on_end(self, opened: bool) -> None:
        self.server.lost(self)

    def on_bus(self, data: bytes) -> None:
        """The bus handler of this connection's peer channel (a bound method: no closure)."""
        self.server._on_bus(self, data)

    def tick(self) -> None:
        """Besides the heartbeat: a rate bucket that filled up again is forgotten, since a new
        one starts full."""
        super().tick()
        if self.bucket is not None and self.bucket.full(time.monotonic()):
            self.bucket = None


class SignalingServer:
    def __init__(self, config: Config, store: SessionStore, bus: Bus) -> None:
        self.config = config
        self.policy = config.policy
        self.store = store
        self.bus = bus
        self.metrics = Metrics()
        self.limiter = ConnectionLimiter(
            config.connections_per_second,
            config.connection_burst,
            config.max_connections_per_ip,
            config.address_bytes_per_second,
            config.address_byte_burst,
        )
        # Per address: refused joins (scanning for sessions costs time) and TURN credentials
        # minted (each is a share of coturn's allocation quota).
        self.failed_joins = AddressBuckets(
            config.failed_joins_per_minute / 60, config.failed_join_burst
        )
        self.credentials = AddressBuckets(
            config.credentials_per_minute / 60, config.credential_burst
        )
        self.endpoint = Endpoint(
            Limits(
                frozenset(WEBSOCKET_PATHS),
                max_message_bytes=config.hard_message_bytes,
                max_fragments=config.max_fragments,
                send_queue_bytes=config.send_queue_bytes,
                frames_per_second=config.frames_per_second,
                frame_burst=config.frame_burst,
                control_per_second=config.control_frames_per_second,
                control_burst=config.control_frame_burst,
                bytes_per_second=config.bytes_per_second,
                byte_burst=config.byte_burst,
                pages=frozenset(PAGE_PATHS),
            ),
            heartbeat_seconds=config.heartbeat_seconds,
            head_timeout_seconds=config.head_timeout_seconds,
            max_handshakes=config.max_handshakes,
        )
        self.pages = Pages()
        self.connections: set[Connection] = set()
        # Peers in a session on this instance, by peer channel: relays between two of them
        # stay here. The bus subscription stays too (a kick, a presence notice, a session's
        # end may come from any instance).
        self.local: dict[str, Connection] = {}
        self.draining = False
        self._conn_ids = itertools.count(1)
        self._listeners: list[asyncio.AbstractServer] = []
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- start and stop ------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Listen: WebSocket upgrades on WEBSOCKET_PATHS here, every other request through
        aiohttp. `host` may name several addresses, comma-separated (both families of a dual
        stack): all listen on one port. Returns the port (`port` 0 picks a free one)."""
        self._runner = web.AppRunner(
            self.http_app(),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.config.drain_seconds,
        )
        await self._runner.setup()
        self.endpoint.http = self._runner.server
        loop = asyncio.get_running_loop()
        for address in (a.strip() for a in host.split(",")):  # the first one picks the port
            listener = await loop.create_server(
                lambda: Connection(self), address, port, backlog=1024
            )
            self._listeners.append(listener)
            port = listener.sockets[0].getsockname()[1]
        self.endpoint.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="session-sweeper")
        return port

    async def stop(self) -> None:
        """Stop listening, drain the WebSocket clients, then end HTTP and the store."""
        for listener in self._listeners:
            listener.close()
        await self.drain()
        if self._runner is not None:
            await self._runner.cleanup()
        self.endpoint.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.bus.close()
        await self.store.close()

    async def drain(self) -> None:
        """SIGTERM: refuse new upgrades, and ask every client to reconnect (1012), after the
        frames already queued for it."""
        self.draining = True
        log.info("draining %d connections", len(self.connections))
        await self.endpoint.close_all(
            CLOSE_RESTART, b"server restarting, reconnect", self.config.drain_seconds
        )
        if self._background:
            await asyncio.wait(self._background, timeout=self.config.drain_seconds)

    # --- HTTP ----------------------------------------------------------------------------------

    def http_app(self) -> web.Application:
        """Probes, metrics and the web app. Every answer closes its connection, so a WebSocket
        upgrade is always the first request on a connection, where `signaling.websocket` sees it."""
        app = web.Application()
        app.router.add_get("/healthz", self.handle_healthz)
        app.router.add_get("/readyz", self.handle_readyz)
        app.router.add_get("/metrics", self.handle_metrics)
        self.pages.add_routes(app)
        app.on_response_prepare.append(_close_after)
        return app

    async def handle_healthz(self, _: web.Request) -> web.Response:
        """Alive; with the release and the server's clock for `fileshare doctor`."""
        return web.json_response(
            {
                "status": "alive",
                "instance": self.config.instance_id,
                "version": RELEASE,
                "protocol": schema.VERSION,
                "time": round(time.time(), 3),
            }
        )

    async def readiness(self) -> str:
        """ "ready", or why not (draining, the store unreachable)."""
        if self.draining:
            return "draining"
        if not await self.store.ping():
            return "store unreachable"
        return "ready"

    async def handle_readyz(self, _: web.Request) -> web.Response:
        status = await self.readiness()
        return web.json_response({"status": status}, status=200 if status == "ready" else 503)

    async def handle_metrics(self, _: web.Request) -> web.Response:
        self.metrics.ready.set(await self.readiness() == "ready")
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    # --- connections ---------------------------------------------------------------------------

    def admit_peer(self, conn: Connection) -> bytes | None:
        """A new connection, before its first byte: counted against its address (all of them,
        upgraded or not), or refused with 429. A trusted proxy's connections are counted once
        their head names the client (`admit_request`)."""
        peer = _peer(conn)
        if peer in self.config.trusted_proxies:
            return None
        return self._count(conn, peer)

    def admit_request(self, conn: Connection, request: handshake.Request) -> bytes | None:
        """An upgrade request: refused (before any 101) while draining, from an Origin not
        allowed, or from a client behind a trusted proxy over its address's limits."""
        if self.draining:
            body = msgspec.json.encode(
                {"code": ErrorCode.SHUTTING_DOWN, "message": "server is restarting"}
            )
            return handshake.response(503, body, "application/json; charset=utf-8")
        allowed = self.config.allowed_origins
        origins = request.values("origin")
        if allowed and origins and any(origin not in allowed for origin in origins):
            self.rejected(conn, "origin", "origin not allowed")
            return handshake.Refused(403, "origin not allowed").response()
        if conn.ip:
            return None
        return self._count(conn, self.client_ip(_peer(conn), request))

    def _count(self, conn: Connection, ip: str) -> bytes | None:
        refusal = self.limiter.admit(ip, time.monotonic())
        if refusal is None:
            conn.ip = ip
            return None
        self.rejected(conn, refusal, "too many connections", ip)
        body = msgspec.json.encode(
            {
                "code": ErrorCode.TOO_MANY_CONNECTIONS,
                "message": "too many connections from your address, try again later",
            }
        )
        return handshake.response(
            429, body, "application/json; charset=utf-8", (("Retry-After", "1"),)
        )

    def client_ip(self, peer: str, request: handshake.Request) -> str:
        """The peer's address, or behind a trusted proxy the address that proxy appended last:
        earlier X-Forwarded-For entries (and lines) come from the client and prove nothing."""
        forwarded = request.values("x-forwarded-for")
        if forwarded and peer in self.config.trusted_proxies:
            return forwarded[-1].split(",")[-1].strip() or peer
        return peer

    def opened(self, conn: Connection) -> None:
        conn.id = f"{self.config.instance_id}:{next(self._conn_ids)}"
        conn.budget = self.limiter.budget(conn.ip)  # what its address may make us read
        self.connections.add(conn)
        self.metrics.connections.inc()
        self.metrics.connections_total.inc()

    def lost(self, conn: Connection) -> None:
        if conn.ip:
            self.limiter.release(conn.ip)
        if conn not in self.connections:  # never upgraded
            return
        self.connections.discard(conn)
        self.metrics.connections.dec()
        self._spawn(self._cleanup(conn))

    async def _cleanup(self, conn: Connection) -> None:
        if conn.worker is not None:  # let it finish the message in hand
            await asyncio.wait([conn.worker])
        try:
            await self._detach(conn, dropped=True)
        except RedisError as exc:  # the peer learns of the drop from the sweep instead
            self._store_failed("the cleanup of " + conn.id, exc)

    def rejected(self, conn: Connection, reason: str, detail: str, ip: str = "") -> None:
        """A limit refused a client: counted by reason, and logged (the log is rate-limited,
        and the address is escaped like every logged value)."""
        self.metrics.rejections.labels(reason).inc()
        log.info("refused %s (%s): %s", conn.id or ip or conn.ip or _peer(conn), reason, detail)

    def receive(self, conn: Connection, data: bytes) -> None:
        """Queue a message for the connection's worker, starting one if none runs."""
        inbox = conn.inbox
        if inbox is None:
            inbox = conn.inbox = Inbox()
            conn.worker = asyncio.create_task(self._work(conn, inbox))
        inbox.append((data, time.time()))
        limit, held = self.config.inbox_bytes, inbox.size
        inbox.size = held + len(data)
        if held <= limit < inbox.size:
            conn.hold_reading(BACKLOG)

    async def _work(self, conn: Connection, inbox: Inbox) -> None:
        """Handle the messages in order, then end (the next message starts a new worker). Once
        the connection closes the rest is dropped, unless the server is draining: what a client
        sent before a restart is still relayed."""
        try:
            while inbox and (not conn.closing or self.draining):
                data, received_at = inbox.popleft()
                self._taken(conn, inbox, len(data))
                try:
                    await self._on_frame(conn, data, received_at)
                except ProtocolError as exc:
                    self._refuse(conn, exc)
                except Exception:
                    log.exception("internal error on connection %s", conn.id)
                    self._refuse(conn, ProtocolError(ErrorCode.INTERNAL_ERROR, "internal error"))
        finally:
            conn.inbox = conn.worker = None
            self._taken(conn, inbox, inbox.size)

    def _taken(self, conn: Connection, inbox: Inbox, size: int) -> None:
        """`size` bytes left the inbox: read the socket again once it is under its limit."""
        limit, held = self.config.inbox_bytes, inbox.size
        inbox.size = held - size
        if held > limit >= inbox.size:
            conn.release_reading(BACKLOG)

    def _store_failed(self, during: str, exc: RedisError) -> None:
        """A store outage is counted and logged in one line (no traceback: it is not a bug)."""
        self.metrics.store_errors.inc()
        log.warning("session store unavailable during %s: %s", during, exc.__class__.__name__)

    def _refuse(self, conn: Connection, exc: ProtocolError) -> None:
        self.metrics.rejections.labels(exc.code.value).inc()
        self._send(conn, schema.error(exc.code, exc.message, exc.request_id))

    def _send(self, conn: Connection, frame: bytes, received_at: float = 0.0) -> None:
        """Send a frame (the socket layer queues it while the client reads slowly, and drops
        a client that falls too far behind)."""
        if conn.closing:
            return
        conn.send(frame)
        if received_at:
            self.metrics.messages.latency.observe(time.time() - received_at)

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        """Run side work that must not block the caller (a bus handler, a cleanup)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- messages ------------------------------------------------------------------------------

    async def _on_frame(self, conn: Connection, data: bytes, received_at: float) -> None:
        self.metrics.messages.received += 1
        if conn.bucket is None:
            conn.bucket = TokenBucket(self.config.messages_per_second, self.config.message_burst)
        if not conn.bucket.take(time.monotonic()):
            conn.refused_messages += 1
            if conn.refused_messages >= self.config.flood_close_after:
                self.metrics.rejections.labels("flood").inc()
                conn.close(frames.CLOSE_POLICY, b"message flood")
                return
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many messages, slow down")
        msg = schema.decode_client(data, self.config.max_message_bytes)
        try:
            await self._dispatch(conn, msg, received_at)
        except RedisError as exc:  # failing over: the client may retry in a moment
            self._store_failed("connection " + conn.id, exc)
            raise ProtocolError(
                ErrorCode.STORE_UNAVAILABLE,
                "the session store is unavailable, try again in a few seconds",
                getattr(msg, "id", None),
            ) from None

    async def _dispatch(
        self, conn: Connection, msg: schema.ClientMessage, received_at: float
    ) -> None:
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
            case schema.RefreshCredentials():
                await self._refresh_credentials(conn, msg)

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
        """To the other peer: straight to its connection when it is on this instance (no bus
        round trip, no encoding for it), else through the bus to the instance that has it."""
        session_id, peer_id = self._joined(conn, msg.id)
        frame = schema.relayed(msg, peer_id)
        channel = peer_channel(session_id, sessions.other_peer(peer_id))
        other = self.local.get(channel)
        if other is not None and not other.closing:
            self._send(other, frame, received_at)
        elif not await self.bus.publish(
            channel, _bus_encode(BusEvent("frame", frame, sent=received_at))
        ):
            raise ProtocolError(
                ErrorCode.PEER_UNAVAILABLE, "the other peer is not connected", msg.id
            )
        self.metrics.messages.relayed[str(msg.__struct_config__.tag)] += 1
        if received_at - conn.last_touch > self.policy.idle_seconds / 20:
            conn.last_touch = received_at
            await self.store.update(session_id, _touch(received_at))

    async def _create(self, conn: Connection, msg: schema.CreateSession) -> None:
        self._not_joined(conn, msg.id)
        now = time.time()
        for _ in range(8):
            # The tag adds its digits: the random part keeps all of session_digits.
            session_id = self.config.route_tag + sessions.new_session_id(self.config.session_digits)
            created = sessions.create(
                session_id, conn.ip, conn.id, now, msg.access, msg.instance or "", msg.runs
            )
            outcome = await self.store.create(created.record, self.config.max_sessions_per_ip)
            if outcome != "taken":
                break
        else:
            raise ProtocolError(ErrorCode.INTERNAL_ERROR, "could not allocate a session", msg.id)
        if outcome == "limited":
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
            iceServers=self._stun_servers(),  # TURN credentials once the peer is there
            re=msg.id,
            graceSeconds=self.policy.grace_seconds,
            run=sessions.run_id(created.record.peers["a"]) if msg.runs else None,
        )
        self._send(conn, schema.encode(reply))

    async def _join(self, conn: Connection, msg: schema.JoinSession) -> None:
        self._may_try_joining(conn, msg.id)
        now = time.time()
        result = await self.store.update(
            msg.sessionId,
            _apply(
                lambda r: sessions.join(
                    r, msg.token, conn.id, now, self.policy, msg.instance or "", msg.runs
                )
            ),
        )
        await self._admit(conn, msg.sessionId, msg.id, result, msg.token, now, msg.runs)

    async def _rejoin(self, conn: Connection, msg: schema.RejoinSession) -> None:
        self._may_try_joining(conn, msg.id)
        now = time.time()
        result = await self.store.update(
            msg.sessionId,
            _apply(
                lambda r: sessions.rejoin(
                    r,
                    msg.peerId,
                    msg.reconnectKey,
                    conn.id,
                    now,
                    self.policy,
                    msg.instance or "",
                    msg.runs,
                )
            ),
        )
        await self._admit(conn, msg.sessionId, msg.id, result, msg.reconnectKey, now, msg.runs)

    def _may_try_joining(self, conn: Connection, request_id: int | None) -> None:
        """A connection outside any session, from an address with refused joins to spare: one
        is reserved (taken) now, before the store's round trip, and given back if the join
        turns out right. Checked here and charged after the lookup, every guess in flight on
        an address's concurrent connections would pass the limit."""
        self._not_joined(conn, request_id)
        if not self.failed_joins.take(conn.ip, time.monotonic()):
            raise ProtocolError(
                ErrorCode.JOINS_LIMITED,
                "too many failed joins from your address, try again in a minute",
                request_id,
            )

    async def _admit(
        self,
        conn: Connection,
        session_id: str,
        request_id: int | None,
        result: Change[tuple[Admission, SessionRecord]] | None,
        secret: str | None,
        now: float,
        runs: bool,
    ) -> None:
        """Finish a join or rejoin: answer, and tell the other peer (run ids only to a peer
        that asked for them: strict decoders of older clients refuse unknown fields)."""
        outcome = sessions.refuse_absent(secret) if result is None else result.value[0]
        # A right secret (joined, or told the session is full): its reservation is free.
        if not isinstance(outcome, sessions.Refused) or outcome.reason == "full":
            self.failed_joins.give_back(conn.ip, time.monotonic())
        if isinstance(outcome, sessions.Refused):
            if outcome.reason == "full":  # said only to a holder of the token
                raise ProtocolError(ErrorCode.SESSION_FULL, "the session has two peers", request_id)
            self.metrics.failed_joins.inc()
            # Unknown, expired, already joined (code) and wrong secret answer alike: no oracle.
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
            expiresAt=record.lifetime_end(self.policy),
            iceServers=self._ice_servers(conn, record, outcome.peer_id, now),
            re=request_id,
            graceSeconds=self.policy.grace_seconds,
            run=outcome.run if runs else None,
            peerRun=outcome.peer_run if runs else None,
        )
        self._send(conn, schema.encode(reply))
        notice = schema.PeerJoined(
            v=schema.VERSION,
            peerId=outcome.peer_id,
            rejoined=outcome.rejoined,
            resumed=outcome.resumed and outcome.tell_resumed,
            peerRun=outcome.run if outcome.tell_run else None,
        )
        await self.bus.publish(
            peer_channel(session_id, sessions.other_peer(outcome.peer_id)),
            _bus_encode(BusEvent("presence", schema.encode(notice))),
        )

    async def _refresh_credentials(self, conn: Connection, msg: schema.RefreshCredentials) -> None:
        session_id, peer_id = self._joined(conn, msg.id)
        now = time.time()
        record = await self.store.get(session_id)
        if record is None or not self._credential_seconds(conn, record, peer_id, now):
            raise ProtocolError(
                ErrorCode.PEER_UNAVAILABLE,
                "credentials are given while both peers are here",
                msg.id,
            )
        if self.config.turn_urls and not self.credentials.allows(conn.ip, time.monotonic()):
            raise ProtocolError(
                ErrorCode.CREDENTIALS_LIMITED,
                "too many TURN credentials for your address, try again later",
                msg.id,
            )
        servers = self._ice_servers(conn, record, peer_id, now)
        reply = schema.Credentials(v=schema.VERSION, iceServers=servers, re=msg.id)
        self._send(conn, schema.encode(reply))

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
        channel = peer_channel(session_id, peer_id)
        await self.bus.subscribe(channel, conn.on_bus)
        if conn.session_id == session_id and conn.peer_id == peer_id:  # not forgotten meanwhile
            self.local[channel] = conn
        self.metrics.local_peers.inc()

    def _forget(self, conn: Connection) -> tuple[str, PeerId] | None:
        """Take the connection out of its session at once, before anything awaits."""
        session_id, peer_id = conn.session_id, conn.peer_id
        if session_id is None or peer_id is None:
            return None
        conn.session_id = conn.peer_id = None
        channel = peer_channel(session_id, peer_id)
        if self.local.get(channel) is conn:
            del self.local[channel]
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
        await self.store.remove(record)
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
        conn.close(CLOSE_REPLACED, b"replaced by a newer connection")

    def _stun_servers(self) -> list[schema.IceServer]:
        if not self.config.stun_urls:
            return []
        return [schema.IceServer(urls=list(self.config.stun_urls))]

    def _credential_seconds(
        self, conn: Connection, record: SessionRecord, peer_id: PeerId, now: float
    ) -> int:
        return sessions.credential_seconds(
            record, peer_id, conn.id, now, self.policy, self.config.turn_ttl_seconds
        )

    def _ice_servers(
        self, conn: Connection, record: SessionRecord, peer_id: PeerId, now: float
    ) -> list[schema.IceServer]:
        """STUN, and a TURN credential while both peers are in the session and the address
        has credentials to spare (each costs a share of coturn's allocation quota)."""
        servers = self._stun_servers()
        seconds = self._credential_seconds(conn, record, peer_id, now)
        if not (self.config.turn_urls and seconds):
            return servers
        if not self.credentials.take(conn.ip, time.monotonic()):
            self.metrics.rejections.labels(ErrorCode.CREDENTIALS_LIMITED.value).inc()
            return servers
        cred = credentials.issue(self.config.turn_secret, record.id, seconds, now)
        turn = schema.IceServer(
            urls=list(self.config.turn_urls), username=cred.username, credential=cred.password
        )
        return [*servers, turn]

    # --- time ----------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            logs.summarise()
            try:
                await self.sweep(time.time())
            except RedisError as exc:
                self._store_failed("the session sweep", exc)
            except Exception:
                log.exception("session sweep failed")

    async def sweep(self, now: float) -> None:
        """End sessions of local peers whose deadline passed; forget idle limiter state."""
        clock = time.monotonic()
        for limiter in (self.limiter, self.failed_joins, self.credentials):
            limiter.forget_idle(clock)
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


Admission = sessions.Joined | sessions.Refused


def _apply(
    rule: Callable[[SessionRecord], Admission],
) -> Callable[[SessionRecord], Change[tuple[Admission, SessionRecord]]]:
    """Run a join rule inside the store's atomic update; a refusal writes nothing (so with
    Redis it costs one read, as an unknown session does)."""

    def change(record: SessionRecord) -> Change[tuple[Admission, SessionRecord]]:
        outcome = rule(record)
        return Change(
            (outcome, record), "none" if isinstance(outcome, sessions.Refused) else "save"
        )

    return change


def _touch(now: float) -> Callable[[SessionRecord], Change[None]]:
    def change(record: SessionRecord) -> Change[None]:
        sessions.touch(record, now)
        return Change(None)

    return change


async def _close_after(_: web.Request, response: web.StreamResponse) -> None:
    response.force_close()
    response.headers["Connection"] = "close"  # (aiohttp wrote its headers before this hook)


def open_backend(config: Config) -> tuple[SessionStore, Bus]:
    if not config.redis_url:
        return MemoryStore(config.policy), MemoryBus()
    from signaling import redis_store

    client = redis_store.connect(config.redis_url)
    return redis_store.RedisStore(client, config.policy), redis_store.RedisBus(client)
