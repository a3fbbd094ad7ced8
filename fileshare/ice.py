"""Choosing which STUN and TURN server aiortc gets: it uses only the first of each.

TURN over UDP is best, TCP gets through networks that block UDP, TLS (port 5349) through those
that allow little but TLS. aioice needs half a minute to give up on an unreachable TURN server,
so instead of failing through them in turn, each connection attempt first probes the TURN
server briefly (a STUN binding request over UDP, a TCP connect) and puts the first transport that
answers in front. The probes go only to the TURN servers the user or their signaling server named.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qs, urlsplit

from aiortc.rtcicetransport import parse_stun_turn_uri

from fsproto import schema, stun, turnrest

Transport = Literal["udp", "tcp", "tls"]
PROBE_SECONDS: Final = 1.5


@dataclass(frozen=True, slots=True)
class TurnUrl:
    url: str
    host: str
    port: int
    transport: Transport
    server: schema.IceServer  # where the credentials are


def parse_turn_url(url: str, server: schema.IceServer) -> TurnUrl | None:
    parts = urlsplit(url)
    if parts.scheme not in ("turn", "turns"):
        return None
    host, _, port_text = parts.path.rpartition(":")
    if not host:
        host, port_text = parts.path, ""
    wanted = parse_qs(parts.query).get("transport", ["udp"])[0].lower()
    if parts.scheme == "turns":
        transport: Transport = "tls"
        port = int(port_text or 5349)
    else:
        transport = "tcp" if wanted == "tcp" else "udp"
        port = int(port_text or 3478)
    return TurnUrl(url, host.strip("[]"), port, transport, server)


# Fresh credentials are asked for this long before the old ones expire: enough for a new peer
# connection to allocate with them (coturn checks the expiry only when it allocates).
REFRESH_MARGIN_SECONDS: Final = 120.0


@dataclass(slots=True)
class ServerCredentials:
    """The signaling server's ICE servers, and whether to ask it for fresh ones (sans-I/O: told
    the time and the answers). It hands out TURN credentials only while both peers are in the
    session, for minutes; coturn keeps an allocation made in time past their expiry
    (turn/README.md), so fresh ones matter only when a new peer connection allocates:
    `due` is asked before each."""

    servers: list[schema.IceServer]
    settled: bool = False  # the server answered: ask again only when what it gave expires

    def expires_at(self) -> int | None:
        """When the first TURN credential in hand expires; None without one (or if its
        username does not say)."""
        expiries = [
            turnrest.expiry_of(server.username)
            for server in self.servers
            if server.username and any(u.startswith(("turn:", "turns:")) for u in server.urls)
        ]
        known = [e for e in expiries if e is not None]
        return min(known) if known else None

    def due(self, now: float) -> bool:
        expiry = self.expires_at()
        if expiry is None:
            return not self.settled
        return now >= expiry - REFRESH_MARGIN_SECONDS

    def received(self, servers: list[schema.IceServer]) -> None:
        self.servers, self.settled = servers, True

    def refused(self, code: str) -> None:
        """Keep what we have; without the other peer there was nothing to give yet, so ask
        again next time, else not before what we have expires (rate limit, an older server)."""
        self.settled = code != schema.ErrorCode.PEER_UNAVAILABLE


class _StunProbe(asyncio.DatagramProtocol):
    def __init__(self, transaction: bytes) -> None:
        self.transaction = transaction
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) >= 20 and data[8:20] == self.transaction and not self.answered.done():
            self.answered.set_result(None)


async def _udp_answers(host: str, port: int, timeout: float) -> bool:
    request = stun.Message(stun.BINDING, stun.REQUEST)
    transaction = request.tid
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(
        lambda: _StunProbe(transaction), remote_addr=(host, port)
    )
    try:
        async with asyncio.timeout(timeout):
            while True:  # a few tries: one lost datagram must not cost the UDP path
                transport.sendto(request.encode())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(probe.answered), timeout / 3)
                    return True
    except TimeoutError:
        return False
    finally:
        transport.close()


async def _tcp_answers(host: str, port: int, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def reachable(turn: TurnUrl, timeout: float = PROBE_SECONDS) -> bool:
    if turn.transport == "udp":
        return await _udp_answers(turn.host, turn.port, timeout)
    return await _tcp_answers(turn.host, turn.port, timeout)


_PREFERENCE: Final = {"udp": 0, "tcp": 1, "tls": 2}


def aiortc_reads(url: str) -> bool:
    """Whether aiortc can parse `url`: it reads no IPv6 literal (`turn:[2001:db8::10]`), which
    a dual-stack server may hand out for browsers, and one URL it cannot parse fails the whole
    peer connection. (aioice gathers server-reflexive candidates over IPv4 only anyway.)"""
    try:
        parse_stun_turn_uri(url)
    except ValueError:
        return False
    return True


async def arrange(servers: list[schema.IceServer]) -> tuple[list[schema.IceServer], TurnUrl | None]:
    """The servers for aiortc: the first STUN URL, then the best TURN URL that answers (or,
    when none answers, the most likely one, so the failure is reported by ICE itself)."""
    readable = [(s, u) for s in servers for u in s.urls if aiortc_reads(u)]
    stun = [schema.IceServer(urls=[u]) for _, u in readable if u.startswith("stun:")][:1]
    turns = [t for s, u in readable if (t := parse_turn_url(u, s)) is not None]
    turns.sort(key=lambda t: _PREFERENCE[t.transport])
    chosen = None
    for turn in turns:
        if await reachable(turn):
            chosen = turn
            break
    chosen = chosen or (turns[0] if turns else None)
    if chosen is None:
        return stun, None
    relay = schema.IceServer(
        urls=[chosen.url], username=chosen.server.username, credential=chosen.server.credential
    )
    return [*stun, relay], chosen


class RelayUnavailable(Exception):
    """--relay-only, and the TURN server gave no relay address (no point retrying)."""

    code = "relay_unavailable"


async def diagnose(turn: TurnUrl, timeout: float = 5.0) -> str:
    """Ask the TURN server for an allocation ourselves, to say in one line why it gave none."""
    from aioice import stun as aioice_stun
    from aioice.turn import create_turn_endpoint

    try:
        transport, _ = await asyncio.wait_for(
            create_turn_endpoint(
                asyncio.DatagramProtocol,
                (turn.host, turn.port),
                turn.server.username,
                turn.server.credential,
                ssl=turn.transport == "tls",
                transport="udp" if turn.transport == "udp" else "tcp",
            ),
            timeout,
        )
    except aioice_stun.TransactionFailed as exc:
        code = exc.response.attributes.get("ERROR-CODE", (0, ""))
        if code[0] == 401:
            return f"the TURN server {turn.host}:{turn.port} refused the credentials (401)"
        return (
            f"the TURN server {turn.host}:{turn.port} refused the allocation ({code[0]} {code[1]})"
        )
    except (OSError, TimeoutError, aioice_stun.TransactionTimeout) as exc:
        return f"the TURN server {turn.host}:{turn.port} is unreachable ({type(exc).__name__})"
    transport.close()
    return f"the TURN server {turn.host}:{turn.port} gave no relay address to aiortc"
