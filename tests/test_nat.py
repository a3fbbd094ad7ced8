"""NATs described by their RFC 4787 behaviours: the nft text (no sockets), then every mapping x
filtering combination and every preset proven by coturn's own RFC 5780 client
(`turnutils_natdiscovery -m -f`, about 6 s, all sites of a world at once), then the four
findings of an outside check, on real routers with real sockets.

Every test builds its own namespaces (netns.RUN_PREFIX is per process, plus a counter), so
they run in parallel under xdist without colliding."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netsim import expectations, nat, netns, world
from netsim.nat import ADF, ADM, APDF, APDM, EIF, EIM, Behaviour, Nat, NatProfile
from netsim.processes import find_program
from tests.conftest import require_binary, require_root
from turn.config import TurnSettings
from turn.launcher import running_turn

ARGS = {"prefix": "fs42", "wan_if": "wan0", "lan_if": "lan0", "wan_ip": "203.0.113.2"}
COMBINATIONS = [Nat(m, f) for m, f in itertools.product(nat.Mapping, nat.Filtering)]


def rules(behaviour: Nat | NatProfile, **overrides: object) -> str:
    found = nat.resolve(behaviour)
    kwargs: dict[str, object] = {**ARGS, **overrides}
    if found.translation is nat.Translation.ONE_TO_ONE:
        kwargs.setdefault("lan_ip", "10.201.0.2")
    return nat.ruleset(found, **kwargs)  # type: ignore[arg-type]


def name(behaviour: Nat | NatProfile) -> str:
    return nat.resolve(behaviour).name


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


@pytest.mark.parametrize("behaviour", [*NatProfile, *COMBINATIONS], ids=name)
def test_every_nat_drops_unsolicited_input_before_confirm(behaviour: Nat | NatProfile) -> None:
    text = rules(behaviour)
    assert text.startswith("table ip fs42_nat {\n") and text.endswith("}\n")
    body = lines(text)
    hook = body.index("type filter hook input priority filter; policy accept;")
    assert body[hook + 1] == 'iifname "wan0" ct state new drop'
    assert "reject" not in text  # routers send no ICMP
    assert 'meta l4proto udp ct timeout set "udp_timeout"' in body
    assert text.count("{") == text.count("}")


def test_presets_are_behaviours() -> None:
    assert NatProfile.FULL_CONE.behaviour.expected == Behaviour(EIM, EIF)
    assert NatProfile.ADDRESS_RESTRICTED.behaviour.expected == Behaviour(EIM, ADF)
    assert NatProfile.PORT_RESTRICTED.behaviour.expected == Behaviour(EIM, APDF)
    assert NatProfile.SYMMETRIC.behaviour.expected == Behaviour(APDM, APDF)
    assert NatProfile.UDP_BLOCKED.behaviour.expected == Behaviour(None, None)
    assert {p.behaviour.name for p in NatProfile} == {p.value for p in NatProfile}
    assert nat.named("adm-eif") == Nat(ADM, EIF) and nat.named("adm-eif").name == "adm-eif"
    assert nat.named("symmetric") is nat.PRESETS["symmetric"]
    changed = nat.from_table({"preset": "full_cone", "mapping_timeout": 20, "hairpinning": True})
    assert changed.name == "eim-eif-hairpin-20s" and changed.mapping_timeout == 20
    with pytest.raises(ValueError, match=r"<eim\|adm\|apdm>"):
        nat.named("xm-eif")
    with pytest.raises(ValueError, match="unknown NAT settings"):
        nat.from_table({"mapping_timout": 20})
    with pytest.raises(ValueError, match="one_to_one"):
        Nat(EIM, ADF, nat.Translation.ONE_TO_ONE)


def test_default_mapping_timeout_follows_rfc_4787_req_5() -> None:
    """Finding 4: 30 s was the default; REQ-5 asks for 2 minutes at least, 5 recommended."""
    assert world.SiteSpec("a").router.mapping_timeout == 300
    for profile in NatProfile:
        assert profile.behaviour.mapping_timeout >= 120
        assert "policy = { unreplied : 300, replied : 300 }" in lines(rules(profile))
    short = lines(rules(Nat(mapping_timeout=20)))
    assert "timeout 20s" in short and "policy = { unreplied : 20, replied : 20 }" in short


def test_port_restricted_keeps_ports_and_never_overloads_one() -> None:
    body = lines(rules(NatProfile.PORT_RESTRICTED))
    post = 'oifname "wan0" meta l4proto udp'
    assert f"{post} snat ip to ip saddr . udp sport map @public" in body  # EIM: reuse
    fresh = "snat ip to 203.0.113.2:1024-65535 fully-random"
    assert f"{post} udp sport @owners {fresh}" in body  # a port some mapping holds: a new one
    assert f"{post} snat ip to 203.0.113.2:1024-65535" in body  # else keep it
    assert 'oifname "wan0" masquerade' in body  # TCP (RFC 5382)
    assert not any("dnat ip to" in line for line in body)  # APDF: conntrack alone
    assert 'iifname "wan0" ct state new drop' in body  # forward: nothing unsolicited gets in


def test_maps_learn_only_from_flows_the_hosts_started() -> None:
    """Finding 1: a packet a host sends back on a flow a peer started must not teach the
    router a mapping (it would map the public port to the peer)."""
    for behaviour in [*COMBINATIONS, *(p.behaviour for p in NatProfile)]:
        learn = [line for line in lines(rules(behaviour)) if "update @" in line]
        assert all(" ct direction original " in line for line in learn), behaviour
        assert bool(learn) == (behaviour.translation is nat.Translation.NAPT)


def test_filtering_and_mapping_as_maps() -> None:
    eif = lines(rules(Nat(EIM, EIF)))
    assert 'iifname "wan0" meta l4proto udp dnat ip to udp dport map @owners' in eif
    adf = lines(rules(Nat(ADM, ADF)))
    assert "type ipv4_addr . inet_service . ipv4_addr : ipv4_addr . inet_service" in adf
    assert 'iifname "wan0" meta l4proto udp dnat ip to udp dport . ip saddr map @inbound' in adf
    apdm = lines(rules(NatProfile.SYMMETRIC))
    assert not any("@public" in line for line in apdm)
    assert 'oifname "wan0" meta l4proto udp snat ip to 203.0.113.2:1024-65535 fully-random' in apdm
    assert 'oifname "wan0" masquerade fully-random' in apdm
    assert Nat(APDM, ADF).maps == ("owners", "inbound")
    assert NatProfile.OPEN.behaviour.maps == ()


def test_hairpinning_carries_the_senders_public_endpoint() -> None:
    """Finding 2 (REQ-9): the hairpinned packet's source is the sender's mapping, never the
    router's LAN address (no masquerade towards the LAN)."""
    body = lines(rules(Nat(EIM, APDF, hairpinning=True)))
    to_us = 'iifname "lan0" ip daddr 203.0.113.2 meta l4proto udp'
    assert f"{to_us} dnat ip to udp dport map @owners" in body
    back = 'iifname "lan0" oifname "lan0"'
    assert f"{back} meta l4proto udp snat ip to ip saddr . udp sport map @public" in body
    assert f"{back} snat ip to 203.0.113.2" in body
    assert not any("masquerade" in line and "lan0" in line for line in body)
    assert 'iifname "lan0"' not in rules(NatProfile.FULL_CONE)


