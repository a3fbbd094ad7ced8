"""One side of an authenticated WebRTC link: the signaling conversation, the PAKE handshake,
offer/answer, the fingerprint confirmation and the DataChannel. The transfer itself is elsewhere.

Each (re)connection is an epoch: a fresh RTCPeerConnection (aiortc has no ICE restart) whose
DTLS fingerprints are confirmed under the session key before a byte of the transfer moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from fileshare import crypto, gathering, ice, nomination, protocol, sctp, sockbuf, turnrefresh
from fileshare.crypto import Role, SessionKeys
from fileshare.ice import TurnUrl
from fileshare.reconnect import Backoff, GaveUp
from fileshare.signal_client import (
    ConnectionClosed,
    SignalClient,
    SignalError,
    payload_of,
    routed,
)
from fsproto import schema

if TYPE_CHECKING:
    from fileshare.transfer import Events  # transfer imports this module

CHANNEL_LABEL = "fileshare"
# Once our data channel is open, the peer's key confirmation (sent before ICE even started) is
# overdue: a confirmation dropped on the way fails authentication after this, not a whole timeout.
CONFIRM_GRACE_SECONDS = 5.0
# What a peer relays to us, by kind; anything else is dropped, and a server flooding us keeps at
# most STASHED_PER_KIND of each (the oldest go first), so it cannot make the inbox grow.
# "moved": the peer changed networks, its paths are dead (fileshare.netwatch): offer anew
KINDS: Final = frozenset({"hello", "confirm", "offer", "answer", "abort", "moved"})
STASHED_PER_KIND: Final = 8
MAX_PAUSE_SECONDS: Final = 86400.0  # a peer's "I keep my place this long" beyond it is ignored
CLOSE_WAIT_SECONDS: Final = 2.0
_FINGERPRINT = re.compile(r"^a=fingerprint:(\S+) (\S+)\s*$", re.MULTILINE)


class SessionEnded(Exception):
    """The signaling session is over (the peer left, it expired, or it was burned)."""


class PeerStopped(Exception):
    """The peer stopped and said why (its own error, relayed before it left)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"the other side stopped: {message}")
        self.code = f"peer_{code}"[:64]


def fingerprints(sdp: str) -> str:
    """The DTLS certificate fingerprints an SDP commits to, in a canonical form."""
    found = sorted(f"{alg.lower()} {value.upper()}" for alg, value in _FINGERPRINT.findall(sdp))
    if not found:
        raise crypto.AuthenticationFailed("no DTLS fingerprint in the session description")
    return ",".join(found)


@dataclass(frozen=True, slots=True)
class Membership:
    """What taking our place in the session back takes, after the signaling connection drops:
    `instance` is this process's nonce, so the peer hears a resume, not a restart."""

    url: str
    session_id: str
    peer_id: schema.PeerId
    reconnect_key: str
    instance: str


