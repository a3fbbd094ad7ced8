"""Run ids (schema.JoinSession.runs) and the hellos addressed with them: the server names each
run of a peer, to clients that ask; a hello for a run of ours that is over is dropped before
the PAKE, one for this run starts a round (tests/e2e: test_hostile_e2e's hold-hello case)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp
import pytest

from fileshare import crypto
from fileshare.peer import Inbox, Membership
from fileshare.signal_client import SignalClient
from fsproto import schema
from tests.conftest import RunningServer

RUN, LAST_RUN = "ffdcf55e30c72f96", "49d43d6a0ad451b5"
HELLO = crypto.Handshake("sender", b"crane-opera-lemon", "48213907").hello()


def run_of(instance: str) -> str:
    return hashlib.sha256(instance.encode()).hexdigest()[:16]


class Quiet:
    """Events nobody reads."""

    def emit(self, event: str, **fields: Any) -> None:
        pass


PEER_RUN = "9c1b0910cffad2fb"


@pytest.mark.parametrize(
    ("hello", "run", "current"),
    [
        (HELLO, RUN, True),  # a peer that predates run ids names none
        ({**HELLO, "to": RUN}, RUN, True),
        ({**HELLO, "to": LAST_RUN}, RUN, False),  # meant for the run before our restart
        ({**HELLO, "to": LAST_RUN}, None, True),  # a server that gives no run ids
    ],
)
def test_which_hello_is_for_this_run(hello: dict[str, str], run: str | None, current: bool) -> None:
    assert crypto.hello_is_current(hello, run, PEER_RUN if run else None) is current


@pytest.mark.parametrize("to", [RUN.upper(), RUN[:-1], RUN + "0", RUN + "\n", "", None, 42, [RUN]])
def test_a_to_that_is_no_run_id_fails_authentication(to: object) -> None:
    with pytest.raises(crypto.AuthenticationFailed, match="malformed"):
        crypto.hello_is_current({**HELLO, "to": to}, RUN, PEER_RUN)


def test_our_own_hello_reflected_to_us_fails_authentication() -> None:
    """It names the peer's run: no hello of the peer's does (tests.mitm_relay reflect-hello)."""
    with pytest.raises(crypto.AuthenticationFailed, match="its own sender"):
        crypto.hello_is_current({**HELLO, "to": PEER_RUN}, RUN, PEER_RUN)


def test_a_hello_names_the_run_it_is_for() -> None:
    handshake = crypto.Handshake("receiver", b"crane-opera-lemon", "48213907")
    assert "to" not in handshake.hello()
    assert handshake.hello(RUN) == {**handshake.hello(), "to": RUN}


async def test_the_server_names_each_run_to_clients_that_ask(server: RunningServer) -> None:
    a, b = await SignalClient.connect(server.url), await SignalClient.connect(server.url)
    created = await a.create(instance="instance-a", runs=True)
    assert created.run == run_of("instance-a")
    joined = await b.join(created.sessionId, created.token, "instance-b", runs=True)
    assert (joined.run, joined.peerRun) == (run_of("instance-b"), run_of("instance-a"))
    notice = await a.next_event()
    assert isinstance(notice, schema.PeerJoined) and notice.peerRun == run_of("instance-b")
    await b.close()
    assert isinstance(await a.next_event(), schema.PeerLeft)
    # The same process back (its signaling dropped): the same run.
    async with await SignalClient.connect(server.url) as same:
        back = await same.rejoin(created.sessionId, "b", joined.reconnectKey, "instance-b", True)
        assert (back.run, back.peerRun) == (joined.run, created.run)
        notice = await a.next_event()
        assert isinstance(notice, schema.PeerJoined) and notice.resumed
        assert notice.peerRun == joined.run
    assert isinstance(await a.next_event(), schema.PeerLeft)
    # A new process: a new run.
    async with await SignalClient.connect(server.url) as restarted:
        again = await restarted.rejoin(created.sessionId, "b", joined.reconnectKey, "new-b", True)
        assert again.run == run_of("new-b") != joined.run
        notice = await a.next_event()
        assert isinstance(notice, schema.PeerJoined) and not notice.resumed
        assert notice.peerRun == again.run
    await a.close()


async def test_a_client_without_an_instance_is_a_new_run_on_each_connection(
    server: RunningServer,
) -> None:
    a = await SignalClient.connect(server.url)
    created = await a.create(runs=True)
    assert created.run is not None
    b = await SignalClient.connect(server.url)
    joined = await b.join(created.sessionId, created.token, runs=True)
    assert joined.peerRun == created.run and joined.run not in (None, created.run)
    await b.close()
    async with await SignalClient.connect(server.url) as back:
        again = await back.rejoin(created.sessionId, "b", joined.reconnectKey, runs=True)
        assert again.run not in (None, joined.run)
    await a.close()


async def raw_frames(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    return [json.loads(await ws.receive_str(timeout=5)) for _ in range(count)]


async def test_clients_that_do_not_ask_see_no_run_ids(server: RunningServer) -> None:
    """Version-1 clients decode strictly: not a field more reaches them, even from a peer
    that asks for run ids."""
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as old:
        await old.send_json({"v": 1, "type": "create_session", "instance": "old-a", "id": 1})
        (created,) = await raw_frames(old, 1)
        assert created["type"] == "session_created" and "run" not in created
        async with await SignalClient.connect(server.url) as new:
            joined = await new.join(created["sessionId"], created["token"], "new-b", runs=True)
            assert joined.peerRun == run_of("old-a")
            (notice,) = await raw_frames(old, 1)
            assert notice["type"] == "peer_joined" and "peerRun" not in notice


async def inbox_of_b(server: RunningServer) -> tuple[SignalClient, Inbox]:
    """Peer a (a bare client) and peer b's Inbox, both asking for run ids."""
    a, b = await SignalClient.connect(server.url), await SignalClient.connect(server.url)
    created = await a.create(instance="instance-a", runs=True)
    joined = await b.join(created.sessionId, created.token, "instance-b", runs=True)
    assert isinstance(await a.next_event(), schema.PeerJoined)
    member = Membership(server.url, created.sessionId, "b", joined.reconnectKey, "instance-b")
    inbox = Inbox(b, member, Quiet())
    inbox.admitted(joined)
    assert (inbox.run, inbox.peer_run, inbox.peer_present) == (joined.run, created.run, True)
    return a, inbox


