"""Redis behind Sentinel: the URL, and a real failover (primary SIGKILLed, replica promoted by
three real sentinels) under two instances with a session relaying through it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import aiohttp
import msgspec
import pytest
from _pytest.capture import CaptureFixture

from fileshare.signal_client import SignalClient, SignalError
from fsproto import schema
from netsim.processes import redis_sentinel_group
from signaling.sentinel import SentinelAddress, parse_url
from tests.conftest import StartServer, require_binary
from tests.test_server import exchange, pair


def test_sentinel_urls() -> None:
    assert parse_url("redis+sentinel://10.0.0.1:26380,s2,[fd00::3]:26381/fs/2") == (
        SentinelAddress((("10.0.0.1", 26380), ("s2", 26379), ("fd00::3", 26381)), "fs", 2)
    )
    assert parse_url("redis+sentinel://:p%40ss@s1/fs").password == "p@ss"
    assert parse_url("redis+sentinel://s1/fs").db == 0


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis://s1/fs", "not a redis"),
        ("redis+sentinel:///fs", "names no sentinel"),
        ("redis+sentinel://s1", "path must be"),
        ("redis+sentinel://s1/fs/0/x", "path must be"),
        ("redis+sentinel://s1/fs/zero", "database must be a number"),
        ("redis+sentinel://s1:port/fs", "bad sentinel port"),
        ("redis+sentinel://:secret@:26379/fs", "empty sentinel host"),
    ],
)
def test_bad_sentinel_urls(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as err:
        parse_url(url)
    assert "secret" not in str(err.value)


async def _ready(http: aiohttp.ClientSession, base: str) -> bool:
    try:
        async with http.get(f"{base}/readyz", timeout=aiohttp.ClientTimeout(total=3)) as reply:
            return reply.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _send_numbered(sender: SignalClient, count: int, every: float) -> None:
    for seq in range(1, count + 1):
        payload = msgspec.Raw(msgspec.json.encode({"seq": seq}))
        await sender.send(schema.Signal(v=schema.VERSION, id=seq, payload=payload))
        await asyncio.sleep(every)


async def _collect(client: SignalClient, into: dict[int, str]) -> None:
    """Each numbered message ends as "delivered" (at the peer) or an error code (at the
    sender, for the message it answers)."""
    while True:
        event = await client.next_event(timeout=60)
        if isinstance(event, schema.Relayed):
            into[msgspec.json.decode(event.payload)["seq"]] = "delivered"
        elif isinstance(event, schema.Error) and event.re is not None:
            into[event.re] = event.code


@pytest.mark.redis
async def test_failover_keeps_instances_serving(
    start_server: StartServer, tmp_path: Path, capsys: CaptureFixture[str]
) -> None:
    require_binary("redis-server")
    require_binary("redis-sentinel")
    with redis_sentinel_group(tmp_path) as group:
        one = await start_server(redis_url=group.url, instance_id="one")
        two = await start_server(redis_url=group.url, instance_id="two")
        a, b, _, _ = await pair(one.url, two.url)
        await exchange(a, b)
        async with aiohttp.ClientSession() as http:
            assert await _ready(http, one.http) and await _ready(http, two.http)
            outcome: dict[int, str] = {}
            count, every = 120, 0.05  # 6 s of traffic, the primary killed after 1 s
            sending = asyncio.create_task(_send_numbered(a, count, every))
            collectors = [asyncio.create_task(_collect(c, outcome)) for c in (a, b)]
            await asyncio.sleep(1.0)
            killed_at = time.monotonic()
            group.primary.send_signal(signal.SIGKILL)
            saw_outage = False
            while await _ready(http, one.http):  # the outage shows on /readyz ...
                assert time.monotonic() - killed_at < 10, "readyz never saw the outage"
                await asyncio.sleep(0.05)
            saw_outage = True
            while not await _ready(http, one.http):  # ... and so does the recovery
                assert time.monotonic() - killed_at < 30, "no recovery within 30 s"
                await asyncio.sleep(0.05)
            recovered = time.monotonic() - killed_at
            while True:  # and a new session can be made again
                with contextlib.suppress(SignalError):
                    c, d, _, _ = await pair(two.url, one.url)
                    break
                assert time.monotonic() - killed_at < 30
                await asyncio.sleep(0.1)
            serving = time.monotonic() - killed_at
            await exchange(c, d)
            await asyncio.wait_for(sending, 60)
            while len(outcome) < count and not any(c.done() for c in collectors):
                assert time.monotonic() - killed_at < 60, sorted(outcome)
                await asyncio.sleep(0.1)
            for collector in collectors:
                collector.cancel()
            assert await _ready(http, two.http)
        # Every message was either relayed or answered with a clear error, none lost in
        # silence; the errors lie in the outage, and traffic flows again after it.
        assert sorted(outcome) == list(range(1, count + 1))
        errors = {seq: code for seq, code in outcome.items() if code != "delivered"}
        assert set(errors.values()) <= {"store_unavailable", "peer_unavailable"}, errors
        assert all(outcome[seq] == "delivered" for seq in range(count - 10, count + 1))
        await exchange(a, b)  # the session in flight continues after the failover
        for client in (a, b, c, d):
            await client.close()
        assert saw_outage
        assert one.server.metrics.store_errors._value.get() >= 1 or errors == {}
    with capsys.disabled():
        print(
            f"\nredis failover: readyz back {recovered:.2f} s after the primary's SIGKILL, "
            f"new sessions {serving:.2f} s; {len(errors)} of {count} relayed messages "
            f"refused during it ({sorted(set(errors.values()))}), none lost"
        )
