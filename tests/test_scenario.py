"""The scenario model, its TOML format, the expectations grid and the sans-I/O helpers of the
runner (no namespaces here: tests/test_matrix.py runs the scenarios)."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aioice.candidate import Candidate
from aioice.ice import CandidatePair

from fileshare import nomination
from netsim import capture, expectations, nat, runner, scenario
from netsim.nat import NatProfile
from netsim.scenario import FaultKind, Kind
from netsim.world import SiteSpec


def test_the_built_in_suite_loads_and_the_default_matrix_covers_the_issue() -> None:
    suite = scenario.load(scenario.DEFAULT_FILE)
    default = suite.select()
    kinds = {s.kind for s in default}
    assert kinds == set(Kind)
    by_name = {s.name: s for s in default}
    assert by_name["same-lan"].expected_path == "host"
    assert by_name["cone-x-cone"].expected_path == "srflx"
    assert by_name["fullcone-x-symmetric"].expected_path == "srflx"
    assert by_name["symmetric-x-symmetric"].expected_path == "relay"
    assert by_name["portrestricted-x-symmetric"].expected_path == "relay"
    assert by_name["udp-blocked"].expected_path == "relay"
    assert by_name["cgnat-x-cone"].expected_path == "srflx"
    dual = by_name["dualstack-symmetric"]
    assert all(site.ipv6 for site in dual.sites) and dual.expected_path == "host"
    assert dual.nat_label(dual.sender) == "symmetric+ipv6"
    behind = by_name["cgnat-x-cone"].sites[0]
    assert behind.carrier is not None and behind.carrier.router.name == "port_restricted"
    long_cut = by_name["resume-long-cut"].fault
    assert long_cut is not None and long_cut.kind is FaultKind.CUT and long_cut.seconds > 30
    full = suite.select(full=True)
    assert len(full) > len(default)
    grid = [s for s in full if s.name.startswith("grid-") and s.clients == ("cli", "cli")]
    assert len(grid) == 66  # 9 mapping x filtering, open, UDP blocked: unordered pairs
    assert {s.sites[0].router.name for s in grid} == {
        *(nat.Nat(m, f).name for m, f in itertools.product(nat.Mapping, nat.Filtering)),
        "open",
        "udp_blocked",
    }
    pause = next(s for s in full if s.name == "mapping-timeout-pause")
    assert pause.fault is not None and pause.fault.kind is FaultKind.PAUSE
    assert all(pause.fault.seconds > site.router.mapping_timeout == 20 for site in pause.sites)
    shared = {s.name: s.expected_path for s in full if s.name.startswith("cgnat-shared")}
    assert shared == {"cgnat-shared-hairpin": "srflx", "cgnat-shared-no-hairpin": "relay"}
    lossy = by_name["lossy-long-link"].sites[0].uplink  # a transfer over it must complete
    assert (lossy.rate_kbit, lossy.delay_ms, lossy.loss_percent) == (20000, 40, 1)
    assert sum(s.kind is Kind.THROUGHPUT for s in full) == 6 + 2 * 2 * 3 * 2  # with long-haul
    # The web app against the CLI, both ways: a LAN, a direct path, the relay, TURN over TCP/TLS.
    browsers = {s.name: (s.clients, s.expected_path) for s in default if "browser" in s.clients}
    assert browsers == {
        "browser-same-lan": (("cli", "browser"), "host"),
        "browser-cone-x-cone": (("browser", "cli"), "srflx"),
        "browser-symmetric-x-symmetric": (("cli", "browser"), "relay"),
        "browser-udp-blocked": (("browser", "cli"), "relay"),
    }
    # Browsers in the default matrix move small files (its time); cone x cone moves 16 MiB, long
    # enough for Chromium's move from the relay pair it may nominate first to the srflx pair.
    assert all(s.file_mib <= 16 for s in default if "browser" in s.clients)
    assert sum(s.file_mib for s in default if "browser" in s.clients) <= 20
    with_browsers = [s for s in full if s.name.startswith("grid-") and "browser" in s.clients]
    assert {s.clients for s in with_browsers} == {("browser", "cli"), ("cli", "browser")}
    assert len(with_browsers) == 2 * 28  # the 7 presets' unordered pairs, each way


def test_select_by_prefix_and_unknown_names() -> None:
    suite = scenario.load(scenario.DEFAULT_FILE)
    assert [s.name for s in suite.select(["resume"])] == ["resume-short-cut", "resume-long-cut"]
    with pytest.raises(ValueError, match="no scenario named nothing-like-this"):
        suite.select(["nothing-like-this"])


def _edge(profile: NatProfile) -> expectations.Edge:
    return expectations.edge(profile.behaviour)


def test_the_rule_gives_the_presets_their_known_paths() -> None:
    """The rule, applied to the presets, gives what the old per-pair table said: direct fails
    only for symmetric x symmetric and symmetric x port-restricted; UDP blocked relays."""
    relayed = set()
    for a, b in itertools.product(NatProfile, repeat=2):
        assert expectations.path(_edge(a), _edge(b)) == expectations.path(_edge(b), _edge(a))
        if expectations.path(_edge(a), _edge(b)) == "relay":
            relayed.add(frozenset((a, b)))
    hard = {
        frozenset({NatProfile.SYMMETRIC}),
        frozenset({NatProfile.SYMMETRIC, NatProfile.PORT_RESTRICTED}),
    }
    blocked = {frozenset({NatProfile.UDP_BLOCKED, p}) for p in NatProfile}
    assert relayed == hard | blocked
    assert expectations.path(_edge(NatProfile.OPEN), _edge(NatProfile.OPEN)) == "host"
    transports = expectations.turn_transports(_edge(NatProfile.UDP_BLOCKED), _edge(NatProfile.OPEN))
    assert transports == ("tcp", "tls")


def test_the_rule_over_mapping_and_filtering() -> None:
    """Direct where one side filters endpoint-independently, or has EIM with ADF, or both
    have EIM; else the relay."""
    rows = {}
    combos = [nat.Nat(m, f) for m, f in itertools.product(nat.Mapping, nat.Filtering)]
    for a, b in itertools.product(combos, repeat=2):
        found = expectations.path(expectations.edge(a), expectations.edge(b))
        rows[a.name, b.name] = found
        assert found == expectations.path(expectations.edge(b), expectations.edge(a))
    assert rows["apdm-eif", "apdm-apdf"] == "srflx"  # EIF lets anything in
    assert rows["apdm-apdf", "eim-adf"] == "srflx"  # ADF: the EIM side sent to that address
    assert rows["apdm-apdf", "adm-adf"] == "relay"  # ADM sent from another port
    assert rows["eim-apdf", "eim-apdf"] == "srflx"  # both EIM: the exact endpoints match
    assert rows["eim-apdf", "adm-apdf"] == "relay"
    assert rows["adm-adf", "adm-adf"] == "relay"
    # Relay exactly where both filter on the address with a non-EIM mapping or on the
    # address and port, except two EIMs filtering on address and port.
    hard = {"adm-adf", "adm-apdf", "apdm-adf", "apdm-apdf", "eim-apdf"}
    relayed = {pair for pair, found in rows.items() if found == "relay"}
    assert relayed == set(itertools.product(hard, repeat=2)) - {("eim-apdf", "eim-apdf")}


def test_dual_stack_takes_the_better_family() -> None:
    assert expectations.either_family("relay", "host") == "host"
    assert expectations.either_family("srflx", "relay") == "srflx"
    firewall = expectations.edge(expectations.IPV6_FIREWALL)
    assert expectations.path(firewall, firewall) == "host"  # no NAT: checks cross the firewalls
    # a stateful firewall filters like a port-restricted cone
    assert expectations.path(firewall, _edge(NatProfile.SYMMETRIC)) == "relay"


def test_stacked_nats_act_as_the_stricter() -> None:
    home, carrier = NatProfile.FULL_CONE.behaviour, NatProfile.SYMMETRIC.behaviour
    behind = expectations.edge(home, carrier)
    assert behind.mapping is nat.APDM and behind.filtering is nat.APDF
    cone = _edge(NatProfile.PORT_RESTRICTED)
    assert expectations.path(behind, cone) == "relay"
    assert expectations.path(expectations.edge(home, home), cone) == "srflx"
    hairpinning = nat.renamed(NatProfile.PORT_RESTRICTED.behaviour, hairpinning=True)
    assert expectations.shared_carrier(cone, cone, hairpinning) == "srflx"
    assert expectations.shared_carrier(cone, cone, NatProfile.PORT_RESTRICTED.behaviour) == "relay"


@pytest.mark.parametrize(
    ("local", "remote", "peer_remote", "category"),
    [
        ("host", "host", "host", "host"),
        ("host", "srflx", "prflx", "srflx"),
        ("host", "host", "prflx", "srflx"),  # a public host against a NAT
        ("relay", "srflx", "relay", "relay"),
        ("host", "relay", "prflx", "relay"),
        ("host", "prflx", "relay", "relay"),
    ],
)
def test_path_category(local: str, remote: str, peer_remote: str, category: str) -> None:
    assert expectations.category(local, remote, peer_remote) == category


@pytest.mark.parametrize(
    ("view", "peer_view", "local"),
    [
        ({"local": "host"}, {}, "host"),
        ({"local": "srflx", "localAddress": "203.0.113.9:5"}, {}, "srflx"),
        # A public address with no NAT: its STUN server's answer is its own (open x open).
        ({"local": "srflx", "localAddress": "10.0.1.3:5"}, {}, "host"),
        # Its own LAN address learned from a check: a host address, however Chromium says it.
        ({"local": "prflx", "localAddress": "10.0.1.3:43353"}, {}, "host"),
        ({"local": "prflx"}, {"remoteAddress": "10.0.1.3:43353"}, "host"),
        # Redacted in its stats (seen in CI): the peer's view says where it sends from.
        (
            {"local": "prflx", "localAddress": "redacted-ip.invalid:43353"},
            {"remoteAddress": "10.0.1.3:43353"},
            "host",
        ),
        ({"local": "prflx", "localAddress": "203.0.113.9:1"}, {}, "prflx"),
        ({"local": "prflx", "localAddress": "x.local:1"}, {"remoteAddress": "junk"}, "prflx"),
    ],
)
def test_browser_local_candidate(
    view: dict[str, str], peer_view: dict[str, str], local: str
) -> None:
    assert expectations.browser_local(view, peer_view, "10.0.1.3") == local


def _toml(tmp_path: Path, text: str) -> scenario.Suite:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return scenario.load(path)


def test_a_scenario_file(tmp_path: Path) -> None:
    suite = _toml(
        tmp_path,
        """
