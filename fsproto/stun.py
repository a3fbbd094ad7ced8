"""A small STUN/TURN client (RFC 8489/8656) over UDP, TCP or TLS: enough to see that a coturn
answers (Binding), and to check what it grants (Allocate, CreatePermission) with the TURN REST
credentials the signaling servers hand out. Synchronous and dependency-free so that it runs
anywhere, including inside a test namespace as `python -m turn probe`.

A CreatePermission is a request to the server only: asking for a peer sends nothing to it.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

MAGIC_COOKIE: Final = 0x2112A442
HEADER: Final = struct.Struct("!HHI12s")

BINDING: Final = 0x001
ALLOCATE: Final = 0x003
REFRESH: Final = 0x004
CREATE_PERMISSION: Final = 0x008

REQUEST, SUCCESS, ERROR = 0b00, 0b10, 0b11

MAPPED_ADDRESS: Final = 0x0001
CHANGE_REQUEST: Final = 0x0003  # RFC 5780: answer from the other address and/or port
USERNAME: Final = 0x0006
MESSAGE_INTEGRITY: Final = 0x0008
ERROR_CODE: Final = 0x0009
LIFETIME: Final = 0x000D
XOR_PEER_ADDRESS: Final = 0x0012
REALM: Final = 0x0014
NONCE: Final = 0x0015
XOR_RELAYED_ADDRESS: Final = 0x0016
REQUESTED_ADDRESS_FAMILY: Final = 0x0017
REQUESTED_TRANSPORT: Final = 0x0019
XOR_MAPPED_ADDRESS: Final = 0x0020
SOFTWARE: Final = 0x8022
FINGERPRINT: Final = 0x8028
RESPONSE_ORIGIN: Final = 0x802B
OTHER_ADDRESS: Final = 0x802C
CHANGE_IP: Final = 0x04
CHANGE_PORT: Final = 0x02

UDP_PROTOCOL: Final = 17
Address = tuple[str, int]
Attribute = tuple[int, bytes]


class StunError(Exception):
    """No usable answer (timeout, connection refused, malformed or unauthenticated reply)."""


class TurnError(Exception):
    """The server answered with an error response."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


def _message_type(method: int, cls: int) -> int:
    return (
        (method & 0x0F80) << 2
        | (method & 0x0070) << 1
        | (method & 0x000F)
        | (cls & 0b10) << 7
        | (cls & 0b01) << 4
    )


def _split_type(value: int) -> tuple[int, int]:
    method = (value & 0x3E00) >> 2 | (value & 0x00E0) >> 1 | (value & 0x000F)
    cls = (value & 0x0100) >> 7 | (value & 0x0010) >> 4
    return method, cls


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _xor_address(value: bytes, tid: bytes) -> Address:
    family = value[1]
    port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC_COOKIE >> 16)
    mask = struct.pack("!I", MAGIC_COOKIE) + (tid if family == 2 else b"")
    raw = bytes(a ^ b for a, b in zip(value[4:], mask, strict=False))
    return str(ipaddress.ip_address(raw[: 4 if family == 1 else 16])), port


def xor_address(address: Address, tid: bytes) -> bytes:
    ip = ipaddress.ip_address(address[0])
    mask = struct.pack("!I", MAGIC_COOKIE) + (tid if ip.version == 6 else b"")
    raw = bytes(a ^ b for a, b in zip(ip.packed, mask, strict=False))
    family = 1 if ip.version == 4 else 2
    return struct.pack("!BBH", 0, family, address[1] ^ (MAGIC_COOKIE >> 16)) + raw


def _plain_address(value: bytes) -> Address:
    family, port = value[1], struct.unpack("!H", value[2:4])[0]
    return str(ipaddress.ip_address(value[4 : 8 if family == 1 else 20])), port