async def settled(a: SignalClient, inbox: Inbox) -> None:
    """What `a` relayed has reached the inbox: a's ping comes back after the server relayed
    it, and the inbox reads in order; a last message of a's own marks the end."""
    await a.ping()
    await a.relay("signal", {"kind": "moved"})
    await inbox.until(lambda: inbox.has("moved"), 5)
    inbox.discard("moved")


async def test_the_inbox_drops_a_stale_hello_and_starts_a_round_on_a_current_one(
    server: RunningServer,
) -> None:
    a, inbox = await inbox_of_b(server)
    offer = {"type": "offer", "sealed": "c2VhbGVk", "epoch": 0}
    await a.relay("offer", offer)
    await a.relay("signal", {**HELLO, "to": LAST_RUN})  # for b's run before a restart
    await settled(a, inbox)
    assert not inbox.has("hello") and inbox.has("offer")  # dropped, and nothing cleared
    await a.relay("signal", {**HELLO, "to": inbox.run})
    await settled(a, inbox)
    assert not inbox.has("offer")  # of the last round
    assert await inbox.expect("hello", 5) == {**HELLO, "to": inbox.run}
    await a.relay("signal", HELLO)  # a peer that names no run
    await settled(a, inbox)
    assert inbox.has("hello")
    await a.relay("signal", {**HELLO, "to": inbox.peer_run})  # b's own, reflected
    with pytest.raises(crypto.AuthenticationFailed, match="its own sender"):
        await inbox.until(lambda: False, 5)
    await inbox.close()
    await a.close()
