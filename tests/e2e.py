"""Test helpers around netsim.lab, the client adapter the end-to-end tests run clients through."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from netsim.lab import Client, Lab, make_lab, sha256

__all__ = [
    "Client",
    "Lab",
    "big_file",
    "make_lab",
    "sha256",
    "start_mitm_relay",
    "tree",
    "wait_progress",
]


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 (or "dir") for everything under root."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        found[rel] = "dir" if path.is_dir() else sha256(path)
    return found


def start_mitm_relay(lab: Lab) -> str:
    """tests.mitm_relay in the namespace, in front of the real server; returns its base URL, to
    which a client appends "/MODE"."""
    proc = lab.spawn(sys.executable, "-m", "tests.mitm_relay", "--upstream", lab.server.url)
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["port"]
    return f"ws://127.0.0.1:{port}/ws"


def big_file(path: Path, mib: int) -> Path:
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1024 * 1024))
    return path


async def wait_progress(client: Client, fraction: float, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        done = [e for e in client.events() if e["event"] == "progress" and e["total"]]
        if done and done[-1]["done"] >= fraction * done[-1]["total"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the transfer made no progress")
