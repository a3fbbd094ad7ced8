"""`fileshare doctor`: the verdict by table, the RFC 5780 probe by feeding it bytes and ticks,
and the real CLI behind NAT profiles of the test-bed (netsim's `doctor` scenario kind: its
world, a real signaling server and a coturn on the two server addresses, doctor run as a process
through netsim's lab).

The path MTU probe by a scripted path that drops big packets, and in netsim behind a 1280-byte hop.

make test runs netsim's default doctor scenarios (two profiles and the narrow hop);
FILESHARE_FULL=1 runs all seven profiles."""

from __future__ import annotations

import importlib.metadata
import json
import os
import struct
from pathlib import Path
from typing import Literal

import pytest

from fileshare import doctor, sockbuf
from fileshare.doctor import Findings, SignalingCheck, StunCheck, TurnCheck, Verdict, verdict
from fileshare.mtuprobe import IPV4_UDP_HEADERS, IPV6_UDP_HEADERS, MAX_TRIES, MtuProbe
from fileshare.natprobe import Behaviour, NatFindings, NatProbe, merge
from fsproto import stun
from netsim import expectations, nat, runner, scenario
from netsim.results import Status
from netsim.scenario import Kind
from tests.conftest import StartServer, require_binary, require_root

EI, AD, APD, NONE = (
    Behaviour.ENDPOINT_INDEPENDENT,
    Behaviour.ADDRESS_DEPENDENT,
    Behaviour.ADDRESS_AND_PORT_DEPENDENT,
    Behaviour.NONE,
)
URL = "ws://signal.test/ws"


def findings(
    udp: bool = True,
    mapping: Behaviour | None = EI,
    filtering: Behaviour | None = APD,
    turn: tuple[str, ...] = ("udp", "tcp", "tls"),
    reachable: bool = True,
    offset: float = 0.0,
) -> Findings:
    transports = ("udp", "tcp", "tls")
    return Findings(
        SignalingCheck(URL, reachable=reachable, clock_offset_s=offset),
        stun=[StunCheck("stun:x")],
        nat=NatFindings(udp=udp, mapping=mapping, filtering=filtering),
        turn=[
            TurnCheck(t, f"turn:x?transport={t}", ok=t in turn, error="refused") for t in transports
        ],
    )


@pytest.mark.parametrize(
    ("given", "kind", "headline"),
    [
        (
            findings(mapping=NONE, filtering=NONE),
            "direct",
            "direct connections will work with most peers",
        ),
        (findings(), "direct", "direct connections will work with most peers"),
        (findings(mapping=EI, filtering=EI, turn=()), "direct", "direct connections will work"),
        (findings(mapping=APD), "mostly_relayed", "direct connections will work only with peers"),
        (findings(mapping=AD, turn=()), "no_path", "and no relay answers"),
        (
            findings(udp=False, mapping=None, filtering=None, turn=("tcp", "tls")),
            "relay_only",
            "UDP is blocked: TURN over TCP will be used",
        ),
        (
            findings(udp=False, mapping=None, turn=("tls",)),
            "relay_only",
            "UDP is blocked: TURN over TLS will be used",
        ),
        (
            findings(udp=False, mapping=None, turn=()),
            "no_path",
            "UDP is blocked and no relay answers",
        ),
        (findings(mapping=None, filtering=None), "unknown_nat", "the NAT's behaviour is unknown"),
        (findings(reachable=False), "no_server", f"no signaling server at {URL}"),
        (Findings(SignalingCheck(URL, reachable=True)), "no_ice_servers", "only peers that reach"),
    ],
)
def test_the_verdict_in_plain_words(given: Findings, kind: str, headline: str) -> None:
    said = verdict(given)
    assert said.kind == kind and headline in said.headline, said
    assert said.works is (kind not in ("no_path", "no_server"))


def test_the_verdict_notes_what_a_user_must_know() -> None:
    notes = verdict(findings(turn=("tls",), offset=-120)).notes
    assert "TURN over udp failed: refused" in notes
    assert "relayed transfers will use TURN over TLS" in notes
    assert any("-120 s off the server's" in n for n in notes)
    assert "peers behind symmetric NATs will be relayed" in notes
    assert verdict(findings(mapping=EI, filtering=EI)).notes == []
    capped = findings(mapping=EI, filtering=EI)
    capped.receive_buffer_cap = 212_992  # Linux's default
    (note,) = verdict(capped).notes
    assert "capped at 208 KiB" in note and "net.core.rmem_max=4194304" in note
    capped.receive_buffer_cap = sockbuf.RECEIVE_BUFFER
    assert verdict(capped).notes == []


