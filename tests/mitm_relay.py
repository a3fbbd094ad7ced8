"""A hostile signaling relay for tests: it sits between the clients and the real server and
rewrites the conversation the way a compromised server could.

    python -m tests.mitm_relay --upstream ws://127.0.0.1:PORT/ws

A client connects to /ws/MODE; one relay serves every mode, so cases can run side by side.

- swap-key: the X25519 key in every hello is replaced;
- tamper-sdp: one character of every sealed offer and answer is changed;
- garbage-pake: the receiver's PAKE message reaches the sender as a point not on the curve;
- reflect-hello: each client's hello comes back to itself instead of reaching the peer;
- replay-confirm: each client's key confirmation also comes back to itself, first;
- drop-confirm: no key confirmation is delivered;
- inject-abort: an `abort` full of terminal escapes is injected to both peers once they meet;
- inject-error: a server `error` full of terminal escapes is sent instead of `peer_joined`;
- frame-garbage, frame-wrong-type, frame-wrong-reply, frame-oversized: the reply to a client's
  first request (session_created, session_joined) becomes bytes that are not JSON, a message
  whose fields have the wrong types, a valid message of another type (pong), or a 32 MiB frame
  (compressible, so also a deflate bomb);
- huge-text: that reply becomes an `error` whose message is 100,000 characters of escapes
  (160 kB: under the client's frame limit, so it must be shown cut short);
- hold-hello: the first hello relayed to the joining peer (b) of a session is kept from it,
  and delivered to b's next connection (b killed and run again: a rejoin from a new run) right
  after its rejoin is answered: a hello relayed just before the peer restarted, reaching its
  new run (it is for the run that is over, and must not be taken for the PAKE);
- pass: nothing is changed; with GET /_blip, every client connection open then is closed (a
  signaling blip: the client connects again, the relay serves it anew).

With --page-mode MODE, /ws is relayed in that mode and every other GET is fetched from the
upstream server as is, so a browser that loads the web app from the relay signals through it
(the page's /ws is on its own origin).

It prints {"port": N} once it listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from typing import Any

from aiohttp import ClientSession, WSMsgType, web

MODES = (
    "swap-key",
    "tamper-sdp",
    "garbage-pake",
    "reflect-hello",
    "replay-confirm",
    "drop-confirm",
    "inject-abort",
    "inject-error",
    "frame-garbage",
    "frame-wrong-type",
    "frame-wrong-reply",
    "frame-oversized",
    "huge-text",
    "hold-hello",
    "pass",
)
# A SPAKE2 message for side A that is not a point on the curve (spake2 raises NotOnCurve).
NOT_ON_CURVE = bytes.fromhex("42388cc390cdce2745d9dc2927044c13bb5b4962cd334667125df390fac7c5d3d3")
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x9b\u202egpj.exe\u2067[link=mailto:x]y[/link]"
FAKE_PEER = "a"  # relayed frames name a peer slot
OVERSIZED_BYTES = 32 * 2**20
FIRST_REPLIES = ("session_created", "session_joined")


def _broken_reply(message: dict[str, Any], mode: str) -> str:
    """What frame-* and huge-text modes send instead of the reply `message`."""
    if mode == "frame-garbage":
        return "\x00\x1b[2J{not json"
    if mode == "frame-wrong-type":
        return json.dumps({**message, "sessionId": 12345, "iceServers": "\x1b]0;pwned\x07"})
    if mode == "frame-wrong-reply":
        return json.dumps({"v": 1, "type": "pong", **_re(message)})
    if mode == "frame-oversized":
        return json.dumps({**message, "pad": "A" * OVERSIZED_BYTES})
    text = HOSTILE * (100_000 // len(HOSTILE))  # 160 kB as JSON
    return json.dumps(
        {"v": 1, "type": "error", "code": "internal", "message": text, **_re(message)}
    )


def _re(message: dict[str, Any]) -> dict[str, Any]:
    return {"re": message["re"]} if "re" in message else {}


def _kind(message: dict[str, Any]) -> str:
    payload = message.get("payload")
    return str(payload.get("kind", "")) if isinstance(payload, dict) else ""


def _pake_side(payload: Any) -> bytes:
    return base64.b64decode(str(payload.get("pake", "")))[:1]


def downstream(frame: str, mode: str) -> list[str]:
    """What the client gets for one frame from the server."""
    message: dict[str, Any] = json.loads(frame)
    payload = message.get("payload")
    kind = _kind(message)
    if mode == "swap-key" and kind == "hello":
        payload["x25519"] = base64.b64encode(os.urandom(32)).decode()  # type: ignore[index]
    elif mode == "tamper-sdp" and message.get("type") in ("offer", "answer"):
        sealed = str(payload.get("sealed", ""))  # type: ignore[union-attr]
        payload["sealed"] = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]  # type: ignore[index]
    elif mode == "garbage-pake" and kind == "hello" and _pake_side(payload) == b"B":
        payload["pake"] = base64.b64encode(NOT_ON_CURVE).decode()  # type: ignore[index]
    elif mode in ("reflect-hello", "replay-confirm", "drop-confirm"):
        if {"reflect-hello": "hello", "drop-confirm": "confirm"}.get(mode) == kind:
            return []
    elif mode == "inject-abort" and message.get("type") in ("peer_joined", "session_joined"):
        abort = {"kind": "abort", "code": HOSTILE[:40], "message": HOSTILE}
        relayed = {"v": 1, "type": "signal", "peerId": FAKE_PEER, "payload": abort}
        return [json.dumps(message), json.dumps(relayed)]
    elif mode.startswith("frame-") or mode == "huge-text":
        if message.get("type") in FIRST_REPLIES:
            return [_broken_reply(message, mode)]
    elif mode == "inject-error" and message.get("type") == "peer_joined":
        return [json.dumps({"v": 1, "type": "error", "code": "internal", "message": HOSTILE})]
    return [json.dumps(message)]


class HeldHellos:
    """hold-hello's memory across connections, by session: the hello kept from peer b (None
    once delivered: one per session)."""

    def __init__(self) -> None:
        self.held: dict[str, str | None] = {}

    def downstream(self, frame: str, place: dict[str, str]) -> list[str]:
        """What a client gets for one frame; `place` is its connection's session, once b's."""
        message: dict[str, Any] = json.loads(frame)
        if message.get("type") in FIRST_REPLIES and message.get("peerId") == "b":
            session = place["session"] = str(message.get("sessionId"))
            late = self.held.get(session)
            if late is None:
                return [frame]
            self.held[session] = None
            return [frame, late]
        ours = place.get("session")
        if ours is not None and ours not in self.held and _kind(message) == "hello":
            self.held[ours] = frame
            return []
        return [frame]


def reflected(frame: str, mode: str) -> list[str]:
    """Frames sent back to the client that sent `frame` upstream."""
    message: dict[str, Any] = json.loads(frame)
    wanted = {"reflect-hello": "hello", "replay-confirm": "confirm"}.get(mode)
    if wanted is None or _kind(message) != wanted:
        return []
    relayed = {"v": 1, "type": "signal", "peerId": FAKE_PEER, "payload": message["payload"]}
    return [json.dumps(relayed)]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--page-mode", choices=MODES)
    args = parser.parse_args()
    http = ClientSession()
    clients: set[web.WebSocketResponse] = set()
    hellos = HeldHellos()

    async def blip(request: web.Request) -> web.Response:
        for client in list(clients):
            await client.close()
        return web.Response(text=str(len(clients)))

    async def handle(request: web.Request) -> web.WebSocketResponse:
        mode = request.match_info.get("mode", args.page_mode)
        if mode not in MODES:
            raise web.HTTPNotFound()
        client = web.WebSocketResponse()
        await client.prepare(request)
        clients.add(client)
        place: dict[str, str] = {}
        async with http.ws_connect(args.upstream) as server:

            async def down() -> None:
                async for msg in server:
                    if msg.type == WSMsgType.TEXT:
                        if mode == "hold-hello":
                            outs = hellos.downstream(msg.data, place)
                        else:
                            outs = downstream(msg.data, mode)
                        for out in outs:
                            await client.send_str(out)

            task = asyncio.create_task(down())
            async for msg in client:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    text = msg.data if msg.type == WSMsgType.TEXT else msg.data.decode()
                    for back in reflected(text, mode):
                        await client.send_str(back)
                    if msg.type == WSMsgType.TEXT:
                        await server.send_str(msg.data)
                    else:
                        await server.send_bytes(msg.data)
            task.cancel()
        clients.discard(client)
        return client

    async def page(request: web.Request) -> web.Response:
        base = args.upstream.replace("ws", "http", 1).rsplit("/ws", 1)[0]
        async with http.get(base + request.rel_url.raw_path_qs) as resp:
            kept = ("Content-Type", "Content-Security-Policy", "Cache-Control")
            headers = {k: resp.headers[k] for k in kept if k in resp.headers}
            return web.Response(status=resp.status, body=await resp.read(), headers=headers)

    app = web.Application()
    app.router.add_get("/ws/{mode}", handle)
    app.router.add_get("/_blip", blip)
    if args.page_mode:  # the web app's own /ws, with the mode given at start
        app.router.add_get("/ws", handle)
        app.router.add_get("/{path:.*}", page)
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