def test_one_to_one_open_and_a_firewall() -> None:
    body = lines(rules(NatProfile.ONE_TO_ONE))
    assert 'iifname "wan0" ip daddr 203.0.113.2 dnat to 10.201.0.2' in body
    assert 'oifname "wan0" ip saddr 10.201.0.2 snat to 203.0.113.2' in body
    open_text = rules(NatProfile.OPEN)
    assert "nat hook" not in open_text and "ct state new drop\n\t}\n}" not in open_text
    firewall = lines(rules(Nat(EIM, APDF, nat.Translation.NONE)))
    assert 'iifname "wan0" ct state new drop' in firewall[firewall.index("chain forward {") :]


def test_udp_blocked_drops_udp_egress() -> None:
    body = lines(rules(NatProfile.UDP_BLOCKED))
    assert 'oifname "wan0" meta l4proto udp drop' in body


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prefix": "fs-1"}, "prefix"),
        ({"prefix": "x; flush ruleset"}, "prefix"),
        ({"wan_if": 'wan"0'}, "interface"),
        ({"lan_if": "a-very-long-interface"}, "interface"),
        ({"wan_ip": "203.0.113.300"}, "IPv4"),
    ],
)
def test_refuses_bad_values(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules(NatProfile.FULL_CONE, **overrides)
    with pytest.raises(ValueError, match="mapping_timeout"):
        Nat(mapping_timeout=0)
    with pytest.raises(ValueError, match="port_range"):
        Nat(port_range=(80, 90))


def test_lan_ip_only_for_one_to_one() -> None:
    with pytest.raises(ValueError, match="lan_ip"):
        nat.ruleset(NatProfile.ONE_TO_ONE.behaviour, **ARGS)
    with pytest.raises(ValueError, match="lan_ip"):
        rules(NatProfile.FULL_CONE, lan_ip="10.201.0.2")


PORT_RESTRICTED_OUTPUT = """
-= Mapping Behavior Discovery =-
0: : IPv4. Response origin: : 203.0.113.10:3478
0: : IPv4. UDP reflexive addr: 203.0.113.2:36303
0: : IPv4. UDP reflexive addr: 203.0.113.2:36303
========================================
NAT with Endpoint Independent Mapping!
========================================
-= Filtering Behavior Discovery =-
0: : IPv4. UDP reflexive addr: 203.0.113.2:32909
STUN receive timeout..
STUN receive timeout..
========================================
NAT with Address and Port Dependent Filtering!
========================================
"""


def test_parse_natdiscovery() -> None:
    found = nat.parse_natdiscovery(PORT_RESTRICTED_OUTPUT)
    assert found.behaviour == Behaviour(EIM, APDF)
    assert found.reflexive == ("203.0.113.2",) * 3
    assert found.timeouts == 2
    blocked = "-= Mapping Behavior Discovery =-\nSTUN receive timeout..\n"
    assert nat.parse_natdiscovery(blocked) == nat.Discovery(Behaviour(None, None), (), 1)
    with pytest.raises(ValueError, match="Sideways"):
        nat.parse_natdiscovery("NAT with Sideways Mapping!\n")
    with pytest.raises(ValueError, match="more than one"):
        nat.parse_natdiscovery("NAT with Endpoint Independent Mapping!\n" * 2)


# --- on real routers ----------------------------------------------------------------------------


def _namespaces() -> set[str]:
    out = subprocess.run(
        [find_program("ip"), "netns", "list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


SETTINGS = TurnSettings(
    listening_ips=world.SERVER_IPS, realm="fileshare.test", secrets=("nat-test",), max_bps=0
)


def _specs(behaviours: list[Nat | NatProfile]) -> list[world.SiteSpec]:
    return [world.SiteSpec(f"s{i}", b) for i, b in enumerate(behaviours)]


def natdiscovery(
    specs: list[world.SiteSpec], workdir: Path, *flags: str
) -> dict[str, tuple[world.Site, str]]:
    """Build the network, run coturn on the internet and natdiscovery on host 0 of every site
    at once; check that nothing is left behind; each site's names and natdiscovery's output."""
    require_root()
    require_binary("nft")
    require_binary("turnserver")
    program = require_binary("turnutils_natdiscovery")
    with world.build(specs) as net:
        names = {net.internet}
        for site in net.sites.values():
            names |= {site.router, site.link, *site.hosts}
        assert names <= _namespaces()
        with running_turn(SETTINGS, workdir, netns.in_namespace(net.internet)) as turn:
            procs = {
                name: subprocess.Popen(
                    [*netns.in_namespace(site.hosts[0]), program, *flags, world.SERVER_IPS[0]],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for name, site in net.sites.items()
            }
            outputs = {name: proc.communicate(timeout=90)[0] for name, proc in procs.items()}
        pid = turn.pid
        for name, proc in procs.items():
            assert proc.returncode == 0, outputs[name]
        found = {name: (site, outputs[name]) for name, site in net.sites.items()}
    assert not names & _namespaces()
    assert not Path(f"/proc/{pid}").exists()
    return found


# The nine combinations and the presets that are not one of them, in two worlds (at most 8
# sites each) run side by side, every natdiscovery of a world at once: 19 and 25 s measured
# on this machine under a load average of 15 (one natdiscovery alone takes about 6 s).
BATCHES: dict[str, list[Nat | NatProfile]] = {
    "combinations": list(COMBINATIONS[:8]),
    "rest": [
        COMBINATIONS[8],
        NatProfile.OPEN,
        NatProfile.ONE_TO_ONE,
        NatProfile.SYMMETRIC,
        NatProfile.UDP_BLOCKED,
        Nat(ADM, ADF, port_assignment=nat.PortAssignment.RANDOM),
    ],
}


@pytest.mark.nat
@pytest.mark.parametrize("batch", list(BATCHES))
def test_behaviours_as_natdiscovery_sees_them(batch: str, tmp_path: Path) -> None:
    behaviours = BATCHES[batch]
    found = natdiscovery(_specs(behaviours), tmp_path, "-m", "-f")
    for spec, behaviour in zip(_specs(behaviours), behaviours, strict=True):
        site, output = found[spec.name]
        router = nat.resolve(behaviour)
        report = f"{router.name}: natdiscovery said:\n{output}\nrouter ruleset:\n{site.ruleset}"
        seen = nat.parse_natdiscovery(output)
        assert seen.behaviour == router.expected, report
        if not router.udp:
            assert seen.timeouts >= 2 and not seen.reflexive, report
        else:
            # The server saw the router's public address, or the host's own when there is no NAT.
            assert seen.reflexive and set(seen.reflexive) == {site.public_ip}, report


@pytest.mark.nat
def test_hairpinning_as_natdiscovery_sees_it(tmp_path: Path) -> None:
    behaviours: list[Nat | NatProfile] = [
        nat.renamed(NatProfile.FULL_CONE.behaviour, hairpinning=True),
        NatProfile.FULL_CONE,
        nat.renamed(NatProfile.SYMMETRIC.behaviour, hairpinning=True),
        Nat(ADM, ADF, hairpinning=True),
        nat.renamed(NatProfile.ONE_TO_ONE.behaviour, hairpinning=True),
    ]
    found = natdiscovery(_specs(behaviours), tmp_path, "-H")
    for spec, behaviour in zip(_specs(behaviours), behaviours, strict=True):
        site, output = found[spec.name]
        hairpin = nat.resolve(behaviour).hairpinning
        report = f"natdiscovery -H said:\n{output}\nrouter ruleset:\n{site.ruleset}"
        assert ("successful hairpinning" in output) is hairpin, report
        assert hairpin or "STUN receive timeout" in output, report


# --- the findings, with real sockets ------------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def udp_socket(namespace: str, address: str = "0.0.0.0", port: int = 0) -> socket.socket:
    """A UDP socket born in `namespace` (setns moves only the calling thread: a thread of its
    own does it), bound, non-blocking reads with a short timeout."""
    made: list[socket.socket | BaseException] = []

    def born() -> None:
        try:
            fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.bind((address, port))
            sock.settimeout(0.05)
            made.append(sock)
        except BaseException as exc:  # handed to the caller's thread
            made.append(exc)

    thread = threading.Thread(target=born)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


def received(sock: socket.socket, seconds: float = 0.5) -> list[tuple[bytes, tuple[str, int]]]:
    """Every datagram that arrives within `seconds`."""
    found = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data, source = sock.recvfrom(2048)
        except TimeoutError:
            continue
        found.append((data, source))
    return found


def seen_from(server: socket.socket, client: socket.socket, marker: bytes) -> tuple[str, int]:
    """Where `server` sees `client` come from (its public mapping towards the server)."""
    target = server.getsockname()[:2]
    for _ in range(10):
        client.sendto(marker, target)
        for data, source in received(server, 0.3):
            if data == marker:
                return source[0], source[1]
    raise AssertionError(f"{marker!r} never reached {target}")


@contextlib.contextmanager
def live(specs: list[world.SiteSpec]) -> Iterator[tuple[world.World, contextlib.ExitStack]]:
    require_root()
    require_binary("nft")
    with world.build(specs) as net, contextlib.ExitStack() as sockets:
        yield net, sockets


@pytest.mark.nat
def test_stale_cone_map_never_redirects_to_a_peer() -> None:
    """Finding 1: the host sends once, stays silent longer than the mapping timeout while a
    peer it let in keeps sending, then answers that peer. A third party sending to the public
    port must never be forwarded to that peer."""
    short = nat.renamed(NatProfile.FULL_CONE.behaviour, mapping_timeout=3)
    with live([world.SiteSpec("a", short)]) as (net, sockets):
        host = sockets.enter_context(udp_socket(net.host("a"), port=40000))
        server = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS[0], 3000))
        peer = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS[1], 4000))
        third = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS[0], 5000))
        public = seen_from(server, host, b"hello")
        got: list[bytes] = []
        for _ in range(10):  # 5 s of the peer sending, the host silent: the map expires
            peer.sendto(b"peer", public)
            got += [data for data, _ in received(host, 0.5)]
        assert b"peer" in got  # let in (endpoint-independent filtering), then the map expired
        for _ in range(3):
            host.sendto(b"answer", peer.getsockname())
        assert b"answer" in [data for data, _ in received(peer, 0.5)]
        for _ in range(5):
            third.sendto(b"third", public)
        assert b"third" not in [data for data, _ in received(peer, 1.0)]
        # Once the host sends on a flow of its own again, the port is its own again.
        seen_from(server, host, b"again")
        for _ in range(5):
            third.sendto(b"third-2", public)
        assert b"third-2" in [data for data, _ in received(host, 1.0)]


