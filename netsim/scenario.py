"""Scenarios as data (sans-I/O): what network to build, which peers transfer what, which fault
to inject, and what must be observed. Built in Python or loaded from a TOML file:

    [[scenario]]
    name = "cone-x-cone"
    kind = "path"                       # lan, path, resume, rebind, encryption, throughput,
    sites = [                           # calibration, doctor
      { name = "a", nat = "port_restricted" },
      { name = "b", nat = "port_restricted", downlink = { delay_ms = 20, loss_percent = 1 } },
    ]                                   # a site's `mtu = 1280`: its link's hop to the internet
    sender = "a"                        # "site" or "site:host-index"; default: the first site
    receiver = "b"                      # default: the second site (or host 1 of a lone site)
    file_mib = 2
    expect_path = "srflx"               # default: the grid (netsim.expectations)
    fault = { kind = "cut", at = 0.5, seconds = 5 }     # or rebind, pause (the receiver's),
                                        # signal-restart, turn-restart,
                                        # move, reroute, carrier-loss
                                        # (with to = "site")
    faults = [{ kind = "cut", at = 0.3, seconds = 5 }, { kind = "rebind", at = 0.6 }]
                                        # several, one after another (instead of `fault`)
    timeline = true                     # goodput over time, faults marked, in the report
    full = false                        # true: only in `netsim run --full`
    turn_ttl_s = 60                     # TURN credentials' lifetime (default: the server's)
    sender_client = "browser"           # "cli" (default) or "browser" (netsim/browser_client.py)
    receiver_client = "cli"

    [[grid]]                            # every pair of these NATs, expected paths from the grid
    nats = ["full_cone", "symmetric"]
    clients = ["browser", "cli"]        # sender's and receiver's (default: both the CLI)

    [[doctor]]                          # `fileshare doctor` behind each NAT, checked against it
    nats = ["port_restricted", "udp_blocked"]

    [[throughput]]                      # rate x RTT x loss x path
    rates_mbit = [10, 50]
    rtt_ms = [10, 80]
    loss_percent = [0, 1, 3]
    paths = ["direct", "relay"]
"""

from __future__ import annotations

import enum
import itertools
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from netsim import expectations, link, nat
from netsim.nat import NatProfile
from netsim.world import Carrier, SiteSpec

_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


class Kind(enum.Enum):
    LAN = "lan"
    PATH = "path"
    RESUME = "resume"
    REBIND = "rebind"
    ENCRYPTION = "encryption"
    THROUGHPUT = "throughput"
    CALIBRATION = "calibration"
    DOCTOR = "doctor"  # `fileshare doctor` on the sender's host: its findings against the NAT


# Which program a peer runs, through the client adapter (netsim/lab.py): the CLI, or the web
# app in headless Chromium (netsim/browser_client.py), which prints the same JSON events.
CLIENT_PROGRAMS: Final = {"cli": ("fileshare",), "browser": ("netsim.browser_client",)}


class FaultKind(enum.Enum):
    CUT = "cut"  # the site's link drops everything for `seconds`, then comes back
    REBIND = "rebind"  # the site's router forgets its mappings
    # The receiver (with --verify) answers its question `seconds` after it is asked: alive, its
    # peer connection up, but nothing of the transfer moves (`at` does not apply: the question
    # comes with the manifest, before any data).
    PAUSE = "pause"
    # Three signaling instances behind haproxy: those the peers use are redeployed (SIGTERM:
    # drain, 1012), then the one they moved to crashes (SIGKILL)
    SIGNAL_RESTART = "signal-restart"
    TURN_RESTART = "turn-restart"  # coturn stopped and started again: every allocation lost
    MOVE = "move"  # the site's peer moves to site `to`: a new address behind a new NAT
    # The site's peer's interface loses its link but keeps its address (its routes go), and a
    # new one on site `to` takes the default route: only the route says the paths are dead
    REROUTE = "reroute"
    # The site's peer's interface loses its carrier and keeps its address and routes (linkdown),
    # and a new one on site `to` takes the default route ahead of the old: towards a peer on the
    # old LAN only the carrier says the paths are dead
    CARRIER_LOSS = "carrier-loss"

    @property
    def timed(self) -> bool:
        """Lasts `seconds` (a cut, a pause); the others strike at once."""
        return self in (FaultKind.CUT, FaultKind.PAUSE)

    @property
    def moves(self) -> bool:
        """The peer's host goes to site `to`."""
        return self in (FaultKind.MOVE, FaultKind.REROUTE, FaultKind.CARRIER_LOSS)


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    site: str
    at: float = 0.5  # share of the file acknowledged when it strikes
    seconds: float = 0.0
    udp_only: bool = False  # a cut of UDP alone: the peers' paths die, signaling lives
    to: str = ""  # a move's destination site

    def __post_init__(self) -> None:
        if not 0 < self.at < 1:
            raise ValueError("fault.at: a share of the transfer, between 0 and 1")
        if self.kind.timed and not 0 < self.seconds <= 600:
            raise ValueError(f"fault.seconds: 0 to 600 for a {self.kind.value}")
        if self.kind.moves != bool(self.to):
            raise ValueError(
                "fault.to: the site a move goes to (and only for a move, reroute or carrier-loss)"
            )


