"""Noticing that this host moved to another network: an address a peer connection gathered its
candidates on is gone (another Wi-Fi, a new lease, a laptop woken elsewhere), or the address
stayed but the route to the far end now leaves from another one (the Wi-Fi's interface lost
its link and keeps its address; a cable plugged in took the default route). Every path of
that connection is then dead at once, long before ICE consent freshness says so (about 30 s)
or the stall timeout (15 s): the client builds a new one right away. No route at all is not
yet a verdict: nothing can be rebuilt until one comes back, and if it comes back the same way
the connection carries on. The rules are sans-I/O (`AddressWatch`, `RouteWatch`); the shell
polls once a second the host's addresses with ifaddr (aioice's own way of listing them) and
the kernel's choice of source address towards the far end (a UDP socket's connect, which
sends nothing)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import ifaddr

POLL_SECONDS: Final = 1.0


class AddressLost(ConnectionError):
    """An address the connection depends on left this host: its paths are dead."""


def canonical(address: str) -> str:
    """One spelling per address (IPv6 compressed, without a %scope)."""
    return ipaddress.ip_address(address.split("%", 1)[0]).compressed


@dataclass(frozen=True, slots=True)
class AddressWatch:
    """The addresses a peer connection gathered on; which of them a listing of the host's
    current addresses lacks."""

    used: frozenset[str]

    @classmethod
    def of(cls, addresses: Iterable[str]) -> AddressWatch:
        return cls(frozenset(canonical(a) for a in addresses))

    def lost(self, present: Iterable[str]) -> frozenset[str]:
        return self.used - {canonical(a) for a in present}


def _network(address: str) -> str:
    """An IPv4 address itself; an IPv6 address's /64: a new temporary (privacy) address on the
    same link is the same network, not a move."""
    ip = ipaddress.ip_address(canonical(address))
    if ip.version == 4:
        return ip.compressed
    return ipaddress.ip_network(f"{ip.compressed}/64", strict=False).compressed


@dataclass(frozen=True, slots=True)
class RouteWatch:
    """The far end a connection's packets go to first (the peer, or the TURN server when
    relayed) and the addresses the connection gathered on."""

    destination: str
    used: frozenset[str]

    @classmethod
    def of(cls, destination: str, addresses: Iterable[str]) -> RouteWatch:
        return cls(canonical(destination), frozenset(canonical(a) for a in addresses))

    def dead(self, source: str | None) -> str | None:
        """Why the connection's paths are dead, given the source address the host's routes now
        pick towards the destination (None: no route); None while they may live."""
        if source is None or not self.used or _network(source) in map(_network, self.used):
            return None
        return (
            f"this host's route to {self.destination} now leaves from {canonical(source)}, "
            "an address the connection does not use"
        )


def route_source(destination: str) -> str | None:
    """The source address the kernel's routes pick towards `destination` now; None when there
    is no route (connecting a UDP socket sends nothing)."""
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((destination, 9))
        except OSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
                return None
            raise
        return str(probe.getsockname()[0])


@dataclass(frozen=True, slots=True)
class HostAddress:
    """An address on one of this host's interfaces, with its network's prefix length."""

    address: str
    prefix: int
    interface: str


def host_listing() -> list[HostAddress]:
    """Every IP address on this host's interfaces now, where it is and its network."""
    return [
        HostAddress(
            canonical(ip.ip if isinstance(ip.ip, str) else ip.ip[0]), ip.network_prefix, a.name
        )
        for a in ifaddr.get_adapters()
        for ip in a.ips
    ]


def host_addresses() -> set[str]:
    """Every IP address on this host's interfaces now."""
    return {h.address for h in host_listing()}


async def address_lost(
    used: Iterable[str], destination: str | None = None, poll: float = POLL_SECONDS
) -> None:
    """Wait (for ever, if nothing changes) until one of `used` leaves the host, or the route
    to `destination` (an IP address) leaves from none of them; then raise AddressLost saying
    which."""
    watch = AddressWatch.of(used)
    if not watch.used:
        await asyncio.Event().wait()
    route = None if destination is None else RouteWatch.of(destination, watch.used)
    while True:
        gone = watch.lost(await asyncio.to_thread(host_addresses))
        if gone:
            raise AddressLost(f"this host's address {', '.join(sorted(gone))} is gone")
        if route is not None:
            why = route.dead(await asyncio.to_thread(route_source, route.destination))
            if why is not None:
                raise AddressLost(why)
        await asyncio.sleep(poll)
