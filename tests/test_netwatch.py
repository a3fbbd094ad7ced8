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
