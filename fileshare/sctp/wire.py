"""How this layer's SCTP packets leave and arrive: one DTLS record each, read whole from OpenSSL
and sent on the ICE pair. The records of one `_transmit` leave together (`send_records`): runs
of equal size in one `sendmsg` with UDP_SEGMENT (GSO) on the pair's own socket, so the kernel
carries a run through its stack (and every hop that keeps GSO) once; per datagram through the
ICE transport when the pair is a relay, datagrams wait in that transport, or the kernel refuses.
A path MTU probe leaves with Don't Fragment set, so only an
unfragmented path can confirm its size (data keeps the socket's default: fragmented rather than
lost should the path shrink later). A probe goes on the pair's socket itself, and only when
nothing waits in its transport: a probe the transport queued would leave later, without Don't
Fragment, and a fragmented size would be confirmed.

aiortc's `RTCDtlsTransport._write_ssl` reads at most 1,500 bytes of ciphertext per datagram: a
record of a packet larger than 1,463 bytes would leave in two datagrams (a broken record and a
stray tail). Packets up to `plpmtu.CEILING` are therefore encrypted and sent here, with the
stock transport's own state and counters (pinned in `fileshare.sctp`). On arrival, the stock
`_recv_next` reads 1,500 bytes of plaintext; `whole_packet` takes the rest of a larger record,
so this side can say it reads records whole (`association.RECORDS_PARAM`).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from struct import pack
from typing import Any, NamedTuple

from aiortc.rtcdtlstransport import RTCDtlsTransport, State

from fileshare.sctp import records

STOCK_READ = 1500  # plaintext bytes aiortc's RTCDtlsTransport._recv_next reads per record
# Linux <netinet/in.h>; Python's socket module names them on few builds.
IP_MTU_DISCOVER, IPV6_MTU_DISCOVER = 10, 23
PMTUDISC_DO = 2  # the same value for IPv4 and IPv6
UDP_SEGMENT = 103  # <linux/udp.h>
GSO_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
GSO_BYTES = 65000  # under the 65,507 bytes one UDP datagram can carry before segmentation


class Route(NamedTuple):
    """The nominated ICE pair's own UDP socket: where a probe leaves from, and to where."""

    sock: Any  # the transport's socket (uvloop's stands in for it: options only)
    transport: Any  # its asyncio transport, which may hold datagrams the socket did not take
    remote: tuple[str, int]


def _connected_ssl(dtls: RTCDtlsTransport) -> Any:
    """The transport's OpenSSL connection, if it can still send. Stock `stop` shuts OpenSSL
    down before its task marks the transport closed: in between, a send is refused as closed,
    where OpenSSL would raise its own error ("protocol is shutdown")."""
    ssl = dtls._ssl
    if dtls._state != State.CONNECTED or ssl is None or ssl.get_shutdown():
        raise ConnectionError("Cannot send encrypted data, not connected")
    return ssl


def _count(dtls: RTCDtlsTransport, sealed: list[bytes]) -> None:
    """The stock transport's counters, as its `_send_data` keeps them."""
    stats: Any = dtls
    stats._RTCDtlsTransport__tx_bytes += sum(len(record) for record in sealed)
    stats._RTCDtlsTransport__tx_packets += len(sealed)


def seal(dtls: RTCDtlsTransport, packet: bytes) -> bytes:
    """`packet` as one DTLS record (stock `_send_data`, the whole record read from OpenSSL)."""
    return records.seal(_connected_ssl(dtls), packet)


async def send_packet(dtls: RTCDtlsTransport, packet: bytes) -> None:
    """Encrypt `packet` as one record and send it as one datagram."""
    record = seal(dtls, packet)
    await dtls.transport._send(record)
    _count(dtls, [record])


def gso_groups(sealed: list[bytes]) -> Iterator[list[bytes]]:
    """`sealed` in order, cut into what one UDP_SEGMENT send can carry: equal sizes, the last
    perhaps shorter, at most GSO_SEGMENTS and GSO_BYTES."""
    group: list[bytes] = []
    for record in sealed:
        if group and (
            len(record) > len(group[0])
            or len(group[-1]) < len(group[0])
            or len(group) == GSO_SEGMENTS
            or len(group[0]) * (len(group) + 1) > GSO_BYTES
        ):
            yield group
            group = []
        group.append(record)
    if group:
        yield group


