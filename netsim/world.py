"""The emulated internet and its sites, built with pyroute2 (netlink) in namespaces of our own.

    [host j] --- [router: NAT] --- [link: impairments] --- [internet: servers]

Each site is a LAN (a bridge in its router, one veth per host) behind a router with a NAT
profile (`netsim.nat`), joined to the internet through a link namespace of its own that
routes and impairs (`netsim.link`: egress towards the internet is the uplink, egress towards
the router the downlink), so impairments never touch the NAT's conntrack or rules. The internet
holds the servers' two addresses (RFC 5780) on its loopback.

Addresses (documentation ranges only; `addresses` is the plan, sans-I/O):
- servers 203.0.113.10 and .11; site i: link/router 198.51.100.4i/30 (the router's public
  address is .4i+2), internet/link 198.51.100.(128+4i)/30 (not 192.0.2.0/24: some real
  networks use it, as this machine's does, and a test-bed's addresses should never look alike);
- LAN 10.0.(i+1).0/24 behind a NAT, or public 203.0.113.(128+16i)/28 for `open`.
The internet has a blackhole default route (a silent drop for what is not there: coturn drops a
whole allocation when one send fails with "network unreachable"). Nothing here is connected to
a real interface; every namespace and nft name carries netns.RUN_PREFIX, and interfaces, made only
inside those namespaces, their group's number (netns.interface_base).
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from pyroute2 import NetNS

from netsim import link, linkbed, nat, netns
from netsim.nat import Nat, NatProfile
from netsim.processes import find_program, stop

SERVER_IPS: Final = ("203.0.113.10", "203.0.113.11")
SERVER_IPS6: Final = ("2001:db8::10", "2001:db8::11")  # documentation prefix only (RFC 3849)
_NODAD: Final = 0x02  # IFA_F_NODAD: an address usable at once (no duplicate detection wait)
MAX_SITES: Final = 8
IPV4_MIN_MTU: Final = 576  # what every IPv4 host must take (RFC 791)
IPV6_MIN_MTU: Final = 1280  # RFC 8200's minimum link MTU
MAX_CARRIERS: Final = 4
MAX_HOSTS: Final = 9
_SITE_NAME: Final = re.compile(r"[a-z][a-z0-9]{0,11}")
CLEAN: Final = link.LinkSpec()


class Leaving(enum.Enum):
    """What becomes of a moving host's old interface (World.move)."""

    GONE = "gone"  # deleted, with its address and routes: the laptop joined another network
    # set down: it keeps its address, the kernel drops its routes (a Wi-Fi out of reach, once
    # the system noticed)
    LINK_DOWN = "link-down"
    # its other end set down: it loses its carrier and keeps its address and its routes,
    # which the kernel marks linkdown and still uses (a Wi-Fi dropped, a cable pulled, before
    # anything removed its configuration)
    CARRIER = "carrier"


@dataclass(frozen=True)
class Carrier:
    """A carrier-grade NAT that sites sit behind: their routers' public side is in the shared
    address space 100.64.0.0/10 (RFC 6598), and the carrier's router translates again."""

    name: str
    nat: Nat | NatProfile = NatProfile.PORT_RESTRICTED

    def __post_init__(self) -> None:
        if not _SITE_NAME.fullmatch(self.name):
            raise ValueError(f"carrier name {self.name!r}: a-z then a-z0-9, at most 12")
        if self.router.translation is not nat.Translation.NAPT:
            raise ValueError(f"carrier {self.name}: a carrier NAT translates ports (NAPT)")

    @property
    def router(self) -> Nat:
        return nat.resolve(self.nat)


