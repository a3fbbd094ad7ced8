"""Issue 11's transport findings (1-4, 8) against a real server over real sockets: each test
fails on 6cf1116. They assert what the server holds (bytes buffered, connections, log lines),
not only the close code."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time

import aiohttp

from fileshare.signal_client import payload_of
from fsproto import schema
from signaling import logs
from signaling.limits import LogBudget
from signaling.server import Connection
from tests.conftest import UNBUDGETED, RunningServer, StartServer
from tests.rawws import RawWebSocket, http_exchange, upgrade_request
from tests.test_server import assert_serving, metric, pair

frame = RawWebSocket.frame


def connections(server: RunningServer) -> list[Connection]:
    return [c for c in server.server.endpoint.wheel if isinstance(c, Connection)]


async def healthz_seconds(server: RunningServer) -> float:
    started = time.monotonic()
    async with aiohttp.ClientSession() as http, http.get(server.http + "/healthz") as resp:
        assert resp.status == 200
    return time.monotonic() - started


async def test_empty_continuation_flood_holds_nothing(server: RunningServer) -> None:
    """Finding 1: FIN=0 then empty continuation frames, each kept; now 64 at most, then 1008."""
    raw = await RawWebSocket.connect(server.port)
    (conn,) = connections(server)
    await raw.send_raw(frame(b"a", fin=False))
    flood = frame(b"", opcode=0x0, fin=False) * 20_000
    raw.writer.write(flood)
    assert await raw.recv_close() == 1008
    assert conn.buffered() < 1024
    assert await metric(server, 'fileshare_signal_rejections_total{reason="fragments"}') == 1
    raw.abort()
    await assert_serving(server)


async def test_a_pong_flood_is_closed_and_the_server_keeps_answering(server: RunningServer) -> None:
    """Finding 2: unsolicited pongs had no limit; now a burst of 10, then 1008."""
    raw = await RawWebSocket.connect(server.port)
    raw.writer.write(frame(b"", opcode=0xA) * 50_000)
    assert await raw.recv_close() == 1008
    assert await healthz_seconds(server) < 2.0
    assert await metric(server, 'fileshare_signal_rejections_total{reason="control_flood"}') == 1
    raw.abort()


async def test_frame_flood_is_closed(server: RunningServer) -> None:
    raw = await RawWebSocket.connect(server.port)
    raw.writer.write(frame(b"{}", opcode=0x2) * 5_000)  # binary: fine, but 5,000 at once
    assert await raw.recv_close() == 1008
    assert await metric(server, 'fileshare_signal_rejections_total{reason="frame_flood"}') == 1
    raw.abort()


async def test_slow_heads_on_any_path_are_timed_and_counted(start_server: StartServer) -> None:
    """Finding 3: an unfinished head over 16 KB on another path went to aiohttp, untimed, and
    no per-address limit applied to it."""
    server = await start_server(head_timeout_seconds=1.0, max_connections_per_ip=4)
    big_reader, big_writer = await asyncio.open_connection("127.0.0.1", server.port)
    big_writer.write(b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 20_000)
    assert (await asyncio.wait_for(big_reader.read(), 5)).startswith(b"HTTP/1.1 431 ")
    big_writer.close()
    await asyncio.sleep(0.1)
    opened = []
    for _ in range(4):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 8000)  # never finished
        opened.append((reader, writer))
    status, _, _ = await http_exchange(server.port, upgrade_request(server.port))
    assert status == 429  # a fifth connection of this address: refused before any 101
    for reader, _ in opened:  # each closed by the server within the head timeout
        assert await asyncio.wait_for(reader.read(), 3) == b""
    assert await metric(server, 'fileshare_signal_rejections_total{reason="head_timeout"}') == 4
    assert await metric(server, 'fileshare_signal_rejections_total{reason="head_too_large"}') == 1
    assert server.server.endpoint.handshakes == 0
    for _, writer in opened:
        writer.close()


async def test_handshakes_in_progress_are_bounded(start_server: StartServer) -> None:
    server = await start_server(max_handshakes=2)
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
    await asyncio.sleep(0.1)
    status, _, _ = await http_exchange(server.port, upgrade_request(server.port))
    assert status == 503
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.1)
    assert await metric(server, 'fileshare_signal_rejections_total{reason="handshakes"}') == 1


async def test_a_slow_reader_holds_bytes_not_frames(start_server: StartServer) -> None:
    """Finding 4: 256 frames of 64 KB each were held for a reader kept alive by pongs."""
    limit = 256 * 1024
    server = await start_server(
        max_message_bytes=65536, message_burst=500, messages_per_second=500, **UNBUDGETED
    )
    sender = await RawWebSocket.connect(server.port)
    await sender.send(b'{"v":1,"type":"create_session","id":1}')
    created = json.loads((await sender.recv_frame())[1])
    slow = await RawWebSocket.connect(server.port, rcvbuf=4096)
    join = {"v": 1, "type": "join_session", "sessionId": created["sessionId"]}
    await slow.send(json.dumps({**join, "token": created["token"]}).encode())
    await sender.recv_frame()  # peer_joined
    (reader,) = [c for c in server.server.connections if c.peer_id == "b"]
    offer = json.dumps({"v": 1, "type": "offer", "payload": {"sdp": "x" * 60000}}).encode()
    most = 0
    for _ in range(60):
        await sender.send(offer)
        await asyncio.sleep(0.005)
        most = max(most, reader.queued)
        if reader.state != 1:
            break
    assert most <= limit
    assert await metric(server, 'fileshare_signal_rejections_total{reason="slow_consumer"}') == 1
    held = reader.queued + reader.transport.get_write_buffer_size()
    assert held <= limit + 2 * 65536 + 70_000  # the queue, and what the transport took
    slow.abort()
    sender.abort()


async def test_log_flood_is_bounded_escaped_and_without_tracebacks(
    start_server: StartServer,
) -> None:
    """Finding 8: each malformed request logged a traceback and part of the header (624 B)."""
    stream = io.StringIO()
    handler = logs.BudgetHandler(LogBudget(rate=5.0, burst=20))
    handler.setStream(stream)
    handler.setFormatter(logs._Escaping("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        server = await start_server(
            trusted_proxies=("127.0.0.1",),
            max_connections_per_ip=1,
            connections_per_second=1000,
            connection_burst=1000,
        )
        evil = "X-Forwarded-For: \x1b]0;owned\x07\r\n"
        first = await RawWebSocket.connect(server.port, extra_headers=evil)
        status, _, _ = await http_exchange(server.port, upgrade_request(server.port, extra=evil))
        assert status == 429  # logged with the address it claims: escaped
        started = time.monotonic()
        for n in range(300):
            junk = b"GET /%d HTTP/1.1\r\nHost: x\r\nBad Header\x1b[2J: \xff\r\n\r\n" % n
            status, _, _ = await http_exchange(server.port, junk)
            assert status == 400
        first.abort()
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.1)
        handler.summarise(time.monotonic() + 60)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = stream.getvalue()
    lines = text.splitlines()
    assert "Traceback" not in text and "\x1b" not in text and "\x07" not in text
    assert len(lines) <= 20 + 5 * elapsed + 2, lines[:30]  # burst + rate + summaries
    assert any("log lines suppressed" in line for line in lines)
    assert len(text) < 25 * 300
    assert "\\x1b]0;owned\\x07" in text  # escaped, still readable
    assert await metric(server, 'fileshare_signal_rejections_total{reason="bad_request"}') == 300


async def test_origin_allow_list(start_server: StartServer) -> None:
    server = await start_server(allowed_origins=("https://share.example.org",))
    status, _, body = await http_exchange(
        server.port, upgrade_request(server.port, extra="Origin: https://evil.example\r\n")
    )
    assert (status, body) == (403, b"origin not allowed")
    ok = await RawWebSocket.connect(
        server.port, extra_headers="Origin: https://share.example.org\r\n"
    )
    cli = await RawWebSocket.connect(server.port)  # no Origin: a CLI client
    assert await metric(server, 'fileshare_signal_rejections_total{reason="origin"}') == 1
    ok.abort()
    cli.abort()


async def test_a_full_inbox_pauses_reading_and_resumes(start_server: StartServer) -> None:
    """Messages waiting for the worker are bounded in bytes: over the bound the socket is not
    read (TCP pushes back on the client) until the worker catches up."""
    server = await start_server(inbox_bytes=1)  # every message pauses, every handling resumes
    a, b, _, _ = await pair(server.url)
    for n in range(20):
        await a.relay("signal", {"n": n})
    for n in range(20):
        relayed = await b.next_event()
        assert isinstance(relayed, schema.Relayed) and payload_of(relayed) == {"n": n}
    assert all(c.inbox is None for c in server.server.connections)
    await a.close()
    await b.close()


async def test_over_its_address_budget_a_client_is_read_later_and_loses_nothing(
    start_server: StartServer,
) -> None:
    """The byte budget is backpressure, not a refusal. An address allowed 50 KB at once and
    50 KB/s sends 200 KB (read, and paid for afterwards: its budget is 150 KB in debt), then one
    message more: nothing is refused or lost, all arrive in order, and the last one is read
    only once the debt is paid, about 3 s after the first."""
    server = await start_server(address_bytes_per_second=50_000, address_byte_burst=50_000)
    a, b, _, _ = await pair(server.url)
    started = time.monotonic()
    for n in range(20):
        await a.relay("signal", {"n": n, "pad": "x" * 10_000})
    for n in range(20):
        relayed = await b.next_event()
        assert isinstance(relayed, schema.Relayed) and payload_of(relayed)["n"] == n
    await a.relay("signal", {"n": 20})
    relayed = await b.next_event()
    assert isinstance(relayed, schema.Relayed) and payload_of(relayed)["n"] == 20
    assert time.monotonic() - started >= 2.5  # (200 KB - the 50 KB burst) at 50 KB/s
    assert await metric(server, "fileshare_signal_rejections_total") == 0
    await a.close()
    await b.close()