async def test_doctor_against_a_real_signaling_server(start_server: StartServer) -> None:
    """In process: version, clock and RTT from a real server; one that names no STUN/TURN
    server, and one that refuses sessions (still reachable, and says why)."""
    server = await start_server()
    found = await doctor.check(server.url, [])
    assert found.signaling.reachable and found.signaling.error is None
    assert found.signaling.version == importlib.metadata.version("fileshare")
    assert found.signaling.rtt_ms is not None and found.signaling.rtt_ms < 1000
    offset = found.signaling.clock_offset_s
    assert offset is not None and abs(offset) < 2
    assert verdict(found).kind == "no_ice_servers"
    assert found.receive_buffer_cap == int(Path("/proc/sys/net/core/rmem_max").read_text())
    stingy = await start_server(max_sessions_per_ip=0)
    refused = await doctor.check(stingy.url, [])
    assert refused.signaling.reachable and "refused a session" in (refused.signaling.error or "")


# --- the probe, sans-I/O: a scripted NAT and server ----------------------------------------------

PRIMARY, OTHER = ("203.0.113.10", 3478), ("203.0.113.11", 3479)
LOCAL = ("10.0.1.2", 5000)


def answer(request: bytes, mapped: tuple[str, int], other: bool) -> bytes:
    ask = stun.decode(request)
    reply = stun.Message(stun.BINDING, stun.SUCCESS, ask.tid)
    reply.add(stun.XOR_MAPPED_ADDRESS, stun.xor_address(mapped, ask.tid))
    if other:
        ip = bytes(int(part) for part in OTHER[0].split("."))
        reply.add(stun.OTHER_ADDRESS, struct.pack("!BBH", 0, 1, OTHER[1]) + ip)
    return reply.encode()


def run_probe(nat: str, hairpin: bool = False, other: bool = True) -> tuple[NatFindings, float]:
    """Both probes against a scripted NAT and server; the merged findings, the longer time."""
    mapping, took = play("mapping", nat, hairpin, other)
    filtering, took_too = play("filtering", nat, hairpin, other)
    return merge(mapping, filtering), max(took, took_too)


def play(
    kind: Literal["mapping", "filtering"], nat: str, hairpin: bool, other: bool
) -> tuple[NatFindings, float]:
    """Play a NAT (`none`, `eim-eif`, `eim-adf`, `eim-apdf`, `apdm`, `blocked`) and a server
    with two addresses against one probe; returns its findings and the time it took."""
    now = 0.0
    probe = NatProbe(kind, PRIMARY, LOCAL, now, step_seconds=1.0)
    servers = [PRIMARY, (OTHER[0], PRIMARY[1]), OTHER]
    while not probe.done:
        for data, to in probe.datagrams_to_send():
            if nat == "blocked":
                continue
            if to not in servers:  # to our own public address: the hairpin test
                if hairpin:
                    probe.receive(data, now)
                continue
            change = stun.decode(data).get(stun.CHANGE_REQUEST)
            flags = struct.unpack("!I", change)[0] if change else 0
            if (flags and nat in ("eim-apdf", "apdm")) or (
                flags & stun.CHANGE_IP and nat == "eim-adf"
            ):
                continue
            if nat == "none":
                mapped = LOCAL
            else:
                port = 40000 + servers.index(to) if nat == "apdm" else 40000
                mapped = ("198.51.100.2", port)
            probe.receive(answer(data, mapped, other), now)
        due = probe.get_timer()
        if due is not None:
            now = max(now, due)
            probe.handle_timer(now)
    return probe.findings, now


@pytest.mark.parametrize(
    ("nat", "mapping", "filtering"),
    [
        ("none", NONE, NONE),
        ("eim-eif", EI, EI),
        ("eim-adf", EI, AD),
        ("eim-apdf", EI, APD),
        ("apdm", APD, APD),
    ],
)
def test_the_probe_tells_mapping_and_filtering(
    nat: str, mapping: Behaviour, filtering: Behaviour
) -> None:
    found, took = run_probe(nat)
    assert found.udp and (found.mapping, found.filtering) == (mapping, filtering)
    assert found.other == OTHER and found.hairpin is False
    assert took <= 4 * 1.0  # at most four steps per probe, each bounded


