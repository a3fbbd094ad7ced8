"""coturn's configuration, rendered from one set of values (`TurnSettings`) through the Jinja2
template `turnserver.conf.j2`, the same template the production deploy renders.

The peer deny list is written out in the template itself (so Ansible needs nothing from here);
`denied_peer_ranges()` is how it was written, and a test keeps the two equal. coturn 4.6.1
takes `denied-peer-ip` as a single address or an `a-b` range, never CIDR, and compares IPv6
addresses byte by byte (each byte of the address between the bytes of the bounds), which is
right only for CIDR-aligned ranges: so every range here is a CIDR block written as `first-last`.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jinja2

TEMPLATE: Final = Path(__file__).with_name("turnserver.conf.j2")
CONFIG_NAME: Final = "turnserver.conf"

# Peers a relay must never reach: loopback, "this network", private, CGNAT, link-local (cloud
# metadata at 169.254.169.254), IETF protocol assignments, documentation, benchmarking,
# multicast, reserved and broadcast. 255.255.255.255 lies in 240/4 but is named for the reader.
DENIED_IPV4: Final = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
)
# IPv6: every form that embeds or reaches an IPv4 address (IPv4-compatible ::/96, which Linux
# may route through a sit tunnel; SIIT ::ffff:0:0:0/96; NAT64 64:ff9b::/96 and 64:ff9b:1::/48;
# 6to4 2002::/16; Teredo 2001::/32, inside 2001::/23), and the rest of IANA's IPv6
# special-purpose registry: discard-only 100::/64, dummy 100:0:0:1::/64, IETF protocol
# assignments 2001::/23, documentation 2001:db8::/32 and 3fff::/20, AS112 2620:4f:8000::/48,
# SRv6 SIDs 5f00::/16, unique-local fc00::/7, link-local fe80::/10, the old site-local
# fec0::/10, multicast ff00::/8. No WebRTC peer lives in any of them.
# ::/96 holds `::`, which coturn 4.6.1 would read as "no bound" (a `denied-peer-ip=::` line
# denies every peer, an IPv6 range from `::` every IPv4 address too): so it is written as the
# CIDR blocks from ::1 up (`_blocks`); `::` itself coturn refuses by its zero-address check.
DENIED_IPV6: Final = (
    "::/96",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "100:0:0:1::/64",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "2620:4f:8000::/48",
    "3fff::/20",
    "5f00::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
)
# Every IPv4-mapped IPv6 address: coturn before 4.9 checks `::ffff:127.0.0.1` neither against
# the IPv4 rules nor as loopback (CVE-2026-27624), and a dual-stack relay socket reaches the
# IPv4 address. No client names a peer this way, so the whole block is denied; the per-range
# mapped lines after it only make the log say which range a refused peer fell in.
IPV4_MAPPED: Final = "::ffff:0.0.0.0/96"


def _text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """IPv4-mapped addresses dotted (`::ffff:10.0.0.0`), as people read them."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _as_range(network: Network) -> str:
    first, last = network.network_address, network.broadcast_address
    if network.version == 6 and int(first) == 0:
        raise ValueError(f"{network}: coturn 4.6.1 would read a range from :: as deny-all")
    return _text(first) if first == last else f"{_text(first)}-{_text(last)}"


def _blocks(network: Network) -> list[Network]:
    """The network as CIDR blocks coturn 4.6.1 reads right: an IPv6 one from `::` without
    `::` (::/96 becomes ::1/128, ::2/127, … ::128.0.0.0/97)."""
    first, last = network.network_address, network.broadcast_address
    if network.version == 4 or int(first) != 0:
        return [network]
    return list(ipaddress.summarize_address_range(first + 1, last))


def _cidr(network: Network) -> str:
    return f"{_text(network.network_address)}/{network.prefixlen}"


def _mapped(network: ipaddress.IPv4Network) -> ipaddress.IPv6Network:
    base = int(ipaddress.IPv6Address("::ffff:0:0"))
    return ipaddress.IPv6Network((base + int(network.network_address), 96 + network.prefixlen))


def denied_peer_ranges() -> list[tuple[str, str]]:
    """(CIDR, coturn range) for every `denied-peer-ip` line, in the template's order.

    coturn tries the deny list from its last line to its first, so the catch-all mapped block
    comes first and the precise ranges win the log message."""
    v4 = [ipaddress.IPv4Network(n) for n in DENIED_IPV4]
    nets: list[Network] = [
        ipaddress.IPv6Network(IPV4_MAPPED),
        *v4,
        *(_mapped(n) for n in v4),
        *(block for n in DENIED_IPV6 for block in _blocks(ipaddress.IPv6Network(n))),
    ]
    return [(_cidr(n), _as_range(n)) for n in nets]


