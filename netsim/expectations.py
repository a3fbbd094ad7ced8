"""Which path two peers must end up on, derived from their NATs' behaviours by one rule
(written once, here), so that a new NAT or a new client version shows at once what changed.

- host: both peers on one LAN, or both with public addresses: host candidates;
- srflx: a direct path through the NATs (server-reflexive or peer-reflexive candidates);
- relay: through the TURN server.

The rule. Each peer sends its checks to the other's server-reflexive address: the public port
its NAT gave it towards the STUN server. A's check leaves A's NAT from the mapping A's NAT
gives for B's address, the same public port only if A's mapping is endpoint-independent. It
reaches B's NAT on B's STUN mapping, which lets it in

- with endpoint-independent filtering, always;
- with address-dependent filtering, if B has sent to A's address from that mapping: B's checks
  to A leave from it only if B's mapping is endpoint-independent;
- with address-and-port-dependent filtering, if B has sent to that exact address and port:
  B's mapping and A's must both be endpoint-independent.

A check let in is answered on the same flow (its reply passes both NATs), and the one who
answered now knows the other's address (peer-reflexive): so a direct path exists as soon as
one direction gets in. Where UDP is blocked only TURN over TCP or TLS is left. NATs stacked
(a home router behind a carrier-grade NAT) act as one whose mapping and filtering are the
stricter of the two.
"""

from __future__ import annotations

import ipaddress
from collections import abc
from dataclasses import dataclass
from typing import Final

from netsim.nat import APDF, EIF, EIM, Filtering, Mapping, Nat, Translation

PATHS: Final = ("host", "srflx", "relay")
# A dual-stack site's IPv6: no translation, a stateful firewall (RFC 6092, netsim.nat.firewall6).
IPV6_FIREWALL: Final = Nat(EIM, APDF, Translation.NONE, name="ipv6-firewall")


@dataclass(frozen=True)
class Edge:
    """What lies between a peer and the internet: one NAT, or several stacked (innermost first)."""

    nats: tuple[Nat, ...]

    @property
    def mapping(self) -> Mapping:
        return max((n.mapping for n in self.nats), key=list(Mapping).index)

    @property
    def filtering(self) -> Filtering:
        return max((n.filtering for n in self.nats), key=list(Filtering).index)

    @property
    def udp(self) -> bool:
        return all(n.udp for n in self.nats)

    @property
    def behaviours(self) -> str:
        """As reports show it: `EIM/APDF`, with `, UDP blocked` or `(open)` where so."""
        text = f"{self.mapping.short}/{self.filtering.short}"
        if self.public:
            text += " (public address)"
        return text if self.udp else f"{text}, UDP blocked"

    @property
    def public(self) -> bool:
        """The peer's own address is public: its host candidate is reachable."""
        return not any(n.translates for n in self.nats)


def edge(*nats: Nat) -> Edge:
    return Edge(tuple(nats))


def lets_in(sender: Edge, receiver: Edge) -> bool:
    """Whether the sender's checks, sent to the receiver's server-reflexive address, get
    through the receiver's NAT (while the receiver sends its checks the other way)."""
    if receiver.filtering is EIF:
        return True
    if receiver.mapping is not EIM:
        return False
    return receiver.filtering is not Filtering.ADDRESS_AND_PORT_DEPENDENT or sender.mapping is EIM


def path(a: Edge, b: Edge) -> str:
    """The path two peers on different sites, behind `a` and `b`, must end up on."""
    if not (a.udp and b.udp):
        return "relay"
    if not (lets_in(a, b) or lets_in(b, a)):
        return "relay"
    return "host" if a.public and b.public else "srflx"


def either_family(ipv4: str, ipv6: str) -> str:
    """Two dual-stack peers: ICE pairs candidates of each family, and the better path wins
    (host candidates are checked first)."""
    return min(ipv4, ipv6, key=PATHS.index)


def shared_carrier(a: Edge, b: Edge, carrier: Nat) -> str:
    """Two sites behind one carrier NAT: their checks to each other's public (carrier)
    addresses must turn around in the carrier (hairpinning), where they meet the carrier's
    hairpin filtering (endpoint-independent: it lets in what its mappings own) and the home
    NATs' own behaviour."""
    if not carrier.hairpinning or carrier.translation is not Translation.NAPT:
        return "relay"
    hairpinned = Nat(carrier.mapping, EIF, udp=carrier.udp)
    return path(edge(*a.nats, hairpinned), edge(*b.nats, hairpinned))


def turn_transports(a: Edge, b: Edge) -> tuple[str, ...]:
    """The TURN transports a relayed pair may use: TCP or TLS where UDP is blocked."""
    if not (a.udp and b.udp):
        return ("tcp", "tls")
    return ("udp",)


@dataclass(frozen=True)
class DoctorFindings:
    """What `fileshare doctor` must say behind an edge: the NAT's behaviours in its words
    (None where UDP cannot reach the STUN server), its verdict's kind, and which TURN
    transports allocate."""

    mapping: str | None
    filtering: str | None
    verdict: str
    turn: dict[str, bool]


def _words(behaviour: Mapping | Filtering) -> str:
    return str(behaviour.value).lower().replace(" ", "-")  # "Endpoint Independent" -> e-i


def doctor(e: Edge) -> DoctorFindings:
    """By the rule above: an endpoint-independent mapping (or none) can be reached directly by
    most peers, any other mapping only by peers on open networks or behind full cones."""
    turn = {"udp": e.udp, "tcp": True, "tls": True}
    if not e.udp:
        return DoctorFindings(None, None, "relay_only", turn)
    if e.public:
        return DoctorFindings("no NAT", "no NAT", "direct", turn)
    verdict = "direct" if e.mapping is EIM else "mostly_relayed"
    return DoctorFindings(_words(e.mapping), _words(e.filtering), verdict, turn)


def category(local: str, remote: str, peer_remote: str) -> str:
    """A path's category from one peer's selected pair (`local`, `remote` candidate types) and
    the remote type its peer selected: relay if any end relays, host if both see host
    candidates, else srflx (aioice pairs only host and relay candidates locally)."""
    if "relay" in (local, remote, peer_remote):
        return "relay"
    if remote == "host" and peer_remote == "host":
        return "host"
    return "srflx"


def browser_local(
    view: abc.Mapping[str, object], peer_view: abc.Mapping[str, object], own_address: str
) -> str:
    """The type of a browser's local candidate on its selected pair (`view`, its `path`
    event; `peer_view`, the other side's), judged by its address: Chromium hides its host
    candidates behind mDNS names, so its own address comes back to it as peer-reflexive (a check
    from the same LAN taught it) or server-reflexive (a STUN server with no NAT between). An
    address that is its host's own is untranslated: a host address. Chromium's stats may leave
    its local address out or redact it (`redacted-ip.invalid`): then the peer's view of it says
    where it sends from."""
    local = str(view.get("local", "?"))
    if local not in ("prflx", "srflx"):
        return local
    seen = _ip(str(view.get("localAddress", ""))) or _ip(str(peer_view.get("remoteAddress", "")))
    return "host" if seen == own_address else local


def _ip(address: str) -> str | None:
    """The IP of an `ip:port` (or `[ip]:port`), None for a name or anything else."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
