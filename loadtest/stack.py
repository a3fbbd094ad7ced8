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

from netsim.processes import SignalProcess, haproxy, redis_server, start_signal, stop

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
async def instances(
    where: Path, count: int, args: tuple[str, ...]
) -> AsyncIterator[list[SignalProcess]]:
    started: list[SignalProcess] = []
    try:
        for index in range(count):
            started.append(
                await start_signal(
                    where / f"signal-{index}.log", "--instance-id", f"lt{index}", *args
                )
            )
        yield started
    finally:
        for item in started:
            stop(item.proc)


@contextlib.asynccontextmanager
async def stack(mode: str, args: tuple[str, ...] = (), count: int = 3) -> AsyncIterator[Target]:
    """`memory`: one instance, in-memory store. `redis`: `count` instances sharing a private
    redis-server, behind haproxy (which they trust for the client address)."""
    async with workdir() as where:
        if mode == "memory":
            async with instances(where, 1, args) as (one,):
                yield Target(mode, one.url, [one])
            return
        with redis_server(where) as redis_url:
            shared = ("--redis-url", redis_url, "--trusted-proxies", "127.0.0.1", *args)
            async with instances(where, count, shared) as started:
                with haproxy(where, [s.port for s in started]) as port:
                    yield Target(mode, f"ws://127.0.0.1:{port}/ws", started)
