"""Several instances sharing one real redis-server; instances killed and restarted for real."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from fileshare.signal_client import ConnectionClosed, SignalClient, SignalError
from fsproto import schema
from netsim.processes import haproxy
from signaling.redis_store import RedisStore
from signaling.server import CLOSE_RESTART
from tests.conftest import StartProcess, StartServer, require_binary
from tests.test_server import exchange, pair

pytestmark = pytest.mark.redis


async def test_peers_on_different_instances(start_server: StartServer, redis_url: str) -> None:
    one = await start_server(redis_url=redis_url, instance_id="one")
    two = await start_server(redis_url=redis_url, instance_id="two")
    a, b, created, joined = await pair(one.url, two.url)
    assert joined.peerPresent
    await exchange(a, b)
    c = await SignalClient.connect(one.url)
    with pytest.raises(SignalError) as err:  # the pair is complete on every instance
        await c.join(created.sessionId, created.token)
    assert err.value.code == "session_full"
    await a.leave()
    closed = await b.next_event()
    assert isinstance(closed, schema.SessionClosed) and closed.reason == "peer_left"
    for client in (a, b, c):
        await client.close()


async def test_session_limit_holds_across_instances(
    start_server: StartServer, redis_url: str
) -> None:
    one = await start_server(redis_url=redis_url, max_sessions_per_ip=1)
    two = await start_server(redis_url=redis_url, max_sessions_per_ip=1)
    a = await SignalClient.connect(one.url)
    created = await a.create()
    other = await SignalClient.connect(two.url)
    with pytest.raises(SignalError) as err:
        await other.create()  # this address's one session lives on instance one
    assert err.value.code == "session_limit"
    for guess in ("wrong1", "wrong2", "wrong3"):  # wrong tokens no longer end it
        with pytest.raises(SignalError):
            await other.join(created.sessionId, guess)
    await a.leave()
    await other.create()  # the ended session no longer counts
    await a.close()
    await other.close()


class CommandCounter:
    """Counts the commands the server's real Redis client sends (scripts included)."""

    def __init__(self, client: Redis) -> None:
        self.count = 0
        self._send: Callable[..., Awaitable[Any]] = client.execute_command
        client.execute_command = self._counted  # type: ignore[method-assign]

    async def _counted(self, *args: Any, **options: Any) -> Any:
        self.count += 1
        return await self._send(*args, **options)


async def test_wrong_secret_costs_what_an_unknown_session_costs(
    start_server: StartServer, redis_url: str
) -> None:
    """Finding 7: a wrong token took one more round trip (the failed join was written) than an
    unknown session. Now every refusal is one read: counted on the real client, not timed."""
    server = await start_server(redis_url=redis_url, failed_join_burst=100)
    store = server.server.store
    assert isinstance(store, RedisStore)
    a = await SignalClient.connect(server.url)
    created = await a.create()
    code_owner = await SignalClient.connect(server.url)
    code_session = await code_owner.create(access="code")
    first = await SignalClient.connect(server.url)
    await first.join(code_session.sessionId)
    guesser = await SignalClient.connect(server.url)
    counter = CommandCounter(store._r)
    unknown = next(i for i in ("10000000", "10000001", "10000002")
                   if i not in (created.sessionId, code_session.sessionId))  # fmt: skip
    attempts: dict[str, Callable[[], Awaitable[object]]] = {
        "unknown session": lambda: guesser.join(unknown, "A" * 22),
        "wrong token": lambda: guesser.join(created.sessionId, "A" * 22),
        "code session taken": lambda: guesser.join(code_session.sessionId),
        "wrong reconnect key": lambda: guesser.rejoin(created.sessionId, "a", "A" * 22),
        "unknown rejoin": lambda: guesser.rejoin(unknown, "a", "A" * 22),
    }
    costs = {}
    for name, attempt in attempts.items():
        before = counter.count
        for _ in range(5):
            with pytest.raises(SignalError) as err:
                await attempt()
            assert err.value.code == "session_not_found"
        costs[name] = counter.count - before
    assert set(costs.values()) == {5}, costs
    for client in (a, code_owner, first, guesser):
        await client.close()


async def test_peer_rejoins_through_another_instance_after_a_kill(
    start_process: StartProcess, redis_url: str
) -> None:
    one = await start_process("--redis-url", redis_url, "--grace-seconds", "30")
    two = await start_process("--redis-url", redis_url, "--grace-seconds", "30")
    a, b, created, joined = await pair(one.url, two.url)
    two.proc.send_signal(signal.SIGKILL)  # no goodbye from instance two
    two.proc.wait(10)
    with pytest.raises(ConnectionClosed):
        await b.next_event()
    b2 = await SignalClient.connect(one.url)
    again = await b2.rejoin(created.sessionId, "b", joined.reconnectKey)
    assert again.rejoined and again.peerPresent
    back = await a.next_event()
    assert isinstance(back, schema.PeerJoined) and back.rejoined
    await exchange(a, b2)
    for client in (a, b, b2):
        await client.close()


