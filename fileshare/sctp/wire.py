"""How this layer's SCTP packets leave: one DTLS record each, read whole from OpenSSL and sent
on the ICE pair, and the pair's socket told not to fragment while larger packets are probed.
The records one `_transmit` produces leave together (`send_records`): runs of equal-size
datagrams in one `sendmsg` with UDP_SEGMENT (GSO) on the pair's own socket, where one
`sendto` each cost the sender a sixth of its time; per datagram through aioice when the pair is
a relay, the transport holds unsent data, or the kernel refuses.

aiortc's `RTCDtlsTransport._write_ssl` reads at most 1,500 bytes of ciphertext per datagram: a
record of a packet larger than 1,463 bytes would leave in two datagrams (a broken record and a
stray tail). Packets up to `plpmtu.CEILING` are therefore encrypted and sent here, with the
stock transport's own state and counters (pinned in `fileshare.sctp`).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from struct import pack
from typing import Any

from aiortc.rtcdtlstransport import RTCDtlsTransport, State

RECORD_MAX = 2**14 + 256  # one DTLS record of at most 16 KiB of plaintext, with its overhead
# Linux <netinet/in.h>; Python's socket module names them on few builds.
IP_MTU_DISCOVER, IPV6_MTU_DISCOVER = 10, 23
PMTUDISC_WANT, PMTUDISC_DO = 1, 2  # the same values for IPv4 and IPv6
UDP_SEGMENT = 103  # <linux/udp.h>
GSO_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
GSO_BYTES = 65000  # under the 64 KiB an IP datagram can carry before segmentation


def encrypt(dtls: RTCDtlsTransport, packet: bytes) -> bytes:
    """`packet` as one DTLS record (stock `_send_data`, the whole record read from OpenSSL)."""
    ssl = dtls._ssl
    if dtls._state != State.CONNECTED or ssl is None:
        raise ConnectionError("Cannot send encrypted data, not connected")
    ssl.send(packet)
    record: bytes = ssl.bio_read(RECORD_MAX)
    return record


async def send_packet(dtls: RTCDtlsTransport, packet: bytes) -> None:
    """Encrypt `packet` and send it as one datagram."""
    await send_records(dtls, [encrypt(dtls, packet)])


def gso_groups(records: list[bytes]) -> Iterator[list[bytes]]:
    """`records` in order, cut into what one UDP_SEGMENT send can carry: equal sizes, the last
    perhaps shorter, at most GSO_SEGMENTS and GSO_BYTES."""
    group: list[bytes] = []
    for record in records:
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


async def send_records(dtls: RTCDtlsTransport, records: list[bytes]) -> None:
    """Send DTLS records in order, as few system calls as the pair allows."""
    direct = _direct(dtls) if len(records) > 1 else None
    for group in gso_groups(records) if direct is not None else [[r] for r in records]:
        if len(group) == 1 or direct is None or not _sendmsg(direct, group):
            for record in group:
                await dtls.transport._send(record)
    stats: Any = dtls
    stats._RTCDtlsTransport__tx_bytes += sum(len(r) for r in records)
    stats._RTCDtlsTransport__tx_packets += len(records)


Direct = tuple[Any, tuple[Any, ...]]  # the pair's socket, the peer's address


def _direct(dtls: RTCDtlsTransport) -> Direct | None:
    """The pair's socket and the peer's address, when datagrams may bypass the transport:
    not a relay, nothing queued in it (its queue goes first)."""
    sock = pair_socket(dtls)
    if sock is None:
        return None
    pair = dtls.transport._connection._nominated[1]
    transport: Any = pair.protocol.transport  # asyncio's and uvloop's have the method
    if transport.get_write_buffer_size():
        return None
    return sock, pair.remote_addr


def _sendmsg(direct: Direct, group: list[bytes]) -> bool:
    """One GSO send of `group` on the pair's descriptor (uvloop's socket stand-in has no
    `sendmsg`); False if the kernel did not take it (then nothing was sent)."""
    sock, address = direct
    raw = socket.socket(sock.family, socket.SOCK_DGRAM, 0, sock.fileno())
    try:
        segment = pack("@H", len(group[0]))
        raw.sendmsg([b"".join(group)], [(socket.SOL_UDP, UDP_SEGMENT, segment)], 0, address)
    except OSError:
        return False
    finally:
        raw.detach()  # the descriptor stays aioice's
    return True


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


def set_dont_fragment(sock: Any, on: bool) -> bool:
    """Set or clear Don't Fragment on `sock` (a probe must not pass as IP fragments; after a
    black hole, larger packets already cut into chunks need fragmentation to get through)."""
    level, option = (
        (socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER)
        if sock.family == socket.AF_INET6
        else (socket.IPPROTO_IP, IP_MTU_DISCOVER)
    )
    try:
        sock.setsockopt(level, option, PMTUDISC_DO if on else PMTUDISC_WANT)
    except OSError:
        return False
    return True
