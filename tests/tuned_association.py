"""A tuned association (fileshare.sctp's layer on aiortc's RTCSctpTransport) with no DTLS under
it and a clock the test sets, for feeding it chunks and SACKs sans I/O."""

from __future__ import annotations

import asyncio
import types
from types import SimpleNamespace
from typing import Any

from aiortc.rtcsctptransport import RTCSctpTransport

from fileshare import sctp
from fileshare.sctp import association, streams
from fileshare.sctp.originals import ORIGINALS


class Clock:
    """The association's loop as its handlers see it: a time we set, timers never due."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: object, *args: object) -> asyncio.Handle:
        return asyncio.get_running_loop().call_later(3600, lambda: None)


def tuned(kind: str = "bbr") -> Any:
    """A fresh association with the layer's state (`kind`: its controller) and methods (bound
    to it alone: the layer's `install` is process-wide), its streams negotiated, and a
    `Clock`."""
    dtls = SimpleNamespace(
        state="connected",
        transport=SimpleNamespace(_connection=SimpleNamespace()),
        _register_data_receiver=lambda receiver: None,
    )
    transport: Any = RTCSctpTransport.__new__(RTCSctpTransport)
    association.make_init(RTCSctpTransport.__init__, kind)(transport, dtls)  # type: ignore[arg-type]
    for name, replacement in sctp.replacements().items():
        setattr(transport, name, types.MethodType(replacement, transport))
    if not ORIGINALS:  # the layer is not installed in this process
        ORIGINALS.update({name: getattr(RTCSctpTransport, name) for name in sctp.PINNED_SOURCES})
    transport._inbound_streams_count = streams.MOST_STREAMS  # as the handshake makes it
    transport._loop = Clock()
    return transport
