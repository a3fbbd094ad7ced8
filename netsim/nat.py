"""A router's NAT described by its RFC 4787 behaviours, and the nftables ruleset that makes a
Linux router behave so (sans-I/O: a `Nat` in, nft text out; `netsim.world` loads it).

The knobs (RFC 4787 for UDP, RFC 5382 for TCP):

- `mapping`: when a host's (address, port) talks to a new destination, does it keep its public
  port (endpoint-independent, EIM), keep it per destination address (ADM) or get a new one per
  destination address and port (APDM)? REQ-1 asks for EIM.
- `filtering`: who may send in to a public port: anyone (EIF), any port of an address the host
  sent to (ADF), or only the exact address and port it sent to (APDF).
- `hairpinning`: hosts of one LAN reach each other through their public addresses, and a
  hairpinned packet carries the sender's public address and port (REQ-9).
- `port_assignment`: `preserve` keeps the host's port when no other mapping holds it as its
  public port (never two hosts on one public port: no port overloading, REQ-3), else it takes
  a random one from `port_range`; `random` always takes a random one (`fully-random`).
  Sequential assignment cannot be asked of the kernel (it picks a random offset when it cannot
  keep a port), so it is not offered.
- `mapping_timeout`: seconds an idle UDP mapping lives (REQ-5: at least 120, 300 recommended;
  shorter is a real behaviour, asked for explicitly). Only packets the host sends on flows it
  started refresh it (REQ-6's outbound refresh).
- `udp`: False drops every UDP packet out (a network that allows only TCP).
- TCP (RFC 5382): masqueraded (EIM when the port is free; a new random port per connection
  with APDM), filtered by conntrack (APDF: simultaneous open works, unsolicited SYNs are
  dropped), with the kernel's established timeout (5 days, above REQ-5's 2 h 4 min).

How the rules get there (field notes, "NAT profiles and what coturn's RFC 5780 client says"):
conntrack is the NAT, and it alone is APDF. The behaviours beyond it are maps the router
learns in a filter chain after srcnat (postrouting priority 200: it sees the translated port,
and every packet, so entries refresh), only from packets in the original direction of flows a
LAN host started (`ct direction original`): a packet the host sends back on a flow a peer
started never teaches the router anything, so it cannot map a public port to that peer.

- `owners`: public port -> the host's (address, port): EIF lets anything in through it, hairpinning
  uses it, and `preserve` checks it so that no second host takes a public port in use;
- `public`: the host's (address, port) [and destination address for ADM] -> its public address
  and port: later flows from that endpoint reuse the mapping (srcnat through the map);
- `inbound` (ADF): (public port, remote address) -> the host's (address, port).

Every router drops unsolicited inbound traffic to itself and to its LAN before conntrack
confirms it (a drop, never a reject: routers send no ICMP).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Final


class Mapping(enum.Enum):
    """RFC 4787 / 5780 mapping behaviour, in the words natdiscovery prints."""

    ENDPOINT_INDEPENDENT = "Endpoint Independent"
    ADDRESS_DEPENDENT = "Address Dependent"
    ADDRESS_AND_PORT_DEPENDENT = "Address and Port Dependent"

    @property
    def short(self) -> str:
        return _SHORT[self.name] + "M"


class Filtering(enum.Enum):
    ENDPOINT_INDEPENDENT = "Endpoint Independent"
    ADDRESS_DEPENDENT = "Address Dependent"
    ADDRESS_AND_PORT_DEPENDENT = "Address and Port Dependent"

    @property
    def short(self) -> str:
        return _SHORT[self.name] + "F"


_SHORT: Final = {
    "ENDPOINT_INDEPENDENT": "EI",
    "ADDRESS_DEPENDENT": "AD",
    "ADDRESS_AND_PORT_DEPENDENT": "APD",
}
EIM, ADM, APDM = Mapping
EIF, ADF, APDF = Filtering
_BY_SHORT: Final = {m.short.lower(): m for m in Mapping} | {f.short.lower(): f for f in Filtering}


def mapping_named(text: str) -> Mapping:
    """`eim`, `adm` or `apdm` (any case)."""
    found = _BY_SHORT.get(text.lower())
    if not isinstance(found, Mapping):
        raise ValueError(f"mapping {text!r}: one of eim, adm, apdm")
    return found


def filtering_named(text: str) -> Filtering:
    found = _BY_SHORT.get(text.lower())
    if not isinstance(found, Filtering):
        raise ValueError(f"filtering {text!r}: one of eif, adf, apdf")
    return found


class Translation(enum.Enum):
    NAPT = "napt"  # hosts share the router's public address (RFC 4787's NAT)
    ONE_TO_ONE = "one_to_one"  # one host, published as the router's public address
    NONE = "none"  # hosts have public addresses; `filtering` APDF makes it a stateful firewall


class PortAssignment(enum.Enum):
    PRESERVE = "preserve"
    RANDOM = "random"


@dataclass(frozen=True)
class Behaviour:
    """What an RFC 5780 client should find behind a NAT; None: UDP gets no answer."""

    mapping: Mapping | None
    filtering: Filtering | None


DEFAULT_MAPPING_TIMEOUT: Final = 300  # RFC 4787 REQ-5's recommendation
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Nat:
    """A router's behaviour. `name` is how reports show it: a preset's name, else the
    behaviours (e.g. `adm-eif`)."""

    mapping: Mapping = EIM
    filtering: Filtering = APDF
    translation: Translation = Translation.NAPT
    hairpinning: bool = False
    port_assignment: PortAssignment = PortAssignment.PRESERVE
    port_range: tuple[int, int] = (1024, 65535)
    mapping_timeout: int = DEFAULT_MAPPING_TIMEOUT
    udp: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.behaviours)
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"NAT name {self.name!r}: a-z0-9 then a-z0-9_-, at most 32")
        low, high = self.port_range
        if not 1024 <= low <= high <= 65535:
            raise ValueError("port_range: 1024 <= low <= high <= 65535")
        if not 1 <= self.mapping_timeout <= 86400:
            raise ValueError("mapping_timeout: 1 to 86400 seconds")
        if self.translation is not Translation.NAPT and self.mapping is not EIM:
            raise ValueError(f"{self.translation.value}: the mapping is endpoint-independent")
        if self.translation is Translation.ONE_TO_ONE and self.filtering is not EIF:
            raise ValueError("one_to_one: the filtering is endpoint-independent")
        if self.translation is Translation.NONE and self.hairpinning:
            raise ValueError("hairpinning needs a translation")

    @property
    def behaviours(self) -> str:
        """The short form: `eim-apdf`, `open`, `one_to_one`, `firewall`, with `-udp_blocked`,
        `-hairpin`, `-random`, `-<timeout>s` where they differ from the defaults."""
        if self.translation is Translation.NAPT:
            text = f"{self.mapping.short}-{self.filtering.short}".lower()
        elif self.translation is Translation.ONE_TO_ONE:
            text = "one_to_one"
        else:
            text = "open" if self.filtering is EIF else f"firewall-{self.filtering.short.lower()}"
        if self.hairpinning:
            text += "-hairpin"
        if self.port_assignment is PortAssignment.RANDOM and self.mapping is EIM:
            text += "-random"
        if self.mapping_timeout != DEFAULT_MAPPING_TIMEOUT:
            text += f"-{self.mapping_timeout}s"
        if not self.udp:
            text += "-udp_blocked"
        return text

    @property
    def translates(self) -> bool:
        return self.translation is not Translation.NONE

    @property
    def expected(self) -> Behaviour:
        """What natdiscovery finds. It binds 0.0.0.0 and cannot tell no NAT from EIM + EIF;
        the reflexive address (the host's own) can: see `Discovery.reflexive`."""
        if not self.udp:
            return Behaviour(None, None)
        return Behaviour(self.mapping, self.filtering)

    @property
    def maps(self) -> tuple[str, ...]:
        """The maps the router learns besides conntrack (to flush on a rebind)."""
        if self.translation is not Translation.NAPT:
            return ()
        found = ("owners",) if self.mapping is APDM else ("owners", "public")
        return (*found, "inbound") if self.filtering is ADF else found


class NatProfile(enum.Enum):
    """The named presets."""

    OPEN = "open"  # no NAT, no firewall: the host has a public address
    ONE_TO_ONE = "one_to_one"  # static 1:1 NAT of one host to one public address
    FULL_CONE = "full_cone"  # EIM + EIF
    ADDRESS_RESTRICTED = "address_restricted"  # EIM + ADF
    PORT_RESTRICTED = "port_restricted"  # Linux masquerade: EIM + APDF
    SYMMETRIC = "symmetric"  # APDM + APDF, random ports
    UDP_BLOCKED = "udp_blocked"  # EIM + APDF, and every UDP packet out is dropped

    @property
    def behaviour(self) -> Nat:
        return PRESETS[self.value]


PRESETS: Final = {
    "open": Nat(EIM, EIF, Translation.NONE, name="open"),
    "one_to_one": Nat(EIM, EIF, Translation.ONE_TO_ONE, name="one_to_one"),
    "full_cone": Nat(EIM, EIF, name="full_cone"),
    "address_restricted": Nat(EIM, ADF, name="address_restricted"),
    "port_restricted": Nat(EIM, APDF, name="port_restricted"),
    "symmetric": Nat(APDM, APDF, port_assignment=PortAssignment.RANDOM, name="symmetric"),
    "udp_blocked": Nat(EIM, APDF, udp=False, name="udp_blocked"),
}


def resolve(nat: Nat | NatProfile) -> Nat:
    return nat.behaviour if isinstance(nat, NatProfile) else nat


def renamed(nat: Nat, **changes: object) -> Nat:
    """`nat` with `changes`, named by its behaviours again (a preset changed is no preset)."""
    return replace(nat, name="", **changes)  # type: ignore[arg-type]


_IFNAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_PREFIX: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,40}")