@pytest.mark.nat
@pytest.mark.parametrize(
    "behaviour", [NatProfile.FULL_CONE, NatProfile.PORT_RESTRICTED, Nat(ADM, ADF)], ids=name
)
def test_hairpinned_packets_carry_the_senders_public_endpoint(behaviour: Nat | NatProfile) -> None:
    """Finding 2 (REQ-9): a host reaching its neighbour through the neighbour's public
    endpoint is seen from its own public endpoint, not from the router's LAN address."""
    hairpinning = nat.renamed(nat.resolve(behaviour), hairpinning=True)
    with live([world.SiteSpec("a", hairpinning, hosts=2)]) as (net, sockets):
        first = sockets.enter_context(udp_socket(net.host("a", 0), port=41000))
        second = sockets.enter_context(udp_socket(net.host("a", 1), port=41001))
        server = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS[0], 3000))
        first_public = seen_from(server, first, b"one")
        second_public = seen_from(server, second, b"two")
        seen = [source for _ in range(5) for source in _hairpin(first, second, second_public)]
        assert seen, "the hairpinned packet never arrived"
        wan = net.sites["a"].plan.wan
        assert {address for address, _ in seen} == {wan}
        if hairpinning.mapping is EIM:
            assert set(seen) == {first_public}


def _hairpin(
    sender: socket.socket, receiver: socket.socket, target: tuple[str, int]
) -> list[tuple[str, int]]:
    sender.sendto(b"hairpin", target)
    return [source for data, source in received(receiver, 0.3) if data == b"hairpin"]


