"""The ceiling the benchmark compares the signaling server with: a bare aiohttp WebSocket echo
server, on uvloop and with the same WebSocket settings, that does nothing but send each frame
back. Prints its port as a JSON line, runs until SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import uvloop
from aiohttp import WSMsgType, web


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(
        heartbeat=20.0, max_msg_size=262144, compress=False, decode_text=False
    )
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_frame(msg.data, WSMsgType.TEXT)
    return ws


async def serve() -> None:
    app = web.Application()
    app.router.add_get("/ws", echo)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(json.dumps({"event": "listening", "port": runner.addresses[0][1]}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    uvloop.run(serve())
    sys.exit(0)
