"""Session affinity at the front (issue 18): an instance with a route tag begins its session
numbers with it, clients that join or rejoin name the session in the URL (`/ws?s=<number>`),
and haproxy sends them to the creator's instance, so both peers share one process and their
relays never cross Redis. When that instance is gone, the joiner lands on another one and the
session carries on through Redis. Real instances, redis-server and haproxy."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest

from fileshare.signal_client import SignalClient, routed
from fsproto import schema
from netsim.processes import haproxy, route_tags
from signaling.config import load
from signaling.metrics import PREFIX
from tests.conftest import StartProcess, StartServer, require_binary
from tests.test_server import exchange


def test_routed_names_the_session_and_keeps_the_rest() -> None:
    assert routed("wss://example.org/ws", "1248213907") == "wss://example.org/ws?s=1248213907"
    assert routed("ws://h:1/ws?s=9&x=y", "55512345") == "ws://h:1/ws?x=y&s=55512345"


@pytest.mark.parametrize("tag", ["0", "01", "12345", "1a", " 1"])
def test_a_route_tag_is_one_to_four_digits_without_a_leading_zero(tag: str) -> None:
    with pytest.raises(ValueError, match="route_tag"):
        load(["--route-tag", tag])
    assert load(["--route-tag", "4096"]).route_tag == "4096"


async def test_session_numbers_begin_with_the_tag_and_keep_their_digits(
    start_server: StartServer,
) -> None:
    server = await start_server(route_tag="37", session_digits=8)
    client = await SignalClient.connect(server.url)
    for _ in range(5):
        created = await client.create()
        assert created.sessionId.startswith("37") and len(created.sessionId) == 10
        await client.leave()
    await client.close()


async def session_peers(http: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as reply:
        text = await reply.text()
    name = PREFIX + "session_peers "
    return sum(float(line[len(name) :]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.redis
async def test_the_joiner_lands_on_the_creators_instance(
    start_process: StartProcess, redis_url: str, tmp_path: Path
) -> None:
    require_binary("haproxy")
    tags = route_tags(3)
    started = [await start_process("--redis-url", redis_url, "--route-tag", tag) for tag in tags]
    with haproxy(tmp_path, [s.port for s in started], tags=tags) as port:
        front = f"ws://127.0.0.1:{port}/ws"
        for _ in range(len(tags)):  # creators land by round robin, joiners by the tag
            a = await SignalClient.connect(front)
            created = await a.create()
            home = started[tags.index(created.sessionId[0])]
            b = await SignalClient.connect(routed(front, created.sessionId))
            await b.join(created.sessionId, created.token)
            assert isinstance(await a.next_event(), schema.PeerJoined)
            await exchange(a, b)
            assert [await session_peers(s.http) for s in started] == [
                2.0 if s is home else 0.0 for s in started
            ]
            await a.leave()
            for client in (a, b):
                await client.close()


@pytest.mark.redis
async def test_when_the_creators_instance_dies_the_session_goes_on_elsewhere(
    start_process: StartProcess, redis_url: str, tmp_path: Path
) -> None:
    """Killed at once (no drain): haproxy still believes it up for a moment, so the joiner's
    connection first fails there and is redispatched; the creator rejoins the same way."""
    require_binary("haproxy")
    tags = route_tags(2)
    started = [
        await start_process("--redis-url", redis_url, "--route-tag", tag, "--grace-seconds", "30")
        for tag in tags
    ]
    with haproxy(tmp_path, [s.port for s in started], tags=tags) as port:
        front = f"ws://127.0.0.1:{port}/ws"
        a = await SignalClient.connect(front)
        created = await a.create()
        home = tags.index(created.sessionId[0])
        started[home].proc.send_signal(signal.SIGKILL)
        started[home].proc.wait(10)
        b = await SignalClient.connect(routed(front, created.sessionId))
        await b.join(created.sessionId, created.token)  # on the instance left
        a2 = await SignalClient.connect(routed(front, created.sessionId))
        again = await a2.rejoin(created.sessionId, "a", created.reconnectKey)
        assert again.rejoined and again.peerPresent
        assert isinstance(await b.next_event(), schema.PeerJoined)
        await exchange(a2, b)
        assert await session_peers(started[1 - home].http) == 2.0
        for client in (a, b, a2):
            await client.close()
