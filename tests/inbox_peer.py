"""A peer that only holds its place in a session, built from the client's own modules: it
joins, then lets fileshare.peer.Inbox keep it there (reconnecting and rejoining when the
server drops it), and prints the client's JSON events (`joined`, `reconnecting`,
`signaling_restored`) until it is stopped or the session ends.
`python -m tests.inbox_peer SERVER_URL SESSION_ID TOKEN`"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys

from fileshare.cli import JsonEvents
from fileshare.peer import Inbox, Membership, SessionEnded
from fileshare.signal_client import SignalClient


async def main(url: str, session_id: str, token: str) -> None:
    instance = secrets.token_urlsafe(8)
    client = await SignalClient.connect(url)
    joined = await client.join(session_id, token, instance)
    events = JsonEvents()
    membership = Membership(url, session_id, joined.peerId, joined.reconnectKey, instance)
    inbox = Inbox(client, membership, events)
    inbox.peer_present = joined.peerPresent
    events.emit("joined", peer=joined.peerId)
    with contextlib.suppress(SessionEnded):
        await inbox.until(lambda: False, None)
    await inbox.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
