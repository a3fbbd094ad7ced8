"""End-to-end keys: a PAKE over the share code, bound to ephemeral X25519 and to both DTLS
fingerprints, then HKDF-separated keys per direction and per file for ChaCha20-Poly1305.

The signaling server relays every handshake message but never sees the code, so it can neither
learn the keys nor swap a public key or an SDP fingerprint without both peers noticing: each
peer's confirmation MAC covers the whole transcript as that peer saw it.
No I/O here: the handshake takes the peer's messages and returns its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import nacl.bindings as sodium
import nacl.exceptions
import nacl.public
import nacl.utils
from spake2 import SPAKE2_A, SPAKE2_B  # type: ignore[import-untyped]
from spake2.spake2 import SPAKEError  # type: ignore[import-untyped]

from fileshare.wordlist import WORDS
from fsproto.schema import RUN_ID_CHARS

Role = Literal["sender", "receiver"]
PROTOCOL: Final = b"fileshare-v1"
KEY_BYTES: Final = 32
TAG_BYTES: Final = sodium.crypto_aead_chacha20poly1305_ietf_ABYTES


class AuthenticationFailed(Exception):
    """The peer did not prove knowledge of the code, or a handshake message was altered.
    `from_peer`: the other side found it and told us (we need not tell it back)."""

    code = "authentication_failed"

    def __init__(self, detail: str = "", from_peer: bool = False) -> None:
        super().__init__(
            "authentication failed: wrong code, or someone tampered with the connection"
            + (f" ({detail})" if detail else "")
        )
        self.from_peer = from_peer


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """RFC 5869 HKDF with SHA-256."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _frame(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: no two different part lists encode alike."""
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, size: int | None = None) -> bytes:
    if not isinstance(text, str):
        raise AuthenticationFailed("malformed handshake message")
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:
        raise AuthenticationFailed("malformed handshake message") from None
    if size is not None and len(data) != size:
        raise AuthenticationFailed("malformed handshake message")
    return data


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """What a completed handshake yields; `sas` is what both users may compare aloud."""

    secret: bytes
    transcript: bytes
    sas: str

    def file_key(self, direction: Role, file_id: bytes) -> bytes:
        """One key per file and direction: chunk indexes as nonces then never repeat under a key."""
        return hkdf_sha256(self.secret, file_id, b"file key from " + direction.encode())

    def confirmation(self, role: Role, offer_fp: str, answer_fp: str, epoch: int) -> bytes:
        """MAC over the transcript and the DTLS fingerprints of this connection (`epoch` counts
        reconnections, so each new peer connection is authenticated afresh)."""
        key = hkdf_sha256(self.secret, b"", b"confirm")
        data = _frame(
            role.encode(),
            self.transcript,
            offer_fp.encode(),
            answer_fp.encode(),
            struct.pack(">Q", epoch),
        )
        return hmac.new(key, data, hashlib.sha256).digest()


class Handshake:
    """SPAKE2 (code) + X25519 (forward secrecy), each side sending one `hello` message."""

    def __init__(self, role: Role, code_secret: bytes, session_id: str) -> None:
        self.role = role
        self._session_id = session_id.encode()
        pake_class = SPAKE2_A if role == "sender" else SPAKE2_B
        self._pake = pake_class(code_secret, idA=b"fileshare sender", idB=b"fileshare receiver")
        self._pake_msg: bytes = self._pake.start()
        self._dh = nacl.public.PrivateKey.generate()
        self.keys: SessionKeys | None = None

    def hello(self, to: str | None = None) -> dict[str, str]:
        """`to`: the peer's run this hello is for (see hello_is_current), if the server told it."""
        hello = {
            "kind": "hello",
            "pake": _b64(self._pake_msg),
            "x25519": _b64(bytes(self._dh.public_key)),
        }
        return hello if to is None else {**hello, "to": to}

    def on_hello(self, payload: Mapping[str, object]) -> SessionKeys:
        peer_pake = _unb64(payload.get("pake"))
        peer_x = _unb64(payload.get("x25519"), 32)
        try:
            pake_key: bytes = self._pake.finish(peer_pake)
            dh = sodium.crypto_scalarmult(bytes(self._dh), peer_x)
        except (SPAKEError, ValueError, nacl.exceptions.RuntimeError, TypeError):
            raise AuthenticationFailed("malformed handshake message") from None
        except Exception as exc:  # spake2 raises its own (NotOnCurve, …) for a bad point
            raise AuthenticationFailed(f"bad PAKE message ({type(exc).__name__})") from None
        mine_x = bytes(self._dh.public_key)
        if self.role == "sender":
            msgs = (self._pake_msg, peer_pake, mine_x, peer_x)
        else:
            msgs = (peer_pake, self._pake_msg, peer_x, mine_x)
        transcript = hashlib.sha256(_frame(PROTOCOL, self._session_id, *msgs)).digest()
        secret = hkdf_sha256(pake_key + dh, transcript, b"session key")
        sas = short_authentication_string(hkdf_sha256(secret, b"", b"sas", 4))
        self.keys = SessionKeys(secret, transcript, sas)
        return self.keys