@dataclass(frozen=True)
class SiteSpec:
    """One site: `hosts` machines on a LAN behind a router with `nat` (behind a `carrier`'s
    NAT too, if it has one); `uplink` impairs what the site sends to the internet,
    `downlink` what it receives."""

    name: str
    nat: Nat | NatProfile = NatProfile.PORT_RESTRICTED
    hosts: int = 1
    uplink: link.LinkSpec = CLEAN
    downlink: link.LinkSpec = CLEAN
    carrier: Carrier | None = None
    ipv6: bool = False  # dual stack: IPv6 besides, no NAT, a stateful firewall (RFC 6092)
    # The MTU of the link's hop up to the internet, both ends (None: the veths' 1500): a
    # smaller link in the middle of the path, which the site's hosts and router do not see
    mtu: int | None = None

    def __post_init__(self) -> None:
        if not _SITE_NAME.fullmatch(self.name):
            raise ValueError(f"site name {self.name!r}: a-z then a-z0-9, at most 12")
        if not 1 <= self.hosts <= MAX_HOSTS:
            raise ValueError(f"site {self.name}: 1 to {MAX_HOSTS} hosts")
        if self.router.translation is nat.Translation.ONE_TO_ONE and self.hosts != 1:
            raise ValueError(f"site {self.name}: one_to_one maps exactly one host")
        if self.carrier is not None and not self.router.translates:
            raise ValueError(f"site {self.name}: behind a carrier, the site's router translates")
        if self.carrier is not None and self.ipv6:
            raise ValueError(f"site {self.name}: IPv6 behind a carrier is not modelled")
        lowest = IPV6_MIN_MTU if self.ipv6 else IPV4_MIN_MTU
        if self.mtu is not None and not lowest <= self.mtu <= link.MTU_BYTES:
            raise ValueError(f"site {self.name}: mtu {lowest} to {link.MTU_BYTES}")

    @property
    def router(self) -> Nat:
        """The site's NAT behaviour (a preset's, where `nat` names one)."""
        return nat.resolve(self.nat)


@dataclass(frozen=True)
class SiteAddresses:
    internet: str  # the link's next hop up: the internet's end of the internet/link /30
    link_internet: str  # the link's end of it
    link_wan: str  # the link's end of the link/router /30
    wan: str  # the router's public address
    lan_gateway: str
    lan_prefix: int
    hosts: tuple[str, ...]
    upstream_prefix: int = 30  # 24 behind a carrier: its links share the carrier's LAN

    @property
    def routed(self) -> tuple[str, ...]:
        """Networks the next hop up (the internet, or the carrier) reaches through this
        site's link."""
        wan = ipaddress.ip_interface(f"{self.wan}/30").network
        lan = ipaddress.ip_interface(f"{self.lan_gateway}/{self.lan_prefix}").network
        return (str(wan), str(lan)) if lan.is_global or _documentation(lan) else (str(wan),)


