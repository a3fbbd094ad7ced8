"""The NAT test-bed's network, built with `ip` and `nft` (subprocesses) in namespaces of our own.

    [host] lan --- lan [router] wan --- inet [internet]
    10.201.0.2     10.201.0.1  203.0.113.2    203.0.113.1, .10, .11 (the STUN/TURN server)

The internet uses the documentation range 203.0.113.0/25 (`open` puts the host on a public
203.0.113.128/25 instead of the private LAN, which exists only inside these namespaces).
Every veth is created inside its namespaces (never in the host's), so nothing here touches a
real interface; removing the namespaces removes everything, however the block ends.
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from netsim import nat, netns
from netsim.processes import find_program

SERVER_IPS: Final = ("203.0.113.10", "203.0.113.11")
INTERNET_IP: Final = "203.0.113.1"
ROUTER_WAN_IP: Final = "203.0.113.2"
INTERNET_NET: Final = 25
PRIVATE_LAN: Final = ("10.201.0.1", "10.201.0.2", 24)
PUBLIC_LAN: Final = ("203.0.113.129", "203.0.113.130", 25)


@dataclass(frozen=True)
class NatNet:
    """Names of a built topology: the namespaces, and the addresses that matter."""

    label: str
    internet: str
    router: str
    host: str
    host_ip: str
    wan_ip: str
    ruleset: str
    server_ips: tuple[str, str] = SERVER_IPS


def _run(*args: str, stdin: str | None = None) -> None:
    proc = subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()}")


def _ip(namespace: str, *args: str) -> None:
    _run(find_program("ip"), "-n", namespace, *args)


def _in(namespace: str, *argv: str, stdin: str | None = None) -> None:
    _run(*netns.in_namespace(namespace), *argv, stdin=stdin)


def _veth(a_ns: str, a_name: str, b_ns: str, b_name: str) -> None:
    """A veth pair created in `a_ns` with its peer born in `b_ns` (never in ours)."""
    _ip(a_ns, "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b_ns)


@contextlib.contextmanager
def nat_network(
    profile: nat.NatProfile, label: str = "n", udp_timeout: int = 30, hairpin: bool = False
) -> Iterator[NatNet]:
    """Internet (with the server's two addresses), one router with `profile`, one host.

    Names carry netns.RUN_PREFIX and a counter, so parallel workers and tests never collide."""
    with netns.namespace_group(label, ("inet", "rtr", "host")) as (base, names):
        inet, rtr, host = names["inet"], names["rtr"], names["host"]
        wan_if, lan_if = f"{base}wn", f"{base}ln"
        inet_if, host_if = f"{base}in", f"{base}hs"
        _veth(rtr, wan_if, inet, inet_if)
        _veth(rtr, lan_if, host, host_if)
        router_lan, host_ip, lan_len = PUBLIC_LAN if profile is nat.NatProfile.OPEN else PRIVATE_LAN
        for address in (INTERNET_IP, *SERVER_IPS):
            _ip(inet, "addr", "add", f"{address}/{INTERNET_NET}", "dev", inet_if)
        _ip(rtr, "addr", "add", f"{ROUTER_WAN_IP}/{INTERNET_NET}", "dev", wan_if)
        _ip(rtr, "addr", "add", f"{router_lan}/{lan_len}", "dev", lan_if)
        _ip(host, "addr", "add", f"{host_ip}/{lan_len}", "dev", host_if)
        for ns, ifname in ((inet, inet_if), (rtr, wan_if), (rtr, lan_if), (host, host_if)):
            _ip(ns, "link", "set", ifname, "up")
        # The internet routes everything somewhere silent: coturn drops a whole allocation
        # when a send fails with "network unreachable".
        _ip(inet, "route", "add", "blackhole", "default")
        if profile is nat.NatProfile.OPEN:
            public = ipaddress.ip_interface(f"{router_lan}/{lan_len}").network
            _ip(inet, "route", "add", str(public), "via", ROUTER_WAN_IP)
        _ip(rtr, "route", "add", "default", "via", INTERNET_IP)
        _ip(host, "route", "add", "default", "via", router_lan)
        _in(rtr, find_program("sysctl"), "-qw", "net.ipv4.ip_forward=1")
        text = nat.ruleset(
            profile,
            netns.RUN_PREFIX,
            wan_if,
            lan_if,
            ROUTER_WAN_IP,
            hairpin=hairpin,
            udp_timeout=udp_timeout,
            lan_ip=host_ip if profile is nat.NatProfile.ONE_TO_ONE else None,
        )
        _in(rtr, find_program("nft"), "-f", "-", stdin=text)
        yield NatNet(
            label=base,
            internet=inet,
            router=rtr,
            host=host,
            host_ip=host_ip,
            wan_ip=host_ip if profile is nat.NatProfile.OPEN else ROUTER_WAN_IP,
            ruleset=text,
        )