[[scenario]]
name = "office"
kind = "resume"
sites = [
  { name = "office", nat = "symmetric", hosts = 3, uplink = { rate_kbit = 5000 } },
  { name = "home", nat = "full_cone", downlink = { delay_ms = 30, jitter_ms = 5 } },
]
sender = "office:2"
receiver = "home"
fault = { kind = "rebind", site = "office", at = 0.25 }
""",
    )
    (found,) = suite.scenarios
    assert found.sender == scenario.Endpoint("office", 2)
    assert found.receiver == scenario.Endpoint("home", 0)
    assert found.sites[0].hosts == 3 and found.sites[0].uplink.rate_kbit == 5000
    assert found.sites[1].downlink.jitter_ms == 5
    assert found.fault == scenario.Fault(FaultKind.REBIND, "office", 0.25)
    assert found.expected_path == "srflx"


def test_several_faults_in_turn_and_a_timeline(tmp_path: Path) -> None:
    suite = _toml(
        tmp_path,
        """
[[scenario]]
name = "haul"
kind = "throughput"
sites = [{ name = "a", nat = "symmetric" }, { name = "b", nat = "symmetric" }]
faults = [
  { kind = "cut", site = "a", at = 0.3, seconds = 5 },
  { kind = "rebind", site = "b", at = 0.6 },
]
timeline = true
""",
    )
    (found,) = suite.scenarios
    assert found.faults == (
        scenario.Fault(FaultKind.CUT, "a", 0.3, 5.0),
        scenario.Fault(FaultKind.REBIND, "b", 0.6),
    )
    assert found.fault is None  # the single-fault checks judge a lone fault only
    assert found.timeline and not suite.scenarios[0].full


def test_route_change_moves_the_route_and_keeps_the_address() -> None:
    (change,) = scenario.load(scenario.DEFAULT_FILE).select(["route-change"])
    assert change.full and change.fault is not None
    assert (change.fault.kind, change.fault.site, change.fault.to) == (FaultKind.REROUTE, "b", "c")
    assert change.receiver.site == "b"


def test_carrier_loss_cuts_the_receiver_off_its_lan_peer() -> None:
    (loss,) = scenario.load(scenario.DEFAULT_FILE).select(["carrier-loss"])
    assert loss.full and loss.fault is not None and loss.fault.kind.moves
    assert (loss.fault.kind, loss.fault.site, loss.fault.to) == (
        FaultKind.CARRIER_LOSS,
        "home",
        "c",
    )
    assert loss.sender.site == loss.receiver.site == "home"  # a host pair on the LAN
    assert loss.expected_path == "host"


def test_long_haul_is_the_issues_and_runs_only_in_full() -> None:
    (haul,) = scenario.load(scenario.DEFAULT_FILE).select(["long-haul"])
    assert haul.full and haul.timeline and haul.file_mib == 2048
    assert haul.expected_path == "relay"
    up = haul.sites[0].uplink
    rtt = sum(s.uplink.delay_ms + s.downlink.delay_ms for s in haul.sites)
    assert (up.rate_kbit, up.loss_percent, rtt) == (20_000, 1, 80)
    assert [f.kind for f in haul.faults] == [FaultKind.CUT, FaultKind.REBIND]
    assert haul.faults[0].seconds < runner.SHORT_CUT_SECONDS  # a short cut
    # 2 GiB at 20 Mbit/s is about 15 minutes: the timeout leaves room for loss and faults
    assert haul.timeout_s >= 2 * haul.file_mib * 2**20 * 8 / 20e6


def test_nats_and_carriers_in_a_file(tmp_path: Path) -> None:
    suite = _toml(
        tmp_path,
        """