class Runs:
    """UDP_SEGMENT sends on one association's pair, and what they carried. After the kernel
    refuses one for any reason but a full buffer (a device without checksum offload, a path
    MTU below a run's packets), it stops trying: a failed system call per batch would cost
    more than the runs save."""

    def __init__(self) -> None:
        self.refused = False
        self.packets = 0  # sent in runs (stats)
        self.sends = 0

    def send(self, route: Route, sealed: list[bytes]) -> int:
        """Send `sealed` from its start, in order, in runs where it can; returns how many left
        (the rest must go through the transport, behind what it may now hold)."""
        if self.refused or route.transport.get_write_buffer_size():
            return 0
        done = 0
        for group in gso_groups(sealed):
            if len(group) == 1:
                route.transport.sendto(group[0], route.remote)
                done += 1
                if route.transport.get_write_buffer_size():
                    break  # it waits in the transport: so must the rest
                continue
            error = _send_segmented(route, group)
            if error is not None:
                self.refused = not isinstance(error, BlockingIOError)
                break
            self.packets += len(group)
            self.sends += 1
            done += len(group)
        return done


async def send_records(dtls: RTCDtlsTransport, sealed: list[bytes], runs: Runs) -> None:
    """Send DTLS records in order, in as few system calls as the pair allows."""
    route = pair_route(dtls) if len(sealed) > 1 else None
    done = runs.send(route, sealed) if route is not None else 0
    for record in sealed[done:]:
        await dtls.transport._send(record)
    _count(dtls, sealed)


def _send_segmented(route: Route, group: list[bytes]) -> OSError | None:
    """One GSO send of `group` on the pair's descriptor (uvloop's socket stand-in has no
    `sendmsg`); the kernel's error if it did not take it (then nothing was sent)."""
    raw = socket.socket(route.sock.family, socket.SOCK_DGRAM, 0, route.sock.fileno())
    try:
        segment = pack("@H", len(group[0]))
        raw.sendmsg([b"".join(group)], [(socket.SOL_UDP, UDP_SEGMENT, segment)], 0, route.remote)
    except OSError as error:
        return error
    finally:
        raw.detach()  # the descriptor stays aioice's
    return None


def pair_route(dtls: RTCDtlsTransport) -> Route | None:
    """The nominated ICE pair's socket, when it is one of ours (a host or server-reflexive
    candidate); None for a relay or when aioice's internals moved."""
    try:
        pair = dtls.transport._connection._nominated[1]
        transport = pair.protocol.transport
        sock = transport.get_extra_info("socket")
        remote = pair.remote_addr
    except (AttributeError, KeyError):
        return None
    if sock is None or sock.type != socket.SOCK_DGRAM or pair.local_candidate.type == "relay":
        return None
    return Route(sock, transport, remote)


def send_unfragmented(dtls: RTCDtlsTransport, route: Route, packet: bytes) -> bool | None:
    """Send `packet` as `send_packet` does, on the pair's socket itself with Don't Fragment set
    for this datagram only. True: it left, or the kernel refused it as larger than the first
    hop (lost, as a path would lose it); None: not now, nothing sent (datagrams wait in the
    transport ahead of it, or the socket's buffer is full: through the transport it would have
    waited, and left later without Don't Fragment); False: the socket takes no such option."""
    if route.transport.get_write_buffer_size():
        return None
    level, option = (
        (socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER)
        if route.sock.family == socket.AF_INET6
        else (socket.IPPROTO_IP, IP_MTU_DISCOVER)
    )
    with socket.socket(fileno=socket.dup(route.sock.fileno())) as sock:  # the same socket
        try:
            default = sock.getsockopt(level, option)
            sock.setsockopt(level, option, PMTUDISC_DO)
        except OSError:
            return False
        try:
            record = seal(dtls, packet)
            try:
                sock.sendto(record, route.remote)
            except BlockingIOError:
                return None
            except OSError:
                pass  # EMSGSIZE: too large for the first hop; lost, and the search says so
            _count(dtls, [record])
            return True
        finally:
            sock.setsockopt(level, option, default)


def whole_packet(dtls: RTCDtlsTransport, data: bytes) -> bytes:
    """`data` as the stock receive path read it from one record, with the rest of that record
    (which OpenSSL holds for the next read) when it filled the stock read."""
    ssl = dtls._ssl
    if len(data) != STOCK_READ or ssl is None:
        return data
    rest = ssl.pending()  # what is left of the current record, never the next one
    return data + ssl.recv(rest) if rest else data