class Inbox:
    """The other peer's messages by kind, and its comings and goings, read in the background
    so a transfer can notice the peer leaving while it is busy with the data channel.

    A lost signaling connection (a network outage, an instance draining with 1012) is not the
    end: the inbox connects again to the same URL with backoff.Backoff's schedule and rejoins
    with the reconnect key, while the data channel carries on untouched."""

    def __init__(
        self,
        client: SignalClient,
        membership: Membership,
        events: Events,
        backoff: Backoff | None = None,
    ) -> None:
        self.client = client
        self.membership = membership
        self._events = events
        self._backoff = backoff or Backoff()
        self._stash = {kind: deque[dict[str, Any]](maxlen=STASHED_PER_KIND) for kind in KINDS}
        self._changed = asyncio.Event()
        self.peer_present = False
        self.connected = True  # to the signaling server
        self.arrivals = 0  # how many times the peer has (re)joined from a new process
        # Run ids (schema.JoinSession.runs) of this process and of the peer's current one: a
        # hello is addressed to the peer's, and one addressed to another run of ours is stale.
        self.run: str | None = None
        self.peer_run: str | None = None
        self.left_for_good = False
        self._ended: Exception | None = None
        self._reader = asyncio.create_task(self._read(), name="signal-inbox")

    def admitted(self, reply: schema.SessionCreated | schema.SessionJoined) -> None:
        """Our place in the session, as the server's reply to our create, join or rejoin has it."""
        self.run = reply.run
        if isinstance(reply, schema.SessionJoined):
            self.peer_present = reply.peerPresent
            self.peer_run = reply.peerRun

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.client.close()

    async def _read(self) -> None:
        while self._ended is None:
            try:
                event = await self.client.next_event(timeout=None)
            except ConnectionClosed as exc:
                if exc.broken:  # a server that breaks the protocol gets no second chance
                    self._ended = SessionEnded(f"lost the signaling server ({exc})")
                else:
                    await self._reconnect(str(exc))
                self.notify()
                continue
            match event:
                case schema.Relayed(type=relay_type):
                    payload = payload_of(event)
                    if isinstance(payload, dict):
                        kind = (
                            str(payload.get("kind", "")) if relay_type == "signal" else relay_type
                        )
                        if kind == "abort":
                            self._ended = _abort(payload)
                        elif kind == "pause":
                            self._paused(payload)
                        if kind in KINDS and (kind != "hello" or self._new_round(payload)):
                            self._stash[kind].append(payload)
                case schema.PeerJoined(resumed=True):
                    self.peer_present = True  # its signaling came back: same process, same state
                case schema.PeerJoined(peerRun=peer_run):
                    self._clear()  # it belongs to the peer's last run
                    self.peer_present = True
                    self.peer_run = peer_run
                    self.arrivals += 1
                case schema.PeerLeft(graceSeconds=grace):
                    self.peer_present = False
                    self.left_for_good = grace <= 0
                case schema.SessionClosed(reason=reason):
                    self._ended = SessionEnded(f"the session ended: {_ended_because(reason)}")
                case schema.Error(code=schema.ErrorCode.PEER_UNAVAILABLE):
                    # Something we relayed found the peer away (e.g. a browser tab reloading
                    # between our link dropping and its rejoin): it is gone, not the session.
                    self.peer_present = False
                case schema.Error(code=code, message=message):
                    self._ended = SignalError(code, message)
            self.notify()

    def _new_round(self, hello: dict[str, Any]) -> bool:
        """A hello for this run of ours starts a round: what came before it (e.g. an offer
        under the last round's keys, sent while we restarted) is over. One for a run of ours
        that is over is dropped, and a malformed one fails authentication (as the web's)."""
        try:
            current = crypto.hello_is_current(hello, self.run, self.peer_run)
        except crypto.AuthenticationFailed as exc:
            self._ended = exc
            return False
        if current:
            self._clear()
        return current

    def _clear(self) -> None:
        for stashed in self._stash.values():
            stashed.clear()

    def _paused(self, payload: dict[str, Any]) -> None:
        """The peer was interrupted (Ctrl-C) and keeps its place for `seconds`: the same command
        run again there takes the transfer up, so we wait (a peer's number: bounded)."""
        seconds = payload.get("seconds")
        if isinstance(seconds, int | float) and 0 < seconds <= MAX_PAUSE_SECONDS:
            self._events.emit("peer_paused", seconds=round(float(seconds)))

    async def _reconnect(self, reason: str) -> None:
        """Back into our place in the session, or `_ended` set: the session is gone, or the
        server stayed out of reach past the backoff's deadline."""
        self.connected = False
        self.notify()
        backoff, member, loop = self._backoff, self.membership, asyncio.get_running_loop()
        backoff.lost(loop.time(), reason)
        with contextlib.suppress(Exception):
            await self.client.close()
        while True:
            self._events.emit(
                "reconnecting", reason=f"signaling: {backoff.reason}", attempt=backoff.attempts
            )
            try:
                await asyncio.sleep(backoff.next_attempt(loop.time()))
            except GaveUp as exc:
                self._ended = exc
                return
            try:
                client = await SignalClient.connect(routed(member.url, member.session_id))
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                backoff.failed(loop.time(), f"signaling server unreachable: {exc}")
                continue
            try:
                joined = await client.rejoin(
                    member.session_id,
                    member.peer_id,
                    member.reconnect_key,
                    member.instance,
                    runs=True,
                )
            except (SignalError, ConnectionClosed, TimeoutError) as exc:
                await client.close()
                if isinstance(exc, SignalError) and exc.code == schema.ErrorCode.SESSION_NOT_FOUND:
                    self._ended = SessionEnded("the session ended while we were away")
                    return
                backoff.failed(loop.time(), f"rejoin failed: {exc}")
                continue
            self.client, self.connected = client, True
            self.admitted(joined)
            lasted = backoff.restored(loop.time())
            self._events.emit("signaling_restored", after=round(lasted, 1))
            return

    def drop_connection(self) -> None:
        """This host changed networks: the signaling connection's TCP left from an address
        that is gone, so reconnect now rather than when the heartbeat notices (a message sent
        meanwhile would be lost). The reader sees the close and reconnects; until it has, no
        message goes out on the old connection."""
        self.connected = False
        self.notify()
        task = asyncio.ensure_future(self.client.close())
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def relay(self, kind: str, payload: dict[str, Any], arrivals: int | None = None) -> None:
        """Relay to the peer once we and it are on the signaling server (a message sent into
        an outage would be lost); the wait ends at once if the session does. With `arrivals`
        (the round the message belongs to), a peer that restarted meanwhile never gets it:
        it would read the old round's message under its new keys."""
        while True:
            await self.until(lambda: self.connected and self.peer_present, None)
            if arrivals is not None and arrivals != self.arrivals:
                raise ConnectionError("the peer restarted: a message of its last run is void")
            client = self.client
            try:
                await client.relay(kind, payload)
                return
            except ConnectionClosed:
                await self._until_replaced(client)

    async def _until_replaced(self, lost: SignalClient) -> None:
        await self.until(lambda: self.client is not lost, None)

    async def refresh_credentials(self) -> schema.Credentials:
        """Fresh ICE servers, asked on the signaling connection we have (after an outage, the
        one we get back)."""
        await self.until(lambda: self.connected, None)
        return await self.client.refresh_credentials()

    def notify(self) -> None:
        """Wake every until(): something it may wait for changed (also called from outside,
        e.g. when a data channel opens)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def until(self, ready: Callable[[], bool], timeout: float | None) -> None:
        """Wait until `ready()`; raises at once if the session ends or the peer aborts first."""
        async with asyncio.timeout(timeout):
            while not ready():
                if self._ended is not None:
                    raise self._ended
                await self._changed.wait()

    async def expect(self, kind: str, timeout: float | None) -> dict[str, Any]:
        await self.until(lambda: bool(self._stash[kind]), timeout)
        return self._stash[kind].popleft()

    async def expect_latest(self, kind: str, timeout: float | None) -> dict[str, Any]:
        """The newest message of `kind`: older ones belong to attempts the peer gave up."""
        await self.until(lambda: bool(self._stash[kind]), timeout)
        latest = self._stash[kind].pop()
        self._stash[kind].clear()
        return latest

    def discard(self, *kinds: str) -> None:
        for kind in kinds:
            self._stash[kind].clear()

    def has(self, kind: str) -> bool:
        return bool(self._stash[kind])

    async def wait_for_peer(self, timeout: float | None) -> None:
        await self.until(lambda: self.peer_present and self.connected, timeout)


# Why the server ended a session, in words (its reason codes never reach a user raw).
_END_REASONS: Final = {
    "peer_left": "the other side left",
    "peer_timeout": "the other side did not come back in time",
    "expired": "it expired",
    "idle": "it was idle too long",
}


def _ended_because(reason: str) -> str:
    return _END_REASONS.get(reason, "the signaling server closed it")


def _abort(payload: dict[str, Any]) -> Exception:
    """The peer's (or, before authentication, anyone's) reason for stopping: an authentication
    failure stays one on this side too (exit 3 on both), anything else is the peer's stop."""
    code, message = str(payload.get("code", "error")), str(payload.get("message", ""))
    if code == crypto.AuthenticationFailed.code:
        return crypto.AuthenticationFailed("the other side could not authenticate", from_peer=True)
    return PeerStopped(code, message)