def _check(prefix: str, ifnames: tuple[str, ...], addresses: tuple[str | None, ...]) -> None:
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"bad table prefix {prefix!r} (letters, digits, _)")
    for name in ifnames:
        if not _IFNAME.fullmatch(name):
            raise ValueError(f"bad interface name {name!r}")
    for address in addresses:
        if address is not None:
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                raise ValueError(f"not an IPv4 address: {address!r}") from None


def table_name(prefix: str) -> str:
    return f"{prefix}_nat"


_ENDPOINT: Final = "ipv4_addr . inet_service"
_INTERNAL: Final = "ct original ip saddr . ct original proto-src"
# The key of `public` per mapping behaviour: its type, and the packet's fields that fill it.
_PUBLIC_KEY: Final = {
    EIM: (_ENDPOINT, "ip saddr . udp sport"),
    ADM: (f"{_ENDPOINT} . ipv4_addr", "ip saddr . udp sport . ip daddr"),
}


@dataclass
class _Rules:
    """What a NAT adds to the router's table besides timeouts and the input guard."""

    maps: list[tuple[str, str]]  # name, key type (the value is always an endpoint)
    pre: list[str]
    post: list[str]
    learn: list[str]


def _one_to_one(nat: Nat, wan: str, lan: str, wan_ip: str, lan_ip: str | None) -> _Rules:
    pre = [f"iifname {wan} ip daddr {wan_ip} dnat to {lan_ip}"]
    post = [f"oifname {wan} ip saddr {lan_ip} snat to {wan_ip}"]
    if nat.hairpinning:
        pre.append(f"iifname {lan} ip daddr {wan_ip} dnat to {lan_ip}")
        post.append(f"iifname {lan} oifname {lan} snat to {wan_ip}")
    return _Rules([], pre, post, [])


