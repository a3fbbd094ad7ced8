"""Fixtures that start the real parts: signaling servers (in process or as processes), redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from signaling.config import Config
from signaling.server import SignalingServer, open_backend

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str) -> str:
    """A missing prerequisite fails in CI and skips, with the reason, elsewhere."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        message = f"{name} is not installed (make test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class RunningServer:
    server: SignalingServer
    runner: web.AppRunner
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


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
        runner = web.AppRunner(server.app(), handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        started = RunningServer(server, runner, port)
        running.append(started)
        return started

    yield start
    for item in running:
        await item.runner.cleanup()


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    return await start_server()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private redis-server on a unix socket (no TCP port to collide with parallel workers)."""
    binary = require_binary("redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="fs-redis-"))  # short: unix socket paths are limited
    sock = workdir / "redis.sock"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.02)
    yield f"unix://{sock}"
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log(self) -> str:
        return self.log_path.read_text()


StartProcess = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture
async def start_process(tmp_path: Path) -> AsyncIterator[StartProcess]:
    """Start `fileshare-signal` as a real process; returns once it logs the port it listens on."""
    procs: list[ServerProcess] = []

    async def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        log_path = tmp_path / f"signal-{len(procs)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "signaling", "--port", "0", "--log-json", *args],
                stdout=log_file,
                stderr=log_file,
                env={**os.environ, **(env or {})},
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for line in log_path.read_text().splitlines():
                entry = json.loads(line)
                if entry.get("event") == "listening":
                    started = ServerProcess(proc, int(entry["port"]), log_path)
                    procs.append(started)
                    return started
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        proc.kill()
        pytest.fail(f"fileshare-signal did not start: {log_path.read_text()}")

    yield start
    for item in procs:
        if item.proc.poll() is None:
            item.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            item.proc.wait(10)
