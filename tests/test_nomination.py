"""The controlling agent keeps its first nominated pair (fileshare/nomination.py): a peer's
ping on another pair after ICE has completed is answered but nominates nothing, as Chromium's
pings of its relay pair did seconds into a transfer (netsim's browser grid)."""

from __future__ import annotations

import asyncio
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
