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
Creation = Literal["created", "taken", "limited"]


@dataclass(frozen=True, slots=True)
class Change(Generic[T]):
    """What an update decided: its result, and what becomes of the record."""

    value: T
    write: Write = "save"


Handler = Callable[[bytes], None]
PURGE_ROUNDS = 10  # MemoryStore.purge checks every session once in this many calls


class SessionStore(Protocol):
    async def create(self, record: SessionRecord, limit: int) -> Creation:
        """Store a new session and count it against its owner's address, in one step:
        "taken" if its id is in use, "limited" if the address has `limit` live sessions."""

    async def get(self, session_id: str) -> SessionRecord | None: ...

    async def update(
        self, session_id: str, change: Callable[[SessionRecord], Change[T]]
    ) -> Change[T] | None:
        """Apply `change` atomically to a live session; None if there is none."""

    async def remove(self, record: SessionRecord) -> None:
        """Delete the session and free its place among its owner's sessions."""

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
        self._unchecked: list[str] = []  # the rest of the current purge round
        self._step = 0  # sessions checked per purge call in this round

    def _retained(self, session_id: str) -> SessionRecord | None:
        record = self._records.get(session_id)
        if record is not None and record.retain_until(self._policy) <= self._clock():
            del self._records[session_id]
            return None
        return record

    async def create(self, record: SessionRecord, limit: int) -> Creation:
        if self._retained(record.id) is not None:
            return "taken"
        slots = self._ip_slots.setdefault(record.owner_ip, {})
        if len(slots) >= limit:  # sessions that ended or expired no longer count
            now = self._clock()
            for sid in [s for s, end in slots.items() if end <= now or self._retained(s) is None]:
                del slots[sid]
            if len(slots) >= limit:
                return "limited"
        slots[record.id] = record.created_at + self._policy.lifetime_seconds
        self._records[record.id] = record
        return "created"

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

    async def remove(self, record: SessionRecord) -> None:
        self._records.pop(record.id, None)
        slots = self._ip_slots.get(record.owner_ip)
        if slots is not None:
            slots.pop(record.id, None)
            if not slots:
                del self._ip_slots[record.owner_ip]

    def purge(self) -> None:
        """Forget expired sessions (Redis does this by itself through key expiry), a
        PURGE_ROUNDS-th of them a call: checking all at once would stall the event loop for
        every session held (expired ones are never served in the meantime, see `_retained`)."""
        if not self._unchecked:
            self._unchecked = list(self._records)
            self._step = -(-len(self._unchecked) // PURGE_ROUNDS)
            for ip, slots in list(self._ip_slots.items()):
                for sid in [s for s in slots if s not in self._records]:
                    del slots[sid]
                if not slots:
                    del self._ip_slots[ip]
        if self._unchecked:
            for sid in self._unchecked[-self._step :]:
                self._retained(sid)
            del self._unchecked[-self._step :]

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