@dataclass(frozen=True)
class Endpoint:
    site: str
    host: int = 0

    def __str__(self) -> str:
        return f"{self.site}:{self.host}"


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Kind
    sites: tuple[SiteSpec, ...]
    sender: Endpoint
    receiver: Endpoint
    description: str = ""
    file_mib: float = 2.0
    relay_only: bool = False
    expect_path: str | None = None  # host, srflx or relay
    expect_transports: tuple[str, ...] = ()  # of the TURN leg, e.g. ("tcp", "tls")
    faults: tuple[Fault, ...] = ()  # struck in turn, each at its share of the transfer
    full: bool = False
    timeout_s: float = 180.0
    link_rate_mbit: float | None = None  # throughput: the bottleneck the goodput is compared to
    sender_client: str = "cli"  # a key of CLIENT_PROGRAMS
    receiver_client: str = "cli"
    turn_ttl_s: int | None = None  # the TURN credentials' lifetime (default: the server's)
    timeline: bool = False  # the report plots goodput over time with the faults marked

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"scenario name {self.name!r}: a-z0-9 then a-z0-9_.-")
        names = {s.name: s for s in self.sites}
        for end in (self.sender, self.receiver):
            if end.site not in names or not 0 <= end.host < names[end.site].hosts:
                raise ValueError(f"{self.name}: no host {end} among its sites")
        if self.sender == self.receiver and self.kind not in (Kind.CALIBRATION, Kind.DOCTOR):
            raise ValueError(f"{self.name}: sender and receiver are the same host")
        for fault in self.faults:
            if fault.site not in names:
                raise ValueError(f"{self.name}: fault on unknown site {fault.site!r}")
            if fault.to and fault.to not in names:
                raise ValueError(f"{self.name}: a move to unknown site {fault.to!r}")
        if len(self.faults) > 1:
            if any(f.kind is FaultKind.PAUSE for f in self.faults):
                raise ValueError(f"{self.name}: a pause is a scenario's only fault")
            shares = [f.at for f in self.faults]
            if shares != sorted(set(shares)):
                raise ValueError(f"{self.name}: faults strike in turn (each `at` later)")
        if self.expect_path not in (None, *expectations.PATHS):
            raise ValueError(f"{self.name}: expect_path is one of {expectations.PATHS}")
        if not 0 < self.file_mib <= 4096:
            raise ValueError(f"{self.name}: file_mib 0 to 4096")
        for client in self.clients:
            if client not in CLIENT_PROGRAMS:
                raise ValueError(f"{self.name}: a client is one of {sorted(CLIENT_PROGRAMS)}")
        if "browser" in self.clients and (self.relay_only or self.faults):
            # The page has no relay-only switch and no stall timeout to widen for a pause; a
            # browser's part in faults is covered by tests/test_browser_e2e.py.
            raise ValueError(f"{self.name}: a browser peer takes no relay_only and no fault")
        if self.turn_ttl_s is not None and not 10 <= self.turn_ttl_s <= 86400:
            raise ValueError(f"{self.name}: turn_ttl_s 10 to 86400")

    @property
    def fault(self) -> Fault | None:
        """The scenario's fault when it has exactly one (what the single-fault checks judge);
        None when it has none or several."""
        return self.faults[0] if len(self.faults) == 1 else None

    @property
    def clients(self) -> tuple[str, str]:
        """The sender's and the receiver's client."""
        return self.sender_client, self.receiver_client

    @property
    def expected_path(self) -> str:
        if self.expect_path is not None:
            return self.expect_path
        if self.relay_only:
            return "relay"
        a, b = (self.site(e.site) for e in (self.sender, self.receiver))
        if a is b:
            return "host"
        if a.carrier is not None and a.carrier == b.carrier:
            return expectations.shared_carrier(*self.edges, a.carrier.router)
        ipv4 = expectations.path(*self.edges)
        if not (a.ipv6 and b.ipv6):
            return ipv4
        firewall = expectations.edge(expectations.IPV6_FIREWALL)
        return expectations.either_family(ipv4, expectations.path(firewall, firewall))

    @property
    def edges(self) -> tuple[expectations.Edge, expectations.Edge]:
        """What lies between the sender and the internet, and the receiver."""
        return _edge(self.site(self.sender.site)), _edge(self.site(self.receiver.site))

    def nat_label(self, end: Endpoint) -> str:
        """The NAT(s) in front of a peer as reports name them: `port_restricted`, or
        `port_restricted/cgn:symmetric` behind a carrier, `symmetric+ipv6` on a dual stack."""
        site = self.site(end.site)
        label = site.router.name
        if site.carrier is not None:
            label += f"/cgn:{site.carrier.router.name}"
        return f"{label}+ipv6" if site.ipv6 else label

    def site(self, name: str) -> SiteSpec:
        return next(s for s in self.sites if s.name == name)


