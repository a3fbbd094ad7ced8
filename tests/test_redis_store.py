"""The Redis store against a real redis-server: creation with the per-address limit in one
script, and compare-and-set updates that lose nothing under contention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.client import Pipeline

from signaling import redis_store, sessions
from signaling.redis_store import RedisBus, RedisStore
from signaling.sessions import SessionPolicy, SessionRecord
from signaling.store import Change

pytestmark = pytest.mark.redis

POLICY = SessionPolicy(idle_seconds=600, lifetime_seconds=3600, grace_seconds=30)


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores on separate connections, like two instances."""
    one = RedisStore(redis_store.connect(redis_url), POLICY)
    two = RedisStore(redis_store.connect(redis_url), POLICY)
    yield one, two
    await one.close()
    await two.close()


def record(session_id: str, ip: str = "198.51.100.1") -> SessionRecord:
    return sessions.create(session_id, ip, "conn", time.time()).record


async def test_create_taken_and_limited(stores: tuple[RedisStore, RedisStore]) -> None:
    one, two = stores
    assert await one.create(record("10000001"), limit=2) == "created"
    assert await two.create(record("10000001", ip="203.0.113.5"), limit=2) == "taken"
    assert await two.create(record("10000002"), limit=2) == "created"
    assert await one.create(record("10000003"), limit=2) == "limited"
    assert await one.get("10000003") is None  # a refused session is not kept
    assert await one.create(record("10000003", ip="203.0.113.5"), limit=2) == "created"
    first = await one.get("10000001")
    assert first is not None
    await two.remove(first)  # frees its place at once
    assert await one.get("10000001") is None
    assert await one.create(record("10000004"), limit=2) == "created"


async def test_sessions_that_expired_do_not_count(stores: tuple[RedisStore, RedisStore]) -> None:
    one, _ = stores
    assert await one.create(record("20000001"), limit=1) == "created"
    await one._r.delete("fs:s:20000001")  # expired (Redis dropped the key by itself)
    assert await one.create(record("20000002"), limit=1) == "created"


async def test_updates_under_contention_lose_nothing(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    one, two = stores
    assert await one.create(record("30000001"), limit=10) == "created"
    calls = 0

    def bump(r: SessionRecord) -> Change[int]:
        nonlocal calls
        calls += 1
        r.last_active += 1  # a counter that only this rule moves
        return Change(int(r.last_active - r.created_at))

    results = await asyncio.gather(*(s.update("30000001", bump) for s in (one, two) * 50))
    final = await one.get("30000001")
    assert final is not None and final.last_active - final.created_at == 100
    assert sorted(r.value for r in results if r is not None) == list(range(1, 101))
    assert calls > 100  # some rules ran again on a newer record: nothing was overwritten


async def test_update_outcomes(stores: tuple[RedisStore, RedisStore]) -> None:
    one, two = stores
    assert await one.update("40000001", lambda r: Change(None)) is None  # no such session
    assert await one.create(record("40000001"), limit=10) == "created"

    def touch_then_look(r: SessionRecord) -> Change[str]:
        r.last_active += 1000
        return Change("looked", "none")  # nothing written

    before = await one.get("40000001")
    assert (await one.update("40000001", touch_then_look)) == Change("looked", "none")
    assert await one.get("40000001") == before

    def burn(r: SessionRecord) -> Change[bool]:
        return Change(True, "delete")

    assert await one.update("40000001", burn) == Change(True, "delete")
    assert await one.get("40000001") is None

    assert await one.create(record("40000002"), limit=10) == "created"
    original = one._swap

    async def swap_after_removal(keys: list[str], args: list[bytes | int]) -> object:
        await two._r.delete("fs:s:40000002")  # removed between the read and the write
        return await original(keys=keys, args=args)

    one._swap = swap_after_removal  # type: ignore[assignment]
    assert await one.update("40000002", lambda r: Change(None)) is None


async def test_publishes_made_meanwhile_go_together_in_order(redis_url: str) -> None:
    one, two = RedisBus(redis_store.connect(redis_url)), RedisBus(redis_store.connect(redis_url))
    received: list[bytes] = []
    await one.subscribe("fs:peer:50000001:a", received.append)
    await asyncio.sleep(0.1)  # the subscription is in place
    pipelines = 0
    original = two._r.pipeline

    def counted(transaction: bool = True) -> Pipeline:
        nonlocal pipelines
        pipelines += 1
        return original(transaction=transaction)

    two._r.pipeline = counted  # type: ignore[method-assign,assignment]
    counts = await asyncio.gather(
        *(two.publish("fs:peer:50000001:a", b"%d" % n) for n in range(50))
    )
    assert counts == [1] * 50
    assert pipelines == 1  # the first went at once, the 49 others together after it
    for n in range(50, 60):  # one caller, one after the other: each alone
        assert await two.publish("fs:peer:50000001:a", b"%d" % n) == 1
    assert await two.publish("fs:peer:nobody:a", b"x") == 0
    for _ in range(50):
        if len(received) == 60:
            break
        await asyncio.sleep(0.05)
    assert received == [b"%d" % n for n in range(60)]
    await one.close()
    await two.close()
