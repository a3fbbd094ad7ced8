"""fileshare.gathering: which addresses keep a route and a carrier (sans-I/O, plain inputs),
the pin against the aioice it wraps, and in a namespace whose interface lost its link (set
down: its routes go) or its carrier (its peer set down: its routes stay, linkdown) but kept its
address, what aioice gathers on with and without the layer, and what the route watch
(fileshare.netwatch) says when the carrier goes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pyroute2 import NetNS

from fileshare import gathering, netwatch
from fileshare.netwatch import HostAddress
from netsim import netns
from tests.conftest import require_root
from tests.pins import assert_aioice_pin

WIFI = HostAddress("10.0.2.7", 24, "wlan0")
CABLE = HostAddress("10.0.3.3", 24, "eth0")
CABLE6 = HostAddress("2001:db8:3::3", 64, "eth0")
LOOP = HostAddress("127.0.0.1", 8, "lo")
TUN = HostAddress("192.0.2.9", 32, "tun0")

# Interface flags as SIOCGIFFLAGS reports them (read off this kernel): loopback and an attached
# tun device (operstate UNKNOWN) are running; a veth whose peer is down, a Wi-Fi out of reach
# (NO-CARRIER), one associated but not yet authenticated (DORMANT) and a device set down are not.
LO_FLAGS = 0x49  # UP LOOPBACK RUNNING
TUN_FLAGS = 0x10D1  # UP POINTOPOINT RUNNING NOARP MULTICAST
ETH_FLAGS = 0x11043  # UP BROADCAST RUNNING MULTICAST LOWER_UP
NO_CARRIER = 0x1003  # UP BROADCAST MULTICAST
DORMANT = 0x31003  # UP BROADCAST MULTICAST LOWER_UP DORMANT
SET_DOWN = 0x1002  # BROADCAST MULTICAST


def test_a_neighbour_is_another_address_of_the_network() -> None:
    assert gathering.neighbour("10.0.2.7", 24) == "10.0.2.1"
    assert gathering.neighbour("10.0.2.1", 24) == "10.0.2.2"
    assert gathering.neighbour("10.0.2.7", 31) == "10.0.2.6"  # point to point: the other end
    assert gathering.neighbour("10.0.2.5", 30) == "10.0.2.6"  # not the network's own .4
    assert gathering.neighbour("2001:db8:3::3", 64) == "2001:db8:3::1"
    assert gathering.neighbour("10.0.2.7", 32) is None
    assert gathering.neighbour("2001:db8:3::3", 128) is None


def test_an_address_whose_network_leaves_by_another_interface_is_dropped() -> None:
    listing = [LOOP, WIFI, CABLE, CABLE6]
    # the Wi-Fi lost its link: its routes went, the default route (the cable's) carries
    # packets for its network
    sources: dict[str, str | None] = {
        "10.0.2.1": "10.0.3.3",
        "10.0.3.1": "10.0.3.3",
        "2001:db8:3::1": "2001:DB8:3:0::3",  # any spelling
    }
    gathered = ["10.0.2.7", "10.0.3.3", "2001:db8:3::3"]
    assert gathering.usable(gathered, listing, sources, {}) == ["10.0.3.3", "2001:db8:3::3"]
    # its link back: its connected route again
    back = {**sources, "10.0.2.1": "10.0.2.7"}
    assert gathering.usable(gathered, listing, back, {}) == gathered


def test_of_two_interfaces_on_one_network_the_one_the_kernel_prefers_is_kept() -> None:
    # cable and Wi-Fi on the same LAN: the kernel reaches it by one route (the lower
    # metric); the other address adds only pairs that take the same way out
    wifi_too = HostAddress("10.0.3.9", 24, "wlan0")
    sources: dict[str, str | None] = {"10.0.3.1": "10.0.3.3"}
    assert gathering.usable(["10.0.3.3", "10.0.3.9"], [CABLE, wifi_too], sources, {}) == [
        "10.0.3.3"
    ]


def test_no_route_at_all_drops_and_no_verdict_keeps() -> None:
    listing = [WIFI, CABLE, HostAddress("192.0.2.9", 32, "tun0")]
    gathered = ["10.0.2.7", "10.0.3.3", "192.0.2.9", "198.51.100.4"]
    sources: dict[str, str | None] = {"10.0.2.1": None, "10.0.3.1": "10.0.3.3"}
    # 10.0.2.7: no route even to its own network; 192.0.2.9/32: nothing to ask about;
    # 198.51.100.4: not in the listing (came and went): aioice's word stands for both
    assert gathering.usable(gathered, listing, sources, {}) == [
        "10.0.3.3",
        "192.0.2.9",
        "198.51.100.4",
    ]
    # the kernel would not say (the ask failed): kept
    assert gathering.usable(["10.0.2.7"], listing, {}, {}) == ["10.0.2.7"]
    # a source that is no address of ours (the listing changed between the two reads): dropped
    assert gathering.usable(["10.0.2.7", "10.0.3.3"], listing, {"10.0.2.1": "10.9.9.9"}, {}) == [
        "10.0.3.3"
    ]


def test_when_every_address_would_go_all_are_kept() -> None:
    sources: dict[str, str | None] = {"10.0.2.1": None, "10.0.3.1": None}
    assert gathering.usable(["10.0.2.7", "10.0.3.3"], [WIFI, CABLE], sources, {}) == [
        "10.0.2.7",
        "10.0.3.3",
    ]
    assert gathering.usable([], [WIFI], sources, {}) == []


def test_an_address_on_an_interface_without_carrier_is_dropped_though_its_routes_stay() -> None:
    listing = [LOOP, WIFI, CABLE, CABLE6, TUN]
    flags = {"lo": LO_FLAGS, "wlan0": NO_CARRIER, "eth0": ETH_FLAGS, "tun0": TUN_FLAGS}
    carrier = {name: netwatch.has_carrier(f) for name, f in flags.items()}
    # the Wi-Fi lost its carrier but kept its routes (linkdown): the kernel still sends to its
    # network from it, so only the carrier tells
    sources: dict[str, str | None] = {"10.0.2.1": "10.0.2.7", "10.0.3.1": "10.0.3.3"}
    gathered = ["10.0.2.7", "10.0.3.3", "2001:db8:3::3", "192.0.2.9"]
    assert gathering.usable(gathered, listing, sources, carrier) == gathered[1:]
    assert gathering.usable(gathered, listing, sources, {}) == gathered  # not known: kept
    for state in (DORMANT, SET_DOWN):
        stopped = {**carrier, "wlan0": netwatch.has_carrier(state)}
        assert gathering.usable(gathered, listing, sources, stopped) == gathered[1:]
    # a tun with nothing attached loses its carrier: its /32 (nothing to ask about) goes too
    no_tun = {**carrier, "tun0": netwatch.has_carrier(0x1091)}  # UP POINTOPOINT NOARP MULTICAST
    assert gathering.usable(gathered, listing, sources, no_tun) == gathered[1:3]
    # no carrier anywhere: nothing connects either way, aioice's word stands
    none = dict.fromkeys(flags, False)
    assert gathering.usable(gathered, listing, sources, none) == gathered


def test_the_kernel_flags_say_which_interfaces_carry() -> None:
    for running in (LO_FLAGS, TUN_FLAGS, ETH_FLAGS):
        assert netwatch.has_carrier(running)
    for stopped in (NO_CARRIER, DORMANT, SET_DOWN, 0x40):  # RUNNING without UP: not up
        assert not netwatch.has_carrier(stopped)


def test_the_pin_holds_for_this_aioice_and_refuses_another() -> None:
    assert_aioice_pin(gathering.originals(), gathering.PINNED_SOURCES, "gather_candidates")


# What aioice gathers on in a namespace, as the client would (no STUN or TURN server: nothing
# is sent anywhere); argv[1] == "layer": with fileshare.gathering installed; argv[2], if given,
# a tun device this process attaches to first (its carrier comes on) and holds while it gathers.
GATHER = """
import asyncio, fcntl, json, os, struct, sys, time
from aioice import Connection
from fileshare import netwatch
if sys.argv[1] == "layer":
    from fileshare import gathering
    gathering.install()
