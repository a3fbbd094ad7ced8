"""Which path each pair of NATs must take: one table, like a grid, so that a new NAT profile or a
new client version shows at once what changed.

- host: both peers on one LAN, host candidates;
- srflx: a direct path through the NATs (server-reflexive or peer-reflexive candidates);
- relay: through the TURN server.

A direct path fails only where neither side can predict the other's mapping and filtering lets
nothing unpredicted in: a symmetric NAT (address-and-port-dependent mapping) against a
port-restricted or symmetric one. Where UDP is blocked, only TURN over TCP or TLS is left.
"""

from __future__ import annotations

from typing import Final

from netsim.nat import NatProfile

PATHS: Final = ("host", "srflx", "relay")

_HARD: Final = {NatProfile.PORT_RESTRICTED, NatProfile.SYMMETRIC}


def path(a: NatProfile, b: NatProfile) -> str:
    """The path two peers on different sites, behind `a` and `b`, must end up on."""
    if NatProfile.UDP_BLOCKED in (a, b):
        return "relay"
    if a is b is NatProfile.OPEN:
        return "host"  # public host candidates on both sides
    if NatProfile.SYMMETRIC in (a, b) and {a, b} <= _HARD:
        return "relay"
    return "srflx"


def turn_transports(a: NatProfile, b: NatProfile) -> tuple[str, ...]:
    """The TURN transports a relayed pair may use: TCP or TLS where UDP is blocked."""
    if NatProfile.UDP_BLOCKED in (a, b):
        return ("tcp", "tls")
    return ("udp",)


def category(local: str, remote: str, peer_remote: str) -> str:
    """A path's category from one peer's selected pair (`local`, `remote` candidate types) and
    the remote type its peer selected: relay if any end relays, host if both see host
    candidates, else srflx (aioice pairs only host and relay candidates locally)."""
    if "relay" in (local, remote, peer_remote):
        return "relay"
    if remote == "host" and peer_remote == "host":
        return "host"
    return "srflx"
