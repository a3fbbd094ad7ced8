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
    assert "127.0.0.1" in netwatch.host_addresses()


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


def test_the_kernel_names_the_source_or_no_route() -> None:
    assert netwatch.route_source("127.0.0.1") == "127.0.0.1"
    assert netwatch.route_source("::1") in ("::1", None)  # None where IPv6 is off
    # 240.0.0.0/4 is reserved: a host routes it only through a default route
    found = netwatch.route_source("240.0.0.1")
    assert found is None or found in netwatch.host_addresses()


async def test_the_watch_raises_when_the_route_leaves_from_an_unused_address() -> None:
    # A "connection" that gathered on every address of this host but 127.0.0.1, towards
    # 127.0.0.1: the kernel sends from 127.0.0.1, which it does not use.
    others = sorted(netwatch.host_addresses() - {"127.0.0.1"})
    assert others  # ::1 or an interface's address
    with pytest.raises(netwatch.AddressLost, match=r"route to 127\.0\.0\.1 now leaves from"):
        await netwatch.address_lost(others, "127.0.0.1", poll=0.01)
    with pytest.raises(TimeoutError):  # the route leaves from an address it uses: nothing
        async with asyncio.timeout(0.2):
            await netwatch.address_lost(["127.0.0.1"], "127.0.0.1", poll=0.01)
