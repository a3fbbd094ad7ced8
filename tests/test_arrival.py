"""fileshare.sctp.arrival: a DTLS record handled in the socket's callback, in order, with
stock's close; the pins that fail loudly when aioice moves; real peers end to end."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import aioice
import pytest
from aioice import stun
from aioice.ice import StunProtocol
from aiortc.rtcdtlstransport import State
from OpenSSL import SSL

from fileshare import turnrefresh
from fileshare.sctp import arrival, records
from tests import peer_pair

RECORD = bytes([arrival.APPLICATION_DATA, 0xFE, 0xFD])  # a DTLS 1.2 application-data header
CLOSE_NOTIFY = b"\x15\xfe\xfdclose"


def test_the_pinned_aioice_is_the_installed_one() -> None:
    turnrefresh.check(aioice.__version__, arrival.aioice_functions(), arrival.AIOICE_SOURCES)


def test_a_changed_aioice_function_is_refused_by_name() -> None:
    functions = {**arrival.aioice_functions(), "Connection.recvfrom": _await}
    with pytest.raises(turnrefresh.IncompatibleAioice, match=r"underneath: Connection\.recvfrom"):
        turnrefresh.check(turnrefresh.AIOICE_VERSION, functions, arrival.AIOICE_SOURCES)


async def test_a_coroutine_that_does_not_wait_runs_to_its_end_at_once() -> None:
    done: list[int] = []

    async def step() -> None:
        done.append(1)

    assert arrival.run_eagerly(step()) is None
    assert done == [1]


async def test_a_coroutine_that_waits_is_finished_by_awaiting_its_rest() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    done: list[int] = []

    async def step() -> None:
        done.append(await gate)
        await asyncio.sleep(0)  # a bare yield on the way
        done.append(2)

    rest = arrival.run_eagerly(step())
    assert rest is not None and done == []
    task = asyncio.ensure_future(_await(rest))
    await asyncio.sleep(0)
    gate.set_result(1)
    await asyncio.wait_for(task, 1)
    assert done == [1, 2]


async def test_cancelling_the_rest_cancels_the_coroutine_where_it_waits() -> None:
    cleaned: list[str] = []

    async def step() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            cleaned.append("finally")

    rest = arrival.run_eagerly(step())
    assert rest is not None
    task = asyncio.ensure_future(_await(rest))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


async def _await(rest: Any) -> None:
    await rest


class FakeSsl:
    """OpenSSL's side of one record: the header's plaintext is the rest of the record (the
    real decryption is covered end to end); a close_notify raises as OpenSSL does."""

    def __init__(self) -> None:
        self.record = b""

    def bio_write(self, record: bytes) -> None:
        self.record = record

    def recv(self, size: int) -> bytes:
        if self.record == CLOSE_NOTIFY:
            raise SSL.ZeroReturnError()
        return self.record[3:size]


class Receiver:
    """SCTP's side: records the packets it is given; one named packet makes it wait on a gate
    (nothing in aiortc's handler waits today: the rule for when one does), one raises."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def _handle_data(self, packet: bytes) -> None:
        if packet == b"wait":
            await self.gate
        if packet == b"raise":
            raise ValueError("a secret the log must not get: hunter2")
        self.packets.append(packet)


@pytest.fixture(autouse=True)
def _public_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """FakeSsl answers pyOpenSSL's calls: the record layer's direct way is tested elsewhere."""
    monkeypatch.setattr(records, "open_record", records._open_public)


def _arrival(handshake_done: bool = True) -> tuple[arrival.Arrival, Any, Receiver]:
    writes: list[int] = []

    async def write_ssl() -> None:
        writes.append(1)

    receiver = Receiver()
    dtls: Any = SimpleNamespace(
        _RTCDtlsTransport__handshake_done=handshake_done,
        _RTCDtlsTransport__rx_bytes=0,
        _RTCDtlsTransport__rx_packets=0,
        _state=State.CONNECTED,
        _data_receiver=receiver,
        _ssl=FakeSsl(),
        _write_ssl=write_ssl,
        writes=writes,
    )
    connection: Any = SimpleNamespace(_queue=asyncio.Queue())
    return arrival.Arrival(dtls, connection), dtls, receiver


async def test_records_are_left_to_stock_until_the_handshake_is_done_and_its_queue_empty() -> None:
    early, _, _ = _arrival(handshake_done=False)
    assert not early.take(RECORD + b"a")
    queued, _, receiver = _arrival()
    queued.connection._queue.put_nowait((RECORD + b"x", 1))
    assert not queued.take(RECORD + b"a")  # behind a record stock has yet to read: its turn
    queued.connection._queue.get_nowait()
    assert queued.take(RECORD + b"b") and receiver.packets == [b"b"]
    queued.connection._queue.put_nowait((b"\x00", 1))  # engaged: the queue no longer matters
    assert queued.take(RECORD + b"c") and receiver.packets == [b"b", b"c"]


async def test_an_application_data_record_asks_openssl_for_nothing_to_send() -> None:
    taker, dtls, receiver = _arrival()
    assert taker.take(RECORD + b"data")
    assert dtls.writes == [] and receiver.packets == [b"data"]
    assert taker.take(b"\x16\xfe\xfd" + b"hs")  # a handshake record (a retransmitted flight)
    assert dtls.writes == [1]
    assert dtls._RTCDtlsTransport__rx_packets == 2 and taker.handled == 2


async def test_records_behind_a_waiting_handler_are_handled_after_it_in_order() -> None:
    taker, _, receiver = _arrival()
    for body in (b"1", b"wait", b"2", b"3"):
        assert taker.take(RECORD + body)
    assert receiver.packets == [b"1"] and taker.behind is not None
    receiver.gate.set_result(None)
    assert taker.catching_up is not None
    await asyncio.wait_for(taker.catching_up, 1)
    assert receiver.packets == [b"1", b"wait", b"2", b"3"]
    caught_up: Any = taker  # (mypy keeps the narrowing of `behind` from before the await)
    assert caught_up.behind is None and caught_up.behind_bytes == 0
    assert taker.take(RECORD + b"4") and receiver.packets[-1] == b"4"


async def test_what_waits_behind_a_handler_is_bounded_in_bytes() -> None:
    taker, _, receiver = _arrival()
    taker.take(RECORD + b"wait")
    record = RECORD + bytes(2**14)
    for _ in range(2 * arrival.BEHIND_MOST // len(record)):
        taker.take(record)
    assert taker.behind is not None
    assert taker.behind_bytes <= arrival.BEHIND_MOST
    assert sum(map(len, taker.behind)) == taker.behind_bytes
    assert len(taker.behind) == arrival.BEHIND_MOST // len(record)
    receiver.gate.set_result(None)
    assert taker.catching_up is not None
    await asyncio.wait_for(taker.catching_up, 5)
    assert len(receiver.packets) == 1 + arrival.BEHIND_MOST // len(record)


async def test_the_peers_close_notify_is_handed_to_stocks_task() -> None:
    taker, dtls, _ = _arrival()
    assert taker.take(CLOSE_NOTIFY)
    assert dtls.writes == [1]  # OpenSSL's own close_notify, if it has one, leaves first
    assert taker.connection._queue.get_nowait() is None  # aioice's end-of-connection mark
    assert not taker.engaged


async def test_a_handler_error_closes_the_transport_with_a_line_and_no_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    taker, _, _ = _arrival()
    with caplog.at_level(logging.DEBUG, logger=arrival.__name__):
        assert taker.take(RECORD + b"raise")  # nothing propagates into asyncio's callback
    assert taker.connection._queue.get_nowait() is None
    assert [r.getMessage() for r in caplog.records] == [
        "SCTP failed on a received packet (ValueError): closing"
    ]
    assert all(r.exc_info is None for r in caplog.records)  # no traceback


async def test_a_record_after_sctp_stopped_is_dropped_as_stock_drops_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SCTP unregisters itself from DTLS when it stops; a packet still on its way then is
    dropped, as stock's `_recv_next` drops it, with no error and no close."""
    taker, dtls, receiver = _arrival()
    assert taker.take(RECORD + b"a")
    dtls._data_receiver = None
    with caplog.at_level(logging.DEBUG, logger=arrival.__name__):
        assert taker.take(RECORD + b"late")
    assert caplog.records == [] and taker.connection._queue.empty() and taker.engaged
    assert receiver.packets == [b"a"]


async def test_a_transport_no_longer_connected_leaves_records_to_stock() -> None:
    taker, dtls, receiver = _arrival()
    assert taker.take(RECORD + b"a")
    dtls._state = State.CLOSED
    assert not taker.take(RECORD + b"b")
    assert receiver.packets == [b"a"]


class Connection:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.requests: list[stun.Message] = []

    def data_received(self, data: bytes, component: int) -> None:
        self.data.append(data)

    def request_received(self, message: stun.Message, addr: Any, protocol: Any) -> None:
        self.requests.append(message)


@pytest.mark.parametrize("first", [20, 23, 63])
async def test_a_dtls_record_skips_the_stun_parse(
    first: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_parse(data: bytes) -> None:
        raise AssertionError("parsed as STUN")

    receiver = Connection()
    protocol = _protocol(receiver)
    received = _demultiplexing()
    monkeypatch.setattr(stun, "parse_message", no_parse)
    received(protocol, bytes([first]) + b"\xfe\xfd record", ("192.0.2.1", 9))
    assert receiver.data == [bytes([first]) + b"\xfe\xfd record"]


async def test_a_dtls_record_goes_to_its_connections_arrival_and_else_to_its_queue() -> None:
    taker, dtls, handler = _arrival()
    receiver = Connection()
    setattr(receiver, arrival.ARRIVAL, taker)
    _demultiplexing()(_protocol(receiver), RECORD + b"x", ("192.0.2.1", 9))
    assert handler.packets == [b"x"] and receiver.data == []
    dtls._state = State.CLOSED  # not taken any more: aioice's way, to stock's task
    _demultiplexing()(_protocol(receiver), RECORD + b"y", ("192.0.2.1", 9))
    assert handler.packets == [b"x"] and receiver.data == [RECORD + b"y"]


@pytest.mark.parametrize("data", [b"", b"\x80rtp", b"\x40turn"])
async def test_other_datagrams_take_aioices_way(data: bytes) -> None:
    receiver = Connection()
    received = _demultiplexing()
    received(_protocol(receiver), data, ("192.0.2.1", 9))
    assert receiver.data == [data]  # not STUN: aioice hands it on as data


async def test_a_stun_request_still_reaches_ice() -> None:
    receiver = Connection()
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    received = _demultiplexing()
    received(_protocol(receiver), bytes(request), ("192.0.2.1", 9))
    assert [m.transaction_id for m in receiver.requests] == [request.transaction_id]
    assert receiver.data == []


def _demultiplexing() -> Any:
    """The layer's datagram_received over aioice's own."""
    stock = arrival.aioice_functions()[f"{arrival.STUN}.datagram_received"]
    return arrival.make_datagram_received(stock)


def _protocol(receiver: Connection) -> StunProtocol:
    protocol = StunProtocol(receiver)  # type: ignore[arg-type]
    protocol.local_candidate = SimpleNamespace(component=1)  # type: ignore[assignment]
    return protocol


def test_two_peers_hand_every_record_to_the_arrival_and_close_through_it() -> None:
    """Real aiortc peers (a child process: the layer is process-wide): the data arrives whole,
    both sides took records in the socket's callback, and the peer's close_notify closed the
    receiver's DTLS transport within seconds (not ICE's consent timeout, 30 s)."""
    result = peer_pair.run_child("tests.arrival_peers", "--bytes", str(2**21), "--wait", "5")
    assert result["whole"] and result["closed"], result
    assert all(count > 10 for count in result["handled"]), result