@dataclass
class Message:
    method: int
    cls: int
    tid: bytes = field(default_factory=lambda: os.urandom(12))
    attributes: list[Attribute] = field(default_factory=list)

    def add(self, kind: int, value: bytes) -> Message:
        self.attributes.append((kind, value))
        return self

    def get(self, kind: int) -> bytes | None:
        return next((v for k, v in self.attributes if k == kind), None)

    def encode(self, key: bytes | None = None, fingerprint: bool = True) -> bytes:
        """Serialise; with `key`, add MESSAGE-INTEGRITY (long-term key), then FINGERPRINT."""
        body = b"".join(
            struct.pack("!HH", k, len(v)) + _pad(v)
            for k, v in self.attributes
            if k not in (MESSAGE_INTEGRITY, FINGERPRINT)
        )
        kind = _message_type(self.method, self.cls)
        if key is not None:
            head = HEADER.pack(kind, len(body) + 24, MAGIC_COOKIE, self.tid)
            mac = hmac.new(key, head + body, hashlib.sha1).digest()
            body += struct.pack("!HH", MESSAGE_INTEGRITY, 20) + mac
        if fingerprint:
            head = HEADER.pack(kind, len(body) + 8, MAGIC_COOKIE, self.tid)
            crc = (binascii.crc32(head + body) ^ 0x5354554E) & 0xFFFFFFFF
            body += struct.pack("!HHI", FINGERPRINT, 4, crc)
        return HEADER.pack(kind, len(body), MAGIC_COOKIE, self.tid) + body

    def error(self) -> TurnError | None:
        value = self.get(ERROR_CODE)
        if self.cls != ERROR:
            return None
        if value is None or len(value) < 4:
            return TurnError(0, "error response without ERROR-CODE")
        return TurnError((value[2] & 7) * 100 + value[3], value[4:].decode("utf-8", "replace"))

    def address(self, kind: int) -> Address | None:
        value = self.get(kind)
        if value is None:
            return None
        try:
            if kind in (MAPPED_ADDRESS, OTHER_ADDRESS, RESPONSE_ORIGIN):
                return _plain_address(value)
            return _xor_address(value, self.tid)
        except (ValueError, IndexError, struct.error) as exc:
            raise StunError(f"malformed address attribute 0x{kind:04x}") from exc


def decode(data: bytes, key: bytes | None = None) -> Message:
    """Parse one message; with `key`, insist on a valid MESSAGE-INTEGRITY."""
    if len(data) < HEADER.size:
        raise StunError("short STUN message")
    kind, length, cookie, tid = HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE or kind & 0xC000 or HEADER.size + length > len(data):
        raise StunError("not a STUN message")
    method, cls = _split_type(kind)
    message = Message(method, cls, tid)
    offset, end = HEADER.size, HEADER.size + length
    while offset + 4 <= end:
        attr, size = struct.unpack_from("!HH", data, offset)
        value = data[offset + 4 : offset + 4 + size]
        if attr == MESSAGE_INTEGRITY and key is not None:
            head = HEADER.pack(kind, offset + 24 - HEADER.size, MAGIC_COOKIE, tid)
            mac = hmac.new(key, head + data[HEADER.size : offset], hashlib.sha1).digest()
            if not hmac.compare_digest(mac, value):
                raise StunError("response with a wrong MESSAGE-INTEGRITY")
            key = None
        message.add(attr, value)
        offset += 4 + size + (-size % 4)
    if key is not None and cls in (SUCCESS, ERROR) and message.get(REALM) is None:
        # A success (or a non-challenge error) must prove the server knows the secret.
        raise StunError("response without MESSAGE-INTEGRITY")
    return message


def answer(data: bytes, tid: bytes) -> Message | None:
    """`data` as a message of transaction `tid`, or None (malformed, or another's): what a
    probe that drops everything else keeps."""
    try:
        message = decode(data)
    except (StunError, struct.error):
        return None
    return message if message.tid == tid else None


def long_term_key(username: str, realm: str, password: str) -> bytes:
    return hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).digest()


class Connection:
    """One client transport to one server: UDP with retransmissions, or a TCP/TLS stream."""

    def __init__(
        self,
        server: Address,
        transport: str = "udp",
        timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"unknown transport {transport!r}")
        self.server, self.transport, self.timeout = server, transport, timeout
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        if transport == "udp":
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            self.sock.connect(server)
            return
        try:
            raw = socket.create_connection(server, timeout=timeout)
        except OSError as exc:
            raise StunError(f"cannot connect to {server[0]}:{server[1]}: {exc}") from exc
        if transport == "tls":
            context = tls or ssl.create_default_context()
            try:
                raw = context.wrap_socket(raw, server_hostname=server_hostname or server[0])
            except (OSError, ssl.SSLError) as exc:
                raw.close()
                raise StunError(f"TLS to {server[0]}:{server[1]} failed: {exc}") from exc
        self.sock = raw

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_stream(self, deadline: float) -> bytes:
        def exactly(count: int) -> bytes:
            data = b""
            while len(data) < count:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.sock.recv(count - len(data))
                if not chunk:
                    raise StunError("server closed the connection")
                data += chunk
            return data

        head = exactly(HEADER.size)
        return head + exactly(struct.unpack("!H", head[2:4])[0])

    def request(self, message: Message, key: bytes | None = None) -> Message:
        """Send and wait for the answer with the same transaction id (retransmitting on UDP)."""
        data = message.encode(key)
        deadline = time.monotonic() + self.timeout
        rto = 0.1
        try:
            self.sock.sendall(data)
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise StunError(f"no answer from {self.server[0]}:{self.server[1]}")
                if self.transport == "udp":
                    self.sock.settimeout(min(rto, deadline - now))
                    try:
                        reply = self.sock.recv(4096)
                    except TimeoutError:
                        rto = min(rto * 2, 1.0)
                        self.sock.sendall(data)
                        continue
                else:
                    reply = self._read_stream(deadline)
                try:
                    answer = decode(reply, key)
                except StunError:
                    if self.transport != "udp":
                        raise
                    continue
                if answer.tid == message.tid and answer.method == message.method:
                    return answer
        except TimeoutError as exc:
            raise StunError(f"no answer from {self.server[0]}:{self.server[1]}") from exc
        except ConnectionRefusedError as exc:
            raise StunError(f"nothing listens on {self.server[0]}:{self.server[1]}") from exc