def _edge(site: SiteSpec) -> expectations.Edge:
    if site.carrier is None:
        return expectations.edge(site.router)
    return expectations.edge(site.router, site.carrier.router)


def _link(data: Mapping[str, Any] | None, where: str) -> link.LinkSpec:
    if data is None:
        return link.LinkSpec()
    allowed = {f.name for f in fields(link.LinkSpec)}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown link settings {sorted(unknown)}")
    return link.LinkSpec(**data)


def _site(data: Mapping[str, Any], where: str, carriers: Mapping[str, Carrier]) -> SiteSpec:
    known = {"name", "nat", "hosts", "uplink", "downlink", "carrier", "ipv6", "mtu"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{where}: unknown site settings {sorted(unknown)}")
    return SiteSpec(
        name=data["name"],
        nat=_nat(data.get("nat", "port_restricted"), where),
        hosts=data.get("hosts", 1),
        uplink=_link(data.get("uplink"), f"{where}.uplink"),
        downlink=_link(data.get("downlink"), f"{where}.downlink"),
        carrier=None if "carrier" not in data else _carrier(carriers, data["carrier"]),
        ipv6=bool(data.get("ipv6", False)),
        mtu=data.get("mtu"),
    )


def _carrier(carriers: Mapping[str, Carrier], name: str) -> Carrier:
    if name not in carriers:
        raise ValueError(f"no carrier named {name!r} in the scenario's `carriers`")
    return carriers[name]


def _carriers(data: Any, where: str) -> dict[str, Carrier]:
    """`carriers = [{ name = "isp", nat = "symmetric" }]`: NATs that sites name as theirs."""
    found = {}
    for i, item in enumerate(data):
        unknown = set(item) - {"name", "nat"}
        if unknown:
            raise ValueError(f"{where} carrier {i}: unknown settings {sorted(unknown)}")
        found[item["name"]] = Carrier(item["name"], _nat(item.get("nat", "port_restricted"), where))
    return found


def _nat(data: object, where: str) -> nat.Nat | NatProfile:
    """A preset's name (kept as the preset), a NAT's behaviours (`adm-eif`) or a table."""
    try:
        if isinstance(data, str):
            return NatProfile(data) if data in nat.PRESETS else nat.named(data)
        if isinstance(data, dict):
            return nat.from_table(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    raise ValueError(f"{where}: nat is a name or a table")


def _endpoint(text: str | None, default: Endpoint) -> Endpoint:
    if text is None:
        return default
    site, _, host = text.partition(":")
    return Endpoint(site, int(host) if host else 0)


def _defaults(sites: tuple[SiteSpec, ...]) -> tuple[Endpoint, Endpoint]:
    first = Endpoint(sites[0].name)
    if len(sites) > 1:
        second = Endpoint(sites[1].name)
    else:  # a lone site: its second host, if it has one (calibration needs only the first)
        second = Endpoint(sites[0].name, 1 if sites[0].hosts > 1 else 0)
    return first, second


_FAULT_KEYS: Final = {"kind", "site", "at", "seconds", "udp_only", "to"}
_SCENARIO_KEYS: Final = {
    "name",
    "kind",
    "description",
    "carriers",
    "sites",
    "sender",
    "receiver",
    "file_mib",
    "relay_only",
    "expect_path",
    "expect_transports",
    "fault",
    "faults",
    "full",
    "timeout_s",
    "sender_client",
    "receiver_client",
    "turn_ttl_s",
    "timeline",
}


def _fault(data: Mapping[str, Any], first_site: str) -> Fault:
    if set(data) - _FAULT_KEYS:
        raise ValueError(f"unknown fault settings {sorted(set(data) - _FAULT_KEYS)}")
    return Fault(
        FaultKind(data["kind"]),
        data.get("site", first_site),
        float(data.get("at", 0.5)),
        float(data.get("seconds", 0.0)),
        bool(data.get("udp_only", False)),
        str(data.get("to", "")),
    )


def scenario(data: Mapping[str, Any]) -> Scenario:
    """One `[[scenario]]` table; a clear ValueError naming what is wrong."""
    where = f"scenario {data.get('name', '?')!r}"
    unknown = set(data) - _SCENARIO_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown settings {sorted(unknown)}")
    try:
        carriers = _carriers(data.get("carriers", ()), where)
        sites = tuple(_site(s, f"{where} site {i}", carriers) for i, s in enumerate(data["sites"]))
        sender, receiver = _defaults(sites)
        if "fault" in data and "faults" in data:
            raise ValueError("`fault` or `faults`, not both")
        faults = data.get("faults", [data["fault"]] if "fault" in data else [])
        return Scenario(
            name=data["name"],
            kind=Kind(data.get("kind", "path")),
            description=data.get("description", ""),
            sites=sites,
            sender=_endpoint(data.get("sender"), sender),
            receiver=_endpoint(data.get("receiver"), receiver),
            file_mib=float(data.get("file_mib", 2.0)),
            relay_only=data.get("relay_only", False),
            expect_path=data.get("expect_path"),
            expect_transports=tuple(data.get("expect_transports", ())),
            faults=tuple(_fault(f, sites[0].name) for f in faults),
            full=data.get("full", False),
            timeout_s=float(data.get("timeout_s", 180.0)),
            sender_client=data.get("sender_client", "cli"),
            receiver_client=data.get("receiver_client", "cli"),
            turn_ttl_s=None if data.get("turn_ttl_s") is None else int(data["turn_ttl_s"]),
            timeline=bool(data.get("timeline", False)),
        )
    except KeyError as exc:
        raise ValueError(f"{where}: missing {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _a_to_b(a: SiteSpec, b: SiteSpec, **settings: Any) -> Scenario:
    """A generated scenario: host 0 of site `a` sends to host 0 of site `b`."""
    return Scenario(sites=(a, b), sender=Endpoint(a.name), receiver=Endpoint(b.name), **settings)


def grid(
    nats: Iterable[str],
    full: bool = False,
    file_mib: float = 1.0,
    clients: tuple[str, str] = ("cli", "cli"),
) -> list[Scenario]:
    """Every unordered pair of these NATs (presets or behaviours), one site each; `clients`
    (sender's, receiver's) other than the CLI's name the scenarios after them too."""
    profiles = [_nat(n, "grid") for n in nats]
    prefix = "grid-" if clients == ("cli", "cli") else f"grid-{clients[0]}-{clients[1]}-"
    return [
        _a_to_b(
            SiteSpec("a", a),
            SiteSpec("b", b),
            name=f"{prefix}{nat.resolve(a).name}-x-{nat.resolve(b).name}",
            kind=Kind.PATH,
            description=f"{nat.resolve(a).name} x {nat.resolve(b).name}",
            file_mib=file_mib,
            full=full,
            sender_client=clients[0],
            receiver_client=clients[1],
        )
        for a, b in itertools.combinations_with_replacement(profiles, 2)
    ]


@dataclass(frozen=True)
class ThroughputMatrix:
    rates_mbit: tuple[float, ...]
    rtt_ms: tuple[float, ...]
    loss_percent: tuple[float, ...]
    paths: tuple[str, ...] = ("direct", "relay")
    file_mib: float = 8.0
    full: bool = False

    def scenarios(self) -> list[Scenario]:
        """The sender's link is the bottleneck (rate and loss on its uplink); the RTT is split
        evenly over the four directions of the two links."""
        found = []
        for rate, rtt, loss, path in itertools.product(
            self.rates_mbit, self.rtt_ms, self.loss_percent, self.paths
        ):
            if path not in ("direct", "relay"):
                raise ValueError(f"throughput path {path!r}: direct or relay")
            quarter = rtt / 4
            up = link.LinkSpec(rate_kbit=round(rate * 1000), delay_ms=quarter, loss_percent=loss)
            plain = link.LinkSpec(delay_ms=quarter)
            found.append(
                _a_to_b(
                    SiteSpec("a", NatProfile.PORT_RESTRICTED, uplink=up, downlink=plain),
                    SiteSpec("b", NatProfile.PORT_RESTRICTED, uplink=plain, downlink=plain),
                    name=f"throughput-{rate:g}mbit-{rtt:g}ms-{loss:g}loss-{path}",
                    kind=Kind.THROUGHPUT,
                    description=f"{rate:g} Mbit/s, {rtt:g} ms RTT, {loss:g} % loss, {path}",
                    file_mib=self.file_mib,
                    relay_only=path == "relay",
                    full=self.full,
                    link_rate_mbit=rate,
                )
            )
        return found


def doctor(nats: Iterable[str], full: bool = False) -> list[Scenario]:
    """`fileshare doctor` behind each of these NATs (presets or behaviours), one site each."""
    found = []
    for n in nats:
        profile = _nat(n, "doctor")
        site = SiteSpec("a", profile)
        found.append(
            Scenario(
                name=f"doctor-{nat.resolve(profile).name}",
                kind=Kind.DOCTOR,
                description=f"fileshare doctor behind {nat.resolve(profile).name}",
                sites=(site,),
                sender=Endpoint("a"),
                receiver=Endpoint("a"),
                full=full,
                timeout_s=90.0,
            )
        )
    return found


def _throughput(data: Mapping[str, Any]) -> ThroughputMatrix:
    known = {"rates_mbit", "rtt_ms", "loss_percent", "paths", "file_mib", "full"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"throughput: unknown settings {sorted(unknown)}")
    return ThroughputMatrix(
        rates_mbit=tuple(data["rates_mbit"]),
        rtt_ms=tuple(data["rtt_ms"]),
        loss_percent=tuple(data.get("loss_percent", (0,))),
        paths=tuple(data.get("paths", ("direct", "relay"))),
        file_mib=float(data.get("file_mib", 8.0)),
        full=data.get("full", False),
    )


@dataclass
class Suite:
    scenarios: list[Scenario] = field(default_factory=list)

    def select(self, names: Iterable[str] = (), full: bool = False) -> list[Scenario]:
        """By name (or name prefix); else the default matrix, or everything with `full`."""
        wanted = list(names)
        if not wanted:
            return [s for s in self.scenarios if full or not s.full]
        chosen = [s for s in self.scenarios if any(s.name.startswith(w) for w in wanted)]
        missing = [w for w in wanted if not any(s.name.startswith(w) for s in self.scenarios)]
        if missing:
            raise ValueError(f"no scenario named {', '.join(missing)}")
        return chosen


def parse(data: Mapping[str, Any]) -> Suite:
    unknown = set(data) - {"scenario", "grid", "throughput", "doctor"}
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}")
    found = [scenario(s) for s in data.get("scenario", ())]
    for g in data.get("grid", ()):
        unknown = set(g) - {"nats", "full", "file_mib", "clients"}
        if unknown:
            raise ValueError(f"grid: unknown settings {sorted(unknown)}")
        clients = g.get("clients", ("cli", "cli"))
        if len(clients) != 2:
            raise ValueError("grid: clients is [sender's, receiver's]")
        pair = (str(clients[0]), str(clients[1]))
        found += grid(g["nats"], g.get("full", False), float(g.get("file_mib", 1.0)), pair)
    for t in data.get("throughput", ()):
        found += _throughput(t).scenarios()
    for d in data.get("doctor", ()):
        if set(d) - {"nats", "full"}:
            raise ValueError(f"doctor: unknown settings {sorted(set(d) - {'nats', 'full'})}")
        found += doctor(d["nats"], d.get("full", False))
    names = [s.name for s in found]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"scenario names used twice: {', '.join(duplicated)}")
    return Suite(found)


def load(path: Path) -> Suite:
    with path.open("rb") as f:
        return parse(tomllib.load(f))


DEFAULT_FILE: Final = Path(__file__).with_name("scenarios.toml")