@pytest.mark.nat
@pytest.mark.parametrize("behaviour", [NatProfile.FULL_CONE, NatProfile.PORT_RESTRICTED], ids=name)
def test_two_hosts_with_one_local_port(behaviour: NatProfile) -> None:
    """Finding 3: the second host gets a public port of its own, the same for every
    destination (EIM holds for it too), and what a third party sends to one host's public
    port reaches that host only."""
    with live([world.SiteSpec("a", behaviour, hosts=2)]) as (net, sockets):
        first = sockets.enter_context(udp_socket(net.host("a", 0), port=42000))
        second = sockets.enter_context(udp_socket(net.host("a", 1), port=42000))
        one = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS[0], 3000))
        other = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS[1], 3000))
        # The second host first talks where the first does not (its local port is free
        # there), then where the first holds the mapping.
        first_public = seen_from(one, first, b"first")
        second_public = seen_from(other, second, b"second")
        assert second_public != first_public  # no port overloading (REQ-3)
        assert seen_from(one, second, b"second-one") == second_public  # EIM (REQ-1)
        assert seen_from(other, first, b"first-other") == first_public
        if behaviour is not NatProfile.FULL_CONE:
            return
        third = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS[1], 5000))
        for target, wanted, unwanted in (
            (first_public, first, second),
            (second_public, second, first),
        ):
            marker = f"to {target[1]}".encode()
            for _ in range(3):
                third.sendto(marker, target)
            assert marker in [data for data, _ in received(wanted, 0.5)]
            assert marker not in [data for data, _ in received(unwanted, 0.2)]