def _napt(nat: Nat, wan: str, lan: str, wan_ip: str) -> _Rules:
    """The maps that make conntrack's APDF NAT behave as `nat` says (module docstring)."""
    rules = _Rules([("owners", "inet_service")], [], [], [])
    learns = [f"update @owners {{ udp sport : {_INTERNAL} }}"]
    public_key = _PUBLIC_KEY.get(nat.mapping)
    udp_out = f"oifname {wan} meta l4proto udp"
    if public_key is not None:
        rules.maps.append(("public", public_key[0]))
        # the host's endpoint as it was before srcnat (and the destination, for ADM)
        key = _INTERNAL + (" . ip daddr" if nat.mapping is ADM else "")
        learns.append(f"update @public {{ {key} : ip saddr . udp sport }}")
        rules.post.append(f"{udp_out} snat ip to {public_key[1]} map @public")
    if nat.filtering is ADF:
        rules.maps.append(("inbound", "inet_service . ipv4_addr"))
        learns.append(f"update @inbound {{ udp sport . ip daddr : {_INTERNAL} }}")
    low, high = nat.port_range
    fresh = f"snat ip to {wan_ip}:{low}-{high} fully-random"
    if nat.port_assignment is PortAssignment.PRESERVE:
        rules.post.append(f"{udp_out} udp sport @owners {fresh}")  # held: no port overloading
        rules.post.append(f"{udp_out} snat ip to {wan_ip}:{low}-{high}")  # kept when free
    else:
        rules.post.append(f"{udp_out} {fresh}")
    random = " fully-random" if nat.mapping is APDM else ""
    rules.post.append(f"oifname {wan} masquerade{random}")  # TCP and the rest (RFC 5382)
    inbound = {EIF: "udp dport map @owners", ADF: "udp dport . ip saddr map @inbound"}
    if nat.filtering in inbound:
        rules.pre.append(f"iifname {wan} meta l4proto udp dnat ip to {inbound[nat.filtering]}")
    if nat.hairpinning:
        to_us = f"iifname {lan} ip daddr {wan_ip} meta l4proto udp"
        rules.pre.append(f"{to_us} dnat ip to udp dport map @owners")
        back = f"iifname {lan} oifname {lan}"
        if nat.mapping is EIM:
            rules.post.append(
                f"{back} meta l4proto udp snat ip to ip saddr . udp sport map @public"
            )
        rules.post.append(f"{back} snat ip to {wan_ip}")  # a new mapping, as for any destination
    rules.learn.append(f"{udp_out} ct direction original " + " ".join(learns))
    return rules


