"""Path MTU probing (fileshare.sctp.plpmtu) as a sans-I/O search, and its probe packets as stock
aiortc parses them. The search over real peers is in test_sctp_layer (the `packet` each side
reports)."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

from aiortc.rtcdtlstransport import State
from aiortc.rtcsctptransport import HeartbeatAckChunk, HeartbeatChunk, parse_packet

from fileshare.sctp import association, plpmtu, wire


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


def _association() -> SimpleNamespace:
    return SimpleNamespace(
        _local_port=5000, _remote_port=5000, _remote_verification_tag=0x1234, _probe_nonce=b"n" * 8
    )


def test_a_probe_is_exactly_its_size_and_stock_aiortc_sees_only_the_heartbeat() -> None:
    transport = _association()
    for size in plpmtu.CANDIDATES:
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


async def test_a_probe_alone_leaves_with_dont_fragment_and_the_default_comes_back() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    level, option = socket.IPPROTO_IP, wire.IP_MTU_DISCOVER
    default = sock.getsockopt(level, option)
    seen: list[tuple[bytes, int]] = []

    async def send(record: bytes) -> None:
        seen.append((record, sock.getsockopt(level, option)))

    class Ssl:  # DTLS stand-in: the record is the packet
        def send(self, data: bytes) -> None:
            self.data = data

        def bio_read(self, size: int) -> bytes:
            return self.data[:size]

    dtls: Any = SimpleNamespace(
        _state=State.CONNECTED,
        _ssl=Ssl(),
        transport=SimpleNamespace(_send=send),
        _RTCDtlsTransport__tx_bytes=0,
        _RTCDtlsTransport__tx_packets=0,
    )
    try:
        assert await wire.send_unfragmented(dtls, sock, b"probe")
        await wire.send_packet(dtls, b"data")
        assert seen == [(b"probe", wire.PMTUDISC_DO), (b"data", default)]
        assert sock.getsockopt(level, option) == default
    finally:
        sock.close()
