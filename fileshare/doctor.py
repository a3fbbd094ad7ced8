"""`fileshare doctor`: what this network allows, and what that means for a transfer.

`verdict()` is the whole judgement, a pure function of the findings (tested by table); `check()`
is the thin shell that gathers them: the signaling server (reachable, version, RTT, clock), the
STUN/TURN servers it hands out (or the user's own), the NAT (RFC 5780, `fileshare.natprobe`),
TURN allocations over UDP, TCP and TLS (released at once), IPv6 and the path MTU toward
the relay, end to end (`fileshare.mtuprobe`) beside the kernel's route figure, and the largest
UDP receive buffer the kernel grants (`fileshare.sockbuf`). Probes go
only to the servers the user or their signaling server named. Every step has a time bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal, Protocol
from urllib.parse import urlsplit

import aiohttp
import msgspec

from fileshare import ice, sockbuf
from fileshare.mtuprobe import IPV4_UDP_HEADERS, IPV6_UDP_HEADERS, MtuProbe
from fileshare.natprobe import Behaviour, NatFindings, NatProbe, merge
from fileshare.signal_client import ServerUnreachable, SignalClient, SignalError
from fsproto import schema, stun
from fsproto.untrusted import shown

STEP_SECONDS: Final = 3.0
HEALTH_BYTES: Final = 4096
CLOCK_TOLERANCE: Final = 30.0  # seconds: TURN credentials and certificates start to fail beyond


@dataclass
class SignalingCheck:
    url: str
    reachable: bool = False
    error: str | None = None
    version: str | None = None
    rtt_ms: float | None = None
    clock_offset_s: float | None = None  # the server's clock minus ours


@dataclass
class StunCheck:
    url: str
    mapped: str | None = None  # our public address as that server saw it
    error: str | None = None


@dataclass
class TurnCheck:
    transport: str
    url: str
    ok: bool = False
    ms: float | None = None
    relayed: str | None = None
    error: str | None = None


@dataclass
class Findings:
    signaling: SignalingCheck
    stun: list[StunCheck] = field(default_factory=list)
    nat: NatFindings | None = None
    turn: list[TurnCheck] = field(default_factory=list)
    ipv6: str | None = None  # our global IPv6 source address, if any
    mtu: int | None = None  # the largest packet answered end to end by the relay (or STUN) server
    route_mtu: int | None = None  # the kernel's path MTU toward it (no packet sent to learn it)
    mtu_toward: str | None = None
    receive_buffer_cap: int | None = None  # net.core.rmem_max: the most a socket may ask


@dataclass
class Verdict:
    # direct | mostly_relayed | relay_only | unknown_nat | no_ice_servers | no_path | no_server
    kind: str
    headline: str
    notes: list[str] = field(default_factory=list)

    @property
    def works(self) -> bool:
        return self.kind not in ("no_path", "no_server")


def verdict(f: Findings) -> Verdict:
    """The findings in plain words: which transfers will work, and how."""
    relays = [t.transport for t in f.turn if t.ok]
    # aiortc gets the first TURN transport that answers, in this order (fileshare.ice).
    relay = next((t for t in ("udp", "tcp", "tls") if t in relays), None)
    nat = f.nat
    notes = [f"TURN over {t.transport} failed: {t.error}" for t in f.turn if not t.ok]
    offset = f.signaling.clock_offset_s
    if offset is not None and abs(offset) > CLOCK_TOLERANCE:
        notes.append(f"this clock is {offset:+.0f} s off the server's: TURN may refuse credentials")
    cap = f.receive_buffer_cap
    if cap is not None and cap < sockbuf.RECEIVE_BUFFER:
        notes.append(
            f"UDP receive buffers are capped at {cap // 1024} KiB (net.core.rmem_max): on fast"
            " links with long round trips (100 Mbit/s, 150 ms) this end may drop what a sender"
            f" queues; `sysctl -w net.core.rmem_max={sockbuf.RECEIVE_BUFFER}` lifts the cap"
        )
    if not f.signaling.reachable:
        return Verdict(
            "no_server",
            f"no signaling server at {f.signaling.url}: no transfer can start",
            notes,
        )
    if not f.stun and not f.turn:
        return Verdict(
            "no_ice_servers",
            "no STUN or TURN server is named (by the signaling server or the config): only "
            "peers that reach each other's addresses, e.g. on one network, can connect",
            notes,
        )
    if nat is None or not nat.udp:
        if relay is None:
            return Verdict(
                "no_path", "UDP is blocked and no relay answers: transfers will fail", notes
            )
        return Verdict(
            "relay_only", f"UDP is blocked: TURN over {relay.upper()} will be used", notes
        )
    if relay is None:
        notes.append("no relay answers: peers that cannot be reached directly cannot be reached")
    elif relay != "udp":
        notes.append(f"relayed transfers will use TURN over {relay.upper()}")
    if nat.mapping in (Behaviour.NONE, Behaviour.ENDPOINT_INDEPENDENT):
        if nat.filtering is Behaviour.ADDRESS_AND_PORT_DEPENDENT:
            notes.append("peers behind symmetric NATs will be relayed")
        return Verdict("direct", "direct connections will work with most peers", notes)
    if nat.mapping is None:
        return Verdict(
            "unknown_nat",
            "UDP works; the NAT's behaviour is unknown (the STUN server has no second address): "
            + ("relayed transfers will work" if relay else "direct connections may work"),
            notes,
        )
    return Verdict(
        "mostly_relayed" if relay else "no_path",
        "direct connections will work only with peers on open networks or behind full-cone "
        "NATs (this NAT gives each destination its own port): "
        + ("other transfers will be relayed" if relay else "and no relay answers"),
        notes,
    )


# --- the shell ------------------------------------------------------------------------------------


class _Health(msgspec.Struct):
    version: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    time: float | None = None


SECURE_SCHEMES: Final = ("wss", "https")  # the server URL may be given either way


def _endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme in SECURE_SCHEMES else 80)


async def _rtt_ms(host: str, port: int) -> float | None:
    """The best of three TCP handshakes: one round trip each."""
    best = None
    for _ in range(3):
        started = time.perf_counter()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), STEP_SECONDS)
        except (OSError, TimeoutError):
            return best
        elapsed = (time.perf_counter() - started) * 1000
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        best = elapsed if best is None else min(best, elapsed)
    return best


async def _health(check: SignalingCheck) -> None:
    """Version and clock from /healthz (the Date header when it has no `time`)."""
    parts = urlsplit(check.url)
    scheme = "https" if parts.scheme in SECURE_SCHEMES else "http"
    url = f"{scheme}://{parts.netloc}{parts.path.rpartition('/')[0]}/healthz"
    timeout = aiohttp.ClientTimeout(total=STEP_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        sent = time.time()
        async with http.get(url) as resp:
            body = await resp.content.read(HEALTH_BYTES)
            received = time.time()
            date = resp.headers.get("Date")
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        health = msgspec.json.decode(body, type=_Health)
        check.version = health.version
        if health.time is not None:
            check.clock_offset_s = round(health.time - (sent + received) / 2, 3)
            return
    if date:
        with contextlib.suppress(TypeError, ValueError):
            server = email.utils.parsedate_to_datetime(date).timestamp()
            check.clock_offset_s = round(server - (sent + received) / 2, 1)


async def _signaling(url: str) -> tuple[SignalingCheck, list[schema.IceServer]]:
    """Reachable? Then a session for the STUN/TURN servers it hands out, the RTT, the version
    and the clock. The server gives TURN credentials only to a session whose two peers are
    there, so doctor joins its own session as the second peer, then both leave."""
    check = SignalingCheck(url)
    host, port = _endpoint(url)
    handed: list[schema.IceServer] = []
    try:
        async with await SignalClient.connect(url, timeout=STEP_SECONDS) as creator:
            created = await creator.create()
            handed = list(created.iceServers)
            async with await SignalClient.connect(url, timeout=STEP_SECONDS) as joiner:
                handed = list((await joiner.join(created.sessionId, created.token)).iceServers)
                with contextlib.suppress(SignalError, TimeoutError):
                    await joiner.leave()
            with contextlib.suppress(SignalError, TimeoutError):
                await creator.leave()
    except ServerUnreachable as exc:
        check.error = exc.reason
        return check, []
    except SignalError as exc:  # it answers, but gives us no session (nor its servers)
        check.error = f"refused a session: {exc.message} ({exc.code})"
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        check.error = str(exc) or type(exc).__name__
        return check, []
    check.reachable = True
    check.rtt_ms = await _rtt_ms(host, port)
    with contextlib.suppress(OSError, TimeoutError, aiohttp.ClientError):
        await _health(check)
    return check, handed


class _SansIO(Protocol):
    """What the probes here share: a search driven by datagrams and timers."""

    done: bool

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def receive(self, data: bytes, now: float) -> None: ...


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.probe: _SansIO | None = None
        self.wake = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.probe is not None:
            self.probe.receive(data, asyncio.get_running_loop().time())
            self.wake.set()


async def _drive(probe: _SansIO, protocol: _Socket, send: Callable[[], None]) -> None:
    """Send what the probe asks, feed it answers and its timers, until it is done."""
    loop = asyncio.get_running_loop()
    protocol.probe = probe
    while not probe.done:
        send()
        due = probe.get_timer()
        protocol.wake.clear()
        if due is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(protocol.wake.wait(), max(0.0, due - loop.time()))
        probe.handle_timer(loop.time())


def _source_toward(host: str, family: int = socket.AF_INET) -> str | None:
    """The local address the kernel would use toward `host` (a route lookup: nothing is sent)."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((host, 9))
        except OSError:
            return None
        return str(sock.getsockname()[0])


