"""One SCTP packet into one DTLS record and back, through OpenSSL's own calls.

pyOpenSSL wraps each call in Python: a fresh buffer, a text check, `SSL_get_error` and three
callback checks even on success. Sealing a 1,432-byte packet and opening it took 9.9-12.1 µs
that way and 4.8-5.3 µs calling OpenSSL through pyOpenSSL's own cffi bindings with one buffer:
about 5 % of the engine's CPU at 1,500-byte packets (README, seventh pass). Failures still
go through pyOpenSSL's error mapping, so callers see the same exceptions
(`SSL.WantReadError`, `SSL.ZeroReturnError`, `SSL.Error`).

This relies on pyOpenSSL's private `_ssl`, `_from_ssl`, `_into_ssl` and error helpers, so it is
pinned (`PYOPENSSL_VERSION`, `PINNED_SOURCES`); where they moved, `install` keeps pyOpenSSL's
public calls (slower, same results) rather than refuse to run: nothing else here depends on it.
"""

from __future__ import annotations

from typing import Any

import OpenSSL
from OpenSSL import SSL
from OpenSSL._util import ffi, lib

from fileshare import pinned

PYOPENSSL_VERSION = "26.4.0"
# sha256 of inspect.getsource() in PYOPENSSL_VERSION: the calls done here in their place, and
# the error helpers called as they call them.
PINNED_SOURCES = {
    "send": "3a17d0bf025164cfbbc909c7362fdeb27d1e9f135f3ebaf9ce4376fe5e198625",
    "recv": "84b0e9671ae37797ed9604ca3e0001a20882bd7d0051e26a1f4df66aaef06ef4",
    "bio_read": "bc83763ed40fc664a3015c30cdd5c5eb65d73cc09783f9686af0d814280825b3",
    "bio_write": "2198d63b78ada6dcd59c1e6d6f1b0d80b8f484637acd7633eb14f8d392f6a2a4",
    "_raise_ssl_error": "04b0d7964c73ea9eb7948883b2bd1c1d7d188ca9b5826f73f339de781868b18f",
    "_handle_bio_errors": "eaea77f2e1fab12efa994b7249e5b49a82743dcbc25a9cc4d36af8b667b8af20",
}
RECORD_MAX = 2**14 + 256  # one DTLS record of at most 16 KiB of plaintext, with its overhead

_buffer = ffi.new("char[]", RECORD_MAX)  # one per process: each call copies out before returning


def _seal_direct(ssl: Any, packet: bytes) -> bytes:
    written = lib.SSL_write(ssl._ssl, packet, len(packet))
    if written <= 0:
        ssl._raise_ssl_error(ssl._ssl, written)
    size = lib.BIO_read(ssl._from_ssl, _buffer, RECORD_MAX)
    if size <= 0:
        ssl._handle_bio_errors(ssl._from_ssl, size)
    return bytes(ffi.buffer(_buffer, size))


def _open_direct(ssl: Any, record: bytes) -> bytes:
    written = lib.BIO_write(ssl._into_ssl, record, len(record))
    if written <= 0:
        ssl._handle_bio_errors(ssl._into_ssl, written)
    size = lib.SSL_read(ssl._ssl, _buffer, RECORD_MAX)
    if size <= 0:
        ssl._raise_ssl_error(ssl._ssl, size)
    return bytes(ffi.buffer(_buffer, size))


def _seal_public(ssl: SSL.Connection, packet: bytes) -> bytes:
    ssl.send(packet)
    return ssl.bio_read(RECORD_MAX)


def _open_public(ssl: SSL.Connection, record: bytes) -> bytes:
    ssl.bio_write(record)
    return ssl.recv(RECORD_MAX)


seal = _seal_public
"""`packet` as one DTLS record (what OpenSSL wrote for it: one datagram's worth)."""
open_record = _open_public
"""The plaintext of the one record in `record` (a datagram); raises as pyOpenSSL does."""


def functions() -> dict[str, Any]:
    return {name: getattr(SSL.Connection, name) for name in PINNED_SOURCES}


def install(version: str = OpenSSL.__version__) -> bool:
    """OpenSSL's calls directly if pyOpenSSL is the pinned release, unchanged; True if so."""
    global seal, open_record
    try:
        pinned.check(__name__, "pyOpenSSL", PYOPENSSL_VERSION, version, functions(), PINNED_SOURCES)
    except pinned.IncompatibleDependency:
        seal, open_record = _seal_public, _open_public
        return False
    seal, open_record = _seal_direct, _open_direct
    return True
