"""The web app (built from web/ by `make web` into signaling/webapp/), served by the signaling
server itself, so the page and /ws share one origin and one deploy serves both.

The files are read once at start (about 120 KB). Content-hashed assets are immutable; the page,
the service worker and the manifest are revalidated on every load, so a deploy shows at once.
Every answer carries a Content-Security-Policy that allows this origin's scripts only (no
inline script) and connections to this origin only.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from typing import Final

from aiohttp import web

WEBAPP: Final = Path(__file__).resolve().parent / "webapp"
CSP: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "worker-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"
_ASSET: Final = re.compile(r"^[a-z0-9-]+\.[0-9a-f]{16}\.(?:js|css|png)$")
_TYPES: Final = {".webmanifest": "application/manifest+json", ".js": "text/javascript"}


def _content_type(path: Path) -> str:
    return (
        _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )


class Pages:
    """GET routes for the built web app; a clear 503 on "/" when it was not built."""

    def __init__(self, root: Path = WEBAPP) -> None:
        self._files: dict[str, tuple[bytes, str, str]] = {}
        if not (root / "index.html").is_file():
            return
        for name in ("index.html", "sw.js", "manifest.webmanifest"):
            path = root / name
            url = "/" if name == "index.html" else f"/{name}"
            self._files[url] = (path.read_bytes(), _content_type(path), REVALIDATE)
        for path in sorted((root / "assets").iterdir()):
            if _ASSET.match(path.name):
                self._files[f"/assets/{path.name}"] = (
                    path.read_bytes(),
                    _content_type(path),
                    IMMUTABLE,
                )

    def add_routes(self, app: web.Application) -> None:
        for url in ("/", "/sw.js", "/manifest.webmanifest"):
            app.router.add_get(url, self.handle)
        app.router.add_get("/assets/{name}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        found = self._files.get(request.path)
        if found is None:
            if request.path == "/":
                return web.Response(status=503, text="the web app is not built here (make web)\n")
            raise web.HTTPNotFound(headers=SECURITY_HEADERS)
        body, content_type, cache = found
        return web.Response(
            body=body,
            content_type=content_type,
            headers={**SECURITY_HEADERS, "Cache-Control": cache},
        )
