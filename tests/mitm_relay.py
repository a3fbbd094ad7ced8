"""A hostile signaling relay for tests: it sits between the clients and the real server and
rewrites the handshake the way a compromised server could.

    python -m tests.mitm_relay --upstream ws://127.0.0.1:PORT/ws --mode swap-key|swap-fingerprint

It prints {"port": N} once it listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import sys
from typing import Any

from aiohttp import ClientSession, WSMsgType, web


def tamper(frame: str, mode: str) -> str:
    message: dict[str, Any] = json.loads(frame)
    payload = message.get("payload")
    if not isinstance(payload, dict):
        return frame
    if mode == "swap-key" and payload.get("kind") == "hello":
        payload["x25519"] = base64.b64encode(os.urandom(32)).decode()
    elif mode == "swap-fingerprint" and message.get("type") in ("offer", "answer"):
        payload["sdp"] = re.sub(
            r"(a=fingerprint:\S+ )([0-9A-F])",
            lambda m: m[1] + ("0" if m[2] != "0" else "1"),
            str(payload.get("sdp", "")),
        )
    return json.dumps(message)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--mode", choices=["swap-key", "swap-fingerprint"], required=True)
    args = parser.parse_args()
    http = ClientSession()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        client = web.WebSocketResponse()
        await client.prepare(request)
        async with http.ws_connect(args.upstream) as server:

            async def down() -> None:
                async for msg in server:
                    if msg.type == WSMsgType.TEXT:
                        await client.send_str(tamper(msg.data, args.mode))

            task = asyncio.create_task(down())
            async for msg in client:
                if msg.type == WSMsgType.TEXT:
                    await server.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await server.send_bytes(msg.data)
            task.cancel()
        return client

    app = web.Application()
    app.router.add_get("/ws", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
