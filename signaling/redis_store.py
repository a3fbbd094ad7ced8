"""The Redis backend: sessions shared by several instances, surviving the restart of any one.

Records are msgpack under `fs:s:<id>`, expiring by themselves at the session's deadline; an
update writes only if the record is still the one its rule read (compare and set, in Lua), so two
instances never interleave a rule. Peers are reached through pub/sub channels that the instance
holding the connection subscribes to.
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
from redis.exceptions import RedisError

from signaling import sentinel
from signaling.sessions import SessionPolicy, SessionRecord
from signaling.store import Change, Creation, Handler

T = TypeVar("T")
log = logging.getLogger("fileshare.signal.redis")
POOL_CONNECTIONS = 64
POOL_WAIT_SECONDS = 10.0

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(SessionRecord).decode

# Store a new session unless its id is taken, and count it against its owner's address unless
# the address has `limit` live sessions (its sessions that no longer exist do not count: they are
# looked for only when the count reaches the limit, so a create is not a walk over them all).
_CREATE = """
local key, slots, now, limit = KEYS[1], KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if not redis.call('SET', key, ARGV[1], 'NX', 'PXAT', ARGV[2]) then return 'taken' end
redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
if redis.call('ZCARD', slots) >= limit then
  for _, sid in ipairs(redis.call('ZRANGE', slots, 0, -1)) do
    if redis.call('EXISTS', ARGV[7] .. sid) == 0 then redis.call('ZREM', slots, sid) end
  end
  if redis.call('ZCARD', slots) >= limit then
    redis.call('DEL', key)
    return 'limited'
  end
end
redis.call('ZADD', slots, ARGV[5], ARGV[6])
redis.call('PEXPIREAT', slots, math.floor(tonumber(ARGV[5]) * 1000))
return 'created'
"""

# Compare and set: write the new value (or delete, for an empty one) only if the record is still
# the one the rule was applied to; else return what it is now, for the caller to apply it again.
_SWAP = """
local current = redis.call('GET', KEYS[1])
if not current then return {0} end
if current ~= ARGV[1] then return {0, current} end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3]) end
return {1}
"""


def _session_key(session_id: str) -> str:
    return f"fs:s:{session_id}"


def _slots_key(ip: str) -> str:
    return f"fs:ip:{ip}"


def connect(url: str) -> aioredis.Redis:
    """A client whose commands wait for a free connection when POOL_CONNECTIONS are busy (a
    burst of joins), where redis-py's default pool would fail them. A `redis+sentinel://` URL
    gives a client of the primary that Sentinel names (`signaling.sentinel`)."""
    options: dict[str, Any] = {
        "max_connections": POOL_CONNECTIONS,
        "timeout": POOL_WAIT_SECONDS,
        "socket_connect_timeout": 5,
        "health_check_interval": 15,
    }
    if sentinel.is_sentinel_url(url):
        return sentinel.connect(url, **options)
    return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(url, **options))


class RedisStore:
    """Few round trips per operation (each costs the instances and Redis a wake-up): one to
    create or remove a session, two to update one. The rules of `signaling.sessions` run here,
    and a Lua script writes their outcome only if the record did not change meanwhile."""

    def __init__(self, client: aioredis.Redis, policy: SessionPolicy) -> None:
        self._r = client
        self._policy = policy
        self._create = client.register_script(_CREATE)
        self._swap = client.register_script(_SWAP)

    def _expiry_ms(self, record: SessionRecord) -> int:
        return int(record.retain_until(self._policy) * 1000)

    async def create(self, record: SessionRecord, limit: int) -> Creation:
        until = record.created_at + self._policy.lifetime_seconds
        outcome = await self._create(
            keys=[_session_key(record.id), _slots_key(record.owner_ip)],
            args=[
                _encode(record),
                self._expiry_ms(record),
                time.time(),
                limit,
                until,
                record.id,
                _session_key(""),
            ],
        )
        return cast("Creation", outcome.decode() if isinstance(outcome, bytes) else outcome)

    async def get(self, session_id: str) -> SessionRecord | None:
        raw = cast("bytes | None", await self._r.get(_session_key(session_id)))
        return None if raw is None else _decode(raw)

    async def update(
        self, session_id: str, change: Callable[[SessionRecord], Change[T]]
    ) -> Change[T] | None:
        """Read, apply the rule, swap in the result: two round trips, one more for each
        concurrent change that came first (the rule then runs again on the newer record)."""
        key = _session_key(session_id)
        raw = cast("bytes | None", await self._r.get(key))
        while raw is not None:
            record = _decode(raw)
            result = change(record)
            if result.write == "none":
                return result
            new = b"" if result.write == "delete" else _encode(record)
            reply = await self._swap(keys=[key], args=[raw, new, self._expiry_ms(record)])
            if reply[0] == 1:
                return result
            raw = reply[1] if len(reply) > 1 else None
        return None

    async def remove(self, record: SessionRecord) -> None:
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.delete(_session_key(record.id))
            pipe.zrem(_slots_key(record.owner_ip), record.id)
            await pipe.execute()

    async def ping(self) -> bool:
        try:
            return bool(await self._r.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._r.aclose()


class RedisBus:
    """One pub/sub connection per instance; local handlers per channel.

    Publishing is a group commit: while one publish is on its way to Redis, the publishes made
    meanwhile wait and then go as one pipeline (one write, one wake-up of Redis, one reply for
    all), so under load a round trip carries many messages, and alone a message goes at once.
    Each caller awaits its publish before its next, so one caller's messages keep their order.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._r = client
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._handlers: dict[str, list[Handler]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._busy = False  # a publish or a batch is on its way
        self._waiting: list[tuple[str, bytes, asyncio.Future[int]]] = []
        self._batches: set[asyncio.Task[None]] = set()

    async def publish(self, channel: str, data: bytes) -> int:
        if self._busy:
            delivered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._waiting.append((channel, data, delivered))
            return await delivered
        self._busy = True
        try:
            return int(await self._r.publish(channel, data))
        finally:
            self._next_batch()

    def _next_batch(self) -> None:
        if not self._waiting:
            self._busy = False
            return
        batch, self._waiting = self._waiting, []
        task = asyncio.create_task(self._publish_batch(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _publish_batch(self, batch: list[tuple[str, bytes, asyncio.Future[int]]]) -> None:
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                for channel, data, _ in batch:
                    pipe.publish(channel, data)
                counts = await pipe.execute()
        except (Exception, asyncio.CancelledError) as exc:
            failure = exc if isinstance(exc, Exception) else RedisError("publish cancelled")
            for _, _, delivered in batch:
                if not delivered.done():
                    delivered.set_exception(failure)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            for (_, _, delivered), count in zip(batch, counts, strict=True):
                if not delivered.done():
                    delivered.set_result(int(count))
        finally:
            self._next_batch()

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
        while self._batches:  # (a batch may start the next one)
            await asyncio.wait(set(self._batches))
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
