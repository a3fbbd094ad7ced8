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
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from fileshare import crypto, ice, netwatch
from fileshare.code import new_code, parse_code
from fileshare.crypto import SessionKeys
from fileshare.names import human_size
from fileshare.peer import Inbox, Link, Membership, Peer, PeerStopped, SessionEnded
from fileshare.protocol import Receiver, Sender, TransferError
from fileshare.reconnect import DEFAULT_GIVE_UP_SECONDS, Backoff
from fileshare.signal_client import ConnectionClosed, SignalClient, SignalError
from fileshare.state import TransferStore, default_state_path, install_key
from fileshare.transfer import CHUNK_SIZE, Events, ReceiveSide, SendSide, collect_sources
from fsproto import schema

T = TypeVar("T")
Ask = Callable[[str], Awaitable[bool]]  # a yes/no question to the user
STATE_MAX_AGE: Final = 7 * 86400.0
WORK_GRACE_SECONDS: Final = 1.0
RETRY_PAUSE_SECONDS: Final = 0.5


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
    state_path: Path = field(default_factory=default_state_path)


class Refused(Exception):
    """The user did not confirm the authentication words."""


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
    await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
    if not work_task.done():  # a failing transfer may be telling the peer why: let it finish
        await asyncio.wait({work_task}, timeout=WORK_GRACE_SECONDS)
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
    network the link was built on (AddressLost: reconnect to the signaling server at once, tell
    the peer, then a new peer connection), or the peer says it did ("moved")."""

    async def moved() -> None:
        try:
            await netwatch.address_lost(link.host_addresses())
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
    sources = await asyncio.to_thread(collect_sources, paths, options.chunk_size)
    events.emit("prepared", files=len(sources), bytes=sum(s.manifest.size for s in sources))
    instance = secrets.token_urlsafe(16)
    async with await SignalClient.connect(options.server) as client:
        created = await client.create(access="code", instance=instance)
        code = new_code(created.sessionId)
        events.emit("code", code=str(code), link=code.link(options.server))
        membership = Membership(
            options.server, created.sessionId, created.peerId, created.reconnectKey, instance
        )
        inbox = Inbox(client, membership, events, Backoff(options.give_up_after))
        given = ice.ServerCredentials(created.iceServers)  # STUN only: TURN once the peer is in
        sender: Sender | None = None
        side: SendSide | None = None
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
                files=len(sources),
                bytes=sender.total_bytes,
                chunks=sum(s.manifest.chunkCount for s in sources),
                chunksSent=sender.chunks_sent,
            )
        except Exception as exc:
            await _tell_peer(inbox.client, exc)
            raise
        finally:
            if side is not None:
                side.close()
            with contextlib.suppress(Exception):
                await inbox.client.leave()  # ends the session: after a failure nobody may retry
            await inbox.close()


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
        await asyncio.to_thread(store.cleanup, STATE_MAX_AGE, time.time(), out_dir)
        ticket_key = install_key(options.state_path.parent)
        instance = secrets.token_urlsafe(16)
        async with await SignalClient.connect(server) as client:
            joined, key = await _join_or_rejoin(
                client, store, code.session_id, ticket_key + code.secret, instance
            )
            membership = Membership(server, code.session_id, joined.peerId, key, instance)
            inbox = Inbox(client, membership, events, Backoff(options.give_up_after))
            inbox.peer_present = joined.peerPresent
            given = ice.ServerCredentials(joined.iceServers)
            try:
                peer, keys = await _authenticate(
                    inbox,
                    "receiver",
                    code.session_id,
                    code.secret,
                    given,
                    events,
                    options,
                )
                receiver = Receiver(_key_for(keys))

                async def approve(count: int, total: int) -> None:
                    await _confirm(
                        options,
                        f"Do both sides show '{keys.sas}'? "
                        f"Receive {count} item(s), {human_size(total)}?",
                    )

                side = ReceiveSide(
                    receiver, store, out_dir, overwrite, events, options.stall_seconds, approve
                )

                async def new_offer() -> None:
                    await inbox.until(lambda: inbox.has("offer"), None)
                    raise ConnectionError("the sender reconnected")

                try:
                    await _epochs(
                        peer, given, events, options, lambda link: side.run(link.pipe), new_offer
                    )
                finally:
                    side.close()
                store.drop_ticket(code.session_id)
                events.emit(
                    "done",
                    files=len(side.saved),
                    bytes=receiver.bytes_received,
                    failed=len(receiver.failed),
                )
                if receiver.failed:
                    raise TransferError(
                        "verify_failed",
                        f"{len(receiver.failed)} file(s) did not arrive intact (checksum mismatch)",
                    )
                return side.saved
            except Exception as exc:
                store.drop_ticket(code.session_id)  # a failed transfer is not rejoined
                await _tell_peer(inbox.client, exc)
                raise
            finally:
                with contextlib.suppress(Exception):
                    await inbox.client.leave()
                await inbox.close()


async def _tell_peer(client: SignalClient, exc: Exception) -> None:
    """Say why we stop before leaving, so the peer reports the cause, not just our absence.
    (Errors of the peer's own making it knows already; nothing secret is in these messages.)"""
    if isinstance(exc, PeerStopped | SessionEnded) or getattr(exc, "from_peer", False):
        return
    code = getattr(exc, "code", None) or type(exc).__name__
    with contextlib.suppress(Exception):
        await client.relay(
            "signal", {"kind": "abort", "code": str(code)[:64], "message": str(exc)[:300]}
        )


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
            return await client.rejoin(session_id, saved["peerId"], key, instance), key
    joined = await client.join(session_id, instance=instance)
    data = json.dumps({"peerId": joined.peerId, "reconnectKey": joined.reconnectKey}).encode()
    store.save_ticket(session_id, crypto.seal_ticket(secret, session_id, data), time.time())
    return joined, joined.reconnectKey
