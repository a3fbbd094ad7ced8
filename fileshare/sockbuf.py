"""UDP receive buffers sized for the queue our own sender builds at a receiver.

aioice asks 256 KiB of receive buffer for every socket it binds (host candidates and the TURN
client's). When the receiving process, not the link, is the bottleneck (its CPU at 100 Mbit/s
on this 2-core machine), BBR's window of 2 x BDP leaves up to one BDP of datagrams waiting in
that buffer: at 100 Mbit/s and 150 ms that is about 1.9 MB, and 256 KiB (512 KiB of kernel
accounting, about 220 datagrams) dropped a fifth of them (`make bench-links`, the receiver's
namespace: 22,558 RcvbufErrors of 113,433 datagrams sent). Each drop was sent again and
reported in gap blocks: 45 Mbit/s against 66 with the buffer below, and 30 % more CPU for the
same bytes; no drop at all with it.

The kernel grants at most `net.core.rmem_max` (212,992 bytes by default on Linux: then nothing
changes, and `fileshare doctor` says how to raise it). A full buffer costs kernel memory only
while the receiver lags, and never more than the sender's window.

`install()` sets aioice's module constant, which both places read when they bind; pinned as
`fileshare.gathering` is: the release and the source of each function that reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aioice
from aioice import ice, turn

from fileshare import turnrefresh

# One BDP at 100 Mbit/s and 150 ms, with the kernel's per-datagram overhead (its accounting
# counts each 1.5 kB datagram as about 2.3 kB), and room for a burst.
RECEIVE_BUFFER: Final = 4 * 2**20
RMEM_MAX: Final = Path("/proc/sys/net/core/rmem_max")

PINNED_SOURCES: Final = {
    "get_component_candidates": "118597a9fcb703f9950c2f2964e3e44423724576eda484ba6747b1610ccf4a2f",
    "create_turn_endpoint": "c84ad1cc7c547570eb869d950bfcc7f108d374c41c06c1f90df2abb5aeee04f9",
}


def originals() -> dict[str, Callable[..., Any]]:
    """The functions that read aioice's buffer size when they bind, as aioice has them."""
    factory = turn.create_turn_endpoint
    return {
        "get_component_candidates": ice.Connection.get_component_candidates,
        "create_turn_endpoint": getattr(factory, "__wrapped__", factory),
    }


def install() -> None:
    """Every UDP socket aioice binds from now on asks for RECEIVE_BUFFER. Idempotent: the pin
    is checked once, not on every connection."""
    if turn.UDP_SOCKET_BUFFER_SIZE == RECEIVE_BUFFER:
        return
    turnrefresh.check(aioice.__version__, originals(), PINNED_SOURCES, __name__)
    turn.UDP_SOCKET_BUFFER_SIZE = RECEIVE_BUFFER


def kernel_cap() -> int | None:
    """The most a process may ask (`net.core.rmem_max`), or None where it cannot be read."""
    try:
        return int(RMEM_MAX.read_text())
    except (OSError, ValueError):
        return None
