"""Noticing that this host moved to another network: an address a peer connection gathered its
candidates on is gone (another Wi-Fi, a new lease, a laptop woken elsewhere), or the address
stayed but the route to the far end now leaves from another one (the Wi-Fi's interface lost
its link and keeps its address; a cable plugged in took the default route). Every path of
that connection is then dead at once, long before ICE consent freshness says so (about 30 s)
or the stall timeout (15 s): the client builds a new one right away. No route at all is not
yet a verdict: nothing can be rebuilt until one comes back, and if it comes back the same way
the connection carries on. An interface that loses its carrier (a Wi-Fi dropped, a cable
pulled, while nothing has yet removed its configuration) keeps its address and its routes,
which Linux marks `linkdown` and still sends into: a far end on that interface's own network
(a peer on the same LAN, a host pair) is still routed from the same address, so only the
carrier says those paths are dead. The rules are sans-I/O (`AddressWatch`, `RouteWatch`,
`has_carrier`); the shell polls once a second the host's addresses with ifaddr (aioice's own
way of listing them), each interface's flags (an ioctl, Linux only: elsewhere the carrier is
not known and counts for nothing) and the kernel's choice of source address towards the far
end (a UDP socket's connect, which sends nothing)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import ifaddr

POLL_SECONDS: Final = 1.0

# <linux/if.h>. The kernel reports IFF_RUNNING while the interface is operationally up: its
# operstate UP, or UNKNOWN (loopback, tun, drivers that do not track a carrier); a link that
# lost its carrier, or waits for authentication (DORMANT), lacks it.
IFF_UP: Final = 0x1
IFF_RUNNING: Final = 0x40
_SIOCGIFFLAGS: Final = 0x8913
_IFNAMSIZ: Final = 16


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

    def unplugged(
        self, source: str | None, listing: Iterable[HostAddress], carrier: Mapping[str, bool]
    ) -> str | None:
        """Why the connection's paths are dead although the route to the destination still
        leaves from `source` (an address it uses): that address's interface lost its carrier
        (`carrier`: interface -> has one; absent: not known) while another interface has one
        and a global address, which a new connection can go out of. With no such interface
        it is no verdict, as no route is not: nothing can be rebuilt yet, and a carrier back
        on the same network carries the connection on."""
        if source is None:
            return None
        hosts = list(listing)
        host = next((h for h in hosts if h.address == canonical(source)), None)
        if host is None or carrier.get(host.interface) is not False:
            return None
        others = sorted(
            {
                h.interface
                for h in hosts
                if h.interface != host.interface and carrier.get(h.interface) and _global(h.address)
            }
        )
        if not others:
            return None
        return (
            f"this host's route to {self.destination} leaves from {host.address} on "
            f"{host.interface}, which lost its link (no carrier), while {others[0]} has one"
        )


def _global(address: str) -> bool:
    """An address that can reach beyond its link (not loopback, not link-local)."""
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local)


def has_carrier(flags: int) -> bool:
    """Whether an interface with these flags (SIOCGIFFLAGS') carries packets: up, and
    operationally up (UP or UNKNOWN, as loopback and tun devices report)."""
    return flags & (IFF_UP | IFF_RUNNING) == IFF_UP | IFF_RUNNING


def interface_flags(interface: str) -> int | None:
    """The interface's flags as the kernel reports them now (SIOCGIFFLAGS on a UDP socket:
    the calling thread's network namespace, an alias such as eth0:1 is its device's); None
    off Linux, for a name the kernel does not know, or when it would not say."""
    name = interface.encode()
    if sys.platform != "linux" or not 0 < len(name) < _IFNAMSIZ or b"\0" in name:
        return None
    import fcntl  # not on Windows

    request = struct.pack(f"{_IFNAMSIZ}s24x", name)  # struct ifreq: the name, then a union
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            reply = fcntl.ioctl(probe.fileno(), _SIOCGIFFLAGS, request)
    except OSError:
        return None
    flags: int = struct.unpack_from("H", reply, _IFNAMSIZ)[0]
    return flags


def carriers(interfaces: Iterable[str]) -> dict[str, bool]:
    """Which of `interfaces` have a carrier now; those whose flags cannot be read are left
    out (not known)."""
    return {
        name: has_carrier(flags)
        for name in set(interfaces)
        if (flags := interface_flags(name)) is not None
    }


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


def host_links() -> tuple[list[HostAddress], dict[str, bool]]:
    """`host_listing`, and which of its interfaces have a carrier."""
    listing = host_listing()
    return listing, carriers(h.interface for h in listing)


async def address_lost(
    used: Iterable[str], destination: str | None = None, poll: float = POLL_SECONDS
) -> None:
    """Wait (for ever, if nothing changes) until one of `used` leaves the host, or the route
    to `destination` (an IP address) leaves from none of them, or from an interface that lost
    its carrier while another has one; then raise AddressLost saying which."""
    watch = AddressWatch.of(used)
    if not watch.used:
        await asyncio.Event().wait()
    route = None if destination is None else RouteWatch.of(destination, watch.used)
    while True:
        listing, carrier = await asyncio.to_thread(host_links)
        gone = watch.lost(h.address for h in listing)
        if gone:
            raise AddressLost(f"this host's address {', '.join(sorted(gone))} is gone")
        if route is not None:
            source = await asyncio.to_thread(route_source, route.destination)
            why = route.dead(source) or route.unplugged(source, listing, carrier)
            if why is not None:
                raise AddressLost(why)
        await asyncio.sleep(poll)
