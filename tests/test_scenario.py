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
from netsim import capture, expectations, scenario
from netsim.nat import NatProfile
from netsim.scenario import FaultKind, Kind


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
    long_cut = by_name["resume-long-cut"].fault
    assert long_cut is not None and long_cut.kind is FaultKind.CUT and long_cut.seconds > 30
    full = suite.select(full=True)
    assert len(full) > len(default)
    assert sum(s.name.startswith("grid-") for s in full) == 28  # 7 profiles, unordered pairs
    lossy = by_name["lossy-long-link"].sites[0].uplink  # a transfer over it must complete
    assert (lossy.rate_kbit, lossy.delay_ms, lossy.loss_percent) == (20000, 40, 1)
    assert sum(s.kind is Kind.THROUGHPUT for s in full) == 5 + 2 * 2 * 3 * 2


def test_select_by_prefix_and_unknown_names() -> None:
    suite = scenario.load(scenario.DEFAULT_FILE)
    assert [s.name for s in suite.select(["resume"])] == ["resume-short-cut", "resume-long-cut"]
    with pytest.raises(ValueError, match="no scenario named nothing-like-this"):
        suite.select(["nothing-like-this"])


def test_expectations_grid_is_symmetric_and_fails_direct_only_where_it_must() -> None:
    relayed = set()
    for a, b in itertools.product(NatProfile, repeat=2):
        assert expectations.path(a, b) == expectations.path(b, a)
        if expectations.path(a, b) == "relay":
            relayed.add(frozenset((a, b)))
    hard = {
        frozenset({NatProfile.SYMMETRIC}),
        frozenset({NatProfile.SYMMETRIC, NatProfile.PORT_RESTRICTED}),
    }
    blocked = {frozenset({NatProfile.UDP_BLOCKED, p}) for p in NatProfile}
    assert relayed == hard | blocked
    assert expectations.path(NatProfile.OPEN, NatProfile.OPEN) == "host"
    assert expectations.turn_transports(NatProfile.UDP_BLOCKED, NatProfile.OPEN) == ("tcp", "tls")


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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[scenario]]\nname = "x"\nsites = [{ name = "a", nat = "cgnat" }]', "nat is one of"),
        ('[[scenario]]\nname = "x"\nsites = [{ name = "a", nta = "open" }]', "unknown site"),
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