def ruleset(
    nat: Nat, prefix: str, wan_if: str, lan_if: str, wan_ip: str, lan_ip: str | None = None
) -> str:
    """The nft ruleset (one `table ip PREFIX_nat`) for a router with `wan_if` (address
    `wan_ip`) towards the internet and `lan_if` towards its hosts; `lan_ip` is the host
    behind a one_to_one NAT (published as `wan_ip`), and only there."""
    _check(prefix, (wan_if, lan_if), (wan_ip, lan_ip))
    if (nat.translation is Translation.ONE_TO_ONE) != (lan_ip is not None):
        raise ValueError("lan_ip is for one_to_one, and one_to_one needs it")
    wan, lan, timeout = f'"{wan_if}"', f'"{lan_if}"', nat.mapping_timeout
    if nat.translation is Translation.NAPT:
        rules = _napt(nat, wan, lan, wan_ip)
    elif nat.translation is Translation.ONE_TO_ONE:
        rules = _one_to_one(nat, wan, lan, wan_ip, lan_ip)
    else:
        rules = _Rules([], [], [], [])
    lines = [f"table ip {table_name(prefix)} {{"]

    def chain(name: str, hook: str, *body: str) -> None:
        lines.append(f"\tchain {name} {{")
        lines.append(f"\t\t{hook}; policy accept;")
        lines.extend(f"\t\t{rule}" for rule in body)
        lines.append("\t}")

    lines += [
        "\tct timeout udp_timeout {",
        "\t\tprotocol udp",
        "\t\tl3proto ip",
        f"\t\tpolicy = {{ unreplied : {timeout}, replied : {timeout} }}",
        "\t}",
    ]
    for name, key in rules.maps:
        lines.append(f"\tmap {name} {{")
        lines.append(f"\t\ttype {key} : {_ENDPOINT}")
        lines.append("\t\tflags dynamic,timeout")
        lines.append(f"\t\ttimeout {timeout}s")
        lines.append("\t}")
    # After conntrack made the entry, before it confirms it: the kernel sets a policy only
    # on an unconfirmed entry (at priority raw there is none yet, and the policy is ignored).
    chain(
        "timeouts",
        "type filter hook prerouting priority mangle",
        'meta l4proto udp ct timeout set "udp_timeout"',
    )
    # Unsolicited traffic to the router itself dies before conntrack confirms it (no ICMP).
    chain("router_in", "type filter hook input priority filter", f"iifname {wan} ct state new drop")
    if rules.pre or rules.post:
        chain("prerouting", "type nat hook prerouting priority dstnat", *rules.pre)
        chain("postrouting", "type nat hook postrouting priority srcnat", *rules.post)
    if rules.learn:
        chain("learn", "type filter hook postrouting priority 200", *rules.learn)
    forward = []
    if nat.translates or nat.filtering is not EIF:
        forward.append(f"iifname {wan} ct state new ct status dnat accept")
        forward.append(f"iifname {wan} ct state new drop")
    if not nat.udp:
        forward.append(f"oifname {wan} meta l4proto udp drop")
    chain("forward", "type filter hook forward priority filter", *forward)
    lines.append("}")
    return "\n".join(lines) + "\n"


