"""The protocol's chunk sizes, apart from the protocol: the CLI's parser offers them, and it must
not pay for the crypto and WebRTC imports to print its help.

A chunk is one message of 16 to 256 KiB (aiortc's limit is 262144) with its header and tag. Only
these sizes are accepted, so a peer cannot make a bitmap bit stand for one byte.
"""

from __future__ import annotations

import struct
from typing import Final

HEADER: Final = struct.Struct(">16sI")  # file id, chunk index
TAG_BYTES: Final = 16  # ChaCha20-Poly1305 (RFC 8439); tests/test_crypto.py checks libsodium agrees
CHUNK_SIZES: Final = tuple(
    kib * 1024 - HEADER.size - TAG_BYTES for kib in (16, 32, 64, 128, 192, 256)
)
CHUNK_SIZE: Final = CHUNK_SIZES[2]  # the default: one 64 KiB message per chunk
