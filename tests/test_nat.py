"""NAT router profiles: the nft text (no sockets), then each profile proven by coturn's own RFC
5780 client (`turnutils_natdiscovery -m -f`, about 6 s) from a host behind a router in
namespaces of our own, against a coturn listening on two documentation addresses.

Every test builds its own namespaces (netns.RUN_PREFIX is per process, plus a counter), so
they run in parallel under xdist without colliding."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from netsim import nat, netns, world
from netsim.nat import Behaviour, Filtering, Mapping, NatProfile
from netsim.processes import find_program
from tests.conftest import require_binary, require_root
from turn.config import TurnSettings
from turn.launcher import running_turn

ARGS = {"prefix": "fs42", "wan_if": "wan0", "lan_if": "lan0", "wan_ip": "203.0.113.2"}


def rules(profile: NatProfile, **overrides: object) -> str:
    kwargs: dict[str, object] = {**ARGS, **overrides}
    if profile is NatProfile.ONE_TO_ONE:
        kwargs.setdefault("lan_ip", "10.201.0.2")
    return nat.ruleset(profile, **kwargs)  # type: ignore[arg-type]


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


@pytest.mark.parametrize("profile", list(NatProfile))
def test_every_profile_drops_unsolicited_input_before_confirm(profile: NatProfile) -> None:
    text = rules(profile)
    assert text.startswith("table ip fs42_nat {\n") and text.endswith("}\n")
    body = lines(text)
    hook = body.index("type filter hook input priority filter; policy accept;")
    assert body[hook + 1] == 'iifname "wan0" ct state new drop'
    assert "reject" not in text  # routers send no ICMP
    assert 'ct timeout set "udp_timeout"' in body
    assert text.count("{") == text.count("}")


def test_port_restricted_is_plain_masquerade() -> None:
    body = lines(rules(NatProfile.PORT_RESTRICTED))
    assert 'oifname "wan0" masquerade' in body
    assert not any("@mappings" in line or "fully-random" in line for line in body)
    assert not any(" dnat " in f" {line} " and "ct status" not in line for line in body)
    assert 'iifname "wan0" ct state new drop' in body  # forward: nothing unsolicited gets in


def test_symmetric_is_fully_random() -> None:
    assert 'oifname "wan0" masquerade fully-random' in lines(rules(NatProfile.SYMMETRIC))


def test_full_cone_learns_after_srcnat_and_dnats_through_the_map() -> None:
    text = rules(NatProfile.FULL_CONE, udp_timeout=45)
    body = lines(text)
    assert "type inet_service : ipv4_addr . inet_service" in body
    assert "timeout 45s" in body
    assert "policy = { unreplied : 45, replied : 45 }" in body
    learn = body.index("type filter hook postrouting priority 200; policy accept;")
    assert body[learn + 1] == (
        'oifname "wan0" update @mappings '
        "{ udp sport : ct original ip saddr . ct original proto-src }"
    )
    assert 'iifname "wan0" dnat ip to udp dport map @mappings' in body
    assert 'oifname "wan0" masquerade' in body
    assert 'iifname "wan0" ct state new ct status dnat accept' in body


def test_address_restricted_keys_the_map_by_peer_address() -> None:
    body = lines(rules(NatProfile.ADDRESS_RESTRICTED))
    assert "type inet_service . ipv4_addr : ipv4_addr . inet_service" in body
    assert any("update @mappings { udp sport . ip daddr :" in line for line in body)
    assert 'iifname "wan0" dnat ip to udp dport . ip saddr map @mappings' in body


def test_one_to_one_and_open() -> None:
    body = lines(rules(NatProfile.ONE_TO_ONE))
    assert 'iifname "wan0" ip daddr 203.0.113.2 dnat to 10.201.0.2' in body
    assert 'oifname "wan0" ip saddr 10.201.0.2 snat to 203.0.113.2' in body
    open_text = rules(NatProfile.OPEN)
    assert "nat hook" not in open_text and "masquerade" not in open_text


def test_udp_blocked_drops_udp_egress() -> None:
    body = lines(rules(NatProfile.UDP_BLOCKED))
    assert 'oifname "wan0" meta l4proto udp drop' in body
    assert 'oifname "wan0" masquerade' in body


def test_hairpin() -> None:
    body = lines(rules(NatProfile.FULL_CONE, hairpin=True))
    assert 'iifname "lan0" ip daddr 203.0.113.2 dnat ip to udp dport map @mappings' in body
    assert 'iifname "lan0" oifname "lan0" masquerade' in body
    assert 'iifname "lan0"' not in rules(NatProfile.FULL_CONE)
    with pytest.raises(ValueError, match="hairpinning"):
        rules(NatProfile.PORT_RESTRICTED, hairpin=True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prefix": "fs-1"}, "prefix"),
        ({"prefix": "x; flush ruleset"}, "prefix"),
        ({"wan_if": 'wan"0'}, "interface"),
        ({"lan_if": "a-very-long-interface"}, "interface"),
        ({"wan_ip": "203.0.113.300"}, "IPv4"),
        ({"udp_timeout": 0}, "udp_timeout"),
    ],
)
def test_refuses_bad_values(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules(NatProfile.FULL_CONE, **overrides)


def test_lan_ip_only_for_one_to_one() -> None:
    with pytest.raises(ValueError, match="lan_ip"):
        nat.ruleset(NatProfile.ONE_TO_ONE, **ARGS)  # type: ignore[arg-type]
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
    assert found.behaviour == Behaviour(
        Mapping.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_AND_PORT_DEPENDENT
    )
    assert found.reflexive == ("203.0.113.2",) * 3
    assert found.timeouts == 2
    blocked = "-= Mapping Behavior Discovery =-\nSTUN receive timeout..\n"
    assert nat.parse_natdiscovery(blocked) == nat.Discovery(Behaviour(None, None), (), 1)
    with pytest.raises(ValueError, match="Sideways"):
        nat.parse_natdiscovery("NAT with Sideways Mapping!\n")
    with pytest.raises(ValueError, match="more than one"):
        nat.parse_natdiscovery("NAT with Endpoint Independent Mapping!\n" * 2)


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


def natdiscovery(
    profile: NatProfile, workdir: Path, *flags: str, hairpin: bool = False
) -> tuple[world.Site, str]:
    """Build the network, run coturn on the internet and natdiscovery on the host; check
    that nothing is left behind; return the network's names and natdiscovery's output."""
    require_root()
    require_binary("nft")
    require_binary("turnserver")
    program = require_binary("turnutils_natdiscovery")
    with world.build([world.SiteSpec("a", profile, hairpin=hairpin)]) as net:
        site = net.sites["a"]
        names = {net.internet, site.router, site.link, *site.hosts}
        assert names <= _namespaces()
        with running_turn(SETTINGS, workdir, netns.in_namespace(net.internet)) as turn:
            command = [*netns.in_namespace(site.hosts[0]), program, *flags, world.SERVER_IPS[0]]
            proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
        pid = turn.pid
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert not names & _namespaces()
    assert not Path(f"/proc/{pid}").exists()
    return site, output


@pytest.mark.nat
@pytest.mark.parametrize("profile", list(NatProfile), ids=lambda p: p.value)
def test_profile_as_natdiscovery_sees_it(profile: NatProfile, tmp_path: Path) -> None:
    net, output = natdiscovery(profile, tmp_path, "-m", "-f")
    report = f"{profile.value}: natdiscovery said:\n{output}\nrouter ruleset:\n{net.ruleset}"
    found = nat.parse_natdiscovery(output)
    assert found.behaviour == profile.expected, report
    if profile is NatProfile.UDP_BLOCKED:
        assert found.timeouts >= 2 and not found.reflexive, report
    else:
        # The server saw the router's public address, or the host's own when there is no NAT.
        assert found.reflexive and set(found.reflexive) == {net.public_ip}, report


@pytest.mark.nat
@pytest.mark.parametrize(
    ("profile", "hairpin"),
    [(NatProfile.FULL_CONE, True), (NatProfile.FULL_CONE, False), (NatProfile.ONE_TO_ONE, True)],
)
def test_hairpinning(profile: NatProfile, hairpin: bool, tmp_path: Path) -> None:
    net, output = natdiscovery(profile, tmp_path, "-H", hairpin=hairpin)
    report = f"natdiscovery -H said:\n{output}\nrouter ruleset:\n{net.ruleset}"
    assert ("successful hairpinning" in output) is hairpin, report
    assert hairpin or "STUN receive timeout" in output, report
