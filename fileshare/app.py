"""A whole send or receive: session, authentication rounds, connection epochs, cleanup.

- A dropped link (aiortc cannot restart ICE) is replaced by a new peer connection, a new epoch,
  confirmed under the same session key; the protocol then sends only what is missing.
- A receiver that restarts (same command again) rejoins its place in the session with a ticket it
  sealed under a key from both the code and this installation's random ticket key, and both
  sides run the PAKE again: a new round with new keys. Tickets go once a transfer ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from fileshare import crypto, ice, netwatch
from fileshare.chunks import CHUNK_SIZE
from fileshare.code import BadCode, ShareCode, new_code, parse_code
from fileshare.crypto import SessionKeys
from fileshare.peer import Inbox, Link, Membership, Peer, PeerStopped, SessionEnded
from fileshare.protocol import Receiver, Sender, TransferError
from fileshare.reconnect import DEFAULT_GIVE_UP_SECONDS, Backoff
from fileshare.signal_client import ConnectionClosed, SignalClient, SignalError, routed
from fileshare.state import StateError, TransferStore, default_state_path, install_key
from fileshare.transfer import (
    Events,
    Hashed,
    ReceiveSide,
    SendSide,
    Source,
    Summary,
    collect_sources,
)
from fsproto import schema

T = TypeVar("T")
Ask = Callable[[str], Awaitable[bool]]  # a yes/no question to the user
STATE_MAX_AGE: Final = 7 * 86400.0
WORK_GRACE_SECONDS: Final = 1.0
RETRY_PAUSE_SECONDS: Final = 0.5
HASH_REPORT_SECONDS: Final = 0.2


@dataclass
class Options:
    server: str
    timeout: float = 60.0
    wait_for_peer: float = 3600.0
    reconnects: int = 20
    give_up_after: float = DEFAULT_GIVE_UP_SECONDS  # a signaling outage longer than this fails
    stall_seconds: float = 15.0
    chunk_size: int = CHUNK_SIZE
    relay_only: bool = False
    extra_ice_servers: list[schema.IceServer] = field(default_factory=list)
    ask: Ask | None = None  # with --verify: asked once, before anything moves
    accept: Ask | None = None  # the receiver's "receive these files?" (on a terminal, no --yes)
    state_path: Path = field(default_factory=default_state_path)


class Refused(Exception):
    """The user did not confirm the authentication words."""


class Declined(Exception):
    """The receiver said no to the files offered."""

    code = "declined"

    def __init__(self) -> None:
        super().__init__("the receiver declined the transfer; nothing was written")


TERMINATE: Final = "terminate"  # the cancel message of SIGTERM (cli): stop, do not pause


class Interrupted(Exception):
    """Ctrl-C (a pause: `resumable_for` seconds in which the same command, run again, takes the
    transfer up with the same code) or SIGTERM (a stop: the peer is told and does not wait)."""

    code = "interrupted"

    def __init__(self, role: crypto.Role, resumable_for: float, terminated: bool = False) -> None:
        self.role, self.resumable_for, self.terminated = role, resumable_for, terminated
        if resumable_for > 0:
            message = (
                f"run the same command again within {_duration(resumable_for)} to resume "
                "with the same code"
            )
        elif role == "receiver":
            message = "what arrived is kept: receive again into the same folder to resume"
        else:
            message = "what the receiver holds is kept: sending again resumes (with a new code)"
        super().__init__(
            f"the {role} was {'terminated' if terminated else 'interrupted'}: {message}"
        )

    @classmethod
    def on(cls, cancel: asyncio.CancelledError, role: crypto.Role, grace: float) -> Interrupted:
        """What a cancellation of the whole run means: SIGTERM stops, Ctrl-C pauses."""
        if cancel.args == (TERMINATE,) or grace <= 0:
            return cls(role, 0, terminated=cancel.args == (TERMINATE,))
        return cls(role, grace)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    return f"{seconds / 60:.0f} minutes"


PAUSE_NOTICE_SECONDS: Final = 2.0  # at most this long to tell the peer we stop, on the way out


class PeerGone(ConnectionError):
    """The peer left the session (its process may come back: a new authentication round)."""


def _servers(options: Options, given: ice.ServerCredentials) -> list[schema.IceServer]:
    return [*options.extra_ice_servers, *given.servers]  # aiortc uses the first STUN, TURN URL


async def _authenticate(
    inbox: Inbox,
    role: crypto.Role,
    session_id: str,
    secret: bytes,
    given: ice.ServerCredentials,
    events: Events,
    options: Options,
) -> tuple[Peer, SessionKeys]:
    """The PAKE; the sender asks about the words now, the receiver once it knows the whole
    transfer (one question for both)."""
    servers = _servers(options, given)
    peer = Peer(role, inbox, session_id, secret, servers, options.timeout, options.relay_only)
    keys = await peer.authenticate()
    events.emit("sas", words=keys.sas)
    if role == "sender":
        await _confirm(options, f"Do both sides show '{keys.sas}'?")
    return peer, keys


async def _confirm(options: Options, question: str) -> None:
    if options.ask is not None and not await options.ask(question):
        raise Refused("the authentication words were not confirmed")


async def _race(work: Awaitable[T], interrupt: Callable[[], Awaitable[None]]) -> T:
    """Run `work` unless `interrupt` completes first (then PeerGone or ConnectionError)."""
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(interrupt())
    try:
        await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
        if not work_task.done():  # a failing transfer may be telling the peer why: let it end
            await asyncio.wait({work_task}, timeout=WORK_GRACE_SECONDS)
    finally:  # also when we are cancelled (Ctrl-C): neither task outlives the race
        for task in (work_task, watch_task):
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task  # both are retrieved, so neither is "never retrieved" at exit
    if work_task.done() and not work_task.cancelled():
        return work_task.result()
    watch_task.result()  # an interrupt ends by raising why
    raise ConnectionError("interrupted")


async def _refresh_servers(peer: Peer, given: ice.ServerCredentials, options: Options) -> None:
    """Before a new peer connection: TURN credentials from the signaling server if we have
    none yet (they come once both peers are there) or ours are about to expire."""
    if not given.due(time.time()):
        return
    try:
        given.received((await peer.inbox.refresh_credentials()).iceServers)
    except SignalError as exc:
        given.refused(exc.code)
    except (TimeoutError, ConnectionClosed):
        given.refused("timeout")
    peer.ice_servers = _servers(options, given)


async def _epochs(
    peer: Peer,
    given: ice.ServerCredentials,
    events: Events,
    options: Options,
    run: Callable[[Link], Awaitable[None]],
    interrupt: Callable[[], Awaitable[None]],
    connecting_interrupt: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Connect, run, and on a dropped link connect again, with the same keys. A new peer
    connection waits for both sides to be on the signaling server (either may be riding out
    an outage); a connection attempt that times out or fails counts as a dropped link, and one
    that `connecting_interrupt` ends (the sender's: the receiver restarted) ends the epochs."""
    inbox = peer.inbox
    for attempt in range(options.reconnects + 1):
        try:
            await _race(_pause_then_wait_for_peer(inbox, attempt), interrupt)
        except PeerGone:
            raise
        except ConnectionError:
            pass  # the receiver's interrupt, a new offer: the sender is there, go and answer it
        try:
            await _refresh_servers(peer, given, options)
            if connecting_interrupt is None:
                link = await peer.connect()
            else:
                link = await _race(peer.connect(), connecting_interrupt)
        except PeerGone:
            raise
        except (TimeoutError, ConnectionError) as exc:
            if peer.outdated:  # the peer restarted: no attempt with these keys can succeed
                raise PeerGone("the peer restarted; waiting for it to come back") from exc
            if attempt == options.reconnects:
                raise
            reason = str(exc) or "connecting timed out"
            events.emit("reconnecting", reason=reason, attempt=attempt + 1)
            continue
        events.emit("connected", epoch=link.epoch, path=link.path())
        try:
            await _race(run(link), _or_moved(interrupt, link, inbox))
            return
        except PeerGone:
            raise
        except ConnectionError as exc:
            if attempt == options.reconnects:
                raise
            events.emit("reconnecting", reason=str(exc), attempt=attempt + 1)
        finally:
            await link.close()


