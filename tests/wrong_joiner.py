"""A joiner with a wrong code, built from the client's own modules: it joins the session, sends
an honest-looking PAKE hello, and prints (as JSON lines) every frame the server delivers to it
for a few seconds. `python -m tests.wrong_joiner SERVER_URL SESSION_ID SECONDS`"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import msgspec

from fileshare import crypto
from fileshare.signal_client import SignalClient


async def main(url: str, session_id: str, seconds: float) -> None:
    async with await SignalClient.connect(url) as client:
        await client.join(session_id)
        handshake = crypto.Handshake("receiver", os.urandom(3), session_id)
        await client.relay("signal", handshake.hello())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    event = await client.next_event(timeout=seconds)
                    print(msgspec.json.encode(event).decode(), flush=True)


if __name__ == "__main__":
    with contextlib.suppress(Exception):
        asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
