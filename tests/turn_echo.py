"""A relayed echo for tests/test_turn_refresh.py, run as a process in the test's namespace:
allocate on a TURN server with aioice (as aiortc does, through `aioice.turn`, optionally with
fileshare.turnrefresh installed), send to a UDP peer through the relay five times a second,
the peer echoing each datagram back to the relayed address; print, as one JSON line, how many
echoes came back in each second. Both directions need the channel and the peer's permission.

    python -m tests.turn_echo HOST PORT USERNAME PASSWORD SECONDS REFRESH   (REFRESH 0: stock)
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

from aioice import turn

from fileshare import turnrefresh


class _Counter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.stamps.append(time.monotonic())


async def _echo(peer: socket.socket, relayed: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data, _ = await loop.sock_recvfrom(peer, 2048)
        await loop.sock_sendto(peer, data, relayed)


async def main(host: str, port: int, user: str, password: str, seconds: int) -> list[int]:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((host, 0))
    peer.setblocking(False)
    transport, counter = await turn.create_turn_endpoint(
        _Counter, server_addr=(host, port), username=user, password=password
    )
    start = time.monotonic()
    echo = asyncio.ensure_future(_echo(peer, transport.get_extra_info("sockname")))
    while time.monotonic() - start < seconds:
        transport.sendto(b"x" * 100, peer.getsockname())
        await asyncio.sleep(0.2)
    echo.cancel()
    transport.close()
    peer.close()
    per_second = [0] * seconds
    for stamp in counter.stamps:
        if int(stamp - start) < seconds:
            per_second[int(stamp - start)] += 1
    return per_second


if __name__ == "__main__":
    host, port, user, password, seconds, refresh = sys.argv[1:7]
    if int(refresh):
        turnrefresh.install(int(refresh))
    counts = asyncio.run(main(host, int(port), user, password, int(seconds)))
    print(json.dumps({"per_second": counts}))