def _documentation(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return any(
        network.subnet_of(ipaddress.IPv4Network(doc))  # type: ignore[arg-type]
        for doc in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
    )


def addresses(index: int, spec: SiteSpec, carrier: int | None = None) -> SiteAddresses:
    """The plan for site number `index` (0-based), behind carrier number `carrier` if any:
    then the link/router /30 is 100.64.128.4i/30 and the link sits on the carrier's LAN
    100.64.c.0/24 (both in RFC 6598's shared address space)."""
    if not 0 <= index < MAX_SITES:
        raise ValueError(f"at most {MAX_SITES} sites")
    transit = 4 * index
    if not spec.router.translates:
        base = ipaddress.IPv4Address("203.0.113.128") + 16 * index
        gateway, prefix = base + 1, 28
    else:
        base = ipaddress.IPv4Address(f"10.0.{index + 1}.0")
        gateway, prefix = base + 1, 24
    if carrier is None:  # the link's next hop up is the internet, on a /30 of its own
        up, link_up, up_prefix = f"198.51.100.{129 + transit}", f"198.51.100.{130 + transit}", 30
        router_side = "198.51.100"
    else:  # the link sits on the carrier's LAN
        up, link_up, up_prefix = (
            carrier_addresses(carrier).inside,
            f"100.64.{carrier}.{10 + index}",
            24,
        )
        router_side = "100.64.128"
    return SiteAddresses(
        internet=up,
        link_internet=link_up,
        link_wan=f"{router_side}.{transit + 1}",
        wan=f"{router_side}.{transit + 2}",
        lan_gateway=str(gateway),
        lan_prefix=prefix,
        hosts=tuple(str(gateway + 1 + j) for j in range(spec.hosts)),
        upstream_prefix=up_prefix,
    )


@dataclass(frozen=True)
class SiteAddresses6:
    """A dual-stack site's IPv6 plan: every address global (2001:db8::/32), nothing
    translated; each /64 is routed to the next hop down."""

    internet: str  # 2001:db8:ff:i::1/64, the internet's end of the internet/link net
    link_internet: str  # ::2 of it
    link_wan: str  # 2001:db8:fe:i::1/64, the link's end of the link/router net
    wan: str  # ::2 of it
    lan_gateway: str  # 2001:db8:(i+1)::1/64
    hosts: tuple[str, ...]

    @property
    def lan(self) -> str:
        return str(ipaddress.ip_interface(f"{self.lan_gateway}/64").network)


def addresses6(index: int, spec: SiteSpec) -> SiteAddresses6:
    if not 0 <= index < MAX_SITES:
        raise ValueError(f"at most {MAX_SITES} sites")
    lan = f"2001:db8:{index + 1}::"
    return SiteAddresses6(
        internet=f"2001:db8:ff:{index}::1",
        link_internet=f"2001:db8:ff:{index}::2",
        link_wan=f"2001:db8:fe:{index}::1",
        wan=f"2001:db8:fe:{index}::2",
        lan_gateway=f"{lan}1",
        hosts=tuple(f"{lan}{2 + j:x}" for j in range(spec.hosts)),
    )


@dataclass(frozen=True)
class CarrierAddresses:
    internet: str  # the internet's end of the internet/carrier /30
    public: str  # the carrier NAT's public address
    inside: str  # its address on its LAN (100.64.c.1/24), where its sites' links are


def carrier_addresses(index: int) -> CarrierAddresses:
    if not 0 <= index < MAX_CARRIERS:
        raise ValueError(f"at most {MAX_CARRIERS} carriers")
    transit = 192 + 4 * index
    return CarrierAddresses(
        f"198.51.100.{transit + 1}", f"198.51.100.{transit + 2}", f"100.64.{index}.1"
    )


@dataclass
class Site:
    spec: SiteSpec
    plan: SiteAddresses
    router: str
    link: str
    hosts: list[str]
    up_if: str  # in `link`, towards the internet
    down_if: str  # in `link`, towards the router
    wan_if: str  # in `router`
    ruleset: str
    public_ip: str  # what the internet sees of host 0
    plan6: SiteAddresses6 | None = None  # dual stack
    bridge: str = ""  # in `router`: the LAN


@dataclass
class CarrierSite:
    spec: Carrier
    plan: CarrierAddresses
    namespace: str
    ruleset: str


@dataclass
class World:
    internet: str
    sites: dict[str, Site]
    netem: bool
    carriers: dict[str, CarrierSite] = field(default_factory=dict)
    delayers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    base: str = ""  # what every interface name starts with
    _queues: int = 0
    _moves: int = 0

    @property
    def mechanism(self) -> str:
        return link.mechanism(self.netem)

    def host(self, site: str, index: int = 0) -> str:
        return self.sites[site].hosts[index]

    def impair(self, site: str, uplink: link.LinkSpec, downlink: link.LinkSpec) -> None:
        """Give the site's link these impairments (replacing a rate; adding loss and delay)."""
        where = self.sites[site]
        for spec, ifname in ((uplink, where.up_if), (downlink, where.down_if)):
            self._queues += 1
            plan = link.apply(
                spec, where.link, ifname, netns.RUN_PREFIX, self._queues, netem_available=self.netem
            )
            for command in plan.commands:
                linkbed.run(command)
            self.delayers.extend(linkbed.start_delayer(d) for d in plan.delayers)

    def cut(self, site: str, udp_only: bool = False) -> None:
        """The site's link drops everything (or all UDP), both ways; the NAT keeps its state."""
        where = self.sites[site]
        linkbed.run(link.cut(where.link, where.up_if, netns.RUN_PREFIX, udp_only))

    def restore(self, site: str) -> None:
        where = self.sites[site]
        linkbed.run(link.restore(where.link, where.up_if, netns.RUN_PREFIX))

    def rebind(self, site: str) -> None:
        """The router forgets its mappings (conntrack and the cone maps): new ports."""
        where = self.sites[site]
        linkbed.run(link.rebind(where.router))
        for name in where.spec.router.maps:
            flush = ("flush", "map", "ip", nat.table_name(netns.RUN_PREFIX), name)
            linkbed.run(link.Command(where.router, "nft", flush))

    def move(self, host: str, to: str, leaving: Leaving = Leaving.GONE) -> str:
        """The host (namespace) leaves its LAN for site `to`'s, as a laptop joins another
        network: its interface goes as `leaving` says; a new one on `to`'s bridge gets the
        next free address of that LAN and its default route, ahead of any the old one kept
        (as a connection manager puts a new link's). Returns that address."""
        there = self.sites[to]
        self._moves += 1
        taken = len(there.plan.hosts) + self._moves
        address = str(ipaddress.ip_address(there.plan.lan_gateway) + taken)
        port, inside = f"{self.base}x{self._moves}", f"{self.base}y{self._moves}"
        if leaving is Leaving.CARRIER:
            router, far_end = self._port_of(host)
            with NetNS(router) as rtr:
                rtr.link("set", index=rtr.link_lookup(ifname=far_end)[0], state="down")
        else:
            with NetNS(host) as hns:
                for item in hns.get_links():
                    if item.get_attr("IFLA_IFNAME") != "lo":
                        if leaving is Leaving.LINK_DOWN:
                            hns.link("set", index=item["index"], state="down")
                        else:
                            hns.link("del", index=item["index"])
        with NetNS(there.router) as rtr:
            _veth(rtr, port, inside, host)
            bridge = rtr.link_lookup(ifname=there.bridge)[0]
            rtr.link("set", index=rtr.link_lookup(ifname=port)[0], master=bridge, state="up")
        with NetNS(host) as hns:
            _up(hns, inside, address, there.plan.lan_prefix)
        # pyroute2 knows no prepend (a route before those of the same metric)
        ip = (find_program("ip"), "route", "prepend", "default", "via", there.plan.lan_gateway)
        subprocess.run([*netns.net_only(host), *ip], check=True, capture_output=True, timeout=30)
        return address

    def _port_of(self, host: str) -> tuple[str, str]:
        """The router and the bridge port at the other end of a host's first interface."""
        for number, site in enumerate(self.sites.values()):
            if host in site.hosts:
                return site.router, _port_name(self.base, number, site.hosts.index(host))
        raise KeyError(host)


def _port_name(base: str, site: int, host: int) -> str:
    return f"{base}p{site}{host}"


def _up(ns: NetNS, ifname: str, address: str | None = None, prefix: int = 32) -> None:
    index = ns.link_lookup(ifname=ifname)[0]
    if address is not None:
        ns.addr("add", index=index, address=address, prefixlen=prefix)
    ns.link("set", index=index, state="up")


def _add6(ns: NetNS, ifname: str, address: str, prefix: int = 64) -> None:
    index = ns.link_lookup(ifname=ifname)[0]
    ns.addr("add", index=index, address=address, prefixlen=prefix, flags=_NODAD)


def _veth(a: NetNS, a_name: str, b_name: str, b_namespace: str) -> None:
    """A veth pair made in `a`'s namespace with its peer born in `b_namespace` (never ours)."""
    a.link("add", ifname=a_name, kind="veth", peer={"ifname": b_name, "net_ns_fd": b_namespace})


def _forwarding(namespace: str) -> None:
    """Route; and keep bridged frames out of the ip hooks where the host has br_netfilter
    loaded (per namespace since Linux 5.3): else LAN traffic would pass the NAT's rules
    (masqueraded by hairpinning) and a hairpinned packet could not leave by its port."""
    tables = ("iptables", "ip6tables", "arptables")
    bridge_off = [f"net.bridge.bridge-nf-call-{t}=0" for t in tables]
    forward = ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    argv = [find_program("sysctl"), "-qew", *forward, *bridge_off]
    subprocess.run([*netns.net_only(namespace), *argv], check=True, capture_output=True, timeout=30)


def _nft(namespace: str, text: str) -> None:
    linkbed.run(link.Command(namespace, "nft", ("-f", "-"), stdin=text))


@dataclass
class _Upstream:
    """Where a site's link connects: the internet, or a carrier's LAN bridge."""

    ns: NetNS
    bridge: int | None = None
    public_ip: str | None = None  # the carrier's, for sites behind it


def _build_carrier(
    index: int, spec: Carrier, base: str, names: dict[str, str], inet: NetNS
) -> tuple[CarrierSite, _Upstream]:
    """The carrier's router: towards the internet its public /30, inside a bridge that its
    sites' links join (100.64.c.0/24), its NAT between them."""
    plan = carrier_addresses(index)
    namespace = names[f"cgn-{spec.name}"]
    ns = NetNS(namespace)
    inet_if, wan_if, bridge = f"{base}k{index}i", f"{base}k{index}w", f"{base}k{index}b"
    _veth(inet, inet_if, wan_if, namespace)
    _up(inet, inet_if, plan.internet, 30)
    _up(ns, wan_if, plan.public, 30)
    ns.link("add", ifname=bridge, kind="bridge")
    _up(ns, bridge, plan.inside, 24)
    ns.route("add", dst="0.0.0.0/0", gateway=plan.internet)
    _forwarding(namespace)
    text = nat.ruleset(spec.router, netns.RUN_PREFIX, wan_if, bridge, plan.public)
    _nft(namespace, text)
    upstream = _Upstream(ns, ns.link_lookup(ifname=bridge)[0], plan.public)
    return CarrierSite(spec, plan, namespace, text), upstream


def _build_site(
    index: int,
    spec: SiteSpec,
    base: str,
    names: dict[str, str],
    upstream: _Upstream,
    carrier: int | None,
) -> tuple[Site, list[NetNS]]:
    plan = addresses(index, spec, carrier)
    router, link_ns = names[f"{spec.name}-rtr"], names[f"{spec.name}-lnk"]
    hosts = [names[f"{spec.name}-h{j}"] for j in range(spec.hosts)]
    rtr, lnk = NetNS(router), NetNS(link_ns)
    opened = [rtr, lnk]
    inet_if, up_if, down_if = f"{base}i{index}", f"{base}u{index}", f"{base}d{index}"
    wan_if, bridge = f"{base}w{index}", f"{base}b{index}"
    inet = upstream.ns
    _veth(inet, inet_if, up_if, link_ns)
    _veth(lnk, down_if, wan_if, router)
    if upstream.bridge is None:
        _up(inet, inet_if, plan.internet, 30)
    else:  # a port of the carrier's LAN bridge
        inet.link("set", index=inet.link_lookup(ifname=inet_if)[0], master=upstream.bridge)
        _up(inet, inet_if)
    _up(lnk, up_if, plan.link_internet, plan.upstream_prefix)
    if spec.mtu is not None:  # both ends: a veth drops what exceeds its receiving end's MTU
        inet.link("set", index=inet.link_lookup(ifname=inet_if)[0], mtu=spec.mtu)
        lnk.link("set", index=lnk.link_lookup(ifname=up_if)[0], mtu=spec.mtu)
    _up(lnk, down_if, plan.link_wan, 30)
    _up(rtr, wan_if, plan.wan, 30)
    rtr.link("add", ifname=bridge, kind="bridge")
    _up(rtr, bridge, plan.lan_gateway, plan.lan_prefix)
    bridge_index = rtr.link_lookup(ifname=bridge)[0]
    host_ifs = [f"{base}h{index}{j}" for j in range(spec.hosts)]
    for j, (host, host_ip, host_if) in enumerate(zip(hosts, plan.hosts, host_ifs, strict=True)):
        port = _port_name(base, index, j)
        _veth(rtr, port, host_if, host)
        rtr.link("set", index=rtr.link_lookup(ifname=port)[0], master=bridge_index, state="up")
        hns = NetNS(host)
        opened.append(hns)
        _up(hns, host_if, host_ip, plan.lan_prefix)
        hns.route("add", dst="0.0.0.0/0", gateway=plan.lan_gateway)
    for network in plan.routed:
        inet.route("add", dst=network, gateway=plan.link_internet)
    if len(plan.routed) > 1:
        lnk.route("add", dst=plan.routed[1], gateway=plan.wan)
    lnk.route("add", dst="0.0.0.0/0", gateway=plan.internet)
    rtr.route("add", dst="0.0.0.0/0", gateway=plan.link_wan)
    _forwarding(router)
    _forwarding(link_ns)
    one_to_one = spec.router.translation is nat.Translation.ONE_TO_ONE
    text = nat.ruleset(
        spec.router,
        netns.RUN_PREFIX,
        wan_if,
        bridge,
        plan.wan,
        lan_ip=plan.hosts[0] if one_to_one else None,
    )
    _nft(router, text)
    public = upstream.public_ip or (plan.wan if spec.router.translates else plan.hosts[0])
    plan6 = None
    if spec.ipv6:
        plan6 = addresses6(index, spec)
        host_ends = list(zip(opened[2:], host_ifs, strict=True))
        _dual_stack(plan6, inet, lnk, rtr, host_ends, (inet_if, up_if, down_if, wan_if, bridge))
        firewall = nat.firewall6(netns.RUN_PREFIX, wan_if, spec.router.mapping_timeout)
        _nft(router, firewall)
        text += firewall
    site = Site(
        spec, plan, router, link_ns, hosts, up_if, down_if, wan_if, text, public, plan6, bridge
    )
    return site, opened


def _dual_stack(
    plan: SiteAddresses6,
    inet: NetNS,
    lnk: NetNS,
    rtr: NetNS,
    hosts: Sequence[tuple[NetNS, str]],
    ifnames: tuple[str, str, str, str, str],
) -> None:
    """IPv6 on a site's links beside IPv4: global addresses, routes down to the LAN."""
    inet_if, up_if, down_if, wan_if, bridge = ifnames
    _add6(inet, inet_if, plan.internet)
    _add6(lnk, up_if, plan.link_internet)
    _add6(lnk, down_if, plan.link_wan)
    _add6(rtr, wan_if, plan.wan)
    _add6(rtr, bridge, plan.lan_gateway)
    inet.route("add", dst=plan.lan, gateway=plan.link_internet)
    lnk.route("add", dst=plan.lan, gateway=plan.wan)
    lnk.route("add", dst="::/0", gateway=plan.internet)
    rtr.route("add", dst="::/0", gateway=plan.link_wan)
    for (hns, host_if), address in zip(hosts, plan.hosts, strict=True):
        _add6(hns, host_if, address)
        hns.route("add", dst="::/0", gateway=plan.lan_gateway)


@contextlib.contextmanager
def build(specs: Sequence[SiteSpec], label: str = "w") -> Iterator[World]:
    """The internet and `specs`' sites, impairments applied; all of it (namespaces, links,
    tables, delayer processes) removed when the block ends, however it ends."""
    if not 1 <= len(specs) <= MAX_SITES:
        raise ValueError(f"1 to {MAX_SITES} sites")
    if len({s.name for s in specs}) != len(specs):
        raise ValueError("site names must differ")
    carriers = {s.carrier.name: s.carrier for s in specs if s.carrier is not None}
    if len(carriers) != len({s.carrier for s in specs if s.carrier is not None}):
        raise ValueError("carriers of one name must be the same carrier")
    if len(carriers) > MAX_CARRIERS:
        raise ValueError(f"at most {MAX_CARRIERS} carriers")
    roles = ["inet", *(f"cgn-{name}" for name in carriers)]
    for spec in specs:
        roles += [f"{spec.name}-rtr", f"{spec.name}-lnk"]
        roles += [f"{spec.name}-h{j}" for j in range(spec.hosts)]
    netem = linkbed.netem_available()
    with (
        netns.namespace_group(label, roles, ifname_suffix=3) as (base, names),
        contextlib.ExitStack() as handles,
    ):
        inet = NetNS(names["inet"])
        handles.callback(inet.close)
        for address in SERVER_IPS:
            _up(inet, "lo", address, 32)
        inet.route("add", dst="0.0.0.0/0", type="blackhole")
        if any(spec.ipv6 for spec in specs):  # IPv6 only where asked (a container may lack it)
            for address in SERVER_IPS6:
                _add6(inet, "lo", address, 128)
            inet.route("add", dst="::/0", type="blackhole")
        _forwarding(names["inet"])  # between sites
        built: dict[str, tuple[CarrierSite, _Upstream]] = {}
        for index, carrier in enumerate(carriers.values()):
            built[carrier.name] = _build_carrier(index, carrier, base, names, inet)
            handles.callback(built[carrier.name][1].ns.close)
        sites: dict[str, Site] = {}
        for index, spec in enumerate(specs):
            if spec.carrier is None:
                upstream, number = _Upstream(inet), None
            else:
                upstream = built[spec.carrier.name][1]
                number = list(carriers).index(spec.carrier.name)
            site, opened = _build_site(index, spec, base, names, upstream, number)
            for handle in opened:
                handles.callback(handle.close)
            sites[spec.name] = site
        carrier_sites = {name: found[0] for name, found in built.items()}
        world = World(names["inet"], sites, netem, carrier_sites, base=base)
        try:
            for spec in specs:
                if spec.uplink != CLEAN or spec.downlink != CLEAN:
                    world.impair(spec.name, spec.uplink, spec.downlink)
            yield world
        finally:
            for proc in world.delayers:
                stop(proc)