[[scenario]]
name = "stacked"
carriers = [{ name = "isp", nat = { preset = "symmetric", hairpinning = true } }]
sites = [
  {name = "a", nat = {mapping = "adm", filtering = "eif", mapping_timeout = 20}, carrier = "isp"},
  { name = "b", nat = "eim-adf" },
]
""",
    )
    (found,) = suite.scenarios
    a, b = found.sites
    assert a.router == nat.Nat(nat.ADM, nat.EIF, mapping_timeout=20)
    assert a.carrier is not None and a.carrier.router.hairpinning
    assert b.router == nat.Nat(nat.EIM, nat.ADF)
    assert found.nat_label(found.sender) == "adm-eif-20s/cgn:apdm-apdf-hairpin"
    assert found.edges[0].mapping is nat.APDM and found.edges[0].filtering is nat.APDF
    assert found.expected_path == "srflx"  # the receiver's EIM + ADF lets the checks in


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", nat = "cgnat" }]',
            "one of open, one_to_one",
        ),
        ('[[scenario]]\nname = "x"\nsites = [{ name = "a", nta = "open" }]', "unknown site"),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", nat = { mapping = "eim", x = 1 } }]',
            "unknown NAT settings",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2, carrier = "isp" }]',
            "no carrier named 'isp'",
        ),
        ('[[scenario]]\nname = "x"\nsites = [{ name = "a" }]\nspeed = 1', "unknown settings"),
        ('[[scenario]]\nname = "x"\nsites = [{ name = "a" }]', "same host"),
        ('[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\nsender = "b"', "no host"),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\nreceiver = "a:5"',
            "no host",
        ),
        ('[[scenario]]\nname = "X Y"\nsites = [{ name = "a", hosts = 2 }]', "scenario name"),
        ('[[scenario]]\nname = "x"', "missing 'sites'"),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\n'
            'fault = { kind = "cut", at = 1.5, seconds = 3 }',
            "fault.at",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\n'
            'fault = { kind = "cut", seconds = 0 }',
            "fault.seconds",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\n'
            'fault = { kind = "pause" }',
            "fault.seconds: 0 to 600 for a pause",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2, uplink = { lag = 1 } }]',
            "unknown link settings",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2, '
            "uplink = { loss_percent = 120 } }]",
            "loss_percent",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\nexpect_path = "wifi"',
            "expect_path",
        ),
        ('[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 12 }]', "hosts"),
        ('[[scenario]]\nname = "x"\nsites = [{ name = "../a", hosts = 2 }]', "site name"),
        ("[[grid]]\nnats = ['open', 'open']\n[[grid]]\nnats = ['open']", "used twice"),
        ("[mystery]\nx = 1", "unknown sections"),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\nsender_client = "ie6"',
            "a client is one of",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\n'
            'receiver_client = "browser"\nrelay_only = true',
            "a browser peer takes no relay_only",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\n'
            'fault = { kind = "reroute" }',
            "fault.to: the site a move goes to",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\n'
            'fault = { kind = "cut", seconds = 3, to = "a" }',
            "only for a move, reroute or carrier-loss",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\n'
            'fault = { kind = "rebind" }\nfaults = [{ kind = "rebind" }]',
            "`fault` or `faults`, not both",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\n'
            'faults = [{ kind = "rebind", at = 0.6 }, { kind = "rebind", at = 0.3 }]',
            "faults strike in turn",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\n'
            'faults = [{ kind = "pause", seconds = 5 }, { kind = "rebind", at = 0.7 }]',
            "a pause is a scenario's only fault",
        ),
        (
            '[[scenario]]\nname = "x"\nsites = [{ name = "a", hosts = 2 }]\n'
            'faults = [{ kind = "rebind", site = "z" }]',
            "fault on unknown site 'z'",
        ),
        ("[[grid]]\nnats = ['open']\nclients = ['browser']", "clients is"),
        ("[[grid]]\nnats = ['open']\nbrowsers = true", "unknown settings"),
        ("[[throughput]]\nrates_mbit = [1]\nrtt_ms = [1]\npaths = ['carrier-pigeon']", "path"),
    ],
)
def test_bad_scenario_files_get_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _toml(tmp_path, text)


def test_throughput_matrix_puts_the_bottleneck_on_the_sender() -> None:
    (direct, relay) = scenario.ThroughputMatrix((10,), (40,), (1,)).scenarios()
    assert direct.name == "throughput-10mbit-40ms-1loss-direct" and not direct.relay_only
    assert relay.relay_only and relay.expected_path == "relay"
    up = direct.sites[0].uplink
    assert (up.rate_kbit, up.delay_ms, up.loss_percent) == (10_000, 10, 1)
    delays = [(s.uplink.delay_ms, s.downlink.delay_ms) for s in direct.sites]
    assert sum(a + b for a, b in delays) == 40
    assert direct.link_rate_mbit == 10


def _pair(local_type: str, remote_type: str, state: CandidatePair.State) -> CandidatePair:
    def candidate(kind: str, host: str) -> Candidate:
        return Candidate("f", 1, "udp", 100, host, 4000, kind)

    protocol: Any = SimpleNamespace(local_candidate=candidate(local_type, "10.0.0.1"))
    pair = CandidatePair(protocol, candidate(remote_type, "198.51.100.7"))
    pair.state = state
    return pair


def test_nomination_holds_only_relay_pairs_while_a_direct_one_is_pending() -> None:
    waiting, failed = CandidatePair.State.WAITING, CandidatePair.State.FAILED
    assert nomination.relayed(_pair("relay", "host", waiting))
    assert nomination.relayed(_pair("host", "relay", waiting))
    assert not nomination.relayed(_pair("host", "srflx", waiting))
    relay = _pair("relay", "srflx", waiting)
    assert nomination.direct_pending([_pair("host", "srflx", waiting), relay])
    assert not nomination.direct_pending([_pair("host", "srflx", failed), relay])
    succeeded = _pair("host", "prflx", CandidatePair.State.SUCCEEDED)
    assert not nomination.direct_pending([succeeded, relay])


def test_capture_search_and_size_forms(tmp_path: Path) -> None:
    forms = capture.size_forms(0x0103_A7B5)
    assert forms["decimal"] == b"17016757"
    assert forms["4-byte big-endian"] == b"\x01\x03\xa7\xb5"
    assert forms["8-byte little-endian"] == b"\xb5\xa7\x03\x01\x00\x00\x00\x00"
    assert "4-byte big-endian" not in capture.size_forms(2**40)
    pcap = tmp_path / "c.pcap"
    pcap.write_bytes(b"..MARK..MARK..\x01\x03\xa7\xb5")
    found = capture.find(
        pcap, {"marker": b"MARK", "name": b"secret", "size": forms["4-byte big-endian"]}
    )
    assert found == {"marker": 2, "name": 0, "size": 1}


def test_doctor_tables_make_one_scenario_per_nat() -> None:
    suite = scenario.parse({"doctor": [{"nats": ["symmetric", "eim-adf"], "full": True}]})
    made = {s.name: s for s in suite.scenarios}
    assert set(made) == {"doctor-symmetric", "doctor-eim-adf"}
    lone = made["doctor-symmetric"]
    assert lone.kind is scenario.Kind.DOCTOR and lone.full and lone.sender == lone.receiver
    assert expectations.doctor(lone.edges[0]).verdict == "mostly_relayed"
    with pytest.raises(ValueError, match="doctor: unknown settings"):
        scenario.parse({"doctor": [{"nats": ["symmetric"], "file_mib": 2}]})


def test_a_site_can_have_a_narrower_link() -> None:
    """`mtu` on a site narrows its link's hop to the internet (the doctor-small-mtu scenario);
    below what IPv4 (or, with `ipv6`, IPv6) must carry, or above the veths' 1500, it is refused."""
    site = {"name": "a", "mtu": 1280}
    made = scenario.parse({"scenario": [{"name": "x", "kind": "doctor", "sites": [site]}]})
    assert made.scenarios[0].sites[0].mtu == 1280
    for mtu, ipv6 in ((575, False), (1501, False), (1000, True)):
        with pytest.raises(ValueError, match="mtu"):
            SiteSpec("a", mtu=mtu, ipv6=ipv6)
