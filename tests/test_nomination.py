"""The controlling agent keeps its first nominated pair (fileshare/nomination.py): a peer's
ping on another pair after ICE has completed is answered but nominates nothing, as Chromium's
pings of its relay pair did seconds into a transfer (netsim's browser grid)."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any, cast

import aioice.ice
import pytest
from aioice import stun
from aioice.candidate import Candidate
from aioice.ice import CandidatePair, Connection

from fileshare import nomination
from fileshare import turnrefresh as aioice_layer


def _pair(component: int) -> CandidatePair:
    candidate = Candidate("f", component, "udp", 100, "198.51.100.7", 4000, "srflx")
    protocol: Any = SimpleNamespace(local_candidate=candidate)
    return CandidatePair(protocol, candidate)


def test_only_the_controlling_agent_with_a_nominated_pair_is_settled() -> None:
    chosen, other, second_component = _pair(1), _pair(1), _pair(2)
    connection: Any = SimpleNamespace(ice_controlling=True, _nominated={})
    assert not nomination.settled(connection, other)  # nothing nominated yet
    connection._nominated[1] = chosen
    assert nomination.settled(connection, other)
    assert not nomination.settled(connection, chosen)  # its own checks go on
    assert not nomination.settled(connection, second_component)
    connection.ice_controlling = False  # the controlled agent follows the peer's nominations
    assert not nomination.settled(connection, other)


class LatePeer(asyncio.DatagramProtocol):
    """Another address of the controlled peer (Chromium's relay candidate): it pings the
    controlling agent once ICE has completed and answers every check it gets, remembering
    whether one nominated it."""

    def __init__(self, controlled: Connection) -> None:
        self.controlled = controlled
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = asyncio.Event()
        self.nominated = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def ping(self, controlling: Connection, addr: tuple[str, int]) -> None:
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        request.attributes["USERNAME"] = (
            f"{controlling.local_username}:{self.controlled.local_username}"
        )
        request.attributes["PRIORITY"] = 1845502463
        request.attributes["ICE-CONTROLLED"] = 1
        request.add_message_integrity(controlling.local_password.encode())
        request.add_fingerprint()
        assert self.transport is not None
        self.transport.sendto(bytes(request), addr)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = stun.parse_message(data)
        assert self.transport is not None
        if message.message_class == stun.Class.RESPONSE:
            self.answered.set()
        elif message.message_class == stun.Class.REQUEST:
            self.nominated |= "USE-CANDIDATE" in message.attributes
            response = stun.Message(
                stun.Method.BINDING, stun.Class.RESPONSE, message.transaction_id
            )
            response.attributes["XOR-MAPPED-ADDRESS"] = addr
            response.add_message_integrity(self.controlled.local_password.encode())
            response.add_fingerprint()
            self.transport.sendto(bytes(response), addr)


@pytest.mark.parametrize("installed", [True, False])
async def test_a_late_ping_on_another_pair_nominates_nothing(
    monkeypatch: pytest.MonkeyPatch, installed: bool
) -> None:
    # This test's agents gather on loopback only (aioice leaves 127.0.0.1 out).
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    controlling = Connection(ice_controlling=True, components=1, use_ipv6=False)
    controlled = Connection(ice_controlling=False, components=1, use_ipv6=False)
    if installed:
        nomination.nominate_once(controlling)
    try:
        await asyncio.gather(controlling.gather_candidates(), controlled.gather_candidates())
        for one, other in ((controlling, controlled), (controlled, controlling)):
            for candidate in other.local_candidates:
                await one.add_remote_candidate(candidate)
            await one.add_remote_candidate(None)
            one.remote_username, one.remote_password = other.local_username, other.local_password
        async with asyncio.timeout(10):
            await asyncio.gather(controlling.connect(), controlled.connect())
        first = controlling._nominated[1]
        loop = asyncio.get_running_loop()
        transport, late = await loop.create_datagram_endpoint(
            lambda: LatePeer(controlled), local_addr=("127.0.0.1", 0)
        )
        try:
            late.ping(controlling, (first.local_candidate.host, first.local_candidate.port))
            async with asyncio.timeout(5):
                await late.answered.wait()  # the ping is answered either way
            await asyncio.sleep(0.5)  # time for a triggered check and its answer
        finally:
            transport.close()
        assert late.nominated is not installed
        assert (controlling._nominated[1] is first) is installed
    finally:
        await controlling.close()
        await controlled.close()


def test_the_pin_holds_for_this_aioice_and_refuses_another() -> None:
    nomination.check_pinned()
    with pytest.raises(aioice_layer.IncompatibleAioice, match=r"nomination was written for aioice"):
        nomination.check_pinned("0.14.0")


FAKE_UFRAG, FAKE_PASSWORD = "fake", "fake-password-of-22-chars"


class ControllingEnd(asyncio.DatagramProtocol):
    """One address of a controlling peer (Chromium's): answers the checks it lets in and then
    nominates its pair with a check of its own carrying USE-CANDIDATE. Closed, it drops every
    check, as an address-restricted NAT drops one from an address its host has not sent to."""

    def __init__(self, controlled: Connection, open_: bool) -> None:
        self.controlled = controlled
        self.open = open_
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = asyncio.Event()
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = stun.parse_message(data)
        if message.message_class != stun.Class.REQUEST:
            return
        if not self.open:
            self.dropped += 1
            return
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, message.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(FAKE_PASSWORD.encode())
        response.add_fingerprint()
        self.send(response, addr)
        if not self.answered.is_set():
            self.answered.set()
            self.nominate(addr)

    def nominate(self, addr: tuple[str, int]) -> None:
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{self.controlled.local_username}:{FAKE_UFRAG}"
        request.attributes["PRIORITY"] = 1845502463
        request.attributes["ICE-CONTROLLING"] = 1
        request.attributes["USE-CANDIDATE"] = None
        request.add_message_integrity(self.controlled.local_password.encode())
        request.add_fingerprint()
        self.send(request, addr)

    def send(self, message: stun.Message, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(message), addr)


@pytest.mark.parametrize("installed", [True, False])
async def test_a_better_check_outlives_the_peers_nomination(
    monkeypatch: pytest.MonkeyPatch, installed: bool
) -> None:
    """The controlled agent's check of the peer's direct address loses its first request; the
    peer nominates its relay pair meanwhile; the retransmission gets in, and the peer moves."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    controlled = Connection(ice_controlling=False, components=1, use_ipv6=False)
    if installed:
        nomination.finish_better_checks(controlled)
    loop = asyncio.get_running_loop()
    ends: list[asyncio.BaseTransport] = []
    try:
        await controlled.gather_candidates()
        direct_transport, direct = await loop.create_datagram_endpoint(
            lambda: ControllingEnd(controlled, open_=False), local_addr=("127.0.0.1", 0)
        )
        relay_transport, _ = await loop.create_datagram_endpoint(
            lambda: ControllingEnd(controlled, open_=True), local_addr=("127.0.0.1", 0)
        )
        ends += [direct_transport, relay_transport]
        port = {t: t.get_extra_info("sockname")[1] for t in ends}
        direct_candidate = Candidate(
            "d", 1, "udp", 1694498815, "127.0.0.1", port[direct_transport], "srflx"
        )
        relay_candidate = Candidate(
            "r", 1, "udp", 16777215, "127.0.0.1", port[relay_transport], "relay"
        )
        for candidate in (direct_candidate, relay_candidate, None):
            await controlled.add_remote_candidate(candidate)
        controlled.remote_username, controlled.remote_password = FAKE_UFRAG, FAKE_PASSWORD
        async with asyncio.timeout(10):
            await controlled.connect()
        assert controlled._nominated[1].remote_candidate.port == relay_candidate.port
        assert direct.dropped >= 1
        direct.open = True  # the peer has now pinged our NAT's address
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(4):  # retransmissions 0.5 s, then 1 s, after the first
                await direct.answered.wait()
        assert direct.answered.is_set() is installed
        await asyncio.sleep(0.2)  # the peer's nominating check and our answer
        chosen = controlled._nominated[1].remote_candidate
        assert chosen.port == (direct_candidate if installed else relay_candidate).port
    finally:
        await controlled.close()
        for transport in ends:
            transport.close()


async def test_a_check_kept_past_the_nomination_ends_with_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    controlled = Connection(ice_controlling=False, components=1, use_ipv6=False)
    nomination.finish_better_checks(controlled)
    loop = asyncio.get_running_loop()
    await controlled.gather_candidates()
    direct_transport, direct = await loop.create_datagram_endpoint(
        lambda: ControllingEnd(controlled, open_=False), local_addr=("127.0.0.1", 0)
    )
    relay_transport, _ = await loop.create_datagram_endpoint(
        lambda: ControllingEnd(controlled, open_=True), local_addr=("127.0.0.1", 0)
    )
    try:
        for transport, kind, priority in (
            (direct_transport, "srflx", 1694498815),
            (relay_transport, "relay", 16777215),
        ):
            port = transport.get_extra_info("sockname")[1]
            await controlled.add_remote_candidate(
                Candidate(kind, 1, "udp", priority, "127.0.0.1", port, kind)
            )
        await controlled.add_remote_candidate(None)
        controlled.remote_username, controlled.remote_password = FAKE_UFRAG, FAKE_PASSWORD
        async with asyncio.timeout(10):
            await controlled.connect()
        await asyncio.sleep(0.05)  # the cancellation at ICE's end has reached the wrapper
        kept = [p.task for p in controlled._check_list if p.task is not None]
        assert len(kept) == 1 and not kept[0].done()
        async with asyncio.timeout(2):
            await controlled.close()
        assert kept[0].done()
        assert direct.dropped >= 1
    finally:
        direct_transport.close()
        relay_transport.close()
