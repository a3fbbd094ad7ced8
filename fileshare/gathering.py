"""Gathering candidates only on addresses that have a route.

aioice gathers a host candidate on every address of every interface, up or not. An interface
that lost its link (a Wi-Fi out of reach, set down) keeps its address while the kernel drops
its routes; a connection built then (after the route watch in `fileshare.netwatch` saw the
move) gathered on it too: its server-reflexive query waited out aioice's 5 s gathering
timeout, and its pairs were checked for nothing, so the new connection took about 13 s where
a move's takes 4-5 s. So before aioice gathers, each address is asked one question: does the
kernel send to another address of its own network from this interface? An address with a
route keeps at least that connected route; one without it would send such packets out of
another interface (or nowhere). (Of two interfaces on one network, e.g. cable and Wi-Fi on
the same LAN, only the one the kernel's routes prefer is kept: on Linux the other's pairs leave
the same way.) The answer comes from a UDP socket's connect, which sends nothing
(`fileshare.netwatch.route_source`). An interface that lost its carrier (a Wi-Fi dropped, a
veth whose peer is down) but not yet its configuration keeps its routes too, marked
`linkdown`, and the kernel still picks them: so an address is also dropped when its interface
has no carrier (`fileshare.netwatch.has_carrier`: not IFF_RUNNING; loopback and tun devices,
operstate UNKNOWN, have one). The rule is `usable`, sans-I/O.

aiortc exposes none of this: `install()` wraps `aioice.ice.get_host_addresses`, which
`Connection.gather_candidates` calls through the module. Pinned as `fileshare.turnrefresh`
is: the aioice release and the source of each function relied on.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import aioice
from aioice import ice

from fileshare import netwatch, turnrefresh

# sha256 of inspect.getsource() in turnrefresh.AIOICE_VERSION: the listing wrapped, and the
# gathering that calls it through the module (and binds a host candidate on each address).
PINNED_SOURCES: Final = {
    "get_host_addresses": "d4a54f9a68c39ff1bed532e76bd148cf1530aeb35b9be32900b53e234b78ae4f",
    "gather_candidates": "d33db28d4d1e49ffe863eb34098e4a4a73a7cc5725e0da821e1fb94d7ade8cbb",
}

_installed = False


def neighbour(address: str, prefix: int) -> str | None:
    """Another address of `address`'s network (not the network's own address, which may be
    an anycast one, nor IPv4's broadcast, which a UDP connect refuses); None for a network
    of one address (a /32 or /128: no connected route to ask about)."""
    network = ipaddress.ip_network((address, prefix), strict=False)
    own = ipaddress.ip_address(address)
    if network.num_addresses < 3:
        others = [a for a in network if a != own]
    else:
        others = [network.network_address + 1, network.network_address + 2]
    return next((str(a) for a in others if a != own), None)


def usable(
    gathered: Sequence[str],
    listing: Iterable[netwatch.HostAddress],
    sources: Mapping[str, str | None],
    carrier: Mapping[str, bool],
) -> list[str]:
    """Which of the addresses aioice would gather on (`gathered`) to keep, given this host's
    `listing`, for each neighbour asked about the source address the kernel picks towards it
    (None: no route at all; absent: the kernel would not say), and which interfaces have a
    carrier (absent: not known). An address is dropped when its interface has no carrier, or
    the kernel would send to its own network from another interface, or not at all; one that
    cannot be asked about (not listed, a network of one address) is kept unless its interface
    has no carrier. When every address would go, all are kept: with no route anywhere nothing
    connects, and aioice's own behaviour says so."""
    where = {h.address: h for h in listing}
    kept = []
    for address in gathered:
        host = where.get(netwatch.canonical(address))
        if host is not None and carrier.get(host.interface) is False:
            continue
        asked = None if host is None else neighbour(host.address, host.prefix)
        if host is None or asked is None or asked not in sources:
            kept.append(address)
            continue
        source = sources[asked]
        leaves = None if source is None else where.get(netwatch.canonical(source))
        if leaves is not None and leaves.interface == host.interface:
            kept.append(address)
    return kept or list(gathered)


def routed(gathered: list[str]) -> list[str]:
    """`usable` for this host now (the shell: one connect per address, no packet sent, and
    one ioctl per interface)."""
    listing, carrier = netwatch.host_links()
    sources: dict[str, str | None] = {}
    for asked in {n for h in listing if (n := neighbour(h.address, h.prefix)) is not None}:
        with contextlib.suppress(OSError):  # the kernel would not say: no verdict
            sources[asked] = netwatch.route_source(asked)
    return usable(gathered, listing, sources, carrier)


def originals() -> dict[str, Callable[..., Any]]:
    """The functions PINNED_SOURCES names, as aioice has them (unwrapped)."""
    listing = ice.get_host_addresses
    return {
        "get_host_addresses": getattr(listing, "__wrapped__", listing),
        "gather_candidates": ice.Connection.gather_candidates,
    }


def install() -> None:
    """Make aioice gather from now on only on addresses `routed` keeps. Idempotent."""
    global _installed
    if _installed:
        return
    found = originals()
    turnrefresh.check(aioice.__version__, found, PINNED_SOURCES, __name__)
    original = found["get_host_addresses"]

    @functools.wraps(original)
    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return routed(original(use_ipv4=use_ipv4, use_ipv6=use_ipv6))

    ice.get_host_addresses = get_host_addresses
    _installed = True
