"""fileshare.sockbuf: the pin against the aioice it configures, and the receive buffers of the
sockets a real aioice connection binds for its host candidates, with and without the layer
(gathering without STUN or TURN servers sends nothing)."""

from __future__ import annotations

import socket

import pytest
from aioice import Connection, turn

from fileshare import sockbuf
from tests.pins import assert_aioice_pin


def test_the_pin_holds_for_this_aioice_and_refuses_another() -> None:
    assert_aioice_pin(sockbuf.originals(), sockbuf.PINNED_SOURCES, "create_turn_endpoint")


async def _granted() -> list[int]:
    """SO_RCVBUF of each host candidate's socket, as the kernel reports it (twice the size
    granted: its accounting includes the per-datagram overhead)."""
    connection = Connection(ice_controlling=True, stun_server=None, turn_server=None)
    try:
        await connection.gather_candidates()
        sockets = [p.transport.get_extra_info("socket") for p in connection._protocols]
        return [s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for s in sockets]
    finally:
        await connection.close()


async def test_host_candidates_ask_for_a_bdp_of_receive_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cap = sockbuf.kernel_cap()
    assert cap is not None
    monkeypatch.setattr(turn, "UDP_SOCKET_BUFFER_SIZE", turn.UDP_SOCKET_BUFFER_SIZE)
    stock = await _granted()
    sockbuf.install()
    assert turn.UDP_SOCKET_BUFFER_SIZE == sockbuf.RECEIVE_BUFFER
    layered = await _granted()
    assert stock and len(layered) == len(stock)
    assert all(size == 2 * min(262_144, cap) for size in stock)
    assert all(size == 2 * min(sockbuf.RECEIVE_BUFFER, cap) for size in layered)
    if cap >= sockbuf.RECEIVE_BUFFER:  # this machine's kernel lets a process ask that much
        assert min(layered) >= 4 * max(stock)
