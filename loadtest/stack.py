"""The topologies a load test runs against, started as real processes on loopback and stopped
whatever happens: one instance with the in-memory store, or three instances sharing one
redis-server behind one haproxy."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from netsim.processes import SignalProcess, haproxy, redis_server, route_tags, signal_instances

MODES = ("memory", "redis")


@dataclass
class Target:
    mode: str
    url: str  # the WebSocket URL the load goes to
    servers: list[SignalProcess] = field(default_factory=list)


@contextlib.asynccontextmanager
async def workdir() -> AsyncIterator[Path]:
    """A short temporary folder (unix socket paths are limited to about 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="fs-lt-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def stack(mode: str, args: tuple[str, ...] = (), count: int = 3) -> AsyncIterator[Target]:
    """`memory`: one instance, in-memory store. `redis`: `count` instances sharing a private
    redis-server, behind haproxy (which they trust for the client address), with route tags:
    a connection to `/ws?s=<session number>` lands on the session's instance."""
    async with workdir() as where:
        if mode == "memory":
            async with signal_instances(where, 1, *args, name="lt") as (one,):
                yield Target(mode, one.url, [one])
            return
        with redis_server(where) as redis_url:
            shared = ("--redis-url", redis_url, "--trusted-proxies", "127.0.0.1", *args)
            async with signal_instances(where, count, *shared, name="lt", tagged=True) as started:
                # Thousands of clients from one address: no per-source limits at the front.
                ports = [s.port for s in started]
                with haproxy(where, ports, per_source=None, tags=route_tags(count)) as port:
                    yield Target(mode, f"ws://127.0.0.1:{port}/ws", started)
