"""A short, bounded locust run against the real topologies: honest users see no failure, and
every kind of abuse is refused with its own code. No timing is asserted here (the benchmark
measures speed); a noisy machine only makes the run slower."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.run import ABUSE_KINDS, problems, run_locust
from loadtest.stack import stack
from tests.conftest import require_binary

EXPECTED_REFUSALS = {
    "bad_token: session_not_found",
    "guess: session_not_found",
    "bad_message: bad_json",
    "bad_message: unsupported_version",
    "bad_message: unknown_type",
    "bad_message: bad_message",
    "too_large: too_large",
    "flood: close 1008",
    "conn_flood: http 429",
}


@pytest.mark.parametrize("mode", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_short_locust_run(mode: str, tmp_path: Path) -> None:
    if mode == "redis":
        require_binary("redis-server")
        require_binary("haproxy")
    async with stack(mode) as target:
        result = await run_locust(
            target.url,
            tmp_path / "locust",
            users=3 + len(ABUSE_KINDS),
            run_time=5,
            extra=("--abusers", str(len(ABUSE_KINDS)), "--hold-seconds", "2"),
        )
    assert problems(result, "all") == []
    assert result.failure_count == 0
    assert result.count("join") > 0
    assert result.count("relay") > 0
    assert set(result.tally["refusals"]) == EXPECTED_REFUSALS
    if mode == "redis":
        assert result.tally["placement"].get("cross", 0) > 0
    assert Path(f"{tmp_path / 'locust'}.html").stat().st_size > 0


# websocket-client's WebSocket.close() swallows every exception (a bare `except:`), a greenlet kill
# included: a locust user killed while closing went on running, and locust waited for it forever.
KILLED_WHILE_CLOSING = """
from gevent import monkey
monkey.patch_all()
import base64, hashlib, socket, sys
import gevent
from loadtest.wsclient import Peer

server = socket.create_server(("127.0.0.1", 0))

def silent_websocket_server():  # completes the handshake, then never answers anything
    conn, _ = server.accept()
    request = b""
    while b"\\r\\n\\r\\n" not in request:
        request += conn.recv(4096)
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\\r\\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
        b"Sec-WebSocket-Accept: " + accept + b"\\r\\n\\r\\n"
    )
    gevent.sleep(60)

gevent.spawn(silent_websocket_server)
peer = Peer(f"ws://127.0.0.1:{server.getsockname()[1]}/ws")
closing = gevent.spawn(peer.close, 30.0)
gevent.sleep(0.5)  # now waiting for the close frame that never comes
closing.kill(timeout=5)
if not closing.dead or not isinstance(closing.value, gevent.GreenletExit):
    sys.exit(f"the kill was swallowed: {closing!r} returned {closing.value!r}")
if peer.ws.sock is not None:
    sys.exit("the socket was left open")
"""


def test_a_peer_killed_while_closing_dies() -> None:
    """locust stops a user by killing its greenlet; a Peer must let that through at once."""
    subprocess.run([sys.executable, "-c", KILLED_WHILE_CLOSING], check=True, timeout=60)


def test_capacity_benchmark_runs_every_phase(tmp_path: Path) -> None:
    """`make bench-signaling` in miniature: every phase runs and is reported (no timing is
    asserted: that is what the real run measures)."""
    require_binary("redis-server")
    require_binary("haproxy")
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "loadtest.bench", "--sessions", "40", "--concurrency", "2"),
            *("--step-seconds", "0.5", "--rate", "100", "--rate-pairs", "10"),
            *("--rate-seconds", "0.5", "--latency-sessions", "5", "--out", str(out)),
            *("--scale-concurrency", "2", "--scale-rounds", "1", "--relay-rounds", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=True,
    )
    results = json.loads(out.read_text())
    both = ("signaling", "echo")
    for server in both:
        assert results[server]["idle"]["sockets"] == 80
        assert results[server]["setup"][0]["errors"] == 0
    rounds = results["relay"]["rounds"]  # signaling and echo side by side, taking turns
    assert len(rounds) == 1 and all(r[s]["messages_per_second"] > 0 for r in rounds for s in both)
    assert results["relay"]["median_ratio"] > 0 and "signaling : echo" in done.stdout
    assert results["signaling"]["latency"]["sessions"] == 5
    for count in ("1", "3"):
        cluster = results["clusters"][count]
        assert set(cluster["setup"][0]["cpu_split"]) == {"instances", "redis-server", "haproxy"}
        assert cluster["latency"]["p50_ms"] > 0
    if os.geteuid() == 0:  # the CPU quota groups need root
        for count in ("1", "2", "3"):
            assert results["scale"][count]["setup"][0]["errors"] == 0
    text = out.with_suffix(".txt").read_text()
    assert "memory per idle socket" in text and "3 instance(s) + redis + haproxy" in text
    assert done.stdout.rstrip().endswith(text.rstrip().splitlines()[-1])
