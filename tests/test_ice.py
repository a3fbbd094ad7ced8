"""Choosing the TURN transport: parsing URLs, and probes against real loopback sockets."""

from __future__ import annotations

import asyncio
import socket

from fileshare import ice
from fsproto import schema

CREDS = schema.IceServer(urls=[], username="1:s", credential="pw")


def test_parse_turn_urls() -> None:
    cases = {
        "turn:203.0.113.5:3478?transport=udp": ("203.0.113.5", 3478, "udp"),
        "turn:203.0.113.5?transport=tcp": ("203.0.113.5", 3478, "tcp"),
        "turn:203.0.113.5:3478": ("203.0.113.5", 3478, "udp"),
        "turns:turn.example.org:443?transport=tcp": ("turn.example.org", 443, "tls"),
        "turns:turn.example.org": ("turn.example.org", 5349, "tls"),
    }
    for url, expected in cases.items():
        parsed = ice.parse_turn_url(url, CREDS)
        assert parsed is not None
        assert (parsed.host, parsed.port, parsed.transport) == expected
    assert ice.parse_turn_url("stun:203.0.113.5:3478", CREDS) is None


class StunResponder(asyncio.DatagramProtocol):
    """Answers any datagram with a Binding success response carrying its transaction id."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        response = b"\x01\x01\x00\x00" + data[4:20]
        self.transport.sendto(response, addr)  # type: ignore[attr-defined]


def silent_udp_port() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


async def test_udp_preferred_when_it_answers() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(StunResponder, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    server = schema.IceServer(
        urls=[
            f"turns:127.0.0.1:{port}",
            f"turn:127.0.0.1:{port}?transport=udp",
            "stun:127.0.0.1:9",
        ],
        username="u",
        credential="c",
    )
    servers, chosen = await ice.arrange([server])
    transport.close()
    assert chosen is not None and chosen.transport == "udp"
    assert servers[0].urls == ["stun:127.0.0.1:9"]
    assert servers[1].urls == [f"turn:127.0.0.1:{port}?transport=udp"]
    assert (servers[1].username, servers[1].credential) == ("u", "c")


async def test_urls_aiortc_cannot_read_are_left_out() -> None:
    """A dual-stack server's IPv6 literals (for browsers): aiortc parses none, and one it
    cannot parse would fail the whole peer connection; the IPv4 ones are used."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(StunResponder, local_addr=("::1", 0))
    port = transport.get_extra_info("sockname")[1]
    server = schema.IceServer(
        urls=[
            "stun:[::1]:3478",
            "stun:127.0.0.1:9",
            f"turn:[::1]:{port}?transport=udp",  # it answers, and still is not chosen
            "turn:127.0.0.1:9?transport=udp",
        ],
        username="u",
        credential="c",
    )
    servers, chosen = await ice.arrange([server])
    transport.close()
    assert [s.urls for s in servers] == [["stun:127.0.0.1:9"], ["turn:127.0.0.1:9?transport=udp"]]
    assert chosen is not None and chosen.host == "127.0.0.1"
    assert not ice.aiortc_reads("turn:[2001:db8::10]:3478") and ice.aiortc_reads("stun:a.b:1")


async def test_tcp_when_udp_is_silent() -> None:
    silent, udp_port = silent_udp_port()
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    tcp_port = listener.sockets[0].getsockname()[1]
    server = schema.IceServer(
        urls=[
            f"turn:127.0.0.1:{udp_port}?transport=udp",
            f"turn:127.0.0.1:{tcp_port}?transport=tcp",
        ],
        username="u",
        credential="c",
    )
    _, chosen = await ice.arrange([server])
    listener.close()
    silent.close()
    assert chosen is not None and chosen.transport == "tcp"


async def test_nothing_answers_keeps_the_first_choice() -> None:
    silent, udp_port = silent_udp_port()
    server = schema.IceServer(urls=[f"turn:127.0.0.1:{udp_port}"], username="u", credential="c")
    servers, chosen = await ice.arrange([server])
    silent.close()
    assert chosen is not None and chosen.transport == "udp"
    assert servers[0].urls == [f"turn:127.0.0.1:{udp_port}"]


# --- when to ask the signaling server for fresh TURN credentials --------------------------------

STUN_ONLY = [schema.IceServer(urls=["stun:203.0.113.5:3478"])]


def turn_until(expiry: int) -> list[schema.IceServer]:
    turn = schema.IceServer(
        urls=["turn:203.0.113.5:3478"], username=f"{expiry}:1234", credential="x"
    )
    return [*STUN_ONLY, turn]


def test_a_creator_asks_once_its_peer_is_there() -> None:
    """STUN only at creation: asked before the first connection; a refusal for want of the
    peer is asked again, anything else (no TURN configured, a rate limit) settles it."""
    given = ice.ServerCredentials(STUN_ONLY)
    assert given.due(1000.0)
    given.refused(schema.ErrorCode.PEER_UNAVAILABLE)
    assert given.due(1000.0)
    given.received(STUN_ONLY)  # a server without TURN
    assert not given.due(1000.0) and not given.due(10**9)
    limited = ice.ServerCredentials(STUN_ONLY)
    limited.refused(schema.ErrorCode.CREDENTIALS_LIMITED)
    assert not limited.due(1000.0)


def test_credentials_are_refreshed_before_they_expire() -> None:
    given = ice.ServerCredentials(turn_until(2000))  # a joiner's, from session_joined
    assert given.expires_at() == 2000
    assert not given.due(2000 - ice.REFRESH_MARGIN_SECONDS - 1)
    assert given.due(2000 - ice.REFRESH_MARGIN_SECONDS)
    given.refused(schema.ErrorCode.CREDENTIALS_LIMITED)  # keeps them, asks again next time
    assert given.servers == turn_until(2000) and given.due(2000.0)
    given.received(turn_until(2600))
    assert not given.due(2000.0) and given.due(2600 - ice.REFRESH_MARGIN_SECONDS)


def test_credentials_of_another_scheme_are_never_refreshed() -> None:
    static = schema.IceServer(urls=["turn:203.0.113.5"], username="alice", credential="pw")
    given = ice.ServerCredentials([static], settled=True)
    assert given.expires_at() is None and not given.due(10**9)
