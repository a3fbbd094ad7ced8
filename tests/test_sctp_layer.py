"""fileshare.sctp against the aiortc it patches: the pin fails loudly when aiortc moves, and a
tuned peer and a stock one (separate processes: the patch is process-wide) move data both ways."""

from __future__ import annotations

from pathlib import Path

import aiortc
import pytest
from aiortc.rtcsctptransport import RTCSctpTransport

from benches import sctp_ab
from fileshare import sctp
from fileshare.sctp import plpmtu
from fileshare.sctp.originals import ORIGINALS
from netsim import link, linkbed, netns
from tests import peer_pair

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind", ["bbr", "reno", "stock"])
def test_a_timers_send_racing_the_close_is_lost_not_reported(kind: str) -> None:
    """A T3 timer's send that runs after stock `stop` shut OpenSSL down (its task has not yet
    marked the transport closed) is a lost packet for the tuned layer: nothing reaches the
    user as an unretrieved task exception. Stock aiortc shows that the race is real."""
    result = peer_pair.run_child("tests.closing_peers", "--kind", kind)
    assert result["refused"] == "ConnectionError"
    if kind == "stock":
        assert result["reported"] == ["Error([('SSL routines', '', 'protocol is shutdown')])"]
    else:
        assert result["reported"] == [], result


@pytest.mark.parametrize("kind", ["bbr", "reno"])
def test_a_peer_flooding_above_a_hole_is_held_to_the_receive_window(kind: str) -> None:
    """Real peers; the sender leaves a TSN out and sends three windows above it: the receiver
    holds at most RECEIVE_WINDOW, refuses the rest, and the honest message that fills the
    hole still arrives. (Stock aiortc held all it was sent, and slowed as its set of held
    TSNs grew until, in one run of two, the association died.)"""
    result = peer_pair.run_child("tests.flooding_peers", "--kind", kind)
    assert 0 < result["most_held_bytes"] <= result["window"], result
    assert result["refused"] > 0 and result["arrived"] == ["honest"], result


def test_the_pinned_aiortc_is_the_installed_one() -> None:
    functions = {name: getattr(RTCSctpTransport, name) for name in sctp.PINNED_SOURCES}
    if sctp._installed not in (None, "stock"):
        functions = {**functions, **ORIGINALS}
    sctp.check(aiortc.__version__, functions)


def test_another_version_is_refused() -> None:
    functions = {name: getattr(RTCSctpTransport, name) for name in sctp.PINNED_SOURCES}
    with pytest.raises(
        sctp.IncompatibleAiortc, match=r"written for aiortc 1\.16\.0, found 1\.17\.0"
    ):
        sctp.check("1.17.0", functions)


def test_a_changed_function_is_refused_by_name() -> None:
    functions = {name: getattr(RTCSctpTransport, name) for name in sctp.PINNED_SOURCES}
    functions["_transmit"] = test_a_changed_function_is_refused_by_name
    with pytest.raises(sctp.IncompatibleAiortc, match="changed underneath: _transmit"):
        sctp.check(sctp.AIORTC_VERSION, functions)


def test_an_unknown_controller_is_refused() -> None:
    with pytest.raises(ValueError, match="reno, bbr or stock"):
        sctp.install("cubic")


def transfer(sender_sctp: str, receiver_sctp: str, size: int) -> sctp_ab.Results:
    return sctp_ab.transfer(size, sender_sctp, receiver_sctp, [], ROOT)


