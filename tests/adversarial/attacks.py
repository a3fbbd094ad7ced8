"""The attacker toolkit: every abuse of the signaling server the adversarial suite knows, each a
coroutine that runs at full speed from one address until its deadline and reports what it saw.

Attacks speak raw RFC 6455 and raw HTTP over plain sockets (tests.rawws), so they can break
every rule a real client library would keep. They run in a process of their own
(tests.adversarial.attacker), so the harness measures the server, not the attacker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from fsproto import schema, stun
from tests.rawws import RawWebSocket, upgrade_request

ATTACKER = "127.0.0.66"  # the one attacking address (all of 127/8 is loopback)
VICTIM = "127.0.0.77"  # a legitimate user the attacks try to hurt
PONG, PING, TEXT, CONTINUATION = 0xA, 0x9, 0x1, 0x0
RELAY_PAYLOAD = 60_000  # a relayed message just under the default 64 KiB message limit


@dataclass(frozen=True)
class Aim:
    """Where the attack goes (the server, or haproxy before it) and from which address."""

    port: int
    host: str = "127.0.0.1"
    source: str = ATTACKER
    turn_port: int = 0  # coturn on loopback, for credential farming


@dataclass
class Outcome:
    """What the attacker saw: JSON-able, so it crosses the process boundary."""

    connections: int = 0  # attempted
    upgraded: int = 0  # answered 101
    statuses: Counter[str] = field(default_factory=Counter)  # HTTP refusals by status
    close_codes: Counter[str] = field(default_factory=Counter)  # server close frames by code
    sent_bytes: int = 0
    held_open: int = 0  # of the attacker's connections, still open when the attack ended
    figures: dict[str, float] = field(default_factory=dict)  # attack-specific counts

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes) -> Outcome:
        raw = msgspec.json.decode(data)
        return cls(
            **{
                **raw,
                "statuses": Counter(raw["statuses"]),
                "close_codes": Counter(raw["close_codes"]),
            }
        )


Attack = Callable[[Aim, float, Outcome], Awaitable[None]]
ATTACKS: dict[str, Attack] = {}


def attack(fn: Attack) -> Attack:
    ATTACKS[fn.__name__] = fn
    return fn


def remaining(until: float) -> float:
    return max(0.0, until - time.monotonic())


# --- connecting ---------------------------------------------------------------------------------


async def connect(
    aim: Aim, source: str | None = None, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source or aim.source, 0))
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (aim.host, aim.port))
    except OSError:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=2**20)


async def open_ws(
    aim: Aim, out: Outcome, source: str | None = None, rcvbuf: int | None = None
) -> RawWebSocket | None:
    """An upgraded connection, or None (the HTTP refusal is counted in `out`)."""
    out.connections += 1
    try:
        reader, writer = await connect(aim, source, rcvbuf)
        writer.write(upgrade_request(aim.port))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        out.statuses["no answer"] += 1
        return None
    status = head.split(b" ", 2)[1].decode(errors="replace")
    if status != "101":
        out.statuses[status] += 1
        writer.transport.abort()
        return None
    out.upgraded += 1
    return RawWebSocket(reader, writer)


async def close_code(ws: RawWebSocket, timeout: float) -> int | None:
    """The code of the server's close frame, if one comes within `timeout`; None if the
    connection just ends or stays open."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
        return await ws.recv_close(timeout)
    return None


def record_close(out: Outcome, code: int | None) -> None:
    out.close_codes["none" if code is None else str(code)] += 1


async def still_open(reader: asyncio.StreamReader) -> bool:
    """Whether the server keeps this connection: drain what it sent, see if the stream ended."""
    try:
        while await asyncio.wait_for(reader.read(2**16), 0.05):
            pass
    except TimeoutError:
        return True
    except OSError:
        return False
    return False


async def count_open(out: Outcome, readers: list[asyncio.StreamReader]) -> None:
    out.held_open = sum(await asyncio.gather(*(still_open(r) for r in readers)))


async def write_until(ws: RawWebSocket, chunk: bytes, until: float, out: Outcome) -> None:
    """Write `chunk` again and again until the deadline or until the server ends it."""
    with contextlib.suppress(OSError, TimeoutError):
        while remaining(until):
            ws.writer.write(chunk)
            await asyncio.wait_for(ws.writer.drain(), remaining(until) + 0.01)
            out.sent_bytes += len(chunk)


