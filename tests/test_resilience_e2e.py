"""Transfers riding out what a day on the internet does (issue 15), through the real CLI in a
namespace: the signaling server out of reach, a suspended process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from netsim import netns
from tests.conftest import require_binary
from tests.e2e import Client, Lab, big_file, sha256, wait_progress


@contextlib.contextmanager
def throttled(lab: Lab, rate: str) -> Iterator[None]:
    """The namespace's loopback limited to `rate` (tbf), so a transfer lasts long enough for a
    fault in its middle; the burst exceeds lo's 64 KiB MTU, so no packet is too big for it."""
    tc = [*netns.in_namespace(lab.namespace), "tc", "qdisc"]
    subprocess.run(
        [*tc, "add", "dev", "lo", "root", "tbf", "rate", rate, "burst", "256kb", "latency", "50ms"],
        check=True,
        timeout=10,
    )
    try:
        yield
    finally:
        subprocess.run([*tc, "del", "dev", "lo", "root"], check=True, timeout=10)


async def wait_for(client: Client, name: str, prefix: str = "", timeout: float = 60) -> float:
    """The time of the first `name` event whose reason starts with `prefix`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for event in client.events():
            if event["event"] == name and str(event.get("reason", "")).startswith(prefix):
                return float(event["ts"])
        assert client.proc.poll() is None, client.report()
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {name} {prefix!r} event; {client.report()}")


@contextlib.asynccontextmanager
async def transfer_under_way(
    lab: Lab, tmp_path: Path, rate: str, mib: int
) -> AsyncIterator[tuple[Client, Client]]:
    """A `mib` MiB transfer through a loopback of `rate`, yielded once data moves (for the
    fault); afterwards both ends must have exited 0 with the file intact and no traceback."""
    out = tmp_path / "out"
    with throttled(lab, rate):
        src = big_file(tmp_path / "big.bin", mib)
        sender, code = await lab.send(src)
        receiver = lab.receive(code, out)
        await wait_progress(receiver, 0.05)
        yield sender, receiver
        assert await receiver.wait(240) == 0, receiver.report()
        assert await sender.wait(60) == 0, sender.report()
    assert sha256(out / src.name) == sha256(src)
    for client in (sender, receiver):
        text = client.err.read_text() + client.out.read_text()
        assert "Traceback" not in text, text[-3000:]


async def test_signaling_outage_keeps_the_data_channel(lab: Lab, tmp_path: Path) -> None:
    """Both peers lose the signaling server at once for 25 s mid-transfer (its port blocked;
    the WebSocket heartbeat notices): both report `reconnecting` with the reason, rejoin as
    the same processes, and the one data channel they had carries the whole transfer."""
    require_binary("nft")
    require_binary("tc")
    port = urlparse(lab.server.url).port
    async with transfer_under_way(lab, tmp_path, "24mbit", 112) as (sender, receiver):
        with lab.blocked(f"tcp dport {port}"):
            for client in (sender, receiver):
                await wait_for(client, "reconnecting", "signaling", timeout=30)
            await asyncio.sleep(5)  # attempts into the outage fail and back off
        unblocked = time.time()
        for client in (sender, receiver):
            back = await client.wait_event("signaling_restored", timeout=40)
            print(f"signaling back {back['ts'] - unblocked:.1f} s after the outage ended")
    for client in (sender, receiver):
        connected = [e for e in client.events() if e["event"] == "connected"]
        assert len(connected) == 1, connected  # no data channel was torn down for the blip


@pytest.mark.parametrize("side", ["receiver", "sender"])
async def test_a_suspended_process_carries_on(lab: Lab, tmp_path: Path, side: str) -> None:
    """Ctrl-Z for 20 s, then `fg` (SIGSTOP, SIGCONT), on either side, mid-transfer: both
    processes finish with exit 0, the file intact, no traceback anywhere."""
    require_binary("tc")
    async with transfer_under_way(lab, tmp_path, "48mbit", 96) as (sender, receiver):
        stopped = receiver if side == "receiver" else sender
        stopped.proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(20)
        stopped.proc.send_signal(signal.SIGCONT)
        woken = time.time()
    print(f"data moving again {moving_after(receiver, woken) - woken:.1f} s after SIGCONT")


def moving_after(receiver: Client, moment: float) -> float:
    """When the receiver first reported more bytes than it held at `moment`."""
    progress = [e for e in receiver.events() if e["event"] == "progress"]
    held = max((e["done"] for e in progress if e["ts"] <= moment), default=0)
    return float(next(e["ts"] for e in progress if e["ts"] > moment and e["done"] > held))