def test_the_probe_sees_hairpinning_and_a_silent_server() -> None:
    assert run_probe("eim-eif", hairpin=True)[0].hairpin is True
    blocked, took = run_probe("blocked")
    assert not blocked.udp and blocked.mapping is None and took == 1.0
    plain, _ = run_probe("eim-eif", other=False)  # no RFC 5780 on the server
    assert plain.udp and plain.mapping is None and plain.other is None


def test_the_probe_drops_what_is_not_its_answer() -> None:
    probe = NatProbe("mapping", PRIMARY, LOCAL, 0.0)
    ((request, _),) = probe.datagrams_to_send()
    tid = stun.decode(request).tid
    hostile = [
        b"",
        b"\x00" * 19,
        os.urandom(1500),
        stun.Message(stun.BINDING, stun.SUCCESS).encode(),  # another transaction
        stun.Message(stun.BINDING, stun.SUCCESS, tid)
        .add(stun.XOR_MAPPED_ADDRESS, b"\x00\x01")
        .encode(),
        stun.Message(stun.BINDING, stun.ERROR, tid).encode(),
        stun.Message(stun.ALLOCATE, stun.SUCCESS, tid).encode(),
    ]
    for data in hostile:
        probe.receive(data, 0.1)
    assert not probe.findings.udp and probe.get_timer() == pytest.approx(0.1)


# --- the path MTU probe, sans-I/O: a scripted path ----------------------------------------------

STEP_S = 0.5


def search(
    path: int | None,
    ceiling: int = 1500,
    lose: int = 0,
    headers: int = IPV4_UDP_HEADERS,
    cls: int = stun.SUCCESS,
) -> tuple[MtuProbe, float, int]:
    """The probe against a path that carries packets up to `path` bytes to a server that
    answers with `cls` (None: nothing comes back); the first `lose` datagrams are lost.
    Returns the probe, the time it took and how many datagrams it sent."""
    now, sent = 0.0, 0
    probe = MtuProbe(ceiling, now, headers, STEP_S)
    while not probe.done:
        for data, size in probe.datagrams_to_send():
            sent += 1
            assert len(data) + headers == size  # the padding makes exactly that packet
            if path is None or size > path or sent <= lose:
                continue
            probe.receive(stun.Message(stun.BINDING, cls, stun.decode(data).tid).encode(), now)
        due = probe.get_timer()
        if due is not None:
            now = max(now, due)
            probe.handle_timer(now)
    return probe, now, sent


@pytest.mark.parametrize("path", [1500, 1492, 1400, 1280, 1283, 1000, 580, 576])
def test_the_mtu_probe_finds_the_largest_answered_packet(path: int) -> None:
    probe, took, sent = search(path)
    assert probe.result == path - path % 4  # STUN comes in 4-byte words: 1283 reads as 1280
    assert probe.sizes_tried <= 10 and sent <= 10 * MAX_TRIES and took <= 10 * STEP_S
    if path == 1500:  # the common case: the route's MTU is answered at once
        assert (probe.sizes_tried, sent, took) == (1, 1, 0.0)


def test_the_mtu_probe_without_answers_and_with_losses() -> None:
    silent, took, sent = search(None)
    assert silent.result is None and silent.sizes_tried == 2 and took == 2 * STEP_S
    assert sent == 2 * MAX_TRIES
    lossy, _, _ = search(1280, lose=MAX_TRIES - 1)  # the ceiling's tries all lost: no matter
    assert lossy.result == 1280
    assert search(1500, lose=MAX_TRIES - 1)[0].sizes_tried == 1  # the last retransmission
    assert search(1400, cls=stun.ERROR)[0].result == 1400  # an error answer: it got there
    six, _, _ = search(1280, headers=IPV6_UDP_HEADERS)
    assert six.result == 1280
    jumbo, _, _ = search(65535, ceiling=65535)  # loopback's figure: searched from 9000 only
    assert jumbo.result == 9000 and jumbo.sizes_tried == 1
    assert MtuProbe(500, 0.0).done and MtuProbe(500, 0.0).result is None  # below the floor


