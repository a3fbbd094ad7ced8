"""Noticing that this host moved to another network: an address a peer connection gathered its
candidates on is gone (another Wi-Fi, a new lease, a laptop woken elsewhere). Every path of
that connection is then dead at once, long before ICE consent freshness says so (about 30 s):
the client builds a new one right away. The rule is sans-I/O (`AddressWatch`); the shell
polls the host's addresses with ifaddr (aioice's own way of listing them) once a second."""

from __future__ import annotations

import asyncio
import ipaddress
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


def host_addresses() -> set[str]:
    """Every IP address on this host's interfaces now."""
    found: set[str] = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            found.add(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return found


async def address_lost(used: Iterable[str], poll: float = POLL_SECONDS) -> None:
    """Wait (for ever, if nothing goes) until one of `used` leaves the host; then raise
    AddressLost naming it."""
    watch = AddressWatch.of(used)
    if not watch.used:
        await asyncio.Event().wait()
    while True:
        gone = watch.lost(await asyncio.to_thread(host_addresses))
        if gone:
            raise AddressLost(f"this host's address {', '.join(sorted(gone))} is gone")
        await asyncio.sleep(poll)