# A Pipe's bound on what waits unread, by the type aiortc hands a message over as.
_QUEUE_LIMITS: dict[type, tuple[int, str]] = {
    bytes: (protocol.QUEUED_FRAME_BYTES, "bytes of chunks"),
    str: (protocol.QUEUED_CONTROL_CHARS, "characters"),
}


class Pipe:
    """A DataChannel whose messages are queued from the moment it exists: none is lost between
    its opening and the transfer taking it over. `wait()` wakes on a message, on the send
    buffer draining below its low threshold, and on close. The queue holds at most what an
    honest peer can have sent unanswered (protocol.QUEUED_FRAME_BYTES of chunks, and
    QUEUED_CONTROL_CHARS of control messages): past that it is dropped, and `take` ends the
    transfer."""

    def __init__(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self.last_heard = time.monotonic()
        self.overflow: str | None = None  # what the peer sent past the bound
        self._queue: deque[str | bytes] = deque()
        self._queued = {bytes: 0, str: 0}  # bytes of chunks, characters of control messages
        self._event = asyncio.Event()
        channel.on("message", self._on_message)
        channel.on("bufferedamountlow", self._event.set)
        channel.on("close", self._event.set)

    def _on_message(self, message: str | bytes) -> None:
        self.last_heard = time.monotonic()
        self._event.set()
        if self.overflow is not None:
            return
        kind = type(message)
        self._queued[kind] += len(message)
        limit, unit = _QUEUE_LIMITS[kind]
        if self._queued[kind] > limit:
            self.overflow = f"the peer sent more than {limit} {unit} without waiting for answers"
            self._queue.clear()
            return
        self._queue.append(message)

    @property
    def waiting(self) -> bool:
        """A message waits, or the end of the transfer: `take` has something to say."""
        return bool(self._queue) or self.overflow is not None

    def take(self) -> str | bytes | None:
        """The next message (None: none waits); a TransferError once the peer overflowed."""
        if self.overflow is not None:
            raise protocol.TransferError("flow_control", self.overflow)
        if not self._queue:
            return None
        message = self._queue.popleft()
        self._queued[type(message)] -= len(message)
        return message

    async def wait(self, timeout: float = 1.0) -> None:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation (Ctrl-C)
        # that arrives as the event is set, and the transfer would carry on to its end.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()
        self._event.clear()


@dataclass
class Link:
    pc: RTCPeerConnection
    pipe: Pipe
    epoch: int
    turn: TurnUrl | None = None  # the TURN server this connection could relay through

    def path(self) -> dict[str, str]:
        """Which candidate pair carries the link, and over what it reaches the TURN server."""
        path = describe_path(self.pc)
        if path["local"] == "relay" and self.turn is not None:
            path["turn"] = self.turn.transport
        return path

    def host_addresses(self) -> list[str]:
        """This host's addresses the connection gathered candidates on (none if aiortc's
        internals are not what we expect)."""
        try:
            candidates = nomination.ice_connection(self.pc).local_candidates
        except (AttributeError, KeyError, IndexError):
            return []
        return [c.host for c in candidates if c.type == "host"]

    def destination(self) -> str | None:
        """Where the link's packets go first, as an IP address: the TURN server when it is
        relayed, else the peer's candidate; None when unknown or a name (mDNS, DNS)."""
        path = self.path()
        if path["local"] == "relay":
            host = self.turn.host if self.turn is not None else ""
        else:
            host = path.get("remoteAddress", "").rpartition(":")[0]
        try:
            return ipaddress.ip_address(host.strip("[]")).compressed
        except ValueError:
            return None

    async def close(self) -> None:
        """Close, waiting at most CLOSE_WAIT_SECONDS: over paths that died (a new network),
        aiortc's orderly close can take a minute, which a new connection must not wait for;
        the rest of it goes on in the background."""
        closing = asyncio.ensure_future(self.pc.close())
        closing.add_done_callback(lambda done: done.cancelled() or done.exception())
        await asyncio.wait({closing}, timeout=CLOSE_WAIT_SECONDS)


def rtc_configuration(
    servers: list[schema.IceServer], relay_only: bool = False
) -> RTCConfiguration:
    """Always an explicit list: given none, aiortc would ask a public STUN server. With
    `relay_only`, only relay candidates are gathered and used, so the peer never learns this
    machine's addresses."""
    if relay_only and not any(u.startswith(("turn:", "turns:")) for s in servers for u in s.urls):
        raise ValueError("--relay-only needs a TURN server (from the signaling server or --turn)")
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in servers
        ],
        iceTransportPolicy=policy,
    )


