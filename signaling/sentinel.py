"""Redis behind Sentinel: the primary is looked up through the sentinels, and looked up again
whenever a connection to it breaks, so commands and pub/sub follow the primary after a failover.

URL form (our own, as redis-py has none for Sentinel):
`redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`, e.g.
`redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/fileshare/0`.
The password, if any, is the data nodes' (`requirepass`); the sentinels are asked without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
# A sentinel that does not answer within this is skipped for the next one in the list.
SENTINEL_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class SentinelAddress:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SCHEME + "://")


def parse_url(url: str) -> SentinelAddress:
    """Split a `redis+sentinel://` URL; a malformed one raises ValueError naming what is wrong
    (never the password)."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ValueError(f"not a {SCHEME}:// URL")
    credentials, _, hosts = parts.netloc.rpartition("@")
    password = unquote(credentials.partition(":")[2]) or None
    sentinels = tuple(_host_port(item) for item in hosts.split(",") if item)
    if not sentinels:
        raise ValueError(f"{SCHEME} URL names no sentinel")
    path = [segment for segment in parts.path.split("/") if segment]
    if not path or len(path) > 2:
        raise ValueError(f"{SCHEME} URL path must be /service or /service/db")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"{SCHEME} URL: the database must be a number")
        db = int(path[1])
    return SentinelAddress(sentinels, unquote(path[0]), db, password)


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [v6]:port
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    elif item.count(":") == 1:
        host, _, port = item.partition(":")
    else:  # a name, a v4 address or a bare v6 address
        host, port = item, ""
    if not host:
        raise ValueError(f"{SCHEME} URL: empty sentinel host")
    if port and not port.isdigit():
        raise ValueError(f"{SCHEME} URL: bad sentinel port {port!r}")
    return host, int(port) if port else DEFAULT_SENTINEL_PORT


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's lookup of the primary with the blocking pool's wait for a free connection
    (see `signaling.redis_store.connect`)."""


def connect(url: str, **pool_options: Any) -> aioredis.Redis:
    """A client of the current primary of the URL's service; `pool_options` as for the plain
    URL (pool size, timeouts)."""
    address = parse_url(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
        list(address.sentinels),
        sentinel_kwargs={
            "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
            "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
        },
    )
    client: aioredis.Redis = sentinel.master_for(
        address.service,
        connection_pool_class=BlockingSentinelPool,
        db=address.db,
        password=address.password,
        **pool_options,
    )
    return client
