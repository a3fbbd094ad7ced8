"""The server's own WebSocket layer over real sockets: handshakes, framing, closing, timeouts,
backpressure, the hand-off of every other request to aiohttp, and the client address."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from fileshare.signal_client import SignalClient
from fsproto import schema
from signaling.server import Connection
from signaling.websocket import OPEN, Endpoint, Limits, WebSocket
from tests.conftest import RunningServer, StartServer
from tests.rawws import RawWebSocket, http_exchange, upgrade_request
from tests.test_server import assert_serving, metric, pair

PING = b'{"v":1,"type":"ping","id":7}'
close_payload = RawWebSocket.close_payload


async def pong_of(raw: RawWebSocket) -> dict[str, object]:
    opcode, payload = await raw.recv_frame()
    assert opcode == 0x1
    reply: dict[str, object] = json.loads(payload)
    return reply


# --- the opening handshake ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"POST /ws HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426),  # a plain GET
        (b"GET /ws HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", 400),
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n",  # no key
            400,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\n\r\n",
            426,
        ),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\nBroken header\r\n\r\n", 400),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 20000 + b"\r\n\r\n", 431),
    ],
)
async def test_bad_handshakes_are_refused_over_http(
    server: RunningServer, request_head: bytes, status: int
) -> None:
    got, headers, body = await http_exchange(server.port, request_head)
    assert got == status and body and headers["connection"] == "close"
    if status == 426 and b"Version: 7" in request_head:
        assert headers["sec-websocket-version"] == "13"
    await assert_serving(server)


async def test_both_paths_and_a_query_string(server: RunningServer) -> None:
    for path in ("/", "/ws", "/ws?client=test"):
        raw = await RawWebSocket.connect(server.port, path=path)
        await raw.send(PING)
        assert (await pong_of(raw))["type"] == "pong"
        raw.abort()


async def test_frames_sent_with_the_request_are_read(server: RunningServer) -> None:
    raw = await RawWebSocket.connect(server.port, then=RawWebSocket.frame(PING))
    assert (await pong_of(raw))["re"] == 7
    raw.abort()


async def test_other_requests_go_to_aiohttp_one_per_connection(server: RunningServer) -> None:
    status, headers, body = await http_exchange(
        server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert status == 200 and json.loads(body)["status"] == "alive"
    assert headers["connection"] == "close"
    status, _, _ = await http_exchange(server.port, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404
    # A keep-alive client gets one answer, then the connection closes: a WebSocket upgrade is
    # always the first request on a connection, where the server's own layer sees it.
    status, _, body = await http_exchange(
        server.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + upgrade_request(server.port),
    )
    assert status == 200 and b"101" not in body
    status, _, _ = await http_exchange(server.port, b"\x16\x03\x01garbage, not HTTP\r\n\r\n")
    assert status == 400
    async with aiohttp.ClientSession() as http, http.get(server.http + "/readyz") as resp:
        assert resp.status == 200


async def test_the_bare_layer_without_an_http_server() -> None:
    """The WebSocket layer alone: other paths get a 404, and upgrades work (hooks do nothing)."""
    endpoint = Endpoint(Limits(frozenset({"/ws"}), max_message_bytes=1000), heartbeat_seconds=5)
    listener = await asyncio.get_running_loop().create_server(
        lambda: WebSocket(endpoint), "127.0.0.1", 0
    )
    port = listener.sockets[0].getsockname()[1]
    status, _, body = await http_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (404, b"not found")
    raw = await RawWebSocket.connect(port)
    await raw.send_raw(RawWebSocket.frame(b"hi", opcode=0x9))
    assert await raw.recv_frame() == (0xA, b"hi")
    closing = asyncio.create_task(endpoint.close_all(1001, b"going away", timeout=5))
    assert await raw.recv_close() == 1001
    await raw.send_raw(RawWebSocket.frame(close_payload(1001), opcode=0x8))
    await asyncio.wait_for(closing, 2)  # the client answered: no waiting for the timeout
    await raw.wait_closed()
    listener.close()


async def test_draining_refuses_upgrades(server: RunningServer) -> None:
    server.server.draining = True
    status, headers, body = await http_exchange(server.port, upgrade_request(server.port))
    assert status == 503 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["code"] == "shutting_down"


async def test_a_request_head_must_come_in_time(start_server: StartServer) -> None:
    server = await start_server(head_timeout_seconds=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /ws HTTP/1.1\r\n")  # and no more
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without an answer
    writer.close()


# --- frames -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (RawWebSocket.frame(PING, masked=False), 1002, "ws_error"),
        (RawWebSocket.frame(PING, rsv=1), 1002, "ws_error"),
        (RawWebSocket.frame(b"x", opcode=0x3), 1002, "ws_error"),
        (RawWebSocket.frame(b"x", opcode=0x0), 1002, "ws_error"),
        (RawWebSocket.frame(b"x", opcode=0x9, fin=False), 1002, "ws_error"),
        (RawWebSocket.frame(b'{"v":1,"type":"ping","x":"\xc3\x28"}'), 1007, "ws_error"),
        (RawWebSocket.frame(b"", declared_length=2**40)[:14], 1009, "too_large"),
    ],
    ids=[
        "unmasked",
        "reserved-bits",
        "unknown-opcode",
        "stray-continuation",
        "fragmented-ping",
        "invalid-utf8",
        "declared-too-big",
    ],
)
async def test_protocol_errors_close_with_their_code(
    start_server: StartServer, frame: bytes, code: int, reason: str
) -> None:
    server = await start_server(hard_message_bytes=100_000)
    raw = await RawWebSocket.connect(server.port)
    await raw.send_raw(frame)
    assert await raw.recv_close() == code
    await raw.send_raw(RawWebSocket.frame(close_payload(code), opcode=0x8))
    await raw.wait_closed()  # the client answered: the server closes the connection
    assert await metric(server, f'fileshare_signal_rejections_total{{reason="{reason}"}}') == 1
    await assert_serving(server)


async def test_the_server_waits_for_a_failing_clients_close(start_server: StartServer) -> None:
    """A client still writing a message that is too big gets the 1009 close, and its own close
    (after the rest of that message) is awaited, not cut off by a reset."""
    server = await start_server(max_message_bytes=1000, hard_message_bytes=2000)
    raw = await RawWebSocket.connect(server.port)
    big = RawWebSocket.frame(b"x" * 300_000)
    await raw.send_raw(big[:1000])
    assert await raw.recv_close() == 1009
    await raw.send_raw(big[1000:] + RawWebSocket.frame(close_payload(1009), opcode=0x8))
    await raw.wait_closed()


async def test_fragments_pings_and_binary(server: RunningServer) -> None:
    raw = await RawWebSocket.connect(server.port)
    await raw.send_raw(
        RawWebSocket.frame(PING[:10], fin=False)
        + RawWebSocket.frame(b"are you there", opcode=0x9)
        + RawWebSocket.frame(PING[10:20], opcode=0x0, fin=False)
        + RawWebSocket.frame(PING[20:], opcode=0x0)
    )
    assert await raw.recv_frame() == (0xA, b"are you there")
    assert (await pong_of(raw))["re"] == 7
    await raw.send_raw(RawWebSocket.frame(PING, opcode=0x2))  # binary JSON is served too
    assert (await pong_of(raw))["type"] == "pong"
    await raw.send_raw(RawWebSocket.frame(b"unasked", opcode=0xA))  # a pong is just heard
    await raw.send(PING)
    assert (await pong_of(raw))["type"] == "pong"
    raw.abort()


async def test_a_client_close_is_echoed_and_the_server_hangs_up(server: RunningServer) -> None:
    a, b, created, joined = await pair(server.url)
    raw = await RawWebSocket.connect(server.port)
    rejoin = {
        "v": 1,
        "type": "rejoin_session",
        "sessionId": created.sessionId,
        "peerId": "b",
        "reconnectKey": joined.reconnectKey,
    }
    await raw.send(json.dumps(rejoin).encode())
    assert json.loads((await raw.recv_frame())[1])["type"] == "session_joined"
    await raw.send_raw(RawWebSocket.frame(close_payload(4321, b"bye"), opcode=0x8))
    assert await raw.recv_frame() == (0x8, close_payload(4321))
    await raw.wait_closed()
    event = await a.next_event()
    while isinstance(event, schema.PeerJoined):
        event = await a.next_event()
    assert isinstance(event, schema.PeerLeft)  # a close without leave_session: grace period
    for client in (a, b):
        await client.close()


async def test_a_close_with_a_forbidden_code_is_a_protocol_error(server: RunningServer) -> None:
    raw = await RawWebSocket.connect(server.port)
    await raw.send_raw(RawWebSocket.frame(close_payload(1005), opcode=0x8))
    assert await raw.recv_close() == 1002
    await raw.wait_closed()


async def test_a_client_that_never_answers_the_close_is_cut_off(
    start_server: StartServer,
) -> None:
    server = await start_server(heartbeat_seconds=0.2)
    raw = await RawWebSocket.connect(server.port)
    await raw.send_raw(RawWebSocket.frame(PING, masked=False))
    assert await raw.recv_close() == 1002
    await raw.wait_closed(timeout=5)  # no answer from the client: aborted by the wheel


async def test_abrupt_disconnects_leave_nothing_behind(server: RunningServer) -> None:
    raws = [await RawWebSocket.connect(server.port) for _ in range(5)]
    await raws[0].send(PING)
    await pong_of(raws[0])
    await raws[1].send_raw(RawWebSocket.frame(PING)[:5])  # half a frame
    await raws[2].send_raw(RawWebSocket.frame(b"x" * 5000, fin=False))  # half a message
    for raw in raws:
        raw.abort()
    await asyncio.sleep(0.2)
    assert await metric(server, "fileshare_signal_connections") == 0
    assert len(server.server.endpoint.wheel) == 0 and not server.server.connections
    await assert_serving(server)


async def test_an_idle_connection_holds_no_task_queue_or_bucket(start_server: StartServer) -> None:
    server = await start_server(messages_per_second=100, message_burst=10, heartbeat_seconds=0.2)
    a, b, _, _ = await pair(server.url)
    await a.relay("signal", {"x": 1})
    await b.next_event()
    await asyncio.sleep(0.5)  # the bucket fills up again, and a tick forgets it
    conns = [c for c in server.server.connections if isinstance(c, Connection)]
    assert len(conns) == 2
    for conn in conns:
        assert conn.state == OPEN
        assert (conn.worker, conn.inbox, conn.bucket, conn._out) == (None, None, None, None)
        # Frame buckets come back for a moment with each pong, and go at the next tick.
        for _ in range(400):
            if conn._rates is None:
                break
            await asyncio.sleep(0.005)
        assert conn._rates is None
    await a.close()
    await b.close()


async def test_heartbeat_keeps_answering_clients(start_server: StartServer) -> None:
    server = await start_server(heartbeat_seconds=0.2)
    client = await SignalClient.connect(server.url)  # aiohttp answers pings by itself
    await asyncio.sleep(1.0)
    assert isinstance(await client.request(schema.Ping(v=1)), schema.Pong)
    await client.close()


async def test_pings_are_sent_to_a_silent_client(start_server: StartServer) -> None:
    server = await start_server(heartbeat_seconds=0.2)
    raw = await RawWebSocket.connect(server.port)
    assert await raw.recv_frame(timeout=2) == (0x9, b"")
    await raw.send_raw(RawWebSocket.frame(b"", opcode=0xA))
    assert await raw.recv_frame(timeout=2) == (0x9, b"")  # still there: pinged again
    raw.abort()


# --- the client's address -----------------------------------------------------------------------


async def refused_for_connections(port: int, extra: str) -> bool:
    """Whether a new connection with these headers is refused for its address's connections
    (with a 429, before any 101)."""
    try:
        await RawWebSocket.connect(port, extra_headers=extra)
    except ConnectionError as refused:
        answer = str(refused)
    else:
        return False
    assert answer.startswith("HTTP/1.1 429 ")
    return True


async def test_forwarded_for_is_believed_from_trusted_proxies_only(
    start_server: StartServer,
) -> None:
    server = await start_server(max_connections_per_ip=1, trusted_proxies=("127.0.0.1",))
    first = await RawWebSocket.connect(server.port, extra_headers="X-Forwarded-For: 10.0.0.1\r\n")
    await first.send(PING)
    await pong_of(first)
    # The proxy appends the address it saw: earlier entries and lines come from the client.
    forged = "X-Forwarded-For: 10.0.0.2\r\nX-Forwarded-For: 203.0.113.9, 10.0.0.1\r\n"
    assert await refused_for_connections(server.port, forged)
    spoof = "X-Forwarded-For: 10.0.0.1, 10.0.0.3\r\n"
    assert not await refused_for_connections(server.port, spoof)

    untrusting = await start_server(max_connections_per_ip=1)
    raw = await RawWebSocket.connect(untrusting.port, extra_headers="X-Forwarded-For: 10.0.0.1\r\n")
    await raw.send(PING)
    await pong_of(raw)
    assert await refused_for_connections(untrusting.port, "X-Forwarded-For: 10.0.0.9\r\n")