def test_the_mtu_probe_drops_what_is_not_its_answer() -> None:
    probe = MtuProbe(1500, 0.0)
    ((request, size),) = probe.datagrams_to_send()
    tid = stun.decode(request).tid
    for data in (
        b"",
        os.urandom(1500),
        request,  # our own request, looped back: not an answer
        stun.Message(stun.BINDING, stun.SUCCESS).encode(),  # another transaction
        b"\x01\x01\xff\xff!\x12\xa4B" + tid,  # a length beyond the datagram
    ):
        probe.receive(data, 0.05)
    assert probe.sizes_tried == 1 and not probe.done and size == 1500


# --- the real CLI behind the test-bed's NAT profiles ---------------------------------------------

# netsim's `doctor` scenarios: `fileshare doctor --json` as a process behind each NAT profile
# (a real signaling server, coturn on both server addresses), its findings checked against the
# profile's behaviours by netsim.expectations.doctor. The default matrix's in `make test`.
SUITE = scenario.load(scenario.DEFAULT_FILE)
DOCTOR = [
    s for s in SUITE.select(full=os.environ.get("FILESHARE_FULL") == "1") if s.kind is Kind.DOCTOR
]


@pytest.mark.nat
@pytest.mark.parametrize("item", DOCTOR, ids=[s.name for s in DOCTOR])
def test_doctor_behind_each_nat_profile(item: scenario.Scenario, tmp_path: Path) -> None:
    require_root()
    require_binary("nft")
    require_binary("turnserver")
    result = runner.run_one(item, tmp_path)
    failed = [c for c in result.checks if not c.ok]
    assert result.status is Status.PASSED, (result.error, failed)
    expected = {"verdict", "mapping", "filtering", "turn", "exit", "path MTU", "route MTU"}
    assert {c.name for c in result.checks} >= expected


def test_the_expected_findings_follow_the_nat() -> None:
    """The rule netsim checks doctor against, on the presets doctor was first tested behind."""
    said = {p.value: expectations.doctor(expectations.edge(p.behaviour)) for p in nat.NatProfile}
    assert said["open"] == expectations.DoctorFindings(
        "no NAT", "no NAT", "direct", {"udp": True, "tcp": True, "tls": True}
    )
    assert (said["one_to_one"].mapping, said["one_to_one"].filtering) == (EIW, EIW)
    assert said["address_restricted"].filtering == "address-dependent"
    assert (said["port_restricted"].verdict, said["port_restricted"].filtering) == ("direct", APDW)
    assert (said["symmetric"].mapping, said["symmetric"].verdict) == (APDW, "mostly_relayed")
    blocked = said["udp_blocked"]
    assert (blocked.mapping, blocked.verdict, blocked.turn["udp"]) == (None, "relay_only", False)
    assert len(DOCTOR) >= 1 and all(not s.full for s in SUITE.select() if s.kind is Kind.DOCTOR)


EIW, APDW = "endpoint-independent", "address-and-port-dependent"


def test_doctor_renders_one_screen() -> None:
    given = findings(mapping=APD)
    given.nat.seen_from = {"203.0.113.10:3478": ("198.51.100.2", 40000)}  # type: ignore[union-attr]
    given.signaling.version = "0.1.0\x1b[2J"
    given.mtu, given.route_mtu, given.mtu_toward = 1280, 1500, "203.0.113.10"
    from fileshare.doctor import as_json, render

    text = render(given, verdict(given))
    assert "\x1b" not in text and "0.1.0\\x1b[2J" in text
    assert len(text.splitlines()) <= 24
    assert "1280 bytes answered end to end by 203.0.113.10 (route MTU 1500)" in text
    assert "UDP buffer unknown per socket" in text
    given.receive_buffer_cap = 212_992
    assert "UDP buffer up to 208 KiB per socket" in render(given, verdict(given))
    assert json.loads(as_json(given, Verdict("direct", "x")))["verdict"]["kind"] == "direct"


def test_an_https_server_url_is_reached_over_tls() -> None:
    """The CLI takes its server as wss:// or https://; doctor times the TLS port and asks
    /healthz over HTTPS for both (it asked plain HTTP on port 80 for https://, which a TLS front
    does not serve: no version, no clock; found by the deploy test)."""
    for url in ("https://h.example/ws", "wss://h.example/ws"):
        assert doctor._endpoint(url) == ("h.example", 443)
    assert doctor._endpoint("ws://h.example:8765/ws") == ("h.example", 8765)