class Peer:
    def __init__(
        self,
        role: Role,
        inbox: Inbox,
        session_id: str,
        code_secret: bytes,
        ice_servers: list[schema.IceServer],
        timeout: float = 60.0,
        relay_only: bool = False,
    ) -> None:
        self.relay_only = relay_only
        self.role = role
        self.inbox = inbox
        self.ice_servers = ice_servers
        self.timeout = timeout
        self._handshake = crypto.Handshake(role, code_secret, session_id)
        self.keys: SessionKeys | None = None
        self.epoch = 0
        self._turn: TurnUrl | None = None
        self._round = inbox.arrivals  # the peer's run these keys and messages belong to
        self._to = inbox.peer_run  # its run id, if the server gives them

    @property
    def outdated(self) -> bool:
        """The peer restarted since these keys were made: what we would send it is void."""
        return self._round != self.inbox.arrivals

    @property
    def peer_role(self) -> Role:
        return "receiver" if self.role == "sender" else "sender"

    async def authenticate(self) -> SessionKeys:
        """The PAKE: one hello each way. Its keys are unproven until confirm() succeeds. A peer
        that restarts meanwhile ends the wait (ConnectionError): its new run's hello is for
        the next round, which answers it with a hello of its own."""
        inbox = self.inbox
        await self._relay("signal", self._handshake.hello(self._to))
        await inbox.until(lambda: self.outdated or inbox.has("hello"), self.timeout)
        if self.outdated:
            raise ConnectionError("the peer restarted: a new round authenticates it")
        hello = await inbox.expect("hello", None)
        self.keys = self._handshake.on_hello(hello)
        return self.keys

    async def _relay(self, kind: str, payload: dict[str, Any]) -> None:
        await self.inbox.relay(kind, payload, self._round)

    async def connect(self) -> Link:
        """A new peer connection for this epoch, authenticated end to end."""
        assert self.keys is not None
        servers, turn = await ice.arrange(self.ice_servers)
        self._turn = turn
        sctp.install()  # the tuned SCTP sender/receiver ($FILESHARE_CONGESTION picks it)
        turnrefresh.install()  # channels (and their permissions) bound again before 300 s
        gathering.install()  # host candidates only on addresses that have a route
        sockbuf.install()  # receive buffers that hold the queue a fast sender builds
        pc = RTCPeerConnection(rtc_configuration(servers, self.relay_only))
        try:
            link = await asyncio.wait_for(self._connect(pc, self.keys), self.timeout)
            link.turn = turn
            return link
        except BaseException:
            with contextlib.suppress(Exception):
                await pc.close()
            raise

    async def _check_relay(self, sdp: str) -> None:
        """With --relay-only, no relay candidate means no connection: say why, once."""
        if self.relay_only and " typ relay" not in sdp:
            reason = await ice.diagnose(self._turn) if self._turn else "no TURN server"
            raise ice.RelayUnavailable(f"--relay-only, but {reason}")

    def _steer_ice(self, pc: RTCPeerConnection) -> None:
        """Before ICE starts (setRemoteDescription schedules it): see `nomination`."""
        nomination.check_pinned()
        connection = nomination.ice_connection(pc)
        nomination.nominate_once(connection)
        if not self.relay_only:
            nomination.prefer_direct(connection)
            nomination.finish_better_checks(connection)

    async def _connect(self, pc: RTCPeerConnection, keys: SessionKeys) -> Link:
        relay = self._relay
        opened: asyncio.Future[Pipe] = asyncio.get_running_loop().create_future()
        opened.add_done_callback(lambda _: self.inbox.notify())

        @pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            """The sender's channel, to the receiver; any other a peer opens is closed at once
            (the association holds few: `sctp.streams`)."""
            if self.role == "sender" or channel.label != CHANNEL_LABEL or opened.done():
                channel.close()
                return
            pipe = Pipe(channel)
            if channel.readyState == "open":
                _resolve(opened, pipe)
            else:
                channel.on("open", lambda: _resolve(opened, pipe))

        if self.role == "sender":
            channel = pc.createDataChannel(CHANNEL_LABEL, ordered=True)
            sender_pipe = Pipe(channel)
            channel.on("open", lambda: _resolve(opened, sender_pipe))
            await pc.setLocalDescription(await pc.createOffer())
            offer_sdp = pc.localDescription.sdp
            await self._check_relay(offer_sdp)
            sealed = crypto.seal_description(keys, self.role, self.epoch, offer_sdp)
            self.inbox.discard("answer", "confirm")  # left over from an attempt that timed out
            await relay("offer", {"type": "offer", "sealed": sealed, "epoch": self.epoch})
            answer = await self.inbox.expect("answer", self.timeout)
            answer_sdp = crypto.open_description(
                keys, self.peer_role, self.epoch, answer.get("sealed")
            )
            await pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
            self._steer_ice(pc)
        else:
            offer = await self.inbox.expect_latest("offer", self.timeout)
            self.inbox.discard("confirm")  # a confirmation before this offer is of an older one
            epoch = offer.get("epoch")
            self.epoch = epoch if isinstance(epoch, int) and 0 <= epoch < 2**32 else self.epoch
            offer_sdp = crypto.open_description(
                keys, self.peer_role, self.epoch, offer.get("sealed")
            )
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            self._steer_ice(pc)
            await pc.setLocalDescription(await pc.createAnswer())
            answer_sdp = pc.localDescription.sdp
            await self._check_relay(answer_sdp)
            sealed = crypto.seal_description(keys, self.role, self.epoch, answer_sdp)
            await relay("answer", {"type": "answer", "sealed": sealed})
        offer_fp, answer_fp = fingerprints(offer_sdp), fingerprints(answer_sdp)
        mine = crypto.confirmation_message(keys, self.role, offer_fp, answer_fp, self.epoch)
        await relay("signal", mine)
        theirs = await self._their_confirmation(opened)
        crypto.check_confirmation(
            keys, self.peer_role, theirs.get("mac"), offer_fp, answer_fp, self.epoch
        )
        await self.inbox.until(opened.done, self.timeout)  # an abort ends this wait at once
        link = Link(pc, opened.result(), self.epoch)
        self.epoch += 1
        return link

    async def _their_confirmation(self, opened: asyncio.Future[Pipe]) -> dict[str, Any]:
        """The peer's key confirmation; if our channel opens first, it gets a short grace."""
        inbox = self.inbox
        await inbox.until(lambda: inbox.has("confirm") or opened.done(), self.timeout)
        if not inbox.has("confirm"):
            try:
                await inbox.until(lambda: inbox.has("confirm"), CONFIRM_GRACE_SECONDS)
            except TimeoutError:
                raise crypto.AuthenticationFailed(
                    "no key confirmation from the other side"
                ) from None
        return await inbox.expect("confirm", None)


def _resolve(future: asyncio.Future[Pipe], pipe: Pipe) -> None:
    if not future.done():
        future.set_result(pipe)


def describe_path(pc: RTCPeerConnection) -> dict[str, str]:
    """Which candidate pair carries the link: host, srflx or relay, over UDP or TCP.

    aiortc does not expose the selected pair, so this reads aioice's nominated pair.
    """
    try:
        pair = nomination.ice_connection(pc)._nominated[1]
        local, remote = pair.local_candidate, pair.remote_candidate
    except (AttributeError, KeyError, IndexError):
        return {"local": "unknown", "remote": "unknown", "protocol": "unknown"}
    return {
        "local": local.type,
        "remote": remote.type,
        "protocol": local.transport.lower(),
        "localAddress": f"{local.host}:{local.port}",
        "remoteAddress": f"{remote.host}:{remote.port}",
    }