@pytest.mark.nat
def test_mappings_live_as_long_as_rfc_4787_asks() -> None:
    """Finding 4, on a real router: the conntrack entry of a fresh UDP mapping of the default
    NAT has more than 2 minutes to live (it had 30 s)."""
    require_binary("conntrack")
    with live([world.SiteSpec("a")]) as (net, sockets):
        host = sockets.enter_context(udp_socket(net.host("a"), port=43000))
        server = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS[0], 3000))
        seen_from(server, host, b"hello")
        listing = subprocess.run(
            [*netns.net_only(net.sites["a"].router), find_program("conntrack"), "-L", "-p", "udp"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        entry = next(line for line in listing.splitlines() if "dport=3000" in line)
        match = re.match(r"udp\s+\d+\s+(\d+)", entry)
        assert match and int(match.group(1)) > 120, entry


# --- carrier-grade NAT --------------------------------------------------------------------------

HOME = NatProfile.FULL_CONE
STACKED: list[tuple[Nat | NatProfile, Nat | NatProfile]] = [
    (NatProfile.FULL_CONE, NatProfile.FULL_CONE),
    (NatProfile.FULL_CONE, NatProfile.ADDRESS_RESTRICTED),
    (NatProfile.PORT_RESTRICTED, NatProfile.SYMMETRIC),
    (NatProfile.SYMMETRIC, NatProfile.FULL_CONE),
]


@pytest.mark.nat
def test_stacked_nats_as_natdiscovery_sees_them(tmp_path: Path) -> None:
    """A home router behind a carrier NAT (RFC 6598 addresses between them) looks like the
    stricter of the two; the server sees the carrier's public address."""
    specs = [
        world.SiteSpec(f"s{i}", home, carrier=world.Carrier(f"isp{i}", carrier))
        for i, (home, carrier) in enumerate(STACKED)
    ]
    found = natdiscovery(specs, tmp_path, "-m", "-f")
    for spec in specs:
        assert spec.carrier is not None
        site, output = found[spec.name]
        edge = expectations.edge(spec.router, spec.carrier.router)
        report = f"{spec}: natdiscovery said:\n{output}"
        assert site.plan.wan.startswith("100.64.")
        assert nat.parse_natdiscovery(output).behaviour == Behaviour(edge.mapping, edge.filtering)
        assert set(nat.parse_natdiscovery(output).reflexive) == {site.public_ip}, report
        assert site.public_ip == world.carrier_addresses(int(spec.carrier.name[3:])).public


@pytest.mark.nat
@pytest.mark.parametrize("hairpinning", [True, False])
def test_two_sites_behind_one_carrier(hairpinning: bool) -> None:
    """Two homes behind one carrier reach each other through the carrier's public address
    only where the carrier hairpins, and then from the sender's carrier mapping (REQ-9)."""
    carrier = world.Carrier(
        "isp", nat.renamed(NatProfile.FULL_CONE.behaviour, hairpinning=hairpinning)
    )
    specs = [world.SiteSpec(name, HOME, carrier=carrier) for name in ("a", "b")]
    with live(specs) as (net, sockets):
        first = sockets.enter_context(udp_socket(net.host("a"), port=44000))
        second = sockets.enter_context(udp_socket(net.host("b"), port=44001))
        server = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS[0], 3000))
        first_public = seen_from(server, first, b"one")
        second_public = seen_from(server, second, b"two")
        assert first_public[0] == second_public[0] == net.carriers["isp"].plan.public
        seen = [source for _ in range(5) for source in _hairpin(first, second, second_public)]
        assert (set(seen) == {first_public}) if hairpinning else not seen


