"""Fixtures that start the real parts: signaling servers (in process or as processes), redis."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from netsim.processes import (
    MissingProgram,
    SignalEndpoint,
    SignalProcess,
    find_program,
    redis_server,
    start_signal,
    stop,
)
from signaling.config import Config
from signaling.server import SignalingServer, open_backend

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# The developer's own ~/.config/fileshare/config.toml must not steer the tests' clients.
os.environ["FILESHARE_CONFIG"] = "/nonexistent/fileshare-tests/config.toml"


def require_binary(name: str) -> str:
    """A missing prerequisite fails in CI and skips, with the reason, elsewhere."""
    try:
        return find_program(name)
    except MissingProgram as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def require_root() -> None:
    """Namespaces need root; CI runs as root, so there a missing privilege is a failure."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("this test needs root (network namespaces)")
        pytest.skip("this test needs root (network namespaces)")


@dataclass(kw_only=True)
class RunningServer(SignalEndpoint):
    server: SignalingServer


TEST_DEFAULTS = Config(port=0, heartbeat_seconds=5.0)

StartServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start in-process servers on free loopback ports; keyword arguments override Config."""
    running: list[RunningServer] = []

    async def start(**overrides: Any) -> RunningServer:
        cfg = replace(TEST_DEFAULTS, **overrides)
        store, bus = open_backend(cfg)
        server = SignalingServer(cfg, store, bus)
        started = RunningServer(await server.start("127.0.0.1", 0), server=server)
        running.append(started)
        return started

    yield start
    for item in running:
        await item.server.stop()


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    return await start_server()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private redis-server on a unix socket (no TCP port to collide with parallel workers)."""
    require_binary("redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="fs-redis-"))  # short: unix socket paths are limited
    with redis_server(workdir) as url:
        yield url
    shutil.rmtree(workdir, ignore_errors=True)


StartProcess = Callable[..., Awaitable[SignalProcess]]


@pytest.fixture
async def start_process(tmp_path: Path) -> AsyncIterator[StartProcess]:
    """Start `fileshare-signal` as a real process; returns once it logs the port it listens on."""
    procs: list[SignalProcess] = []

    async def start(*args: str, env: dict[str, str] | None = None) -> SignalProcess:
        started = await start_signal(tmp_path / f"signal-{len(procs)}.log", *args, env=env)
        procs.append(started)
        return started

    yield start
    for item in procs:
        stop(item.proc)
