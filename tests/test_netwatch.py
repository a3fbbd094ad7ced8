"""fileshare.netwatch: which addresses a connection gathered on left the host (sans-I/O), and
the shell's listing of this host's addresses."""

from __future__ import annotations

import asyncio

import pytest

from fileshare import netwatch


def test_an_address_gone_is_named_and_others_do_not_matter() -> None:
    watch = netwatch.AddressWatch.of(["10.0.2.2", "2001:DB8::0:5"])
    assert watch.lost(["127.0.0.1", "10.0.2.2", "2001:db8::5", "10.0.3.3"]) == frozenset()
    assert watch.lost(["127.0.0.1", "10.0.3.3", "2001:db8::5"]) == {"10.0.2.2"}


def test_ipv6_scopes_and_spellings_are_one_address() -> None:
    watch = netwatch.AddressWatch.of(["fe80::1%eth0"])
    assert watch.lost(["fe80:0:0::1"]) == frozenset()


def test_the_host_lists_its_loopback() -> None:
    assert "127.0.0.1" in {h.address for h in netwatch.host_listing()}


async def test_the_watch_raises_only_for_an_address_that_goes() -> None:
    with pytest.raises(netwatch.AddressLost, match=r"192\.0\.2\.77"):
        await netwatch.address_lost(["127.0.0.1", "192.0.2.77"], poll=0.01)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await netwatch.address_lost(["127.0.0.1"], poll=0.01)
    with pytest.raises(TimeoutError):  # nothing gathered: nothing to watch
        async with asyncio.timeout(0.1):
            await netwatch.address_lost([])


def test_a_route_from_another_address_kills_the_paths_and_no_route_does_not_yet() -> None:
    watch = netwatch.RouteWatch.of("203.0.113.11", ["10.0.2.2", "2001:db8:3::2"])
    assert watch.dead("10.0.2.2") is None  # the way it was built
    assert watch.dead(None) is None  # no route: nothing to rebuild over until one is back
    why = watch.dead("10.0.3.4")
    assert why is not None and "203.0.113.11 now leaves from 10.0.3.4" in why
    assert netwatch.RouteWatch.of("2001:db8::10", []).dead("2001:db8:9::9") is None
    # a new temporary IPv6 address on the same link is not a move; another /64 is
    assert watch.dead("2001:db8:3::77") is None
    assert watch.dead("2001:db8:4::2") is not None


WIFI = netwatch.HostAddress("10.0.2.2", 24, "wlan0")
WIFI6 = netwatch.HostAddress("fe80::2", 64, "wlan0")
CABLE = netwatch.HostAddress("10.0.3.3", 24, "eth0")
CABLE6 = netwatch.HostAddress("fe80::3", 64, "eth0")
LOOP = netwatch.HostAddress("127.0.0.1", 8, "lo")


def test_a_route_into_an_interface_without_carrier_kills_the_paths_if_another_has_one() -> None:
    # A host pair on the Wi-Fi's LAN: the peer 10.0.2.9 is on its connected route, which
    # the kernel keeps (linkdown) when the carrier goes, so the route still leaves from
    # 10.0.2.2, an address the connection uses: only the carrier tells.
    watch = netwatch.RouteWatch.of("10.0.2.9", ["10.0.2.2", "10.0.3.3"])
    listing = [LOOP, WIFI, WIFI6, CABLE, CABLE6]
    up = {"lo": True, "wlan0": True, "eth0": True}
    assert watch.dead("10.0.2.2") is None
    assert watch.unplugged("10.0.2.2", listing, up) is None
    lost = {**up, "wlan0": False}
    why = watch.unplugged("10.0.2.2", listing, lost)
    assert why is not None
    assert "leaves from 10.0.2.2 on wlan0, which lost its link (no carrier), while eth0" in why
    # the route leaves from the cable: its paths are the cable's, the Wi-Fi does not matter
    assert watch.unplugged("10.0.3.3", listing, lost) is None
    # no route, an address not listed, a carrier not known: no verdict
    assert watch.unplugged(None, listing, lost) is None
    assert watch.unplugged("10.0.9.9", listing, lost) is None
    assert watch.unplugged("10.0.2.2", listing, {"eth0": True}) is None


def test_a_carrier_lost_with_no_other_way_out_is_no_verdict_yet() -> None:
    watch = netwatch.RouteWatch.of("10.0.2.9", ["10.0.2.2"])
    # loopback and a link-local address lead nowhere; an interface with no carrier or an
    # unknown one neither: as with no route, nothing can be rebuilt, the carrier may come back
    listing = [LOOP, WIFI, CABLE6, netwatch.HostAddress("10.0.4.4", 24, "docker0")]
    carrier = {"lo": True, "wlan0": False, "eth0": True, "docker0": False}
    assert watch.unplugged("10.0.2.2", listing, carrier) is None
    assert watch.unplugged("10.0.2.2", [*listing, CABLE], {**carrier, "eth0": False}) is None


def test_the_kernel_says_loopback_carries_and_knows_no_other_name() -> None:
    flags = netwatch.interface_flags("lo")
    assert flags is not None and flags & netwatch.IFF_RUNNING  # operstate UNKNOWN: running
    assert netwatch.carriers(["lo", "fsnone0", "x" * 16, ""]) == {"lo": True}


def test_the_kernel_names_the_source_or_no_route() -> None:
    assert netwatch.route_source("127.0.0.1") == "127.0.0.1"
    assert netwatch.route_source("::1") in ("::1", None)  # None where IPv6 is off
    # 240.0.0.0/4 is reserved: a host routes it only through a default route
    found = netwatch.route_source("240.0.0.1")
    assert found is None or found in {h.address for h in netwatch.host_listing()}


async def test_the_watch_raises_when_the_route_leaves_from_an_unused_address() -> None:
    # A "connection" that gathered on every address of this host but 127.0.0.1, towards
    # 127.0.0.1: the kernel sends from 127.0.0.1, which it does not use.
    others = sorted({h.address for h in netwatch.host_listing()} - {"127.0.0.1"})
    assert others  # ::1 or an interface's address
    with pytest.raises(netwatch.AddressLost, match=r"route to 127\.0\.0\.1 now leaves from"):
        await netwatch.address_lost(others, "127.0.0.1", poll=0.01)
    with pytest.raises(TimeoutError):  # the route leaves from an address it uses: nothing
        async with asyncio.timeout(0.2):
            await netwatch.address_lost(["127.0.0.1"], "127.0.0.1", poll=0.01)
