"""Where sessions live and how instances reach each other's peers: one interface, two backends.

The in-memory backend is the embedded default; `signaling.redis_store` serves several instances.
A store applies the rules of `signaling.sessions` atomically through `update`; a bus delivers
events to whichever instance holds a peer's connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from signaling.sessions import SessionPolicy, SessionRecord

T = TypeVar("T")
Write = Literal["save", "delete", "none"]


@dataclass(frozen=True, slots=True)
class Change(Generic[T]):
    """What an update decided: its result, and what becomes of the record."""

    value: T
    write: Write = "save"


Handler = Callable[[bytes], None]


class SessionStore(Protocol):
    async def insert(self, record: SessionRecord) -> bool:
        """Store a new session; False if its id is taken."""

    async def get(self, session_id: str) -> SessionRecord | None: ...

    async def update(
        self, session_id: str, change: Callable[[SessionRecord], Change[T]]
    ) -> Change[T] | None:
        """Apply `change` atomically to a live session; None if there is none."""

    async def delete(self, session_id: str) -> None: ...

    async def claim_ip_slot(self, ip: str, session_id: str, until: float, limit: int) -> bool:
        """Count one more live session for `ip`, unless it already has `limit`."""

    async def release_ip_slot(self, ip: str, session_id: str) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class Bus(Protocol):
    async def publish(self, channel: str, data: bytes) -> int:
        """Deliver to the channel's subscriber; returns how many received it."""

    async def subscribe(self, channel: str, handler: Handler) -> None: ...

    async def unsubscribe(self, channel: str, handler: Handler) -> None: ...

    async def close(self) -> None: ...


def peer_channel(session_id: str, peer_id: str) -> str:
    return f"fs:peer:{session_id}:{peer_id}"


class MemoryStore:
    """Sessions of one process. Lost on restart: use Redis where that matters."""

    def __init__(self, policy: SessionPolicy, clock: Callable[[], float] = time.time) -> None:
        self._policy = policy
        self._clock = clock
        self._records: dict[str, SessionRecord] = {}
        self._ip_slots: dict[str, dict[str, float]] = {}

    def _retained(self, session_id: str) -> SessionRecord | None:
        record = self._records.get(session_id)
        if record is not None and record.retain_until(self._policy) <= self._clock():
            del self._records[session_id]
            return None
        return record

    async def insert(self, record: SessionRecord) -> bool:
        if self._retained(record.id) is not None:
            return False
        self._records[record.id] = record
        return True

    async def get(self, session_id: str) -> SessionRecord | None:
        return self._retained(session_id)

    async def update(
        self, session_id: str, change: Callable[[SessionRecord], Change[T]]
    ) -> Change[T] | None:
        record = self._retained(session_id)
        if record is None:
            return None
        result = change(record)
        if result.write == "delete":
            self._records.pop(session_id, None)
        return result

    async def delete(self, session_id: str) -> None:
        self._records.pop(session_id, None)

    async def claim_ip_slot(self, ip: str, session_id: str, until: float, limit: int) -> bool:
        now = self._clock()
        slots = self._ip_slots.setdefault(ip, {})
        for sid in [s for s, end in slots.items() if end <= now or self._retained(s) is None]:
            del slots[sid]
        if len(slots) >= limit:
            return False
        slots[session_id] = until
        return True

    async def release_ip_slot(self, ip: str, session_id: str) -> None:
        slots = self._ip_slots.get(ip)
        if slots is not None:
            slots.pop(session_id, None)
            if not slots:
                del self._ip_slots[ip]

    def purge(self) -> None:
        """Forget expired sessions (Redis does this by itself through key expiry)."""
        for sid in list(self._records):
            self._retained(sid)
        for ip in [ip for ip, slots in self._ip_slots.items() if not slots]:
            del self._ip_slots[ip]

    def __len__(self) -> int:
        return len(self._records)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._records.clear()


class MemoryBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    async def publish(self, channel: str, data: bytes) -> int:
        handlers = self._handlers.get(channel, ())
        for handler in list(handlers):
            handler(data)
        return len(handlers)

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.get(channel)
        if handlers and handler in handlers:
            handlers.remove(handler)
            if not handlers:
                del self._handlers[channel]

    async def close(self) -> None:
        self._handlers.clear()