async def test_session_survives_the_restart_of_its_instance(
    start_process: StartProcess, redis_url: str
) -> None:
    one = await start_process("--redis-url", redis_url)
    a = await SignalClient.connect(one.url)
    created = await a.create()
    one.proc.send_signal(signal.SIGKILL)
    one.proc.wait(10)
    restarted = await start_process("--redis-url", redis_url)
    a2 = await SignalClient.connect(restarted.url)
    await a2.rejoin(created.sessionId, "a", created.reconnectKey)
    b = await SignalClient.connect(restarted.url)
    joined = await b.join(created.sessionId, created.token)
    assert joined.peerPresent
    assert isinstance(await a2.next_event(), schema.PeerJoined)
    await exchange(a2, b)
    for client in (a, a2, b):
        await client.close()


async def test_sigterm_drains_and_clients_move_on(
    start_process: StartProcess, redis_url: str
) -> None:
    one = await start_process("--redis-url", redis_url, "--grace-seconds", "30")
    two = await start_process("--redis-url", redis_url, "--grace-seconds", "30")
    a, b, created, joined = await pair(one.url, two.url)
    await b.relay("signal", {"last": "words"})
    two.proc.send_signal(signal.SIGTERM)
    received = await a.next_event()
    assert isinstance(received, schema.Relayed)
    assert await b.wait_closed() == CLOSE_RESTART
    assert two.proc.wait(15) == 0
    left = await a.next_event()
    assert isinstance(left, schema.PeerLeft)
    b2 = await SignalClient.connect(one.url)
    await b2.rejoin(created.sessionId, "b", joined.reconnectKey)
    assert isinstance(await a.next_event(), schema.PeerJoined)
    await exchange(a, b2)
    for client in (a, b, b2):
        await client.close()
    assert "shutting down" in two.log() and joined.reconnectKey not in two.log()


async def test_readyz_follows_the_store(start_process: StartProcess, redis_url: str) -> None:
    one = await start_process("--redis-url", redis_url)
    url = f"http://127.0.0.1:{one.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/readyz") as resp:
            assert resp.status == 200
        sock = redis_url.removeprefix("unix://")
        subprocess.run(["redis-cli", "-s", sock, "shutdown", "nosave"], check=False, timeout=10)
        await asyncio.sleep(0.2)
        async with http.get(url + "/readyz") as resp:
            assert resp.status == 503
        async with http.get(url + "/healthz") as resp:
            assert resp.status == 200  # alive, just not ready


async def test_a_store_outage_leaves_the_instances_behind_the_front(
    start_process: StartProcess, redis_url: str, tmp_path: Path
) -> None:
    """The front's check (as the Ansible front's) takes out a draining instance, not one whose
    shared store is down: past the check's fall count every instance would be out and a client
    would get the front's bare 503 (the deploy test met it in a Sentinel failover slower than
    the checks), where the protocol has a clear, retryable `store_unavailable`."""
    require_binary("haproxy")
    started = [await start_process("--redis-url", redis_url) for _ in range(2)]
    with haproxy(tmp_path, [s.port for s in started]) as port:
        sock = redis_url.removeprefix("unix://")
        subprocess.run(["redis-cli", "-s", sock, "shutdown", "nosave"], check=False, timeout=10)
        await asyncio.sleep(4.5)  # past haproxy's fall count: 3 checks, 1 s apart
        for _ in started:  # round robin: each instance once
            client = await SignalClient.connect(f"ws://127.0.0.1:{port}/ws")
            with pytest.raises(SignalError) as refused:
                await client.create()
            assert refused.value.code == "store_unavailable"
            await client.close()
        draining = started[0]
        # draining (its /readyz says so), or gone once no client holds it: out of the pool
        draining.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(4.5)
        async with aiohttp.ClientSession() as http:
            for _ in started:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as reply:
                    assert reply.headers["X-Served-By"] == "s1"


async def test_a_burst_of_sessions_waits_for_redis_connections(
    start_server: StartServer, redis_url: str
) -> None:
    """More commands in flight than the Redis pool has connections: they wait, none fails
    (redis-py's default pool refused them with MaxConnectionsError)."""
    server = await start_server(
        redis_url=redis_url,
        max_connections_per_ip=1000,
        connections_per_second=1000,
        connection_burst=1000,
        max_sessions_per_ip=1000,
    )
    clients = await asyncio.gather(*(SignalClient.connect(server.url) for _ in range(300)))
    created = await asyncio.gather(*(client.create() for client in clients))
    assert len({c.sessionId for c in created}) == 300
    for client in clients:
        await client.close()
