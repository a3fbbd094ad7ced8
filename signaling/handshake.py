"""The WebSocket opening handshake (RFC 6455 section 4.2), server side and sans-I/O: a request
head in; the 101 answer, or the HTTP refusal that says what is wrong, out."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD: Final = 16384  # request line and headers; a longer head is refused
MAX_HEADERS: Final = 100
END_OF_HEAD: Final = b"\r\n\r\n"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: methods, header names
_HTTP_1 = re.compile(rb"HTTP/1\.[0-9]")
_FORBIDDEN_IN_VALUE = re.compile(rb"[\x00\r\n]")
_TARGET = re.compile(rb"[\x21-\x7e]+")  # visible ASCII


@dataclass(frozen=True, slots=True)
class RequestLine:
    method: str
    target: str
    minor_version: int  # HTTP/1.x

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


def request_line(line: bytes) -> RequestLine | None:
    """The first line of a head; None if it is no HTTP/1.x request line."""
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _HTTP_1.fullmatch(parts[2]):
        return None
    if not _TARGET.fullmatch(parts[1]):
        return None
    return RequestLine(parts[0].decode(), parts[1].decode(), parts[2][-1] - ord("0"))


@dataclass(frozen=True, slots=True)
class Request:
    line: RequestLine
    headers: tuple[tuple[str, str], ...]  # (lower-case name, value), in the order received

    def values(self, name: str) -> list[str]:
        """Every value of header `name` (lower case), in order."""
        return [value for key, value in self.headers if key == name]

    def tokens(self, name: str) -> set[str]:
        """The comma-separated, case-insensitive tokens of every `name` header."""
        return {t.strip().lower() for value in self.values(name) for t in value.split(",")}


class Refused(Exception):
    """The request gets this HTTP answer instead of the upgrade, and the connection closes."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers

    def response(self) -> bytes:
        return response(
            self.status, self.reason.encode(), "text/plain; charset=utf-8", self.headers
        )


def parse(head: bytes) -> Request:
    """`head`: the request line and the header lines, without the blank line that ends them."""
    lines = head.split(b"\r\n")
    line = request_line(lines[0])
    if line is None:
        raise Refused(400, "malformed request line")
    if len(lines) - 1 > MAX_HEADERS:
        raise Refused(431, f"more than {MAX_HEADERS} header lines")
    headers = []
    for raw in lines[1:]:
        name, colon, value = raw.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):  # also: whitespace before the colon, folding
            raise Refused(400, "malformed header line")
        value = value.strip(b" \t")
        if _FORBIDDEN_IN_VALUE.search(value):
            raise Refused(400, "malformed header value")
        headers.append((name.decode().lower(), value.decode("latin-1")))
    return Request(line, tuple(headers))


def asks_upgrade(head: bytes) -> bool:
    """Whether a request asks for a WebSocket (or is malformed: then the upgrade refuses it)."""
    try:
        return "websocket" in parse(head).tokens("upgrade")
    except Refused:
        return True


def accept(request: Request) -> bytes:
    """Check an upgrade request; return the 101 answer, or raise Refused."""
    if request.line.method != "GET":
        raise Refused(405, "a WebSocket upgrade is a GET", (("Allow", "GET"),))
    if request.line.minor_version < 1:
        raise Refused(400, "a WebSocket upgrade needs HTTP/1.1")
    if len(request.values("host")) != 1:
        raise Refused(400, "exactly one Host header is required")
    if "websocket" not in request.tokens("upgrade"):
        upgrade = (("Upgrade", "websocket"),)
        raise Refused(426, "this is a WebSocket endpoint: upgrade to websocket", upgrade)
    if "upgrade" not in request.tokens("connection"):
        raise Refused(400, "Connection must include Upgrade")
    if request.values("sec-websocket-version") != ["13"]:
        versions = (("Sec-WebSocket-Version", "13"),)
        raise Refused(426, "unsupported WebSocket version: this server speaks 13", versions)
    keys = request.values("sec-websocket-key")
    if len(keys) != 1 or not _valid_key(keys[0]):
        raise Refused(400, "Sec-WebSocket-Key must be one base64-encoded 16-byte value")
    digest = base64.b64encode(hashlib.sha1(keys[0].encode() + GUID).digest())  # noqa: S324 (RFC 6455)
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + digest + b"\r\n\r\n"
    )


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def response(
    status: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """A complete HTTP/1.1 answer, after which the server closes the connection."""
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