def firewall6(prefix: str, wan_if: str, timeout: int = DEFAULT_MAPPING_TIMEOUT) -> str:
    """The IPv6 side of a dual-stack router (one `table ip6 PREFIX_fw6`): no translation, a
    stateful firewall as RFC 6092 recommends for home routers: what a host starts opens the
    way back for exactly that flow (address-and-port-dependent filtering), unsolicited
    inbound packets are dropped silently, ICMPv6 errors of a flow pass as related, and idle
    UDP state lives `timeout` seconds (the site's mapping timeout). The router itself answers
    neighbour discovery on its WAN (RFC 4890) and nothing else new from there."""
    _check(prefix, (wan_if,), ())
    if not 1 <= timeout <= 86400:
        raise ValueError("timeout: 1 to 86400 seconds")
    wan = f'"{wan_if}"'
    return (
        "\n".join(
            [
                f"table ip6 {prefix}_fw6 {{",
                "\tct timeout udp_timeout {",
                "\t\tprotocol udp",
                "\t\tl3proto ip6",
                f"\t\tpolicy = {{ unreplied : {timeout}, replied : {timeout} }}",
                "\t}",
                "\tchain timeouts {",
                "\t\ttype filter hook prerouting priority mangle; policy accept;",
                '\t\tmeta l4proto udp ct timeout set "udp_timeout"',
                "\t}",
                "\tchain router_in {",
                "\t\ttype filter hook input priority filter; policy accept;",
                f"\t\tiifname {wan} meta l4proto ipv6-icmp accept",
                f"\t\tiifname {wan} ct state new drop",
                "\t}",
                "\tchain forward {",
                "\t\ttype filter hook forward priority filter; policy accept;",
                f"\t\tiifname {wan} ct state established,related accept",
                f"\t\tiifname {wan} drop",
                "\t}",
                "}",
            ]
        )
        + "\n"
    )


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


def named(text: str) -> Nat:
    """A preset by name (`full_cone`), or a NAPT by its behaviours (`adm-eif`)."""
    if text in PRESETS:
        return PRESETS[text]
    mapping, _, filtering = text.partition("-")
    try:
        return Nat(mapping_named(mapping), filtering_named(filtering))
    except ValueError:
        choices = ", ".join(PRESETS)
        shapes = "<eim|adm|apdm>-<eif|adf|apdf>"
        raise ValueError(f"NAT {text!r}: one of {choices}, or {shapes}") from None


_KNOBS: Final = {
    "preset",
    "mapping",
    "filtering",
    "hairpinning",
    "port_assignment",
    "port_range",
    "mapping_timeout",
    "udp",
}


def from_table(data: dict[str, object]) -> Nat:
    """A NAT from a scenario file's table: a `preset` (or `mapping` and `filtering`) and any
    knobs changed; e.g. `{ preset = "full_cone", mapping_timeout = 20 }`."""
    unknown = set(data) - _KNOBS
    if unknown:
        raise ValueError(f"unknown NAT settings {sorted(unknown)}")
    base = named(str(data.get("preset", "port_restricted")))
    changes: dict[str, object] = {}
    if "mapping" in data:
        changes["mapping"] = mapping_named(str(data["mapping"]))
    if "filtering" in data:
        changes["filtering"] = filtering_named(str(data["filtering"]))
    if "port_assignment" in data:
        changes["port_assignment"] = PortAssignment(data["port_assignment"])
    if "port_range" in data:
        bounds = data["port_range"]
        if not (isinstance(bounds, list) and len(bounds) == 2):
            raise ValueError("port_range: [low, high]")
        changes["port_range"] = (int(bounds[0]), int(bounds[1]))
    for knob, kind in (("hairpinning", bool), ("udp", bool), ("mapping_timeout", int)):
        if knob in data:
            if not isinstance(data[knob], kind):
                raise ValueError(f"{knob}: a {kind.__name__}")
            changes[knob] = data[knob]
    return renamed(base, **changes) if changes else base
