"""The signaling server serves the web app on its own origin: hashed assets immutable, the page
revalidated, a strict Content-Security-Policy, Subresource Integrity on the bundle, and the
page's path "/" still upgrades to the signaling WebSocket."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import aiohttp
import aiohttp.web

from signaling.pages import IMMUTABLE, Pages
from tests.conftest import RunningServer, require_webapp
from tests.rawws import RawWebSocket
from tests.test_websocket import PING


async def get(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_the_page_its_bundle_and_their_headers(server: RunningServer) -> None:
    require_webapp()
    status, headers, body = await get(server.http + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-cache"
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp
    html = body.decode()
    scripts = re.findall(r"<script\b([^>]*)>", html)
    assert scripts and all("src=" in attrs for attrs in scripts)  # no inline script
    assert "http://" not in html and "https://" not in html  # no third-party request
    for path, integrity in re.findall(r'(?:src|href)="(/assets/[^"]+)" integrity="([^"]+)"', html):
        status, headers, asset = await get(server.http + path)
        assert status == 200 and headers["Cache-Control"] == IMMUTABLE
        algorithm, _, expected = integrity.partition("-")
        assert algorithm == "sha384"
        assert base64.b64decode(expected) == hashlib.sha384(asset).digest()
    for path in ("/sw.js", "/manifest.webmanifest"):
        status, headers, _ = await get(server.http + path)
        assert status == 200 and headers["Cache-Control"] == "no-cache"


async def test_unknown_paths_are_not_found(server: RunningServer) -> None:
    for path in ("/assets/nothing.0123456789abcdef.js", "/assets/..%2Fpages.py", "/index.html"):
        status, _, _ = await get(server.http + path)
        assert status == 404


async def test_the_page_path_still_upgrades_to_the_websocket(server: RunningServer) -> None:
    raw = await RawWebSocket.connect(server.port, path="/")
    await raw.send(PING)
    assert b"pong" in (await raw.recv_frame())[1]
    raw.abort()


async def test_not_built_says_so(tmp_path: Path) -> None:
    app = aiohttp.web.Application()
    Pages(tmp_path).add_routes(app)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        status, _, body = await get(f"http://127.0.0.1:{port}/")
        assert status == 503 and b"make web" in body
    finally:
        await runner.cleanup()
