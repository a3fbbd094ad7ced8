"""fileshare.sctp.wire: how a batch of DTLS records is cut for UDP_SEGMENT sends, and that the
kernel splits one such send back into the datagrams a peer expects (real sockets on loopback).
Over real peers (stock aiortc on the other side, a rate-limited veth) in test_sctp_layer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from fileshare.sctp import wire


def _sizes(groups: list[list[bytes]]) -> list[list[int]]:
    return [[len(record) for record in group] for group in groups]


def test_equal_records_go_together_and_a_shorter_one_closes_a_group() -> None:
    sealed = [b"a" * 100] * 3 + [b"b" * 40] + [b"c" * 100] * 2 + [b"d" * 120]
    assert _sizes(list(wire.gso_groups(sealed))) == [[100, 100, 100, 40], [100, 100], [120]]


def test_groups_stay_within_the_kernels_segment_and_byte_limits() -> None:
    many = [b"x" * 10] * (wire.GSO_SEGMENTS + 5)
    assert _sizes(list(wire.gso_groups(many))) == [[10] * wire.GSO_SEGMENTS, [10] * 5]
    big = [b"y" * 1537] * 50
    groups = list(wire.gso_groups(big))
    assert all(sum(len(record) for record in group) <= wire.GSO_BYTES for group in groups)
    assert sum(len(group) for group in groups) == 50 and len(groups) == 2
    assert list(wire.gso_groups([])) == []


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    yield sender, receiver
    sender.close()
    receiver.close()


def test_one_segmented_send_arrives_as_the_separate_datagrams(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = sockets
    route = wire.Route(sender, None, receiver.getsockname())
    group = [bytes([i]) * 1469 for i in range(5)] + [b"z" * 300]
    assert wire._send_segmented(route, group) is None
    assert [receiver.recv(65536) for _ in group] == group
    assert sender.fileno() != -1  # the descriptor is still the caller's


def test_a_send_the_kernel_refuses_returns_its_error_and_sends_nothing(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = sockets
    sender.setsockopt(socket.IPPROTO_IP, wire.IP_MTU_DISCOVER, wire.PMTUDISC_DO)
    # segments larger than the route's MTU (loopback: 65,536) cannot leave unfragmented
    route = wire.Route(sender, None, receiver.getsockname())
    assert isinstance(wire._send_segmented(route, [b"q" * 40000] * 2), OSError)
    receiver.settimeout(0.2)
    with pytest.raises(TimeoutError):
        receiver.recv(65536)


SO_NO_CHECK = 11  # <asm-generic/socket.h>: the kernel refuses UDP_SEGMENT on such a socket


def _runs_on_loopback(no_checksum: bool) -> tuple[int, int, bool, int, list[bytes]]:
    """Two batches through `wire.Runs` on a real asyncio datagram transport; returns what the
    first and the second `send` took, whether the runs were refused, how many packets left in
    runs, and what a plain receiver got."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.5)

    async def run() -> tuple[int, int, bool, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        sock = transport.get_extra_info("socket")
        if no_checksum:
            sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        route = wire.Route(sock, transport, receiver.getsockname())
        runs = wire.Runs()
        first = runs.send(route, [b"a" * 500] * 3 + [b"b" * 100])
        sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 0)  # a second try would now succeed
        second = runs.send(route, [b"c" * 500] * 2)
        await asyncio.sleep(0)
        transport.close()
        return first, second, runs.refused, runs.packets

    first, second, refused, packets = asyncio.run(run())
    got: list[bytes] = []
    try:
        while True:
            got.append(receiver.recv(65536))
    except TimeoutError:
        pass
    receiver.close()
    return first, second, refused, packets, got


def test_runs_leave_whole_and_in_order() -> None:
    first, second, refused, packets, got = _runs_on_loopback(no_checksum=False)
    assert (first, second, refused, packets) == (4, 2, False, 6)
    assert got == [b"a" * 500] * 3 + [b"b" * 100] + [b"c" * 500] * 2


def test_a_refused_run_stops_the_runs_and_leaves_its_records_to_the_caller() -> None:
    """The kernel refuses UDP_SEGMENT (no UDP checksum on the socket): nothing left, the caller
    sends every record itself, and the next batch does not try again (though it would work)."""
    first, second, refused, packets, got = _runs_on_loopback(no_checksum=True)
    assert (first, second, refused, packets, got) == (0, 0, True, 0, [])