def _or_moved(
    interrupt: Callable[[], Awaitable[None]], link: Link, inbox: Inbox
) -> Callable[[], Awaitable[None]]:
    """`interrupt`, or a network change that killed the link's paths: this host left the
    network the link was built on, or its route to the far end left it or leaves by an
    interface that lost its carrier (AddressLost: reconnect to the signaling server at once,
    tell the peer, then a new peer connection), or the peer says it did ("moved")."""

    async def moved() -> None:
        try:
            await netwatch.address_lost(link.host_addresses(), link.destination())
        except netwatch.AddressLost:
            inbox.drop_connection()
            await inbox.relay("signal", {"kind": "moved"})
            raise

    async def peer_moved() -> None:
        await inbox.until(lambda: inbox.has("moved"), None)
        inbox.discard("moved")
        raise ConnectionError("the peer changed networks")

    async def either() -> None:
        tasks = {asyncio.ensure_future(w()) for w in (moved, peer_moved, interrupt)}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # whichever ended says why
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return either


async def _pause_then_wait_for_peer(inbox: Inbox, attempt: int) -> None:
    """A retry starts after a pause (a failing attempt must not spin), which the interrupt may
    cut short: a peer that restarted meanwhile is the interrupt's, not another attempt's."""
    if attempt:
        await asyncio.sleep(RETRY_PAUSE_SECONDS)
    await inbox.wait_for_peer(None)