async def on_fresh_connections(
    aim: Aim, until: float, out: Outcome, body: Callable[[RawWebSocket], Awaitable[None]]
) -> None:
    """Upgrade, run `body`, note how the server closed it; again until the deadline."""
    while remaining(until):
        ws = await open_ws(aim, out)
        if ws is None:
            await asyncio.sleep(0.05)
            continue
        code = await while_reading(ws, body(ws), remaining(until) + 1.0)
        if code is not None or remaining(until):  # not one cut short by the deadline
            record_close(out, code)
        ws.abort()


async def while_reading(ws: RawWebSocket, body: Awaitable[None], timeout: float) -> int | None:
    """Run `body` while reading what the server sends, as a real client does: its close frame
    (the code, returned) ends the attack on this connection. A server that fails a connection
    stops reading it and resets it a moment later: a client that read nothing meanwhile would
    lose the close frame to the reset."""
    closed = asyncio.ensure_future(close_code(ws, timeout))
    attack = asyncio.ensure_future(body)
    await asyncio.wait((closed, attack), return_when=asyncio.FIRST_COMPLETED)
    attack.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await attack
    return await closed


# --- RFC 6455 abuse -----------------------------------------------------------------------------


def repeated(frame: bytes, size: int = 1 << 16) -> bytes:
    return frame * max(1, size // len(frame))


@attack
async def fragment_flood(aim: Aim, until: float, out: Outcome) -> None:
    """A text frame with FIN=0, then endless empty continuations: none adds to the message size."""
    flood = repeated(RawWebSocket.frame(b"", opcode=CONTINUATION, fin=False))

    async def body(ws: RawWebSocket) -> None:
        await ws.send_raw(RawWebSocket.frame(b"{", opcode=TEXT, fin=False))
        await write_until(ws, flood, until, out)

    await on_fresh_connections(aim, until, out, body)


@attack
async def fragment_count(aim: Aim, until: float, out: Outcome) -> None:
    """Messages of many one-byte fragments (each message stays under the size limit)."""
    piece = RawWebSocket.frame(b" ", opcode=CONTINUATION, fin=False)
    message = RawWebSocket.frame(b" ", opcode=TEXT, fin=False) + piece * 20_000
    message += RawWebSocket.frame(b"{}", opcode=CONTINUATION)

    async def body(ws: RawWebSocket) -> None:
        await write_until(ws, message, until, out)

    await on_fresh_connections(aim, until, out, body)


@attack
async def pong_flood(aim: Aim, until: float, out: Outcome) -> None:
    """Unsolicited pongs at full speed: they need no reply, so nothing pushes back."""
    flood = repeated(RawWebSocket.frame(b"p", opcode=PONG))
    await on_fresh_connections(aim, until, out, lambda ws: write_until(ws, flood, until, out))


@attack
async def ping_flood_unread(aim: Aim, until: float, out: Outcome) -> None:
    """Pings at full speed from a client that never reads the pongs."""
    flood = repeated(RawWebSocket.frame(b"p" * 125, opcode=PING))

    async def run() -> None:
        while remaining(until):
            ws = await open_ws(aim, out, rcvbuf=4096)
            if ws is None:
                await asyncio.sleep(0.05)
                continue
            await write_until(ws, flood, until, out)
            record_close(out, await close_code(ws, 0.5))
            ws.abort()

    await run()


@attack
async def partial_frames(aim: Aim, until: float, out: Outcome) -> None:
    """Many connections, each holding a frame that announces 60 KB and sends 10 bytes."""
    readers: list[asyncio.StreamReader] = []
    head = RawWebSocket.frame(b"x" * 10, declared_length=RELAY_PAYLOAD)
    while remaining(until) and len(readers) < 300:
        ws = await open_ws(aim, out)
        if ws is None:
            await asyncio.sleep(0.05)
            continue
        with contextlib.suppress(OSError):
            await ws.send_raw(head)
            out.sent_bytes += len(head)
        readers.append(ws.reader)
    await asyncio.sleep(remaining(until))
    await count_open(out, readers)


async def dial(
    aim: Aim, out: Outcome, data: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A new connection with `data` written to it; None (counted) if it cannot connect."""
    out.connections += 1
    try:
        reader, writer = await connect(aim)
    except OSError:
        out.statuses["connect refused"] += 1
        await asyncio.sleep(0.05)
        return None
    writer.write(data)
    out.sent_bytes += len(data)
    return reader, writer


async def hold_slow_heads(
    aim: Aim, until: float, out: Outcome, head: bytes, cap: int = 1500
) -> None:
    """Open connections with an unfinished request head, each trickling one more byte a
    second, as many as the server takes, until the deadline."""
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def trickle() -> None:
        while remaining(until):
            await asyncio.sleep(min(1.0, remaining(until)))
            for _, writer in held:
                if not writer.is_closing():
                    writer.write(b"X")

    trickler = asyncio.create_task(trickle())
    while remaining(until) and len(held) < cap:
        dialed = await dial(aim, out, head)
        if dialed is not None:
            held.append(dialed)
        if len(held) % 50 == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(remaining(until))
    trickler.cancel()
    await count_open(out, [reader for reader, _ in held])
    for _, writer in held:
        writer.transport.abort()


def unfinished_head(path: str, pad: int) -> bytes:
    """A request head of about `pad` bytes more, in lines aiohttp accepts (under 8 KB each)."""
    filler = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 6000) for i in range(pad // 6000))
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + filler + b"X-Slow: "


@attack
async def slow_head_ws(aim: Aim, until: float, out: Outcome) -> None:
    """Unfinished upgrade requests on /ws, held open."""
    await hold_slow_heads(aim, until, out, unfinished_head("/ws", 0))


@attack
async def slow_head_http(aim: Aim, until: float, out: Outcome) -> None:
    """Unfinished requests over 16 KB on /healthz: past the WebSocket layer's head buffer."""
    await hold_slow_heads(aim, until, out, unfinished_head("/healthz", 18_000))


@attack
async def slow_head_metrics(aim: Aim, until: float, out: Outcome) -> None:
    """Short unfinished requests on /metrics, held open."""
    await hold_slow_heads(aim, until, out, unfinished_head("/metrics", 0))


async def one_request(aim: Aim, out: Outcome, request: bytes) -> None:
    """Send raw bytes, read the answer's status line (or nothing) until the server closes."""
    dialed = await dial(aim, out, request)
    if dialed is None:
        return
    reader, writer = dialed
    try:
        answer = await asyncio.wait_for(reader.read(4096), 5)
        parts = answer.split(b" ", 2)
        out.statuses[parts[1].decode(errors="replace") if len(parts) > 1 else "closed"] += 1
    except (OSError, TimeoutError):
        out.statuses["no answer"] += 1
    finally:
        writer.transport.abort()


async def request_loop(aim: Aim, until: float, out: Outcome, request: bytes) -> None:
    while remaining(until):
        await asyncio.gather(*(one_request(aim, out, request) for _ in range(8)))


@attack
async def oversized_head(aim: Aim, until: float, out: Outcome) -> None:
    """A 1 MiB request head, alternately on /ws and /metrics."""
    filler = unfinished_head("/ws", 1 << 20).replace(b"X-Slow: ", b"\r\n")  # 174 lines
    await request_loop(aim, until, out, filler + filler.replace(b"/ws", b"/metrics", 1))


# Invalid header bytes with an ANSI escape: a traceback per request, attacker bytes in the log.
MALFORMED = b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x1b[31mHeader\x00: y\r\n\r\n"


@attack
async def malformed_http(aim: Aim, until: float, out: Outcome) -> None:
    """Malformed requests on a probe path as fast as the server answers."""
    await request_loop(aim, until, out, MALFORMED)


@attack
async def pipelined(aim: Aim, until: float, out: Outcome) -> None:
    """2,000 pipelined requests on one connection, then an upgrade request."""
    burst = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 2000 + upgrade_request(aim.port)
    await request_loop(aim, until, out, burst)


@attack
async def connection_flood(aim: Aim, until: float, out: Outcome) -> None:
    """Idle upgraded sockets, as many as one address gets; an upgrade refused after its 101
    (1013 at once) is counted as `upgraded_then_refused`."""
    readers: list[asyncio.StreamReader] = []
    refused_after_upgrade = 0

    async def one() -> None:
        nonlocal refused_after_upgrade
        ws = await open_ws(aim, out)
        if ws is None:
            return
        code = await close_code(ws, 0.2)
        if code is not None:
            refused_after_upgrade += 1
            record_close(out, code)
            ws.abort()
        else:
            readers.append(ws.reader)

    while remaining(until) and out.connections < 2000:
        await asyncio.gather(*(one() for _ in range(20)))
    await asyncio.sleep(remaining(until))
    await count_open(out, readers)
    out.figures["upgraded_then_refused"] = refused_after_upgrade


# --- protocol abuse -----------------------------------------------------------------------------


def message(**fields: Any) -> bytes:
    return msgspec.json.encode({"v": schema.VERSION, **fields})


WRONG_VALUES: tuple[Any, ...] = (
    None,
    True,
    -1,
    2**64,
    1.5,
    "",
    "x" * 70_000,
    "\u202e\x1b[2J",
    [],
    {"a": [[[[[]]]]]},
)


def malformed_messages() -> Iterator[bytes]:
    """Every client message type with each field set to values of wrong types and sizes, fields
    missing and extra; then documents that are not messages at all."""
    valid: dict[str, dict[str, Any]] = {
        "create_session": {"access": "code"},
        "join_session": {"sessionId": "12345678", "token": "t0ken"},
        "rejoin_session": {"sessionId": "12345678", "peerId": "a", "reconnectKey": "k"},
        "leave_session": {},
        "ping": {},
        **{kind: {"payload": {"sdp": "x"}} for kind in sorted(schema.RELAY_TYPES)},
    }
    for kind, fields in valid.items():
        for name in [*fields, "id", "v", "type"]:
            for wrong in WRONG_VALUES:
                yield message(**{"type": kind, **fields, name: wrong})
        for name in fields:
            yield message(type=kind, **{k: v for k, v in fields.items() if k != name})
        yield message(type=kind, **fields, extra=1)
    yield from (b"", b"null", b"[]", b'"x"', b"{" * 10_000, b"\xff\xfe", b'{"v":1,"type":"pong"}')


@attack
async def schema_abuse(aim: Aim, until: float, out: Outcome) -> None:
    """Every malformed message, pipelined 100 to a connection (inside the message burst), each
    to be answered with an error reply; a reply of `internal_error` or none at all is counted.
    The list is finished even past the deadline (up to 20 s more): it is a fixed amount of work."""
    replies: Counter[str] = Counter()
    pending = list(malformed_messages())
    while remaining(until + 20) and pending:
        ws = await open_ws(aim, out)
        if ws is None:
            await asyncio.sleep(0.2)
            continue
        batch, pending = pending[-100:], pending[:-100]
        frames = [RawWebSocket.frame(item) for item in batch]
        await ws.send_raw(b"".join(frames))
        out.sent_bytes += sum(map(len, frames))
        try:
            for answered in range(len(batch)):
                opcode, data = await ws.recv_frame(5)
                if opcode == 0x8:  # the rest of the batch goes on a new connection
                    record_close(out, struct.unpack("!H", data[:2])[0] if data else None)
                    pending += batch[answered + 1 :]
                    break
                replies[str(msgspec.json.decode(data).get("code", "no code"))] += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            replies["no reply"] += 1
        ws.abort()
    out.figures = {f"reply {code}": count for code, count in replies.items()}
    out.figures["unsent"] = len(pending)


async def request(ws: RawWebSocket, **fields: Any) -> dict[str, Any]:
    """Send one message, return the next reply that is not a ping."""
    await ws.send(message(**fields))
    while True:
        opcode, data = await ws.recv_frame(5)
        if opcode == 0x8:
            raise ConnectionError(f"closed: {data[:2].hex()}")
        if opcode == TEXT:
            reply: dict[str, Any] = msgspec.json.decode(data)
            return reply


async def victim_ws(aim: Aim, source: str = VICTIM) -> RawWebSocket:
    ws = await open_ws(aim, Outcome(), source=source)
    if ws is None:
        raise ConnectionError("the victim could not connect")
    return ws


def digits() -> str:
    return str(random.randrange(10**7, 10**8))


@attack
async def join_scan(aim: Aim, until: float, out: Outcome) -> None:
    """Join guesses of random session ids on many connections at once, counting the ones the
    server answered (not rate-limited); and whether a full code session answers differently
    from an unknown one."""
    owner, joiner = await victim_ws(aim), await victim_ws(aim, "127.0.0.78")
    created = await request(owner, type="create_session", access="code")
    await request(joiner, type="join_session", sessionId=created["sessionId"])
    answers: Counter[str] = Counter()

    async def scanner() -> None:
        ws = await open_ws(aim, out)
        if ws is None:
            return
        with contextlib.suppress(
            OSError, ConnectionError, asyncio.IncompleteReadError, TimeoutError
        ):
            while remaining(until):
                reply = await request(ws, type="join_session", sessionId=digits(), token="x")
                answers[str(reply.get("code"))] += 1
        ws.abort()

    probe = await open_ws(aim, out)
    full = (
        b""
        if probe is None
        else msgspec.json.encode(
            await request(probe, type="join_session", sessionId=created["sessionId"])
        )
    )
    unknown = (
        b""
        if probe is None
        else msgspec.json.encode(await request(probe, type="join_session", sessionId=digits()))
    )
    started = time.monotonic()
    await asyncio.gather(*(scanner() for _ in range(40)))
    elapsed = max(time.monotonic() - started, 1e-3)
    out.figures = {f"answer {code}": count for code, count in answers.items()}
    out.figures["guesses_per_second"] = answers["session_not_found"] / elapsed
    out.figures["full_is_distinguishable"] = float(full != unknown)


@attack
async def token_burn(aim: Aim, until: float, out: Outcome) -> None:
    """Wrong tokens against a session whose number the attacker knows; then the real peer
    tries to join with the right token."""
    owner = await victim_ws(aim)
    created = await request(owner, type="create_session")
    burner = await open_ws(aim, out)
    if burner is not None:
        for _ in range(5):
            with contextlib.suppress(ConnectionError, TimeoutError, OSError):
                reply = await request(
                    burner, type="join_session", sessionId=created["sessionId"], token="wrong"
                )
                out.statuses[str(reply.get("code"))] += 1
    peer = await victim_ws(aim, "127.0.0.78")
    joined = await request(
        peer, type="join_session", sessionId=created["sessionId"], token=created["token"]
    )
    out.figures["victim_joined"] = float(joined.get("type") == "session_joined")
    await asyncio.sleep(remaining(until))


async def farm_credentials(aim: Aim, until: float, out: Outcome) -> dict[str, str]:
    """Create/leave loops (alone, and as a pair of its own connections): every distinct TURN
    credential the server hands out."""
    minted: dict[str, str] = {}

    def keep(reply: dict[str, Any]) -> None:
        for server in reply.get("iceServers", []):
            if server.get("username"):
                minted[server["username"]] = server["credential"]

    while remaining(until):
        a = await open_ws(aim, out)
        b = await open_ws(aim, out)
        if a is None or b is None:
            await asyncio.sleep(0.05)
            continue
        with contextlib.suppress(
            ConnectionError, TimeoutError, OSError, asyncio.IncompleteReadError
        ):
            created = await request(a, type="create_session")
            keep(created)
            if "sessionId" in created:
                keep(
                    await request(
                        b,
                        type="join_session",
                        sessionId=created["sessionId"],
                        token=created["token"],
                    )
                )
            await a.send(message(type="leave_session"))
            await b.send(message(type="leave_session"))
        a.abort()
        b.abort()
    return minted


def allocate_all(
    port: int, minted: dict[str, str], budget: float
) -> tuple[int, Counter[str], list[stun.TurnClient]]:
    """Allocate with each credential up to coturn's per-user quota, until `budget` seconds are
    spent: (successes, refusals by code, the live allocations)."""
    live: list[stun.TurnClient] = []
    refused: Counter[str] = Counter()
    deadline = time.monotonic() + budget
    for username, password in minted.items():
        for _ in range(12):
            if time.monotonic() > deadline:
                return len(live), refused, live
            client = stun.TurnClient(stun.Connection(("127.0.0.1", port), "udp", timeout=2))
            try:
                client.allocate(username, password)
                live.append(client)
            except stun.TurnError as exc:
                refused[str(exc.code)] += 1
                client.connection.close()
                break
            except stun.StunError:
                refused["no answer"] += 1
                client.connection.close()
                break
    return len(live), refused, live


@attack
async def turn_farming(aim: Aim, until: float, out: Outcome) -> None:
    """Farm credentials for most of the time, allocate with all of them against coturn, then
    see whether a legitimate pair still gets a relay."""
    start = time.monotonic()
    minted = await farm_credentials(aim, start + (until - start) * 0.6, out)
    out.figures["credentials_minted"] = len(minted)
    out.figures["credentials_per_second"] = len(minted) / max(time.monotonic() - start, 1e-3)
    allocated, refused, live = await asyncio.to_thread(
        allocate_all, aim.turn_port, minted, remaining(until) + 5
    )
    out.figures["allocations"] = allocated
    for code, count in refused.items():
        out.figures[f"allocation refused {code}"] = count
    owner, peer = await victim_ws(aim), await victim_ws(aim, "127.0.0.78")
    created = await request(owner, type="create_session")
    joined = await request(
        peer, type="join_session", sessionId=created["sessionId"], token=created["token"]
    )
    victim = {
        s["username"]: s["credential"] for s in joined.get("iceServers", []) if s.get("username")
    }
    ok, _, victim_live = await asyncio.to_thread(allocate_all, aim.turn_port, victim, 5)
    out.figures["victim_allocated"] = float(ok > 0)
    for client in [*live, *victim_live]:
        client.connection.close()


# --- resource exhaustion ------------------------------------------------------------------------


async def relay_pairs(
    aim: Aim, out: Outcome, count: int, reader_rcvbuf: int | None
) -> list[tuple[RawWebSocket, RawWebSocket]]:
    pairs = []
    for _ in range(count):
        a = await open_ws(aim, out)
        b = await open_ws(aim, out, rcvbuf=reader_rcvbuf)
        if a is None or b is None:
            continue
        created = await request(a, type="create_session")
        await request(
            b, type="join_session", sessionId=created["sessionId"], token=created["token"]
        )
        pairs.append((a, b))
    return pairs


def relay_frame() -> bytes:
    return RawWebSocket.frame(
        message(type="signal", payload={"blob": secrets.token_hex(RELAY_PAYLOAD // 2)})
    )


@attack
async def slow_reader(aim: Aim, until: float, out: Outcome) -> None:
    """Ten sessions, each with a reader that never reads (kept alive by unsolicited pongs)
    while its peer relays 64 KB messages to it, just under the queue's frame limit."""
    pairs = await relay_pairs(aim, out, 10, reader_rcvbuf=4096)
    frame = relay_frame()
    pong = RawWebSocket.frame(b"", opcode=PONG)

    async def feed(a: RawWebSocket, b: RawWebSocket) -> None:
        with contextlib.suppress(OSError):
            for sent in range(250):
                if not remaining(until):
                    break
                await a.send_raw(frame)
                out.sent_bytes += len(frame)
                if sent >= 150:
                    await asyncio.sleep(1 / 45)  # under the sustained message rate
            while remaining(until):
                await b.send_raw(pong)
                await a.send_raw(pong)
                await asyncio.sleep(min(1.0, remaining(until)))

    await asyncio.gather(*(feed(a, b) for a, b in pairs))
    await count_open(out, [ws.reader for pair in pairs for ws in pair])


@attack
async def big_relay(aim: Aim, until: float, out: Outcome) -> None:
    """One pair relaying the largest messages at the sustained message rate, both reading."""
    pairs = await relay_pairs(aim, out, 1, reader_rcvbuf=None)
    frame = relay_frame()
    received = 0

    async def read(b: RawWebSocket) -> None:
        nonlocal received
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
            while remaining(until):
                _, data = await b.recv_frame(remaining(until) + 0.1)
                received += len(data)

    for a, b in pairs:
        reading = asyncio.create_task(read(b))
        with contextlib.suppress(OSError):
            while remaining(until):
                await a.send_raw(frame)
                out.sent_bytes += len(frame)
                await asyncio.sleep(1 / 45)
        await reading
    out.figures["relayed_bytes"] = received


def pin_to_one_core() -> None:
    """The attacker gets one core of its own when there is more than one."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[-1]})
