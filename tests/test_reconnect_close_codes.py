"""What the client does when the server closes its WebSocket on purpose (issue 15), with real
server processes: an instance draining on SIGTERM closes with 1012 (service restart) and the
client rejoins through haproxy on another instance, while the instance still drains or is
gone; a client that stopped reading (a suspended process) is closed with 1013 (try again
later) once the server's send queue for it is full, and rejoins when it wakes. In both cases
the other peer hears a resume (`peer_joined.resumed`), not a restart."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fileshare.peer import Inbox, Membership
from fileshare.signal_client import SignalClient
from fsproto import schema
from netsim.processes import haproxy
from tests.conftest import UNBUDGETED_ARGS, StartProcess, require_binary

PAYLOAD = {"kind": "padding", "data": "x" * 60_000}  # under the 64 KiB message limit


class Recorded:
    """The client's events, kept for the test to read."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, "ts": time.time(), **fields})

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]


async def eventually(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not in {timeout} s: {what}"
        await asyncio.sleep(0.1)


@pytest.mark.redis
async def test_1012_from_a_draining_instance_and_the_rejoin_elsewhere(
    start_process: StartProcess, redis_url: str, tmp_path: Path
) -> None:
    require_binary("haproxy")
    one = await start_process("--redis-url", redis_url, "--instance-id", "one")
    two = await start_process("--redis-url", redis_url, "--instance-id", "two")
    with haproxy(tmp_path, [one.port, two.port]) as port:
        front = f"ws://127.0.0.1:{port}/ws"
        a_client = await SignalClient.connect(front)  # round robin: on `one`
        created = await a_client.create(instance="a-process")
        b_client = await SignalClient.connect(front)  # on `two`
        joined = await b_client.join(created.sessionId, created.token, "b-process")
        recorded = {"a": Recorded(), "b": Recorded()}
        a = Inbox(
            a_client,
            Membership(front, created.sessionId, "a", created.reconnectKey, "a-process"),
            recorded["a"],
        )
        b = Inbox(
            b_client,
            Membership(front, created.sessionId, "b", joined.reconnectKey, "b-process"),
            recorded["b"],
        )
        b.peer_present = joined.peerPresent
        try:
            await a.until(lambda: a.peer_present, 10)
            arrivals = (a.arrivals, b.arrivals)
            one.proc.send_signal(signal.SIGTERM)
            struck = time.time()
            assert await asyncio.to_thread(one.proc.wait, 20) == 0
            moved = {k for k, r in recorded.items() if r.named("reconnecting")}
            assert moved, "nobody was on the drained instance"
            for name in moved:
                events = recorded[name]
                assert "code 1012" in events.named("reconnecting")[0]["reason"]
                await eventually(lambda e=events: e.named("signaling_restored"), 30, name)
                back = events.named("signaling_restored")[0]["ts"] - struck
                print(f"{name}: 1012, back on the other instance {back:.1f} s after SIGTERM")
            await eventually(lambda: a.peer_present and b.peer_present, 10, "both present")
            assert (a.arrivals, b.arrivals) == arrivals  # a resume, not a restart
            await a.relay("offer", {"sdp": "after the drain"})
            assert (await b.expect("offer", 10))["sdp"] == "after the drain"
            assert one.proc.poll() == 0 and two.proc.poll() is None
        finally:
            await a.close()
            await b.close()


async def slow_consumers(http: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as reply:
        text = await reply.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("fileshare_signal_rejections_total") and "slow_consumer" in line
    )


async def test_1013_for_a_suspended_peer_and_its_rejoin(
    start_process: StartProcess, tmp_path: Path
) -> None:
    """The creator relays 60 KB messages within its rate limits to a joiner that is stopped
    (SIGSTOP): once the kernel's buffers and the server's 256 KiB queue are full, the server
    closes that connection with 1013 and reads nothing more from it; continued (SIGCONT), the
    joiner reads the close, reconnects and rejoins, and the creator hears a resume. The
    server's read budgets are lifted: at the defaults they would slow the creator's burst to
    256 KiB/s (tests/test_transport_limits.py), and this test is about the send queue's bound."""
    server = await start_process(*UNBUDGETED_ARGS)
    creator = await SignalClient.connect(server.url)
    created = await creator.create(instance="creator")
    out = tmp_path / "joiner.out"
    argv = [sys.executable, "-m", "tests.inbox_peer", server.url, created.sessionId]
    with out.open("wb") as sink:
        joiner = subprocess.Popen(
            [*argv, created.token],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )

    def events() -> list[dict[str, Any]]:
        lines = out.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    try:
        joined = await creator.next_event(30)
        assert isinstance(joined, schema.PeerJoined) and not joined.resumed
        joiner.send_signal(signal.SIGSTOP)
        sent = 0
        deadline = time.monotonic() + 30
        while await slow_consumers(server.http) == 0:
            assert time.monotonic() < deadline, f"no 1013 after {sent} messages"
            for _ in range(200 if sent == 0 else 10):  # the burst, then 50 a second
                await creator.relay("signal", PAYLOAD)
                sent += 1
            await asyncio.sleep(0.2)
        print(f"1013 after {sent} messages of 60 KB to the stopped joiner")
        joiner.send_signal(signal.SIGCONT)
        woken = time.time()
        await eventually(
            lambda: any(e["event"] == "signaling_restored" for e in events()), 30, "rejoin"
        )
        reasons = [e["reason"] for e in events() if e["event"] == "reconnecting"]
        assert reasons and "code 1013" in reasons[0], reasons
        back = next(e["ts"] for e in events() if e["event"] == "signaling_restored") - woken
        print(f"joiner: {reasons[0]}; back {back:.1f} s after SIGCONT")
        while True:  # the creator skips what came meanwhile (the joiner left, errors)
            event = await creator.next_event(30)
            if isinstance(event, schema.PeerJoined):
                assert event.resumed
                break
        assert joiner.poll() is None
    finally:
        if joiner.poll() is None:
            joiner.send_signal(signal.SIGCONT)
            joiner.kill()
            joiner.wait(10)
        await creator.close()
