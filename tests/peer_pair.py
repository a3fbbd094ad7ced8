"""Two aiortc peers in one process, connected on loopback with no ICE servers (so nothing
leaves the machine), for the child scripts that test the tuned SCTP layer on real peers (a
child each: the layer is process-wide), and how a test runs such a child."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection

ROOT = Path(__file__).resolve().parent.parent


async def open_pair(
    on_channel: Callable[[RTCDataChannel], None],
) -> tuple[RTCPeerConnection, RTCPeerConnection, RTCDataChannel]:
    """Sender, receiver and the sender's open channel; `on_channel` gets the receiver's."""
    sender, receiver = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
    channel = sender.createDataChannel("probe")
    opened = asyncio.Event()
    channel.on("open", opened.set)
    receiver.on("datachannel", on_channel)
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    await asyncio.wait_for(opened.wait(), 10)
    return sender, receiver, channel


def run_child(module: str, *args: str) -> dict[str, Any]:
    """The JSON line `python -m module args` prints; it must end well and show no traceback."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Traceback" not in out.stderr, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result
