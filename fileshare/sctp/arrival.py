"""How a datagram reaches SCTP: straight from the socket's callback, once DTLS is up.

Stock, each datagram took five steps through asyncio: aioice tried to parse it as STUN (a
`ValueError` raised and caught per DTLS record), put it on a queue; the queue woke the DTLS
transport's task on the next loop turn, which decrypted it, asked OpenSSL for a reply to send
(another exception when there was none, i.e. always) and awaited SCTP's handler. On 1,432-byte
packets that hand-off was about a fifth of the receiver's CPU time.

Here, RFC 7983's first-byte rule sends a DTLS record (20..63) past the
STUN attempt, and once the DTLS handshake is done (and the queue is empty, so order holds)
`Arrival` decrypts it and runs SCTP's handler in the same callback: an application-data record
of DTLS 1.2 (first byte 23) asks OpenSSL for no reply, every other record does as stock. The
handler's coroutine is run eagerly; should it ever wait for something, its rest runs as a task
and later datagrams queue behind it, so they are still handled one at a time, in order.

Stock's task stays parked on the queue: a close (the peer's close_notify, or an error in a
handler) puts aioice's end-of-connection mark on it, and that task closes the transport as
stock does. Pinned like the rest of `fileshare.sctp` (aioice's side in `AIOICE_SOURCES`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Coroutine, Generator
from typing import Any

from aioice.ice import Connection, StunProtocol
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from OpenSSL import SSL

from fileshare import turnrefresh
from fileshare.sctp import records

logger = logging.getLogger(__name__)

DTLS_FIRST, DTLS_LAST = 20, 63  # RFC 7983: a first byte in this range is a DTLS record
APPLICATION_DATA = 23  # DTLS 1.2's content type: reading one makes OpenSSL send nothing
BEHIND_MOST = 4 * 2**20  # bytes of records held while a handler waits (a socket buffer's)
ARRIVAL = "_fileshare_arrival"  # the attribute naming a Connection's Arrival

Step = Coroutine[Any, Any, None]

# sha256 of inspect.getsource() in turnrefresh.AIOICE_VERSION of what this replaces (the
# datagram's first step) or relies on (the connection's queue it hands the rest to, and the
# end-of-connection mark raising ConnectionError); aiortc's
# side (`__run` closing on it, `_recv_next` read again here) is in `fileshare.sctp`.
STUN = "StunProtocol"
AIOICE_SOURCES = {
    "Connection.data_received": "5631b17fab717d6b9a956b775d6f5580a50c2419dc6ef693286a98355e98a253",
    "Connection.recvfrom": "676acc01e4a9a9da04d94d86092a81ba17f1ef77bed0322c8302e3436310e863",
    f"{STUN}.datagram_received": "ff4c8b910d45fb3a9e50c4391fe5cbaba33dcba669fea9e847e19a5c99b9bfbb",
}


class _Rest:
    """The rest of a coroutine that an eager run left at `pending` (the future it awaits, or
    None for a bare yield): awaiting this drives it on from there, cancellation included."""

    def __init__(self, coro: Step, pending: Any) -> None:
        self.coro, self.pending = coro, pending

    def __await__(self) -> Generator[Any, None, None]:
        pending = self.pending
        while True:
            try:
                yield pending
            except BaseException as exc:  # thrown in by the task: pass it on
                try:
                    pending = self.coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                pending = self.coro.send(None)
            except StopIteration:
                return


def run_eagerly(coro: Step) -> _Rest | None:
    """Run `coro` now; None if it finished, else what is left of it (to await in a task)."""
    try:
        pending = coro.send(None)
    except StopIteration:
        return None
    return _Rest(coro, pending)


class Arrival:
    """One DTLS transport's receive path, run from the socket's callback once it is ready."""

    def __init__(self, dtls: RTCDtlsTransport, connection: Connection) -> None:
        self.dtls, self.connection = dtls, connection
        self.engaged = False  # the queue no longer carries this transport's DTLS records
        self.behind: collections.deque[bytes] | None = None  # waiting while a handler waits
        self.behind_bytes = 0
        self.handled = 0  # records handled here (stats)
        self.catching_up: asyncio.Future[None] | None = None  # the task that handles them

    def take(self, data: bytes) -> bool:
        """Handle `data` (a DTLS record) here; False to leave it to stock's queue."""
        if self.behind is not None:
            if self.behind_bytes + len(data) <= BEHIND_MOST:  # else dropped, as a full socket would
                self.behind.append(data)
                self.behind_bytes += len(data)
            return True
        if not self.engaged:
            dtls: Any = self.dtls
            if not (
                dtls._RTCDtlsTransport__handshake_done
                and dtls._state == State.CONNECTED
                and dtls._data_receiver is not None
                and self.connection._queue.empty()
            ):
                return False
            self.engaged = True
        elif self.dtls._state != State.CONNECTED:
            return False
        self.handled += 1
        rest = run_eagerly(self.handle(data))
        if rest is not None:
            self.behind, self.behind_bytes = collections.deque(), 0
            self.catching_up = asyncio.ensure_future(self._catch_up(rest))
        return True

    async def _catch_up(self, rest: _Rest) -> None:
        """Finish the handler that waited, then those of the records that queued behind it."""
        await rest
        assert self.behind is not None
        while self.behind:
            record = self.behind.popleft()
            self.behind_bytes -= len(record)
            self.handled += 1
            await self.handle(record)
        self.behind = None

    async def handle(self, record: bytes) -> None:
        """Stock `_recv_next` for one DTLS record, with the whole SCTP packet read at once;
        a close, or an error anywhere in it, ends the transport through stock's task."""
        try:
            closed = await self._decrypt_and_deliver(record)
        except Exception as exc:  # stock's task ends the transport on any handler error
            if not isinstance(exc, ConnectionError):
                logger.warning("SCTP failed on a received packet (%s): closing", type(exc).__name__)
            closed = True
        if closed:
            self._close()

    async def _decrypt_and_deliver(self, record: bytes) -> bool:
        """True when the record was the peer's close_notify."""
        dtls: Any = self.dtls
        dtls._RTCDtlsTransport__rx_bytes += len(record)
        dtls._RTCDtlsTransport__rx_packets += 1
        try:
            packet = records.open_record(dtls._ssl, record)
        except SSL.ZeroReturnError:
            await dtls._write_ssl()
            return True
        except SSL.Error:
            packet = b""
        if record[0] != APPLICATION_DATA:
            await dtls._write_ssl()
        receiver = dtls._data_receiver  # None once SCTP stopped: the record is dropped
        if packet and receiver is not None:
            await receiver._handle_data(packet)
        return False

    def _close(self) -> None:
        """Hand the end to stock's task: aioice's end-of-connection mark makes it raise
        ConnectionError, and it closes the transport as it would have."""
        self.engaged = False
        self.connection._queue.put_nowait(None)