@dataclass(frozen=True)
class TurnSettings:
    """Everything that differs between deployments; the rest is fixed in the template.

    `listening_ips`: one, or two of one family for RFC 5780 NAT behaviour discovery (answered
    on both addresses and on `alt_port`); then, for a dual stack, one or two of the other family.
    `relay_ips` default to the listening ones (both families: a client may ask for either).
    `external_ips`: `public` or `public/private` when the host sits behind 1:1 NAT (clouds).
    `secrets`: the TURN REST static-auth-secret(s); the first is what the signaling servers use
    now, any further ones are still accepted while a rotation is under way.
    `test_allow`: peers let through despite the deny list: only ever the emulated internet
    of a test-bed; empty in production.
    """

    listening_ips: tuple[str, ...]
    realm: str
    secrets: tuple[str, ...] = field(repr=False)
    relay_ips: tuple[str, ...] = ()
    external_ips: tuple[str, ...] = ()
    port: int = 3478
    tls_port: int = 5349
    alt_port: int = 0  # 0: coturn's default, port + 1
    server_name: str = ""  # the DNS name in turn: URLs (and the certificate); default: first IP
    cert: Path | None = None
    pkey: Path | None = None
    min_port: int = 49152
    max_port: int = 65535
    user_quota: int = 12
    total_quota: int = 2000
    max_bps: int = 3_000_000  # bytes per second per allocation; 0: unlimited
    bps_capacity: int = 0  # bytes per second for the whole server; 0: unlimited
    prometheus_port: int = 0  # 0: off (Debian's coturn 4.6.1 is built without it)
    verbose: bool = False
    stale_nonce: int = 600  # seconds a nonce lives; then 438 and the client signs again
    max_allocate_lifetime: int = 3600  # the longest lifetime an Allocate or Refresh gets
    # TEST-BEDS ONLY: a permission's and a channel binding's lifetime (0: coturn's, RFC 8656's
    # 300 s and 600 s); shortened to make a long relay's refreshes happen within a test.
    permission_lifetime: int = 0
    channel_lifetime: int = 0
    test_allow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        versions = [ipaddress.ip_address(ip).version for ip in self.listening_ips]
        if not 1 <= len(versions) <= 4 or any(versions.count(v) > 2 for v in versions):
            raise ValueError("one or two listening addresses per family")
        if len(versions) >= 2 and versions[0] != versions[1]:
            raise ValueError("RFC 5780 needs the first two listening addresses of one family")
        if versions != sorted(versions, key=lambda v: v != versions[0]):
            raise ValueError("listening addresses: one family's first, then the other's")
        for ip in (*self.relay_ips, *self.test_allow):
            ipaddress.ip_address(ip.split("-")[0])
        if not self.secrets or not all(self.secrets):
            raise ValueError("at least one static-auth-secret")
        texts = [*self.listening_ips, *self.relay_ips, *self.external_ips, *self.test_allow]
        texts += [*self.secrets, self.realm, self.server_name, str(self.cert), str(self.pkey)]
        if any(ch in text for text in texts for ch in "\r\n\0"):
            raise ValueError("every value must be one line (a newline would add a directive)")
        if not self.realm:
            raise ValueError("a realm")
        if (self.cert is None) != (self.pkey is None):
            raise ValueError("TLS needs both cert and pkey")
        if not 0 < self.min_port <= self.max_port < 65536:
            raise ValueError("bad relay port range")

    @property
    def tls(self) -> bool:
        return self.cert is not None

    @property
    def rfc5780(self) -> bool:
        return len(self.listening_ips) == 2

    @property
    def host(self) -> str:
        """What clients put in turn: URLs."""
        return self.server_name or self.listening_ips[0]

    def template_vars(self, workdir: Path) -> dict[str, Any]:
        """The template's variables; Ansible sets the same names."""
        return {
            "listening_ips": list(self.listening_ips),
            "relay_ips": list(self.relay_ips or self.listening_ips),
            "external_ips": list(self.external_ips),
            "port": self.port,
            "tls_port": self.tls_port,
            "alt_port": self.alt_port,
            "realm": self.realm,
            "server_name": self.server_name,
            "static_auth_secrets": list(self.secrets),
            "cert": str(self.cert) if self.cert else "",
            "pkey": str(self.pkey) if self.pkey else "",
            "min_port": self.min_port,
            "max_port": self.max_port,
            "user_quota": self.user_quota,
            "total_quota": self.total_quota,
            "max_bps": self.max_bps,
            "bps_capacity": self.bps_capacity,
            "prometheus_port": self.prometheus_port,
            "verbose": self.verbose,
            "stale_nonce": self.stale_nonce,
            "max_allocate_lifetime": self.max_allocate_lifetime,
            "permission_lifetime": self.permission_lifetime,
            "channel_lifetime": self.channel_lifetime,
            "workdir": str(workdir),
            "test_allow_peers": list(self.test_allow),
        }


def render(settings: TurnSettings, workdir: Path) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,  # as Ansible's template module does
        autoescape=False,  # noqa: S701 (a config file, not HTML; values are checked one-line)
    )
    return env.get_template(TEMPLATE.name).render(settings.template_vars(workdir))


def write_config(settings: TurnSettings, workdir: Path) -> Path:
    """Render into `workdir` (created 0700), readable by its owner only: it holds the secret."""
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = workdir / CONFIG_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(render(settings, workdir))
    return path


def directives(config: str) -> list[tuple[str, str]]:
    """(name, value) of each line of a coturn config, comments and blanks left out."""
    found: list[tuple[str, str]] = []
    for raw in config.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            found.append((name.strip(), value.strip()))
    return found


def values(config: str, name: str) -> list[str]:
    return [v for n, v in directives(config) if n == name]