async def probe_nat(server: tuple[str, int], step_seconds: float = 1.5) -> NatFindings:
    """The mapping and the filtering probes side by side, each on a socket of its own."""
    mapping, filtering = await asyncio.gather(
        _run_probe("mapping", server, step_seconds), _run_probe("filtering", server, step_seconds)
    )
    return merge(mapping, filtering)


async def _run_probe(
    kind: Literal["mapping", "filtering"], server: tuple[str, int], step_seconds: float
) -> NatFindings:
    """Drive one NatProbe over one UDP socket until it is done (at most 4 steps)."""
    loop = asyncio.get_running_loop()
    local_ip = _source_toward(server[0]) or "0.0.0.0"  # noqa: S104 (only when no route at all)
    transport, protocol = await loop.create_datagram_endpoint(_Socket, local_addr=(local_ip, 0))
    try:
        local = transport.get_extra_info("sockname")
        probe = NatProbe(kind, server, (local[0], local[1]), loop.time(), step_seconds)

        def send() -> None:
            for data, to in probe.datagrams_to_send():
                with contextlib.suppress(OSError):
                    transport.sendto(data, to)

        await _drive(probe, protocol, send)
        return probe.findings
    finally:
        transport.close()


def _allocate(turn: ice.TurnUrl) -> TurnCheck:
    """One allocation, timed, and released at once (it must not hold the user's quota)."""
    check = TurnCheck(turn.transport, turn.url)
    started = time.perf_counter()
    try:
        with stun.Connection(
            (turn.host, turn.port), turn.transport, timeout=STEP_SECONDS, server_hostname=turn.host
        ) as conn:
            client = stun.TurnClient(conn)
            relayed = client.allocate(turn.server.username or "", turn.server.credential or "")
            check.ms = round((time.perf_counter() - started) * 1000, 1)
            check.ok, check.relayed = True, f"{relayed[0]}:{relayed[1]}"
            with contextlib.suppress(stun.StunError, stun.TurnError, OSError):
                client.release()
    except (stun.StunError, stun.TurnError, OSError) as exc:
        check.error = str(exc) or type(exc).__name__
    return check


