"""The opening handshake, fed request heads: the 101 answer and every refusal."""

from __future__ import annotations

import pytest

from signaling import handshake
from signaling.handshake import Refused

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3


def head(*lines: str, request: str = "GET /ws HTTP/1.1") -> bytes:
    return "\r\n".join([request, *lines]).encode("latin-1")


VALID = (
    "Host: example.org",
    "Upgrade: websocket",
    "Connection: Upgrade",
    f"Sec-WebSocket-Key: {KEY}",
    "Sec-WebSocket-Version: 13",
)


def without(name: str) -> tuple[str, ...]:
    return tuple(line for line in VALID if not line.lower().startswith(name.lower() + ":"))


def refusal(data: bytes) -> Refused:
    with pytest.raises(Refused) as err:
        handshake.accept(handshake.parse(data))
    return err.value


def test_the_rfc_example() -> None:
    answer = handshake.accept(handshake.parse(head(*VALID)))
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    assert b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" in answer
    assert answer.endswith(b"\r\n\r\n")


def test_tokens_and_names_are_case_insensitive() -> None:
    lines = (
        "HOST: example.org",
        "upgrade: WebSocket",
        "Connection: keep-alive, UPGRADE",
        f"sec-websocket-key:{KEY}",  # no space after the colon is fine
        "Sec-WebSocket-Version:   13  ",
        "Origin: https://anywhere.example",  # no Origin policy: the server has no cookies
    )
    assert handshake.accept(handshake.parse(head(*lines))).startswith(b"HTTP/1.1 101")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (head(*VALID, request="POST /ws HTTP/1.1"), 405),
        (head(*VALID, request="GET /ws HTTP/1.0"), 400),
        (head(*without("Host")), 400),
        (head(*VALID, "Host: other.example"), 400),
        (head(*without("Upgrade")), 426),
        (head(*without("Upgrade"), "Upgrade: h2c"), 426),
        (head(*without("Connection")), 400),
        (head(*without("Connection"), "Connection: keep-alive"), 400),
        (head(*without("Sec-WebSocket-Version")), 426),
        (head(*without("Sec-WebSocket-Version"), "Sec-WebSocket-Version: 8"), 426),
        (head(*VALID, "Sec-WebSocket-Version: 13"), 426),  # twice
        (head(*without("Sec-WebSocket-Key")), 400),
        (head(*without("Sec-WebSocket-Key"), "Sec-WebSocket-Key: c2hvcnQ="), 400),
        (head(*without("Sec-WebSocket-Key"), "Sec-WebSocket-Key: not base64 at all!!!!"), 400),
        (head(*VALID, f"Sec-WebSocket-Key: {KEY}"), 400),  # twice
    ],
)
def test_refusals(data: bytes, status: int) -> None:
    refused = refusal(data)
    assert refused.status == status and refused.reason
    answer = refused.response()
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"\r\nConnection: close\r\n" in answer
    assert answer.endswith(b"\r\n\r\n" + refused.reason.encode())


def test_refusals_say_what_is_spoken() -> None:
    version = refusal(head(*without("Sec-WebSocket-Version"), "Sec-WebSocket-Version: 8"))
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in version.response()
    assert b"\r\nAllow: GET\r\n" in refusal(head(*VALID, request="PUT /ws HTTP/1.1")).response()
    assert b"\r\nUpgrade: websocket\r\n\r\n" in refusal(head(*without("Upgrade"))).response()


@pytest.mark.parametrize(
    "line",
    [
        "NoColonHere",
        "Space Before: colon",
        "Name : value",
        " folded: continuation",
        "\tfolded: continuation",
        "Bad\x00Name: x",
        "Value: with\x00nul",
        "Value: with\rcarriage return",
        "Value: with\nbare line feed",
        ": empty name",
    ],
)
def test_malformed_header_lines(line: str) -> None:
    with pytest.raises(Refused) as err:
        handshake.parse(head(*VALID, line))
    assert err.value.status == 400


def test_too_many_headers() -> None:
    lines = [f"X-Filler-{i}: {i}" for i in range(handshake.MAX_HEADERS)]
    with pytest.raises(Refused) as err:
        handshake.parse(head(*VALID, *lines))
    assert err.value.status == 431


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"GET",
        b"GET /ws",
        b"GET  /ws HTTP/1.1",
        b"GET /ws HTTP/1.1 extra",
        b"GET /ws HTTP/2.0",
        b"GET /ws http/1.1",
        b"GET /w\xe9s HTTP/1.1",
        b"GET /w\x01s HTTP/1.1",
        b"G(T /ws HTTP/1.1",
    ],
)
def test_not_a_request_line(line: bytes) -> None:
    assert handshake.request_line(line) is None
    with pytest.raises(Refused):
        handshake.parse(line)


def test_request_line_and_headers() -> None:
    line = handshake.request_line(b"GET /ws?room=1 HTTP/1.1")
    assert line == handshake.RequestLine("GET", "/ws?room=1", 1) and line.path == "/ws"
    request = handshake.parse(head(*VALID, "X-Forwarded-For: 1.2.3.4", "x-forwarded-for: 5.6.7.8"))
    assert request.values("x-forwarded-for") == ["1.2.3.4", "5.6.7.8"]
    assert request.tokens("connection") == {"upgrade"}
    assert request.values("absent") == []


def test_response() -> None:
    answer = handshake.response(503, b'{"a":1}', "application/json", (("Retry-After", "5"),))
    assert answer == (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b'Content-Length: 7\r\nConnection: close\r\nRetry-After: 5\r\n\r\n{"a":1}'
    )
