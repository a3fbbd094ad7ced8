"""A whole send or receive: session, authentication, connection epochs, the transfer, cleanup.

A dropped peer connection (aiortc cannot restart ICE) is replaced by a new one in a new epoch,
authenticated again under the session key; the protocol then sends only what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fileshare.code import ShareCode, new_code, parse_code
from fileshare.crypto import SessionKeys
from fileshare.peer import Inbox, Link, Peer, describe_path
from fileshare.protocol import Receiver, Sender
from fileshare.signal_client import SignalClient
from fileshare.state import TransferStore, default_state_path
from fileshare.transfer import Events, ReceiveSide, SendSide, Source, collect_sources

ConfirmSas = Callable[[str], Awaitable[bool]]


@dataclass
class Options:
    server: str
    timeout: float = 60.0
    wait_for_peer: float = 3600.0
    reconnects: int = 5
    confirm_sas: ConfirmSas | None = None
    state_path: Path = field(default_factory=default_state_path)


class Refused(Exception):
    """The user did not confirm the authentication words."""


async def _authenticate(peer: Peer, events: Events, options: Options) -> SessionKeys:
    keys = await peer.authenticate()
    events.emit("sas", words=keys.sas)
    if options.confirm_sas is not None and not await options.confirm_sas(keys.sas):
        raise Refused("the authentication words were not confirmed")
    return keys


async def _epochs(
    peer: Peer, events: Events, options: Options, run: Callable[[Link], Awaitable[None]]
) -> None:
    """Connect, run, and on a dropped link connect again (up to options.reconnects times)."""
    for attempt in range(options.reconnects + 1):
        link = await peer.connect()
        events.emit("connected", epoch=link.epoch, path=describe_path(link.pc))
        try:
            await run(link)
            return
        except ConnectionError as exc:
            if attempt == options.reconnects:
                raise
            events.emit("reconnecting", reason=str(exc), attempt=attempt + 1)
        finally:
            await link.close()


async def send(paths: list[Path], events: Events, options: Options) -> None:
    sources: list[Source] = await asyncio.to_thread(collect_sources, paths)
    events.emit("prepared", files=len(sources), bytes=sum(s.manifest.size for s in sources))
    async with await SignalClient.connect(options.server) as client:
        created = await client.create(access="code")
        code = new_code(created.sessionId)
        events.emit("code", code=str(code), link=code.link(options.server))
        inbox = Inbox(client)
        try:
            await inbox.wait_for_peer(options.wait_for_peer)
            peer = Peer(
                "sender", inbox, created.sessionId, code.secret, created.iceServers, options.timeout
            )
            keys = await _authenticate(peer, events, options)
            sender = Sender([s.manifest for s in sources], lambda fid: keys.file_key("sender", fid))
            side = SendSide(sender, sources, events)
            try:
                await _epochs(peer, events, options, lambda link: side.run(link.channel))
            finally:
                side.close()
            events.emit("done", files=len(sources), bytes=sender.total_bytes)
        finally:
            with contextlib.suppress(Exception):
                await client.leave()  # ends the session: after a failure nobody may retry


async def receive(
    code_text: str, out_dir: Path, overwrite: bool, events: Events, options: Options
) -> list[Path]:
    code: ShareCode = parse_code(code_text)
    server = code.server or options.server
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    async with await SignalClient.connect(server) as client:
        joined = await client.join(code.session_id)
        inbox = Inbox(client)
        inbox.peer_present = joined.peerPresent
        try:
            peer = Peer(
                "receiver", inbox, code.session_id, code.secret, joined.iceServers, options.timeout
            )
            keys = await _authenticate(peer, events, options)
            receiver = Receiver(lambda fid: keys.file_key("sender", fid))
            with TransferStore(options.state_path) as store:
                side = ReceiveSide(receiver, store, out_dir, overwrite, events)
                try:
                    await _epochs(peer, events, options, lambda link: side.run(link.channel))
                finally:
                    side.close()
            events.emit(
                "done",
                files=len(side.saved),
                bytes=receiver.bytes_received,
                failed=len(receiver.failed),
            )
            return side.saved
        finally:
            with contextlib.suppress(Exception):
                await client.leave()