def make_datagram_received(original: Any) -> Any:
    """aioice's `StunProtocol.datagram_received`, where a DTLS record skips the STUN parse and
    goes to its connection's Arrival if it takes it, else to the connection as stock."""

    def datagram_received(self: StunProtocol, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if isinstance(data, bytes) and data and DTLS_FIRST <= data[0] <= DTLS_LAST:
            arrival: Arrival | None = getattr(self.receiver, ARRIVAL, None)
            if arrival is None or not arrival.take(data):
                self.receiver.data_received(data, self.local_candidate.component)
        else:
            original(self, data, addr)

    return datagram_received


ORIGINALS: dict[str, Any] = {}  # aioice's functions as they were before `install`


def aioice_functions() -> dict[str, Any]:
    """The aioice functions pinned, as aioice has them (before `install` replaced one)."""
    return ORIGINALS or {
        "Connection.data_received": Connection.data_received,
        "Connection.recvfrom": Connection.recvfrom,
        f"{STUN}.datagram_received": StunProtocol.datagram_received,
    }


def install(aioice_version: str) -> None:
    """Check aioice's receive steps against the pins and replace them (once per process)."""
    turnrefresh.check(aioice_version, aioice_functions(), AIOICE_SOURCES, __name__)
    ORIGINALS.update(aioice_functions())
    original = ORIGINALS[f"{STUN}.datagram_received"]
    StunProtocol.datagram_received = make_datagram_received(original)  # type: ignore[method-assign]


def attach(dtls: RTCDtlsTransport) -> None:
    """Give `dtls`'s ICE connection an Arrival (idempotent; aioice's internals pinned)."""
    connection = dtls.transport._connection
    if getattr(connection, ARRIVAL, None) is None:
        setattr(connection, ARRIVAL, Arrival(dtls, connection))