def _stun_target(url: str) -> tuple[str, int] | None:
    if not url.startswith("stun:"):
        return None
    host, _, port = url[5:].rpartition(":")
    if not host:
        host, port = url[5:], "3478"
    try:
        return host.strip("[]"), int(port or 3478)
    except ValueError:
        return None


# Linux's socket options (Python's socket module names none of them): DF set on every packet,
# whatever the kernel believes the path MTU is, and that belief read back.
_PMTU_OPTIONS: Final = {
    socket.AF_INET: (socket.IPPROTO_IP, 10, 3, 14),  # IP_MTU_DISCOVER, _PMTUDISC_PROBE, IP_MTU
    socket.AF_INET6: (socket.IPPROTO_IPV6, 23, 3, 24),  # the IPV6_ names of the same
}


async def probe_mtu(
    server: tuple[str, int], step_seconds: float = 0.6
) -> tuple[int | None, int | None]:
    """(the largest packet the server answers end to end, the kernel's route MTU toward it),
    by `fileshare.mtuprobe`'s search on one connected UDP socket with DF set."""
    if not sys.platform.startswith("linux"):
        return None, None
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    level, discover, probe_mode, read_mtu = _PMTU_OPTIONS[family]
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            _Socket, remote_addr=server, family=family
        )
    except OSError:
        return None, None
    try:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(level, discover, probe_mode)
        route = int(sock.getsockopt(level, read_mtu))
        headers = IPV6_UDP_HEADERS if family == socket.AF_INET6 else IPV4_UDP_HEADERS
        probe = MtuProbe(route, loop.time(), headers, step_seconds)

        def send() -> None:
            for data, _ in probe.datagrams_to_send():
                transport.sendto(data)  # a refusal (EMSGSIZE) goes to error_received: unanswered

        await _drive(probe, protocol, send)
        return probe.result, route
    except OSError:
        return None, None
    finally:
        transport.close()


def _global_ipv6() -> str | None:
    source = _source_toward("2001:db8::1", socket.AF_INET6)
    return source if source and ipaddress.ip_address(source).is_global else None