# --- IPv6: dual stack, a stateful firewall (RFC 6092) -------------------------------------------


def test_firewall6_ruleset() -> None:
    body = lines(nat.firewall6("fs42", "wan0", 300))
    assert body[0] == "table ip6 fs42_fw6 {"
    assert "l3proto ip6" in body and "policy = { unreplied : 300, replied : 300 }" in body
    forward = body[body.index("chain forward {") :]
    assert forward[2:4] == [
        'iifname "wan0" ct state established,related accept',
        'iifname "wan0" drop',
    ]
    assert 'iifname "wan0" meta l4proto ipv6-icmp accept' in body  # neighbour discovery
    assert "nat" not in " ".join(body).replace("fs42_fw6", "")  # no translation
    with pytest.raises(ValueError, match="interface"):
        nat.firewall6("fs42", 'wan"0')


@pytest.mark.nat
def test_dual_stack_site_behind_a_stateful_ipv6_firewall() -> None:
    """IPv6 beside a symmetric IPv4 NAT: the host's own global address is what the internet
    sees, a reply to what it sent comes in, nothing unsolicited does, and not another port of
    the same peer either (address-and-port-dependent filtering)."""
    with live([world.SiteSpec("a", NatProfile.SYMMETRIC, ipv6=True)]) as (net, sockets):
        site = net.sites["a"]
        assert site.plan6 is not None
        host = sockets.enter_context(udp_socket(net.host("a"), "::", 45000))
        server = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS6[0], 3000))
        other_port = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS6[0], 3001))
        stranger = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS6[1], 4000))
        target = (site.plan6.hosts[0], 45000)
        for _ in range(3):
            stranger.sendto(b"unsolicited", target)
        assert not received(host, 0.5)
        assert seen_from(server, host, b"hello") == target  # no translation
        for sender, marker in ((server, b"reply"), (other_port, b"other"), (stranger, b"x")):
            for _ in range(3):
                sender.sendto(marker, target)
        arrived = {data for data, _ in received(host, 0.8)}
        assert arrived == {b"reply"}
        four = sockets.enter_context(udp_socket(net.host("a"), port=45001))
        server4 = sockets.enter_context(udp_socket(net.internet, world.SERVER_IPS[0], 3000))
        assert seen_from(server4, four, b"v4")[0] == site.public_ip  # IPv4 still NATed