async def send(paths: list[Path], events: Events, options: Options) -> None:
    skipped: list[tuple[Path, str]] = []
    sources = await asyncio.to_thread(
        collect_sources,
        paths,
        options.chunk_size,
        _hashing_events(events),
        lambda path, why: skipped.append((path, why)),
    )
    for path, why in skipped:
        events.emit("skipped", path=str(path), reason=why)
    summary = Summary.of([s.manifest for s in sources])
    events.emit(
        "prepared",
        files=summary.files,
        dirs=summary.dirs,
        bytes=summary.bytes,
        skipped=len(skipped),
    )
    instance = secrets.token_urlsafe(16)
    with TransferStore(options.state_path) as store:
        ticket = _SendTicket(store, install_key(options.state_path.parent), sources)
        async with await SignalClient.connect(options.server) as client:
            created, code, key = await ticket.create_or_rejoin(client, instance)
            resumed = isinstance(created, schema.SessionJoined)
            events.emit("code", code=str(code), link=code.link(options.server), resumed=resumed)
            membership = Membership(options.server, created.sessionId, "a", key, instance)
            await _send(
                client, created, membership, code, sources, summary, ticket, events, options
            )


class _SendTicket:
    """An interrupted sender's way back into its session: the same command again (the same
    files) within the grace period rejoins with the same code. Sealed under this installation's
    ticket key and kept only while the send runs or is interrupted; it holds the code, so the
    state directory (0700) is as private as the code itself."""

    def __init__(self, store: TransferStore, key: bytes, sources: list[Source]) -> None:
        self.store, self.key = store, key
        ids = "\n".join(sorted(s.manifest.fileId for s in sources))
        self.name = "send-" + hashlib.sha256(ids.encode()).hexdigest()[:32]

    async def create_or_rejoin(
        self, client: SignalClient, instance: str
    ) -> tuple[schema.SessionCreated | schema.SessionJoined, ShareCode, str]:
        """The session (rejoined, or a new one), its code, and our reconnect key."""
        sealed = self.store.ticket(self.name)
        saved = crypto.open_ticket(self.key, self.name, sealed) if sealed else None
        if saved is not None:
            with contextlib.suppress(SignalError, ValueError, KeyError, BadCode):
                fields = json.loads(saved)
                code = parse_code(fields["code"])
                key = str(fields["reconnectKey"])
                rejoined = await client.rejoin(code.session_id, "a", key, instance, runs=True)
                return rejoined, code, key
        created = await client.create(access="code", instance=instance, runs=True)
        code = new_code(created.sessionId)
        data = json.dumps({"code": str(code), "reconnectKey": created.reconnectKey}).encode()
        self.store.save_ticket(
            self.name, crypto.seal_ticket(self.key, self.name, data), time.time()
        )
        return created, code, created.reconnectKey

    def drop(self) -> None:
        with contextlib.suppress(StateError):
            self.store.drop_ticket(self.name)


