"""NAT router profiles as data, and the nftables ruleset that makes a Linux router behave like
each (sans-I/O: text in, text out; `netsim.topology` loads it into a router namespace).

What each profile looks like to an RFC 5780 client (coturn's `turnutils_natdiscovery`) is in
`NatProfile.expected`; how the rules get there follows the field notes ("NAT profiles and what
coturn's RFC 5780 client says about them"):

- masquerade alone is endpoint-independent mapping with address-and-port-dependent filtering;
  `fully-random` makes the mapping address-and-port-dependent too (symmetric);
- the cone profiles learn the mapping in a dynamic map from a *filter* chain at postrouting
  priority 200 (after srcnat, so it sees the translated port, and on every packet, so the entry
  refreshes), and a prerouting dnat through that map lets in what the filtering allows;
- every router drops unsolicited inbound traffic to itself in the input hook, before conntrack
  confirms it (a drop, never a reject: routers send no ICMP).

Only UDP gets cone behaviour; TCP is always masqueraded (port-restricted).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from typing import Final


class Mapping(enum.Enum):
    """RFC 4787 / 5780 mapping behaviour, in the words natdiscovery prints."""

    ENDPOINT_INDEPENDENT = "Endpoint Independent"
    ADDRESS_DEPENDENT = "Address Dependent"
    ADDRESS_AND_PORT_DEPENDENT = "Address and Port Dependent"


class Filtering(enum.Enum):
    ENDPOINT_INDEPENDENT = "Endpoint Independent"
    ADDRESS_DEPENDENT = "Address Dependent"
    ADDRESS_AND_PORT_DEPENDENT = "Address and Port Dependent"


@dataclass(frozen=True)
class Behaviour:
    """What an RFC 5780 client should find behind a profile; None: UDP gets no answer."""

    mapping: Mapping | None
    filtering: Filtering | None


class NatProfile(enum.Enum):
    OPEN = "open"  # no NAT, no firewall: the host has a public address
    ONE_TO_ONE = "one_to_one"  # static 1:1 NAT of one host to one public address
    FULL_CONE = "full_cone"  # EIM + EIF
    ADDRESS_RESTRICTED = "address_restricted"  # EIM + address-dependent filtering
    PORT_RESTRICTED = "port_restricted"  # Linux masquerade: EIM + APDF
    SYMMETRIC = "symmetric"  # masquerade fully-random: APDM + APDF
    UDP_BLOCKED = "udp_blocked"  # masquerade, and every UDP packet out is dropped

    @property
    def nat(self) -> bool:
        return self is not NatProfile.OPEN

    @property
    def expected(self) -> Behaviour:
        return _EXPECTED[self]


_EI, _AD, _APD = (
    Filtering.ENDPOINT_INDEPENDENT,
    Filtering.ADDRESS_DEPENDENT,
    Filtering.ADDRESS_AND_PORT_DEPENDENT,
)
_EXPECTED: Final = {
    # natdiscovery binds 0.0.0.0 and cannot tell "no NAT" from EIM + EIF; the reflexive
    # address (the host's own) can: see `Discovery.reflexive`.
    NatProfile.OPEN: Behaviour(Mapping.ENDPOINT_INDEPENDENT, _EI),
    NatProfile.ONE_TO_ONE: Behaviour(Mapping.ENDPOINT_INDEPENDENT, _EI),
    NatProfile.FULL_CONE: Behaviour(Mapping.ENDPOINT_INDEPENDENT, _EI),
    NatProfile.ADDRESS_RESTRICTED: Behaviour(Mapping.ENDPOINT_INDEPENDENT, _AD),
    NatProfile.PORT_RESTRICTED: Behaviour(Mapping.ENDPOINT_INDEPENDENT, _APD),
    NatProfile.SYMMETRIC: Behaviour(Mapping.ADDRESS_AND_PORT_DEPENDENT, _APD),
    NatProfile.UDP_BLOCKED: Behaviour(None, None),
}

_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,40}")
_IFNAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def _check(
    prefix: str, wan_if: str, lan_if: str, wan_ip: str, lan_ip: str | None, udp_timeout: int
) -> None:
    if not _NAME.fullmatch(prefix):
        raise ValueError(f"bad table prefix {prefix!r} (letters, digits, _)")
    for name in (wan_if, lan_if):
        if not _IFNAME.fullmatch(name):
            raise ValueError(f"bad interface name {name!r}")
    for address in (wan_ip, lan_ip):
        if address is not None:
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                raise ValueError(f"not an IPv4 address: {address!r}") from None
    if not 1 <= udp_timeout <= 86400:
        raise ValueError("udp_timeout: 1 to 86400 seconds")


# The cone profiles' `mappings` map: its key type, what learns a key, what looks one up.
_CONE_KEYS: Final = {
    NatProfile.FULL_CONE: ("inet_service", "udp sport", "udp dport"),
    NatProfile.ADDRESS_RESTRICTED: (
        "inet_service . ipv4_addr",
        "udp sport . ip daddr",
        "udp dport . ip saddr",
    ),
}


def keeps_mappings(profile: NatProfile) -> bool:
    """Whether the router holds mappings of its own (the `mappings` map) besides conntrack's."""
    return profile in _CONE_KEYS


def table_name(prefix: str) -> str:
    return f"{prefix}_nat"