async def check(server: str, extra: list[schema.IceServer]) -> Findings:
    """Gather the findings: the signaling server first (it hands out the STUN/TURN servers),
    then the NAT probe and the TURN allocations side by side."""
    signaling, handed = await _signaling(server)
    findings = Findings(signaling)
    servers = [*extra, *handed]
    stun_urls = list(dict.fromkeys(u for s in servers for u in s.urls if _stun_target(u)))
    turns: dict[str, ice.TurnUrl] = {}
    for s in servers:
        for url in s.urls:
            parsed = ice.parse_turn_url(url, s)
            if parsed is not None:
                turns.setdefault(parsed.transport, parsed)
    first = next((t for u in stun_urls if (t := _stun_target(u))), None)
    relay = turns.get("udp")
    toward = (relay.host, relay.port) if relay else first
    allocations = [asyncio.to_thread(_allocate, t) for t in turns.values()]
    nat_probe = probe_nat(first) if first else None
    mtu_probe = probe_mtu(toward) if toward else None
    probes = [p for p in (nat_probe, mtu_probe) if p is not None]
    results = await asyncio.gather(*allocations, *probes)
    findings.turn = [r for r in results if isinstance(r, TurnCheck)]
    findings.nat = next((r for r in results if isinstance(r, NatFindings)), None)
    if toward:
        findings.mtu, findings.route_mtu = next(r for r in results if isinstance(r, tuple))
        findings.mtu_toward = toward[0]
    for url in stun_urls:
        target = _stun_target(url)
        seen = findings.nat.seen_from if findings.nat else {}
        mapped = seen.get(f"{target[0]}:{target[1]}") if target else None
        findings.stun.append(
            StunCheck(
                url,
                f"{mapped[0]}:{mapped[1]}" if mapped else None,
                None if mapped else "no answer over UDP",
            )
        )
    findings.ipv6 = _global_ipv6()
    findings.receive_buffer_cap = sockbuf.kernel_cap()
    return findings


def render(f: Findings, v: Verdict) -> str:
    """One screen for a person; everything a server said is neutralised."""
    s = f.signaling
    show = shown
    if s.reachable:
        parts = [f"version {show(s.version or 'unknown')}"]
        if s.error:
            parts.append(show(s.error))
        if s.rtt_ms is not None:
            parts.append(f"RTT {s.rtt_ms:.1f} ms")
        if s.clock_offset_s is not None:
            parts.append(f"clock offset {s.clock_offset_s:+.1f} s")
        signal_line = "reachable, " + ", ".join(parts)
    else:
        signal_line = f"unreachable ({show(s.error or '?')})"
    lines = [f"Signaling  {show(s.url)}: {signal_line}"]
    for st in f.stun:
        answer = f"public address {st.mapped}" if st.mapped else show(st.error or "no answer")
        lines.append(f"STUN       {show(st.url)}: {answer}")
    nat = f.nat
    if nat is not None and nat.udp:
        seen = ", ".join(f"{m[0]}:{m[1]} from {k}" for k, m in nat.seen_from.items())
        mapping = nat.mapping.value if nat.mapping else "unknown"
        filtering = nat.filtering.value if nat.filtering else "unknown"
        hairpin = {True: "yes", False: "no", None: "unknown"}[nat.hairpin]
        lines.append(f"NAT        mapping {mapping}, filtering {filtering}, hairpinning {hairpin}")
        lines.append(f"           seen as {seen}")
    else:
        lines.append("NAT        no STUN answer over UDP")
    for t in f.turn:
        took = f" in {t.ms:.0f} ms" if t.ms is not None else ""
        result = (
            f"allocated{took} (relay {t.relayed})" if t.ok else f"failed: {show(t.error or '?')}"
        )
        lines.append(f"TURN {t.transport:<5} {show(t.url)}: {result}")
    if not f.turn:
        lines.append("TURN       no TURN server was handed out or configured")
    lines.append(
        f"IPv6       {f'global address {f.ipv6}' if f.ipv6 else 'no global address or route'}"
    )
    route = f" (route MTU {f.route_mtu})" if f.route_mtu else ""
    if f.mtu:
        mtu = f"{f.mtu} bytes answered end to end by {f.mtu_toward}{route}"
    elif f.mtu_toward:
        mtu = f"no padded request answered by {f.mtu_toward} over UDP{route}"
    else:
        mtu = "not measured (no STUN or TURN server)"
    lines.append(f"Path MTU   {mtu}")
    cap = f.receive_buffer_cap
    wanted = f"fileshare asks {sockbuf.RECEIVE_BUFFER // 1024} KiB"
    granted = f"up to {cap // 1024} KiB" if cap is not None else "unknown"
    lines.append(f"UDP buffer {granted} per socket (net.core.rmem_max; {wanted})")
    lines.append(f"Verdict    {show(v.headline)}")
    lines += [f"           - {show(note)}" for note in v.notes]
    return "\n".join(lines)


def as_json(f: Findings, v: Verdict) -> str:
    return msgspec.json.encode(
        {"findings": f, "verdict": {"kind": v.kind, "headline": v.headline, "notes": v.notes}}
    ).decode()
