"""How this layer's SCTP packets leave and arrive: one DTLS record each, read whole from OpenSSL
and sent on the ICE pair; a path MTU probe leaves with Don't Fragment set, so only an
unfragmented path can confirm its size (data keeps the socket's default: fragmented rather than
lost should the path shrink later).

aiortc's `RTCDtlsTransport._write_ssl` reads at most 1,500 bytes of ciphertext per datagram: a
record of a packet larger than 1,463 bytes would leave in two datagrams (a broken record and a
stray tail). Packets up to `plpmtu.CEILING` are therefore encrypted and sent here, with the
stock transport's own state and counters (pinned in `fileshare.sctp`). On arrival, the stock
`_recv_next` reads 1,500 bytes of plaintext; `whole_packet` takes the rest of a larger record,
so this side can say it reads records whole (`association.RECORDS_PARAM`).
"""

from __future__ import annotations

import socket
from typing import Any

from aiortc.rtcdtlstransport import RTCDtlsTransport, State

from fileshare.sctp import records

STOCK_READ = 1500  # plaintext bytes aiortc's RTCDtlsTransport._recv_next reads per record
# Linux <netinet/in.h>; Python's socket module names them on few builds.
IP_MTU_DISCOVER, IPV6_MTU_DISCOVER = 10, 23
PMTUDISC_DO = 2  # the same value for IPv4 and IPv6


async def send_packet(dtls: RTCDtlsTransport, packet: bytes) -> None:
    """Encrypt `packet` as one record and send it as one datagram (stock `_send_data`, with
    the whole record read from OpenSSL's buffer)."""
    ssl = dtls._ssl
    if dtls._state != State.CONNECTED or ssl is None:
        raise ConnectionError("Cannot send encrypted data, not connected")
    record = records.seal(ssl, packet)
    await dtls.transport._send(record)
    stats: Any = dtls
    stats._RTCDtlsTransport__tx_bytes += len(record)
    stats._RTCDtlsTransport__tx_packets += 1


def pair_socket(dtls: RTCDtlsTransport) -> Any | None:
    """The UDP socket of the nominated ICE pair, when it is one of ours (a host or
    server-reflexive candidate); None for a relay or when aioice's internals moved."""
    try:
        pair = dtls.transport._connection._nominated[1]
        sock = pair.protocol.transport.get_extra_info("socket")
    except (AttributeError, KeyError):
        return None
    if sock is None or sock.type != socket.SOCK_DGRAM or pair.local_candidate.type == "relay":
        return None
    return sock


async def send_unfragmented(dtls: RTCDtlsTransport, sock: Any, packet: bytes) -> bool:
    """Send `packet` as `send_packet` does, with Don't Fragment set on `sock` (the pair's) for
    this datagram only; False (nothing sent) if the socket takes no such option."""
    level, option = (
        (socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER)
        if sock.family == socket.AF_INET6
        else (socket.IPPROTO_IP, IP_MTU_DISCOVER)
    )
    try:
        default = sock.getsockopt(level, option)
        sock.setsockopt(level, option, PMTUDISC_DO)
    except OSError:
        return False
    try:
        await send_packet(dtls, packet)  # a datagram too large for the path fails here
    finally:
        sock.setsockopt(level, option, default)
    return True


def whole_packet(dtls: RTCDtlsTransport, data: bytes) -> bytes:
    """`data` as the stock receive path read it from one record, with the rest of that record
    (which OpenSSL holds for the next read) when it filled the stock read."""
    ssl = dtls._ssl
    if len(data) != STOCK_READ or ssl is None:
        return data
    rest = ssl.pending()  # what is left of the current record, never the next one
    return data + ssl.recv(rest) if rest else data
