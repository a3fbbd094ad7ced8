"""Starting the project's servers as real processes: one place for how each is launched,
how its readiness is seen and how it is stopped. The lab and the tests both use it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class MissingProgram(RuntimeError):
    """A program the project needs is not installed (`make lab` or `make test` installs it)."""


def find_program(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise MissingProgram(f"{name} is not installed (make lab / make test install it)")
    return path


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not go; only ever our own child."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A private redis-server on a unix socket in `workdir` (keep its path short: unix sockets
    allow about 100 bytes); yields its URL."""
    sock = workdir / "redis.sock"
    proc = subprocess.Popen(
        [
            find_program("redis-server"),
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
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"unix://{sock}"
    finally:
        stop(proc)


@dataclass
class SignalEndpoint:
    """A signaling server listening on loopback."""

    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class SignalProcess(SignalEndpoint):
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


async def start_signal(
    log_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 15.0
) -> SignalProcess:
    """`fileshare-signal` on a free loopback port; returns once it logs where it listens."""
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "signaling",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--log-json",
                *args,
            ],
            stdout=log_file,
            stderr=log_file,
            env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == "listening":
                    return SignalProcess(int(entry["port"]), proc, log_path)
        await asyncio.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"fileshare-signal did not start:\n{log_path.read_text()}")