_RUN_ID: Final = re.compile(f"[0-9a-f]{{{RUN_ID_CHARS}}}")


def hello_is_current(hello: Mapping[str, object], run: str | None, peer_run: str | None) -> bool:
    """Whether a peer's hello is for this run of ours (`run`: the signaling server's run ids,
    ours and the peer's). One addressed (`to`) to another run was meant for a run of ours that
    is over: relayed just before we restarted, it reached the new one. It is dropped before the
    PAKE, where it would fail authentication under keys the peer has dropped too; its hello
    for this run follows. A hello without `to` (a peer that predates run ids) is taken, as is
    any while we know no run of ours (a server that gives none). A `to` that is not a run id,
    or that names the peer's own run (our hello reflected to us), is a forgery."""
    if "to" not in hello:
        return True
    to = hello["to"]
    if not isinstance(to, str) or not _RUN_ID.fullmatch(to):
        raise AuthenticationFailed("malformed handshake message")
    if to == run:
        return True
    if to == peer_run:
        raise AuthenticationFailed("a hello addressed to its own sender")
    return run is None


def check_confirmation(
    keys: SessionKeys, peer_role: Role, mac: object, offer_fp: str, answer_fp: str, epoch: int
) -> None:
    expected = keys.confirmation(peer_role, offer_fp, answer_fp, epoch)
    if not hmac.compare_digest(expected, _unb64(mac, 32)):
        raise AuthenticationFailed()


def confirmation_message(
    keys: SessionKeys, role: Role, offer_fp: str, answer_fp: str, epoch: int
) -> dict[str, str]:
    return {"kind": "confirm", "mac": _b64(keys.confirmation(role, offer_fp, answer_fp, epoch))}


def _signal_key(keys: SessionKeys, role: Role) -> bytes:
    return hkdf_sha256(keys.secret, b"", b"session description from " + role.encode())


def seal_description(keys: SessionKeys, role: Role, epoch: int, sdp: str) -> str:
    """An SDP (addresses, candidates, fingerprints) sealed under the PAKE's key: a joiner with a
    wrong code, or the signaling server, learns nothing of this side's addresses."""
    nonce = nacl.utils.random(12)
    aad = role.encode() + struct.pack(">Q", epoch)
    sealed = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
        sdp.encode(), aad, nonce, _signal_key(keys, role)
    )
    return _b64(nonce + sealed)


def open_description(keys: SessionKeys, peer_role: Role, epoch: int, sealed: object) -> str:
    """The peer's SDP; AuthenticationFailed if it was not sealed under the same key."""
    data = _unb64(sealed)
    aad = peer_role.encode() + struct.pack(">Q", epoch)
    try:
        sdp = sodium.crypto_aead_chacha20poly1305_ietf_decrypt(
            data[12:], aad, data[:12], _signal_key(keys, peer_role)
        )
        return sdp.decode()
    except (nacl.exceptions.CryptoError, ValueError):
        raise AuthenticationFailed("the session description is not sealed under our key") from None


def short_authentication_string(data: bytes) -> str:
    """Four words people can read to each other: 32 bits from the session key."""
    value = int.from_bytes(data[:4], "big")
    words = []
    for _ in range(4):
        words.append(WORDS[value % len(WORDS)])
        value //= len(WORDS)
    return " ".join(words)


def chunk_nonce(index: int) -> bytes:
    return bytes(4) + struct.pack(">Q", index)


def chunk_aad(file_id: bytes, index: int, manifest_digest: bytes) -> bytes:
    return file_id + struct.pack(">I", index) + manifest_digest


def seal_chunk(
    key: bytes, file_id: bytes, index: int, manifest_digest: bytes, data: bytes
) -> bytes:
    return sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
        data, chunk_aad(file_id, index, manifest_digest), chunk_nonce(index), key
    )


def open_chunk(
    key: bytes, file_id: bytes, index: int, manifest_digest: bytes, sealed: bytes
) -> bytes:
    """Decrypt and authenticate one chunk; raises nacl.exceptions.CryptoError if tampered."""
    return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(
        sealed, chunk_aad(file_id, index, manifest_digest), chunk_nonce(index), key
    )


def _ticket_key(code_secret: bytes, session_id: str) -> bytes:
    return hkdf_sha256(code_secret, session_id.encode(), b"reconnect ticket")


def seal_ticket(code_secret: bytes, session_id: str, data: bytes) -> bytes:
    """Encrypt what a restarted process needs to rejoin. `code_secret` must hold more than the
    code (the app passes this installation's random ticket key too): 24 bits alone fall to an
    offline search of a copied state database."""
    nonce = nacl.utils.random(12)
    key = _ticket_key(code_secret, session_id)
    return nonce + sodium.crypto_aead_chacha20poly1305_ietf_encrypt(data, None, nonce, key)


def open_ticket(code_secret: bytes, session_id: str, sealed: bytes) -> bytes | None:
    key = _ticket_key(code_secret, session_id)
    try:
        return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(sealed[12:], None, sealed[:12], key)
    except (nacl.exceptions.CryptoError, ValueError):
        return None
