"""Path MTU probing (fileshare.sctp.plpmtu) as a sans-I/O search, and its probe packets as stock
aiortc parses them. The search over real peers is in test_sctp_layer (the `packet` each side
reports)."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace
from typing import Any

import pytest
from aiortc.rtcdtlstransport import State
from aiortc.rtcsctptransport import (
    HeartbeatAckChunk,
    HeartbeatChunk,
    InitChunk,
    parse_packet,
    serialize_packet,
)

from fileshare.sctp import association, plpmtu, records, wire
from tests.dtls import dtls_pair


def test_each_acknowledged_probe_raises_the_size_up_to_the_ceiling() -> None:
    search = plpmtu.Search()
    for size in plpmtu.CANDIDATES:
        assert search.probe(0.0, 1.0) == size
        assert search.probe(0.0, 1.0) is None  # one outstanding at a time
        search.on_ack(size)
        assert search.plpmtu == size
    assert search.complete and search.plpmtu == plpmtu.CEILING
    assert search.probe(5.0, 1.0) is None


def test_a_size_unanswered_max_probes_times_ends_the_search_at_the_last_confirmed() -> None:
    search = plpmtu.Search()
    first, second = plpmtu.CANDIDATES[:2]
    assert search.probe(0.0, 1.0) == first
    search.on_ack(first)
    now = 0.0
    for _ in range(plpmtu.MAX_PROBES):
        assert search.probe(now, 1.0) == second
        assert search.get_timer() == now + 1.0
        search.handle_timer(now + 0.5)  # not yet due: still outstanding
        assert search.probing == second
        now += 1.0
        search.handle_timer(now)
    assert search.complete and search.plpmtu == first and search.get_timer() is None


def test_a_probe_that_could_not_leave_counts_neither_as_sent_nor_as_lost() -> None:
    search = plpmtu.Search()
    first = plpmtu.CANDIDATES[0]
    for _ in range(2 * plpmtu.MAX_PROBES):  # a busy socket, again and again
        assert search.probe(0.0, 1.0) == first
        search.unsent()
        assert search.probing is None and search.get_timer() is None
    search.handle_timer(10.0)
    assert not search.complete and search.probe(10.0, 1.0) == first
    search.on_ack(first)
    assert search.plpmtu == first


def test_answers_not_to_the_outstanding_probe_confirm_nothing() -> None:
    search = plpmtu.Search()
    search.on_ack(plpmtu.CEILING)  # unasked: a hostile or confused peer
    assert search.plpmtu == plpmtu.BASE
    assert search.probe(0.0, 1.0) == plpmtu.CANDIDATES[0]
    search.on_ack(plpmtu.CEILING)  # not the size being probed
    assert search.plpmtu == plpmtu.BASE and search.probing == plpmtu.CANDIDATES[0]


def test_a_black_hole_goes_back_to_the_base_for_good() -> None:
    search = plpmtu.Search()
    search.probe(0.0, 1.0)
    search.on_ack(plpmtu.CANDIDATES[0])
    search.on_black_hole()
    assert search.plpmtu == plpmtu.BASE and search.complete
    assert search.probe(1.0, 1.0) is None


def test_user_data_fills_the_packet_in_whole_words() -> None:
    assert plpmtu.user_data_size(plpmtu.BASE) == 1160  # aiortc's USERDATA_MAX_LENGTH
    assert plpmtu.user_data_size(plpmtu.CEILING) == 1472


def test_a_peer_that_reads_records_whole_is_probed_up_to_the_largest_record() -> None:
    assert plpmtu.candidates(plpmtu.CEILING) == plpmtu.CANDIDATES  # a stock peer
    assert plpmtu.candidates(9000) == (*plpmtu.CANDIDATES, *plpmtu.JUMBO)
    assert plpmtu.candidates(2**31) == (*plpmtu.CANDIDATES, *plpmtu.JUMBO, plpmtu.LARGEST)
    assert plpmtu.user_data_size(plpmtu.LARGEST) == 16356


def test_what_the_peer_says_it_reads_counts_only_before_the_first_probe() -> None:
    search = plpmtu.Search()
    search.offer(plpmtu.candidates(plpmtu.LARGEST))
    assert search.candidates[-1] == plpmtu.LARGEST
    later = plpmtu.Search()
    assert later.probe(0.0, 1.0) == plpmtu.CANDIDATES[0]
    later.offer(plpmtu.candidates(plpmtu.LARGEST))  # an INIT in mid-association
    assert later.candidates == plpmtu.CANDIDATES


def _init_params(extra: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """`extra` in an INIT, serialised and parsed back as stock aiortc does."""
    init = InitChunk()
    init.initiate_tag, init.advertised_rwnd, init.initial_tsn = 1, 2**20, 7
    init.outbound_streams = init.inbound_streams = 16
    init.params = list(extra)
    _, _, _, chunks = parse_packet(serialize_packet(5000, 5000, 0, init))
    assert isinstance(chunks[0], InitChunk)
    return chunks[0].params


def test_the_records_parameter_is_ours_alone_and_skipped_by_other_stacks() -> None:
    assert association.RECORDS_PARAM >> 14 == 0b10  # RFC 9260 3.2.1: skip, do not report
    params = _init_params([association.records_param()])
    assert association.peer_reads(params) == plpmtu.LARGEST
    assert association.peer_reads(_init_params([])) == plpmtu.CEILING  # stock, Chromium
    name, kind = association.RECORDS_NAME, association.RECORDS_PARAM
    others = [
        (kind, b"someone-else:" + bytes(4 + len(name) - 13)),  # the same type, another use
        (kind, name),  # truncated
        (kind, name + (100).to_bytes(4, "big")),  # less than a stock peer reads
    ]
    for param in others:
        assert association.peer_reads(_init_params([param])) == plpmtu.CEILING
    huge = _init_params([(kind, name + (2**32 - 1).to_bytes(4, "big"))])
    assert plpmtu.candidates(association.peer_reads(huge))[-1] == plpmtu.LARGEST


def test_a_packet_larger_than_the_stock_read_is_taken_whole_from_its_record() -> None:
    client, server = dtls_pair()
    dtls: Any = SimpleNamespace(_ssl=server)
    for size in (plpmtu.LARGEST, wire.STOCK_READ + 1, wire.STOCK_READ, 1000):
        packet = bytes(range(256)) * (size // 256) + bytes(size % 256)
        client.send(packet)
        server.bio_write(client.bio_read(records.RECORD_MAX))
        read = server.recv(wire.STOCK_READ)  # what aiortc's _recv_next reads
        assert wire.whole_packet(dtls, read) == packet
    # two records in one datagram: the first fills the stock read; the second is not added
    datagram = b""
    for fill in (b"a", b"b"):
        client.send(fill * wire.STOCK_READ)
        datagram += client.bio_read(records.RECORD_MAX)
    server.bio_write(datagram)
    assert wire.whole_packet(dtls, server.recv(wire.STOCK_READ)) == b"a" * wire.STOCK_READ
    assert server.recv(wire.STOCK_READ) == b"b" * wire.STOCK_READ


def _association() -> SimpleNamespace:
    return SimpleNamespace(
        _local_port=5000, _remote_port=5000, _remote_verification_tag=0x1234, _probe_nonce=b"n" * 8
    )


def test_a_probe_is_exactly_its_size_and_stock_aiortc_sees_only_the_heartbeat() -> None:
    transport = _association()
    for size in plpmtu.candidates(plpmtu.LARGEST):
        packet = association.probe_packet(transport, size)
        assert len(packet) == size
        _, _, tag, chunks = parse_packet(packet)  # checks the CRC; skips the PAD chunk
        assert tag == 0x1234
        assert len(chunks) == 1 and isinstance(chunks[0], HeartbeatChunk)
        answer = HeartbeatAckChunk()
        answer.params = chunks[0].params  # what the peer echoes
        assert association.probed_size(transport, answer) == size


def test_a_heartbeat_ack_for_another_association_or_forged_confirms_nothing() -> None:
    transport = _association()
    other = SimpleNamespace(**{**vars(transport), "_probe_nonce": b"x" * 8})
    _, _, _, chunks = parse_packet(association.probe_packet(other, plpmtu.CEILING))
    assert isinstance(chunks[0], HeartbeatChunk)
    answer = HeartbeatAckChunk()
    answer.params = chunks[0].params
    assert association.probed_size(transport, answer) is None
    answer.params = [(association.HEARTBEAT_INFO, b"fileshare-plpmtu")]  # truncated
    assert association.probed_size(transport, answer) is None


async def test_a_probe_leaves_on_the_pairs_socket_and_its_default_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The probe goes out on the pair's own socket (Don't Fragment for it alone: a path that
    refuses it is tested end to end in test_sctp_layer); not at all while the transport holds
    datagrams (through it, it would wait and leave later without Don't Fragment)."""
    monkeypatch.setattr(records, "seal", records._seal_public)  # the stand-in's calls
    loop = asyncio.get_running_loop()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    sock = transport.get_extra_info("socket")
    level, option = socket.IPPROTO_IP, wire.IP_MTU_DISCOVER
    default = sock.getsockopt(level, option)

    class Ssl:  # DTLS stand-in: the record is the packet
        def send(self, data: bytes) -> None:
            self.data = data

        def bio_read(self, size: int) -> bytes:
            return self.data[:size]

        def get_shutdown(self) -> int:
            return 0  # not shutting down

    dtls: Any = SimpleNamespace(
        _state=State.CONNECTED,
        _ssl=Ssl(),
        _RTCDtlsTransport__tx_bytes=0,
        _RTCDtlsTransport__tx_packets=0,
    )
    route = wire.Route(sock, transport, peer.getsockname())
    try:
        assert wire.send_unfragmented(dtls, route, b"probe") is True
        assert await loop.sock_recv(peer, 100) == b"probe"
        assert sock.getsockopt(level, option) == default
        assert dtls._RTCDtlsTransport__tx_packets == 1
        busy = route._replace(transport=SimpleNamespace(get_write_buffer_size=lambda: 1200))
        assert wire.send_unfragmented(dtls, busy, b"later") is None
        assert dtls._RTCDtlsTransport__tx_packets == 1  # nothing sealed, nothing sent
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:  # no such option
            assert wire.send_unfragmented(dtls, route._replace(sock=unix), b"x") is False
    finally:
        transport.close()
        peer.close()
