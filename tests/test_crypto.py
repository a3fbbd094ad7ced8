"""Crypto: published test vectors for the primitives, and the authenticated handshake."""

from __future__ import annotations

import nacl.bindings as sodium
import nacl.exceptions
import pytest

from fileshare import chunks, crypto
from fileshare.crypto import AuthenticationFailed, Handshake


def test_hkdf_rfc5869_case_1() -> None:
    okm = crypto.hkdf_sha256(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_rfc5869_case_3_empty_salt_and_info() -> None:
    okm = crypto.hkdf_sha256(bytes.fromhex("0b" * 22), b"", b"", 42)
    assert okm.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def test_chacha20_poly1305_rfc8439_2_8_2() -> None:
    plaintext = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
        b"future, sunscreen would be it."
    )
    key = bytes(range(0x80, 0xA0))
    nonce = bytes.fromhex("070000004041424344454647")
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    sealed = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    assert sealed[-16:].hex() == "1ae10b594f09e26a7e902ecbd0600691"
    assert sealed[:16].hex() == "d31a8d34648e60db7b86afbc53ef7ec2"


def test_x25519_rfc7748_5_2() -> None:
    scalar = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    out = sodium.crypto_scalarmult(scalar, u)
    assert out.hex() == "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"


def handshake(code_a: bytes, code_b: bytes) -> tuple[Handshake, Handshake]:
    sender = Handshake("sender", code_a, "48213907")
    receiver = Handshake("receiver", code_b, "48213907")
    hello_s, hello_r = sender.hello(), receiver.hello()
    sender.on_hello(dict(hello_r))
    receiver.on_hello(dict(hello_s))
    return sender, receiver


def test_same_code_gives_same_keys_and_words() -> None:
    sender, receiver = handshake(b"crane-opera-lemon", b"crane-opera-lemon")
    assert sender.keys is not None and receiver.keys is not None
    assert sender.keys.secret == receiver.keys.secret
    assert sender.keys.sas == receiver.keys.sas and len(sender.keys.sas.split()) == 4
    mac = crypto.confirmation_message(sender.keys, "sender", "fp-offer", "fp-answer", 0)["mac"]
    crypto.check_confirmation(receiver.keys, "sender", mac, "fp-offer", "fp-answer", 0)
    fid = bytes(16)
    assert sender.keys.file_key("sender", fid) == receiver.keys.file_key("sender", fid)
    assert sender.keys.file_key("sender", fid) != sender.keys.file_key("receiver", fid)
    assert sender.keys.file_key("sender", fid) != sender.keys.file_key("sender", b"\1" * 16)


def test_wrong_code_fails_confirmation() -> None:
    sender, receiver = handshake(b"crane-opera-lemon", b"crane-opera-melon")
    assert sender.keys is not None and receiver.keys is not None
    assert sender.keys.secret != receiver.keys.secret
    mac = crypto.confirmation_message(sender.keys, "sender", "fp1", "fp2", 0)["mac"]
    with pytest.raises(AuthenticationFailed):
        crypto.check_confirmation(receiver.keys, "sender", mac, "fp1", "fp2", 0)


@pytest.mark.parametrize(
    "seen_by_receiver",
    [
        ("fp-offer-SWAPPED", "fp-answer", 0),
        ("fp-offer", "fp-answer-SWAPPED", 0),
        ("fp-offer", "fp-answer", 1),
    ],
)
def test_swapped_fingerprint_or_replay_fails(seen_by_receiver: tuple[str, str, int]) -> None:
    sender, receiver = handshake(b"crane-opera-lemon", b"crane-opera-lemon")
    assert sender.keys is not None and receiver.keys is not None
    mac = crypto.confirmation_message(sender.keys, "sender", "fp-offer", "fp-answer", 0)["mac"]
    with pytest.raises(AuthenticationFailed):
        crypto.check_confirmation(receiver.keys, "sender", mac, *seen_by_receiver)


def test_relay_that_swaps_the_public_key_is_caught() -> None:
    sender = Handshake("sender", b"crane-opera-lemon", "48213907")
    receiver = Handshake("receiver", b"crane-opera-lemon", "48213907")
    mallory = Handshake("receiver", b"unknown-guess-here", "48213907")
    hello_r = dict(receiver.hello())
    hello_r["x25519"] = mallory.hello()["x25519"]  # the server swaps the X25519 key
    sender.on_hello(hello_r)
    receiver.on_hello(dict(sender.hello()))
    assert sender.keys is not None and receiver.keys is not None
    mac = crypto.confirmation_message(sender.keys, "sender", "a", "b", 0)["mac"]
    with pytest.raises(AuthenticationFailed):
        crypto.check_confirmation(receiver.keys, "sender", mac, "a", "b", 0)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"pake": 5, "x25519": "AA=="},
        {"pake": "!!", "x25519": "AA=="},
        {"pake": "AAAA", "x25519": "AAAA"},
        {"pake": "AAAA", "x25519": "A" * 43 + "="},
    ],
)
def test_malformed_hello_is_an_authentication_error(bad: dict[str, object]) -> None:
    with pytest.raises(AuthenticationFailed):
        Handshake("sender", b"x", "48213907").on_hello(bad)


def test_chunk_seal_binds_file_index_and_manifest() -> None:
    key, fid, digest = bytes(32), b"\7" * 16, b"\1" * 32
    sealed = crypto.seal_chunk(key, fid, 5, digest, b"hello")
    assert crypto.open_chunk(key, fid, 5, digest, sealed) == b"hello"
    for args in ((fid, 6, digest), (b"\x08" * 16, 5, digest), (fid, 5, b"\2" * 32)):
        with pytest.raises(nacl.exceptions.CryptoError):
            crypto.open_chunk(key, *args, sealed)
    tampered = bytearray(sealed)
    tampered[0] ^= 1
    with pytest.raises(nacl.exceptions.CryptoError):
        crypto.open_chunk(key, fid, 5, digest, bytes(tampered))


def test_the_chunk_sizes_count_libsodiums_tag() -> None:
    """fileshare.chunks states the tag's size without importing the crypto (start-up time)."""
    assert chunks.TAG_BYTES == crypto.TAG_BYTES == sodium.crypto_aead_chacha20poly1305_ietf_ABYTES