async def _send(
    client: SignalClient,
    created: schema.SessionCreated | schema.SessionJoined,
    membership: Membership,
    code: ShareCode,
    sources: list[Source],
    summary: Summary,
    ticket: _SendTicket,
    events: Events,
    options: Options,
) -> None:
    inbox = Inbox(client, membership, events, Backoff(options.give_up_after))
    inbox.admitted(created)
    given = ice.ServerCredentials(created.iceServers)  # STUN only: TURN once the peer is in
    sender: Sender | None = None
    side: SendSide | None = None
    paused = False
    try:
        for _ in range(options.reconnects + 1):
            await inbox.wait_for_peer(options.wait_for_peer)
            arrivals = inbox.arrivals
            try:
                peer, keys = await _authenticate(
                    inbox,
                    "sender",
                    created.sessionId,
                    code.secret,
                    given,
                    events,
                    options,
                )
            except ConnectionError:
                if inbox.arrivals == arrivals:
                    raise
                continue  # the receiver restarted mid-authentication: again, with its new run
            key_for = _key_for(keys)
            if sender is None:
                sender = Sender([s.manifest for s in sources], key_for)
                side = SendSide(sender, sources, events, options.stall_seconds)
            else:
                sender.rekey(key_for)
            assert side is not None
            if await _send_round(peer, given, side, inbox, arrivals, events, options):
                break
        else:
            raise ConnectionError("the receiver kept going away")
        events.emit(
            "done",
            files=summary.files,
            dirs=summary.dirs,
            bytes=sender.total_bytes,
            chunks=sum(s.manifest.chunkCount for s in sources),
            chunksSent=sender.chunks_sent,
        )
    except asyncio.CancelledError as cancel:
        stopped = Interrupted.on(cancel, "sender", created.graceSeconds)
        paused = await _pause_or_stop(inbox, stopped)
        raise stopped from None
    except Exception as exc:
        await _tell_peer(inbox.client, exc)
        raise
    finally:
        if side is not None:
            side.close()
        if not paused:
            ticket.drop()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(PAUSE_NOTICE_SECONDS):
                    await inbox.client.leave()  # ends the session: nobody may retry
        await inbox.close()