def binding(connection: Connection) -> Message:
    """A Binding request; the success response (XOR-MAPPED-ADDRESS, OTHER-ADDRESS with 5780)."""
    answer = connection.request(Message(BINDING, REQUEST))
    error = answer.error()
    if error is not None:
        raise error
    return answer


class TurnClient:
    """One allocation with the long-term (TURN REST) credential mechanism."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.key: bytes | None = None
        self.auth: list[Attribute] = []
        self.relayed: Address | None = None

    def _signed(self, method: int, attributes: Callable[[bytes], list[Attribute]]) -> Message:
        """Send with USERNAME/REALM/NONCE and integrity; a stale nonce (438) is renewed once.
        `attributes` gets the transaction id (XOR-PEER-ADDRESS depends on it)."""
        if self.key is None:
            raise StunError("no allocation")
        for _ in range(2):
            request = Message(method, REQUEST)
            request.attributes = [*attributes(request.tid), *self.auth]
            answer = self.connection.request(request, self.key)
            error = answer.error()
            nonce = answer.get(NONCE)
            if error is not None and error.code == 438 and nonce is not None:
                self.auth = [(k, nonce if k == NONCE else v) for k, v in self.auth]
                continue
            if error is not None:
                raise error
            return answer
        raise TurnError(438, "stale nonce twice")

    def allocate(self, username: str, password: str, family: int = 4) -> Address:
        """Allocate a UDP relay (IPv6 with `family=6`); TurnError 401 if the server refuses the
        credential."""
        base: list[Attribute] = [(REQUESTED_TRANSPORT, struct.pack("!B3x", UDP_PROTOCOL))]
        if family == 6:
            base.append((REQUESTED_ADDRESS_FAMILY, struct.pack("!B3x", 2)))
        challenge = self.connection.request(Message(ALLOCATE, REQUEST, attributes=list(base)))
        error = challenge.error()
        realm, nonce = challenge.get(REALM), challenge.get(NONCE)
        if error is None or error.code != 401 or realm is None or nonce is None:
            raise error or StunError("server allocated without asking for credentials")
        self.key = long_term_key(username, realm.decode(), password)
        self.auth = [(USERNAME, username.encode()), (REALM, realm), (NONCE, nonce)]
        answer = self._signed(ALLOCATE, lambda _: base)
        self.relayed = answer.address(XOR_RELAYED_ADDRESS)
        if self.relayed is None:
            raise StunError("allocation without XOR-RELAYED-ADDRESS")
        return self.relayed

    def create_permission(self, peer: str) -> None:
        """Ask for a permission towards `peer` (no packet goes to it); TurnError 403 if the
        server refuses the peer."""
        self._signed(
            CREATE_PERMISSION, lambda tid: [(XOR_PEER_ADDRESS, xor_address((peer, 9), tid))]
        )

    def refresh(self, lifetime: int) -> int:
        """Ask for `lifetime` more seconds of the allocation; returns the lifetime granted
        (TurnError if the server refuses, e.g. 401 for a credential it no longer accepts)."""
        answer = self._signed(REFRESH, lambda _: [(LIFETIME, struct.pack("!I", lifetime))])
        granted = answer.get(LIFETIME)
        return struct.unpack("!I", granted)[0] if granted is not None else 0

    def release(self) -> None:
        """Refresh with lifetime 0: the server frees the allocation at once."""
        if self.relayed is not None:
            self.relayed = None
            self.refresh(0)
