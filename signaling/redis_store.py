"""The Redis backend: sessions shared by several instances, surviving the restart of any one.

Records are msgpack under `fs:s:<id>`, expiring by themselves at the session's deadline; updates
run under WATCH/MULTI so two instances never interleave a rule. Peers are reached through pub/sub
channels that the instance holding the connection subscribes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError

from signaling.sessions import SessionPolicy, SessionRecord
from signaling.store import Change, Handler

T = TypeVar("T")
log = logging.getLogger("fileshare.signal.redis")

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(SessionRecord).decode

# Count the address's sessions that still exist, drop the rest, and add one if under the limit.
_CLAIM_IP_SLOT = """
local key, now, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
for _, sid in ipairs(redis.call('ZRANGE', key, 0, -1)) do
  if redis.call('EXISTS', ARGV[5] .. sid) == 0 then redis.call('ZREM', key, sid) end
end
if redis.call('ZCARD', key) >= limit then return 0 end
redis.call('ZADD', key, ARGV[3], ARGV[4])
redis.call('PEXPIREAT', key, math.floor(tonumber(ARGV[3]) * 1000))
return 1
"""


def _session_key(session_id: str) -> str:
    return f"fs:s:{session_id}"


def connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=15)


class RedisStore:
    def __init__(self, client: aioredis.Redis, policy: SessionPolicy) -> None:
        self._r = client
        self._policy = policy
        self._claim = client.register_script(_CLAIM_IP_SLOT)

    def _expiry_ms(self, record: SessionRecord) -> int:
        return int(record.retain_until(self._policy) * 1000)

    async def insert(self, record: SessionRecord) -> bool:
        done = await self._r.set(
            _session_key(record.id), _encode(record), pxat=self._expiry_ms(record), nx=True
        )
        return bool(done)

    async def get(self, session_id: str) -> SessionRecord | None:
        raw = cast("bytes | None", await self._r.get(_session_key(session_id)))
        return None if raw is None else _decode(raw)

    async def update(
        self, session_id: str, change: Callable[[SessionRecord], Change[T]]
    ) -> Change[T] | None:
        key = _session_key(session_id)
        async with self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = cast("bytes | None", await pipe.get(key))
                    if raw is None:
                        return None
                    record = _decode(raw)
                    result = change(record)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if result.write == "delete":
                        pipe.delete(key)
                    elif result.write == "save":
                        pipe.set(key, _encode(record), pxat=self._expiry_ms(record))
                    await pipe.execute()
                    return result
                except WatchError:
                    continue

    async def delete(self, session_id: str) -> None:
        await self._r.delete(_session_key(session_id))

    async def claim_ip_slot(self, ip: str, session_id: str, until: float, limit: int) -> bool:
        done = await self._claim(
            keys=[f"fs:ip:{ip}"],
            args=[time.time(), limit, until, session_id, "fs:s:"],
        )
        return bool(done)

    async def release_ip_slot(self, ip: str, session_id: str) -> None:
        await self._r.zrem(f"fs:ip:{ip}", session_id)

    async def ping(self) -> bool:
        try:
            return bool(await self._r.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._r.aclose()


class RedisBus:
    """One pub/sub connection per instance; local handlers per channel."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._r = client
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._handlers: dict[str, list[Handler]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def publish(self, channel: str, data: bytes) -> int:
        return int(await self._r.publish(channel, data))

    async def subscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.setdefault(channel, [])
        handlers.append(handler)
        if len(handlers) == 1:
            await self._pubsub.subscribe(channel)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="redis-bus-reader")

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.get(channel)
        if not handlers or handler not in handlers:
            return
        handlers.remove(handler)
        if not handlers:
            del self._handlers[channel]
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        """Dispatch messages; after a lost connection redis-py resubscribes on reconnect."""
        while True:
            try:
                message: dict[str, Any] | None = await self._pubsub.get_message(timeout=1.0)
            except (RedisConnectionError, OSError) as exc:
                log.warning("pub/sub connection lost, retrying: %s", exc.__class__.__name__)
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"].decode()
            for handler in list(self._handlers.get(channel, ())):
                handler(message["data"])

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