@pytest.mark.parametrize(
    ("sender_sctp", "receiver_sctp"),
    [("bbr", "stock"), ("stock", "bbr"), ("reno", "stock"), ("stock", "reno")],
)
def test_tuned_and_stock_aiortc_transfer_both_ways(sender_sctp: str, receiver_sctp: str) -> None:
    size = 6 * 2**20 + 12345  # not a whole number of messages
    sent, received = transfer(sender_sctp, receiver_sctp, size)
    assert sent["bytes"] == received["bytes"] == size
    assert sent["sha256"] == received["sha256"]
    # the tuned side probed past aiortc's 1,189-byte packets, and the stock one took them, but
    # not past the 1,500 bytes a stock peer reads of a record (loopback would carry more)
    tuned = sent if sender_sctp != "stock" else received
    assert plpmtu.BASE < tuned["packet"] <= plpmtu.CEILING
    stock = received if tuned is sent else sent
    assert stock["packet"] == stock["direct"] == stock.get("segmented", [0])[0] == 0
    if tuned is sent:  # runs of records left in UDP_SEGMENT sends, and arrived one by one
        packets, sends = sent["segmented"]
        assert 0 < sends < packets
    assert tuned["direct"] > 0  # the tuned side took records in the socket's callback
    if tuned is received:  # a stock sender does not ask for fewer SACKs: every second packet
        assert received["sacks"] >= received["data_packets"] / 2.5, received


@pytest.mark.parametrize("kind", ["bbr", "reno"])
def test_two_tuned_peers_on_loopback_send_dtls_largest_records(kind: str) -> None:
    """Each side's INIT says it reads records whole, so on a loopback (MTU 65,536) both probe
    up to DTLS's largest record and the data moves in 16 KiB packets, either controller."""
    size = 6 * 2**20 + 12345
    with netns.isolated_loopback("big") as namespace:
        sent, received = sctp_ab.transfer(size, kind, kind, netns.in_namespace(namespace), ROOT)
    assert sent["bytes"] == received["bytes"] == size
    assert sent["sha256"] == received["sha256"]
    assert sent["packet"] == received["packet"] == plpmtu.LARGEST
    assert 0 < received["sacks"] < received["data_packets"], received
    # every packet with DATA, and every SACK, came straight from the socket's callback
    assert received["direct"] >= received["data_packets"] and sent["direct"] >= received["sacks"]


def test_the_wire_layer_pins_what_it_replaces_and_reads() -> None:
    sctp.check(aiortc.__version__, sctp.wire_functions(), sctp.WIRE_SOURCES)
    functions = {**sctp.wire_functions(), "Connection.sendto": test_another_version_is_refused}
    with pytest.raises(sctp.IncompatibleAiortc, match=r"changed underneath: Connection\.sendto"):
        sctp.check(sctp.AIORTC_VERSION, functions, sctp.WIRE_SOURCES)


@pytest.mark.parametrize(
    ("mtu", "expected", "own_queue"), [(9000, 8932, False), (1500, 1432, False), (1500, 1432, True)]
)
def test_a_path_is_sent_the_largest_packet_it_carries_and_no_larger(
    mtu: int, expected: int, own_queue: bool
) -> None:
    """Two tuned peers in two namespaces joined by one veth: with jumbo frames both settle on
    the IPv4 jumbo size (DTLS's largest record does not fit and is refused with Don't
    Fragment); on a standard Ethernet MTU on the IPv4 size below 1,500. `own_queue`: the
    sender's own interface holds 75 ms of datagrams (rate-limited, delayed), so its socket's
    buffer is often full: a probe that then waited in the transport left later without Don't
    Fragment, and a 16 KiB size was confirmed, fragmented (seen in a bench)."""
    size = 8 * 2**20 if own_queue else 4 * 2**20
    with linkbed.veth_pair("mtu") as pair:
        for namespace, ifname in ((pair.a, pair.a_if), (pair.b, pair.b_if)):
            pair.run(link.Command(namespace, "ip", ("link", "set", ifname, "mtu", str(mtu))))
        if own_queue:
            pair.apply(link.LinkSpec(rate_kbit=100_000, delay_ms=75), link.LinkSpec(delay_ms=75))
        sent, received = sctp_ab.transfer(
            size, "bbr", "bbr", netns.in_namespace(pair.a), ROOT, netns.in_namespace(pair.b)
        )
    assert sent["sha256"] == received["sha256"] and received["bytes"] == size
    assert sent["packet"] == received["packet"] == expected
    assert sent["segmented"][0] > 0  # GSO runs crossed the veth, split into packets as sent