def _hashing_events(events: Events) -> Hashed:
    """`hashing` events from the hashing thread, at most one per HASH_REPORT_SECONDS."""
    last = 0.0

    def hashed(name: str, done: int, size: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= HASH_REPORT_SECONDS:
            last = now
            events.emit("hashing", name=name, done=done, size=size)

    return hashed


async def _send_round(
    peer: Peer,
    given: ice.ServerCredentials,
    side: SendSide,
    inbox: Inbox,
    arrivals: int,
    events: Events,
    options: Options,
) -> bool:
    """One authentication round; False when the receiver left and may come back."""

    async def peer_gone() -> None:
        # Not on its absence alone: a receiver whose signaling blips keeps its data channel.
        await inbox.until(lambda: inbox.left_for_good or inbox.arrivals != arrivals, None)
        raise PeerGone("the receiver left; waiting for it to come back")

    try:
        await _epochs(
            peer, given, events, options, lambda link: side.run(link.pipe), peer_gone, peer_gone
        )
    except PeerGone as exc:
        events.emit("reconnecting", reason=str(exc), attempt=0)
        return False
    return True


def _key_for(keys: SessionKeys) -> Callable[[bytes], bytes]:
    return lambda file_id: keys.file_key("sender", file_id)


async def receive(
    code_text: str, out_dir: Path, overwrite: bool, events: Events, options: Options
) -> list[Path]:
    code = parse_code(code_text)
    server = code.server or options.server
    with TransferStore(options.state_path) as store:
        await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
        rejoining = store.ticket(code.session_id) is not None  # its files received stay so
        await asyncio.to_thread(store.cleanup, STATE_MAX_AGE, time.time(), out_dir, rejoining)
        ticket_key = install_key(options.state_path.parent)
        instance = secrets.token_urlsafe(16)
        async with await SignalClient.connect(routed(server, code.session_id)) as client:
            joined, key = await _join_or_rejoin(
                client, store, code.session_id, ticket_key + code.secret, instance
            )
            membership = Membership(server, code.session_id, joined.peerId, key, instance)
            inbox = Inbox(client, membership, events, Backoff(options.give_up_after))
            inbox.admitted(joined)
            given = ice.ServerCredentials(joined.iceServers)
            paused = False
            try:
                got = await _receive_rounds(
                    inbox, given, code, store, out_dir, overwrite, events, options
                )
                store.drop_ticket(code.session_id)
                events.emit(
                    "done",
                    files=len(got.saved),
                    dirs=got.dirs,
                    bytes=got.bytes,
                    failed=got.failed,
                )
                if got.failed:
                    raise TransferError(
                        "verify_failed",
                        f"{got.failed} file(s) did not arrive intact (checksum mismatch)",
                    )
                return got.saved
            except asyncio.CancelledError as cancel:
                stopped = Interrupted.on(cancel, "receiver", joined.graceSeconds)
                paused = await _pause_or_stop(inbox, stopped)
                raise stopped from None
            except Exception as exc:
                await _tell_peer(inbox.client, exc)
                with contextlib.suppress(StateError):  # e.g. its disk is full: said already
                    store.drop_ticket(code.session_id)  # a failed transfer is not rejoined
                raise
            finally:
                if not paused:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(PAUSE_NOTICE_SECONDS):
                            await inbox.client.leave()
                await inbox.close()


@dataclass
class _Received:
    saved: list[Path] = field(default_factory=list)
    dirs: int = 0
    bytes: int = 0
    failed: int = 0


async def _receive_rounds(
    inbox: Inbox,
    given: ice.ServerCredentials,
    code: ShareCode,
    store: TransferStore,
    out_dir: Path,
    overwrite: bool,
    events: Events,
    options: Options,
) -> _Received:
    """Authentication rounds until the transfer is done: a sender that restarts (interrupted,
    then the same command again) comes back into the session with a new process, so a new
    round with new keys takes the transfer up from what the state database holds."""
    got = _Received()
    accepted: list[bool] = []  # once: a restarted sender's offer is the one accepted before
    for _ in range(options.reconnects + 1):
        arrivals = inbox.arrivals
        try:
            peer, keys = await _authenticate(
                inbox, "receiver", code.session_id, code.secret, given, events, options
            )
        except ConnectionError:
            if inbox.arrivals == arrivals:
                raise
            continue  # the sender restarted mid-authentication: again, with its new run
        receiver = Receiver(_key_for(keys))
        approve = functools.partial(_approve, options, keys.sas, out_dir, accepted)
        side = ReceiveSide(
            receiver, store, out_dir, overwrite, events, options.stall_seconds, approve
        )
        try:
            await _epochs(
                peer,
                given,
                events,
                options,
                side.run_link,
                functools.partial(_new_offer, inbox, arrivals),
                functools.partial(_sender_restarted, inbox, arrivals),
            )
        except PeerGone as exc:
            events.emit("reconnecting", reason=str(exc), attempt=0)
            continue
        finally:
            side.close()
            got.saved += [p for p in side.saved if p not in got.saved]  # a new round's too
            got.dirs = max(got.dirs, side.dirs)
            got.bytes = max(got.bytes, receiver.bytes_received)  # a round counts what it holds
        got.failed = len(receiver.failed)
        return got
    raise ConnectionError("the sender kept going away")


async def _approve(
    options: Options, sas: str, out_dir: Path, accepted: list[bool], summary: Summary
) -> None:
    if accepted:
        return
    receive = f"Receive {summary.counts()} into {out_dir}?"
    if options.ask is not None:  # --verify: one question for both
        await _confirm(options, f"Do both sides show '{sas}'? {receive}")
    elif options.accept is not None and not await options.accept(receive):
        raise Declined
    accepted.append(True)


async def _sender_restarted(inbox: Inbox, arrivals: int) -> None:
    await inbox.until(lambda: inbox.arrivals != arrivals, None)
    raise PeerGone("the sender restarted; taking the transfer up again")


async def _new_offer(inbox: Inbox, arrivals: int) -> None:
    """A new offer (the sender's link dropped) is a new connection in this round; a restarted
    sender is a new round."""
    await inbox.until(lambda: inbox.has("offer") or inbox.arrivals != arrivals, None)
    if inbox.arrivals != arrivals:
        raise PeerGone("the sender restarted; taking the transfer up again")
    raise ConnectionError("the sender reconnected")


async def _pause_or_stop(inbox: Inbox, stopped: Interrupted) -> bool:
    """A pause keeps our place in the session (no leave) and our ticket for the grace period,
    and tells the peer to wait; a stop tells it why. Returns whether we paused."""
    if stopped.resumable_for > 0:
        await _last_word(inbox.client, {"kind": "pause", "seconds": stopped.resumable_for})
        return True
    await _tell_peer(inbox.client, stopped)
    return False


async def _tell_peer(client: SignalClient, exc: Exception) -> None:
    """Say why we stop before leaving, so the peer reports the cause, not just our absence.
    (Errors of the peer's own making it knows already; nothing secret is in these messages.)"""
    if isinstance(exc, PeerStopped | SessionEnded) or getattr(exc, "from_peer", False):
        return
    code = getattr(exc, "code", None) or type(exc).__name__
    await _last_word(client, {"kind": "abort", "code": str(code)[:64], "message": str(exc)[:300]})


async def _last_word(client: SignalClient, payload: dict[str, object]) -> None:
    """Relay `payload` before we close: the ping's reply says the server handled it (a close
    right behind a relay could otherwise overtake it). Bounded: we are on our way out."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(PAUSE_NOTICE_SECONDS):
            await client.relay("signal", payload)
            await client.ping()


async def _join_or_rejoin(
    client: SignalClient, store: TransferStore, session_id: str, secret: bytes, instance: str
) -> tuple[schema.SessionJoined, str]:
    """A receiver restarted with the same code takes its old place back with its ticket;
    `secret` is this installation's ticket key and the code, so a copy of the state database
    and the code together still do not open it. Returns the reply and the reconnect key."""
    sealed = store.ticket(session_id)
    ticket = crypto.open_ticket(secret, session_id, sealed) if sealed else None
    if ticket is not None:
        saved = json.loads(ticket)
        with contextlib.suppress(SignalError):
            key = saved["reconnectKey"]
            return await client.rejoin(session_id, saved["peerId"], key, instance, runs=True), key
    joined = await client.join(session_id, instance=instance, runs=True)
    data = json.dumps({"peerId": joined.peerId, "reconnectKey": joined.reconnectKey}).encode()
    store.save_ticket(session_id, crypto.seal_ticket(secret, session_id, data), time.time())
    return joined, joined.reconnectKey