def ruleset(
    profile: NatProfile,
    prefix: str,
    wan_if: str,
    lan_if: str,
    wan_ip: str,
    hairpin: bool = False,
    udp_timeout: int = 30,
    lan_ip: str | None = None,
) -> str:
    """The nft ruleset (one `table ip PREFIX_nat`) for a router with `wan_if` (address
    `wan_ip`) towards the internet and `lan_if` towards its hosts.

    `udp_timeout`: seconds a UDP mapping lives without traffic (conntrack and the cone maps).
    `hairpin`: LAN hosts reach each other through the public address; only where the
    mapping is a map this model holds (one_to_one and full_cone), else ValueError.
    `lan_ip`: the host behind one_to_one (which publishes it as `wan_ip`); only there.
    """
    _check(prefix, wan_if, lan_if, wan_ip, lan_ip, udp_timeout)
    if (profile is NatProfile.ONE_TO_ONE) != (lan_ip is not None):
        raise ValueError("lan_ip is for one_to_one, and one_to_one needs it")
    if hairpin and profile not in (NatProfile.ONE_TO_ONE, NatProfile.FULL_CONE):
        raise ValueError(f"hairpinning is not modelled for {profile.value}")
    wan, lan = f'"{wan_if}"', f'"{lan_if}"'
    lines = [f"table ip {table_name(prefix)} {{"]

    def chain(name: str, hook: str, *rules: str) -> None:
        lines.append(f"\tchain {name} {{")
        lines.append(f"\t\t{hook}; policy accept;")
        lines.extend(f"\t\t{rule}" for rule in rules)
        lines.append("\t}")

    lines += [
        "\tct timeout udp_timeout {",
        "\t\tprotocol udp",
        "\t\tl3proto ip",
        f"\t\tpolicy = {{ unreplied : {udp_timeout}, replied : {udp_timeout} }}",
        "\t}",
    ]
    chain("timeouts", "type filter hook prerouting priority raw", 'ct timeout set "udp_timeout"')
    # Unsolicited traffic to the router itself dies before conntrack confirms it (no ICMP).
    chain("router_in", "type filter hook input priority filter", f"iifname {wan} ct state new drop")

    if profile is NatProfile.OPEN:
        lines.append("}")
        return "\n".join(lines) + "\n"

    cone_key = _CONE_KEYS.get(profile)
    if cone_key is not None:
        key_type, learn_key, lookup_key = cone_key
        lines += [
            "\tmap mappings {",
            f"\t\ttype {key_type} : ipv4_addr . inet_service",
            "\t\tflags dynamic,timeout",
            f"\t\ttimeout {udp_timeout}s",
            "\t}",
        ]

    pre: list[str] = []
    post: list[str] = []
    if profile is NatProfile.ONE_TO_ONE:
        pre.append(f"iifname {wan} ip daddr {wan_ip} dnat to {lan_ip}")
        post.append(f"oifname {wan} ip saddr {lan_ip} snat to {wan_ip}")
        if hairpin:
            pre.append(f"iifname {lan} ip daddr {wan_ip} dnat to {lan_ip}")
            post.append(f"iifname {lan} oifname {lan} masquerade")
    else:
        if cone_key is not None:
            pre.append(f"iifname {wan} dnat ip to {lookup_key} map @mappings")
            if hairpin:
                pre.append(f"iifname {lan} ip daddr {wan_ip} dnat ip to {lookup_key} map @mappings")
                post.append(f"iifname {lan} oifname {lan} masquerade")
        random = " fully-random" if profile is NatProfile.SYMMETRIC else ""
        post.append(f"oifname {wan} masquerade{random}")
    chain("prerouting", "type nat hook prerouting priority dstnat", *pre)
    chain("postrouting", "type nat hook postrouting priority srcnat", *post)
    if cone_key is not None:
        # A filter chain after srcnat: sees the translated port, and every packet (refresh).
        learn = f"oifname {wan} update @mappings {{ {learn_key} : "
        learn += "ct original ip saddr . ct original proto-src }"
        chain("learn", "type filter hook postrouting priority 200", learn)
    forward = [f"iifname {wan} ct state new ct status dnat accept"]
    forward.append(f"iifname {wan} ct state new drop")
    if profile is NatProfile.UDP_BLOCKED:
        forward.append(f"oifname {wan} meta l4proto udp drop")
    chain("forward", "type filter hook forward priority filter", *forward)
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Discovery:
    """What `turnutils_natdiscovery -m -f` reported; None where it found no answer."""

    behaviour: Behaviour
    reflexive: tuple[str, ...]  # every "UDP reflexive addr" IP, in order
    timeouts: int  # "STUN receive timeout" lines


_MAPPING_LINE: Final = re.compile(r"^NAT with (.+) Mapping!\s*$", re.MULTILINE)
_FILTERING_LINE: Final = re.compile(r"^NAT with (.+) Filtering!\s*$", re.MULTILINE)
_REFLEXIVE_LINE: Final = re.compile(r"UDP reflexive addr:\s*([0-9.]+):\d+")


def parse_natdiscovery(output: str) -> Discovery:
    """Parse coturn 4.6.1's natdiscovery output; ValueError on a verdict it does not know or
    on two verdicts of one kind."""
    found: list[Mapping | Filtering | None] = []
    for pattern, kind in ((_MAPPING_LINE, Mapping), (_FILTERING_LINE, Filtering)):
        verdicts = pattern.findall(output)
        if len(verdicts) > 1:
            raise ValueError(f"more than one {kind.__name__} verdict: {verdicts}")
        found.append(kind(verdicts[0]) if verdicts else None)
    mapping, filtering = found
    assert mapping is None or isinstance(mapping, Mapping)
    assert filtering is None or isinstance(filtering, Filtering)
    return Discovery(
        Behaviour(mapping, filtering),
        tuple(_REFLEXIVE_LINE.findall(output)),
        output.count("STUN receive timeout"),
    )
