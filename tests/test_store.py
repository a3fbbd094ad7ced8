"""The in-memory store: expired sessions go (a share per purge call), live ones stay, and an
address's places are counted against its limit."""

from __future__ import annotations

import time

from signaling import sessions
from signaling.sessions import SessionPolicy
from signaling.store import PURGE_ROUNDS, MemoryStore

POLICY = SessionPolicy(idle_seconds=100, lifetime_seconds=1000, grace_seconds=10)


async def test_purge_takes_a_share_a_call() -> None:
    now = [0.0]
    store = MemoryStore(POLICY, clock=lambda: now[0])
    for n in range(100):
        created = sessions.create(f"{10000000 + n}", "192.0.2.1", f"c{n}", now[0] - 50 * (n % 2))
        assert await store.create(created.record, limit=1000) == "created"
    now[0] = 100.0  # the older half (idle since -50) is past its retention; the rest lives
    sizes = []
    for _ in range(PURGE_ROUNDS):
        store.purge()
        sizes.append(len(store))
    assert sizes[0] > 50  # not all at once
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 50
    for n in range(1, 100, 2):
        assert await store.get(f"{10000000 + n}") is None
    for n in range(0, 100, 2):
        assert await store.get(f"{10000000 + n}") is not None


async def test_an_address_at_its_limit_gets_the_places_of_ended_sessions() -> None:
    now = [0.0]
    store = MemoryStore(POLICY, clock=lambda: now[0])
    old = sessions.create("20000001", "192.0.2.7", "c1", -50.0).record  # idle since -50
    assert await store.create(old, limit=2) == "created"
    assert await store.create(sessions.create("20000002", "192.0.2.7", "c2", 0.0).record, 2) == (
        "created"
    )
    third = sessions.create("20000003", "192.0.2.7", "c3", 0.0).record
    assert await store.create(third, limit=2) == "limited"
    now[0] = 100.0  # the first one is past its retention: its place is free again
    assert await store.create(third, limit=2) == "created"
    assert await store.create(sessions.create("20000004", "192.0.2.7", "c4", 100.0).record, 2) == (
        "limited"
    )


async def test_purge_forgets_the_places_of_sessions_gone() -> None:
    store = MemoryStore(POLICY)
    record = sessions.create("30000001", "192.0.2.9", "c", time.time()).record
    assert await store.create(record, limit=5) == "created"
    store._records.clear()  # gone without a word (as an expired session is)
    for _ in range(PURGE_ROUNDS):
        store.purge()
    assert store._ip_slots == {}