if len(sys.argv) > 2:
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, 0x400454CA, struct.pack("16sH22x", sys.argv[2].encode(), 0x1001))
    for _ in range(100):  # the kernel applies a carrier change within about a second
        if netwatch.carriers([sys.argv[2]]).get(sys.argv[2]):
            break
        time.sleep(0.05)
async def main():
    connection = Connection(ice_controlling=True)
    await connection.gather_candidates()
    print(json.dumps(sorted(c.host for c in connection.local_candidates)))
    await connection.close()
asyncio.run(main())
"""

# The route watch in a namespace: the connection used 10.77.2.2 towards 10.77.2.1 (on the
# Wi-Fi's own network); prints why it gave up.
WATCH = """
import asyncio
from fileshare import netwatch
try:
    asyncio.run(netwatch.address_lost(["10.77.2.2"], "10.77.2.1", poll=0.1))
except netwatch.AddressLost as exc:
    print(exc)
"""

RTNH_F_LINKDOWN = 16
MAIN_TABLE = 254


@dataclass(frozen=True)
class TwoLinks:
    host: str
    far: str
    wifi: str  # in host
    cable: str  # in host
    peer: str  # the Wi-Fi's other end, in far


@pytest.fixture
def two_links() -> Iterator[TwoLinks]:
    """A host namespace with a Wi-Fi (10.77.2.2/24) and a cable (10.77.3.2/24, the default
    route) to a far namespace."""
    require_root()
    with netns.namespace_group("ga", ("host", "far")) as (base, names):
        host, far = names["host"], names["far"]
        with NetNS(host) as h:
            for n, link in ((2, "w"), (3, "c")):
                near = f"{base}{link}"
                h.link(
                    "add",
                    ifname=near,
                    kind="veth",
                    peer={"ifname": f"{base}{link}f", "net_ns_fd": far},
                )
                index = h.link_lookup(ifname=near)[0]
                h.addr("add", index=index, address=f"10.77.{n}.2", prefixlen=24)
                h.link("set", index=index, state="up")
        with NetNS(far) as f:
            for n, link in ((2, "w"), (3, "c")):
                index = f.link_lookup(ifname=f"{base}{link}f")[0]
                f.addr("add", index=index, address=f"10.77.{n}.1", prefixlen=24)
                f.link("set", index=index, state="up")
        with NetNS(host) as h:
            h.route("add", dst="0.0.0.0/0", gateway="10.77.3.1")
        yield TwoLinks(host, far, f"{base}w", f"{base}c", f"{base}wf")


def _gathered(namespace: str, layer: bool, tun: str = "") -> list[str]:
    argv = [*netns.in_namespace(namespace), sys.executable, "-c", GATHER]
    mode = "layer" if layer else "stock"
    done = subprocess.run(
        [*argv, mode, *([tun] if tun else [])], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout)
    return found


def _set(namespace: str, ifname: str, state: str) -> None:
    with NetNS(namespace) as ns:
        ns.link("set", index=ns.link_lookup(ifname=ifname)[0], state=state)


def _await_carrier(namespace: str, ifname: str, wanted: bool) -> None:
    """Until the kernel reports the interface running (or not): it applies a carrier change
    in its own time (within about a second)."""
    with NetNS(namespace) as ns:
        for _ in range(200):
            (found,) = ns.get_links(ns.link_lookup(ifname=ifname)[0])
            if bool(found["flags"] & netwatch.IFF_RUNNING) == wanted:
                return
            time.sleep(0.05)
    raise AssertionError(f"{ifname} never {'gained' if wanted else 'lost'} its carrier")


def test_a_link_lost_with_its_address_kept_is_not_gathered_on(two_links: TwoLinks) -> None:
    host, wifi = two_links.host, two_links.wifi
    assert _gathered(host, layer=True) == ["10.77.2.2", "10.77.3.2"]  # both routed
    _set(host, wifi, "down")  # the Wi-Fi out of reach: as World.move(leaving=Leaving.LINK_DOWN)
    assert _gathered(host, layer=False) == ["10.77.2.2", "10.77.3.2"]  # aioice alone
    assert _gathered(host, layer=True) == ["10.77.3.2"]
    _set(host, wifi, "up")  # back in reach: its connected route again, and its carrier
    _await_carrier(host, wifi, wanted=True)
    assert _gathered(host, layer=True) == ["10.77.2.2", "10.77.3.2"]


def test_a_link_without_carrier_is_not_gathered_on_though_its_routes_stay(
    two_links: TwoLinks,
) -> None:
    host, wifi = two_links.host, two_links.wifi
    _set(two_links.far, two_links.peer, "down")  # its other end gone: NO-CARRIER here
    _await_carrier(host, wifi, wanted=False)
    with NetNS(host) as h:  # the kernel keeps the Wi-Fi's route, marked linkdown
        index = h.link_lookup(ifname=wifi)[0]
        kept = [
            r
            for r in h.get_routes(family=socket.AF_INET, table=MAIN_TABLE)
            if r.get_attr("RTA_OIF") == index
        ]
    assert kept and all(r["flags"] & RTNH_F_LINKDOWN for r in kept)
    assert _gathered(host, layer=False) == ["10.77.2.2", "10.77.3.2"]  # aioice alone
    assert _gathered(host, layer=True) == ["10.77.3.2"]
    _set(two_links.far, two_links.peer, "up")
    _await_carrier(host, wifi, wanted=True)
    assert _gathered(host, layer=True) == ["10.77.2.2", "10.77.3.2"]


def test_a_tun_device_is_gathered_on_while_attached(two_links: TwoLinks) -> None:
    """A tun device reports operstate UNKNOWN: running while a process holds it, without
    carrier while none does."""
    host, tun = two_links.host, f"{two_links.wifi[:-1]}t"
    with NetNS(host) as h:
        h.link("add", ifname=tun, kind="tuntap", mode="tun")
        index = h.link_lookup(ifname=tun)[0]
        h.addr("add", index=index, address="10.77.4.2", prefixlen=24)
        h.link("set", index=index, state="up")
    _await_carrier(host, tun, wanted=False)  # nothing attached
    assert "10.77.4.2" in _gathered(host, layer=False)
    assert _gathered(host, layer=True) == ["10.77.2.2", "10.77.3.2"]
    assert _gathered(host, layer=True, tun=tun) == ["10.77.2.2", "10.77.3.2", "10.77.4.2"]


def test_the_route_watch_sees_the_carrier_go(two_links: TwoLinks) -> None:
    """A connection on the Wi-Fi's own network: its route stays (linkdown) when the carrier
    goes, only the carrier says the paths are dead; the cable is the way out."""
    argv = [*netns.in_namespace(two_links.host), sys.executable, "-c", WATCH]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as watch:
        try:
            _set(two_links.far, two_links.peer, "down")
            out, _ = watch.communicate(timeout=60)
        finally:
            if watch.poll() is None:
                watch.kill()
    assert watch.returncode == 0
    assert out.strip() == (
        f"this host's route to 10.77.2.1 leaves from 10.77.2.2 on {two_links.wifi}, which "
        f"lost its link (no carrier), while {two_links.cable} has one"
    )
