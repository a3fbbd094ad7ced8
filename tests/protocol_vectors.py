"""Writes tests/vectors/protocol.json: the CLI's protocol as fixed inputs and the bytes it makes
of them, so the browser client's tests (web/test/) check every byte against the Python side.

Also writes web/src/words.json, the word list the browser client bundles.
`python -m tests.protocol_vectors` regenerates both (make vectors); tests/test_web.py fails when
either is out of date.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import nacl.bindings as sodium
import nacl.public
from spake2 import SPAKE2_A, SPAKE2_B  # type: ignore[import-untyped]

from fileshare import chunks, crypto, peer, protocol
from fileshare.code import BadCode, parse_code
from fileshare.names import UnsafeName, check_relative_path
from fileshare.wordlist import WORDS
from tests.test_protocol import manifest

ROOT = Path(__file__).resolve().parent.parent
ROLES: tuple[crypto.Role, ...] = ("sender", "receiver")
VECTORS = ROOT / "tests" / "vectors" / "protocol.json"
WORDS_JSON = ROOT / "web" / "src" / "words.json"


def _seed(label: str, size: int) -> bytes:
    """Fixed 'randomness': the same bytes in every run."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def _entropy(label: str) -> Any:
    return lambda n: _seed(label, n)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@contextmanager
def _fixed_nonce(nonce: bytes) -> Iterator[None]:
    with mock.patch("nacl.utils.random", lambda n: nonce[:n]):
        yield


def _spake2() -> list[dict[str, str]]:
    cases = []
    for pw in (b"crane-opera-lemon", b"", b"acid-acid-acid"):
        a = SPAKE2_A(
            pw, idA=b"fileshare sender", idB=b"fileshare receiver", entropy_f=_entropy(f"A/{pw!r}")
        )
        b = SPAKE2_B(
            pw, idA=b"fileshare sender", idB=b"fileshare receiver", entropy_f=_entropy(f"B/{pw!r}")
        )
        msg_a, msg_b = a.start(), b.start()
        key = a.finish(msg_b)
        assert key == b.finish(msg_a)
        cases.append(
            {
                "password": pw.hex(),
                "idA": b"fileshare sender".hex(),
                "idB": b"fileshare receiver".hex(),
                "entropyA": _seed(f"A/{pw!r}", 64).hex(),
                "entropyB": _seed(f"B/{pw!r}", 64).hex(),
                "messageA": msg_a.hex(),
                "messageB": msg_b.hex(),
                "key": key.hex(),
            }
        )
    return cases


def _handshake(role: crypto.Role, secret: bytes, session_id: str) -> crypto.Handshake:
    """A Handshake whose PAKE and X25519 randomness are fixed."""
    hs = crypto.Handshake(role, secret, session_id)
    pake_class = SPAKE2_A if role == "sender" else SPAKE2_B
    hs._pake = pake_class(
        secret,
        idA=b"fileshare sender",
        idB=b"fileshare receiver",
        entropy_f=_entropy(f"pake/{role}"),
    )
    hs._pake_msg = hs._pake.start()
    hs._dh = nacl.public.PrivateKey(_seed(f"x25519/{role}", 32))
    return hs


def _session() -> tuple[dict[str, Any], crypto.SessionKeys]:
    code = parse_code("48213907-crane-opera-lemon")
    sender = _handshake("sender", code.secret, code.session_id)
    receiver = _handshake("receiver", code.secret, code.session_id)
    hello_s, hello_r = sender.hello(), receiver.hello()
    keys = sender.on_hello(hello_r)
    assert keys == receiver.on_hello(hello_s)
    vector = {
        "code": str(code),
        "sessionId": code.session_id,
        "secret": code.secret.decode(),
        "pakeEntropy": {r: _seed(f"pake/{r}", 64).hex() for r in ROLES},
        "x25519Private": {r: _seed(f"x25519/{r}", 32).hex() for r in ROLES},
        "hello": {"sender": hello_s, "receiver": hello_r},
        "transcript": keys.transcript.hex(),
        "secretKey": keys.secret.hex(),
        "sas": keys.sas,
    }
    return vector, keys


def _run(label: str) -> str:
    """A run id as the signaling server makes one (signaling.sessions.run_id)."""
    return hashlib.sha256(label.encode()).hexdigest()[:16]


_ABSENT: Any = object()  # a hello without `to`


def _hello_runs() -> dict[str, Any]:
    """Hellos addressed to a run of the peer, and which of them a peer takes (hello_is_current):
    "current", "stale" (dropped before the PAKE) or "forged" (authentication fails)."""
    code = parse_code("48213907-crane-opera-lemon")
    sender = _handshake("sender", code.secret, code.session_id)
    run, other = _run("instance of this run"), _run("instance of the last run")
    peer = _run("instance of the peer's run")
    base = sender.hello()
    cases = []
    for to, mine, theirs in (
        (_ABSENT, run, peer),
        (_ABSENT, None, None),
        (run, run, peer),
        (run, None, None),
        (other, run, peer),  # stale
        (other, run, None),
        (other, None, None),
        (peer, run, peer),  # reflected
        (peer, None, peer),
        (run.upper(), run, peer),
        (run[:-1], run, peer),
        (run + "0", run, peer),
        (run + "\n", run, peer),
        ("", run, peer),
        ("g" * 16, None, None),
        (42, run, peer),
        ([run], run, peer),
        (None, run, peer),  # JSON null: present, and not a run id
    ):
        hello = {**base} if to is _ABSENT else {**base, "to": to}
        try:
            verdict = "current" if crypto.hello_is_current(hello, mine, theirs) else "stale"
        except crypto.AuthenticationFailed:
            verdict = "forged"
        cases.append({"hello": hello, "run": mine, "peerRun": theirs, "verdict": verdict})
    addressed = sender.hello(run)
    return {
        "to": run,
        "hello": addressed,
        "encoded": msgspec.json.encode(addressed).decode(),
        "cases": cases,
    }


def _confirmations(keys: crypto.SessionKeys) -> dict[str, Any]:
    offer = "v=0\r\na=fingerprint:sha-256 ab:cd:EF\r\na=fingerprint:SHA-1 00:11\r\n"
    answer = "v=0\r\na=fingerprint:sha-256 12:34:56\r\n"
    offer_fp, answer_fp = peer.fingerprints(offer), peer.fingerprints(answer)
    return {
        "offerSdp": offer,
        "answerSdp": answer,
        "offerFingerprints": offer_fp,
        "answerFingerprints": answer_fp,
        "macs": [
            {
                "role": role,
                "epoch": epoch,
                "mac": _b64(keys.confirmation(role, offer_fp, answer_fp, epoch)),
            }
            for role in ROLES
            for epoch in (0, 1, 2**32 - 1)
        ],
    }


def _descriptions(keys: crypto.SessionKeys) -> list[dict[str, Any]]:
    cases = []
    for role, epoch in (("sender", 0), ("receiver", 0), ("sender", 3)):
        sdp = f"v=0\r\ns=- {role} {epoch} é\r\n"
        nonce = _seed(f"nonce/{role}/{epoch}", 12)
        with _fixed_nonce(nonce):
            sealed = crypto.seal_description(keys, role, epoch, sdp)  # type: ignore[arg-type]
        cases.append(
            {"role": role, "epoch": epoch, "sdp": sdp, "nonce": nonce.hex(), "sealed": sealed}
        )
    return cases


def _manifests() -> list[protocol.FileManifest]:
    """With and without a modification time (the page sends File.lastModified)."""
    entries = [
        ("hello.txt", b"hello world\n", "file", 1_700_000_000_123),
        ("empty", b"", "file", 0),
        ("dossier/café ☕/naïve.bin", _seed("data", 100_000), "file", 0),
        ("dossier", b"", "dir", 1_600_000_000_000),
        ('quote"back\\slash\u2028.txt', b"x", "file", 0),
    ]
    sizes = chunks.CHUNK_SIZES
    return [
        msgspec.structs.replace(manifest(name, data, sizes[i % len(sizes)], kind), mtimeMs=mtime)
        for i, (name, data, kind, mtime) in enumerate(entries)
    ]


def _chunks(keys: crypto.SessionKeys, entry: protocol.FileManifest) -> list[dict[str, Any]]:
    sender = protocol.Sender([entry], lambda fid: keys.file_key("sender", fid))
    cases = []
    for index in (0, 1):
        length = protocol.chunk_length(entry, index)
        data = _seed("data", 100_000)[index * entry.chunkSize :][:length]
        frame = sender.seal(protocol.ChunkToSend(0, index, index * entry.chunkSize, length), data)
        cases.append(
            {
                "index": index,
                "offset": index * entry.chunkSize,
                "length": length,
                "frameSha256": hashlib.sha256(frame).hexdigest(),
                "frameHead": frame[:64].hex(),
                "frameTail": frame[-32:].hex(),
            }
        )
    return cases


NAMES = (
    "a.txt",
    "dir/sub/file",
    "café/☕",
    "x" * 255,
    "/etc/passwd",
    "../up",
    "a/../b",
    "a//b",
    "C:stuff",
    "back\\slash",
    "tab\there",
    "del\x7f",
    "c1\x85",
    "",
    ".",
    "a/.",
    "x" * 256,
    "/".join(["d"] * 65),
    "/".join(["d"] * 64),
    "é" * 128,
    "\ud800x",
)


def _names() -> list[dict[str, Any]]:
    cases = []
    for name in NAMES:
        try:
            check_relative_path(name)
            problem = ""
        except UnsafeName as exc:
            problem = exc.problem
        cases.append({"name": name, "problem": problem})
    return cases


def _codes() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for text in (
        "48213907-crane-opera-lemon",
        "  48213907 CRANE opera-Lemon ",
        "1234-acid-acid",
        "12-crane-opera-lemon",
        "48213907-crane-opera-lemonx",
        "48213907-crane-opera",
        "482139-crane-opera-lemon",  # a server with --session-digits 6
        "https://share.example/#48213907-crane-opera-lemon",  # the QR code's link
        "http://127.0.0.1:8765/#48213907%20crane%20opera%20lemon",
    ):
        try:
            code = parse_code(text)
            cases.append({"text": text, "sessionId": code.session_id, "words": list(code.words)})
        except BadCode:
            cases.append({"text": text, "error": True})
    return cases


def build() -> dict[str, Any]:
    session, keys = _session()
    manifests = _manifests()
    big = manifests[2]
    x_priv = _seed("x25519/alone", 32)
    x_peer = _seed("x25519/other", 32)
    controls: list[protocol._Control] = [
        protocol.TransferStart(fileCount=2, totalBytes=12),
        protocol.TransferEnd(),
        protocol.ManifestAck(fileId=big.fileId),
        protocol.ResumeRequest(fileId=big.fileId, receivedChunks=[(0, 2), (5, 6)]),
        protocol.ChunkAck(fileId=big.fileId, ranges=[(3, 4)]),
        protocol.TransferComplete(fileId=big.fileId, status="success"),
        protocol.TransferComplete(fileId=big.fileId, status="failed", error="checksum mismatch"),
        protocol.Error(code="cancelled", message="stopped"),
        protocol.Keepalive(),
    ]
    return {
        "about": "written by tests/protocol_vectors.py (make vectors); checked by web/test/",
        "protocolVersion": protocol.VERSION,
        "chunkSizes": list(chunks.CHUNK_SIZES),
        "limits": {
            "maxFileSize": protocol.MAX_FILE_SIZE,
            "maxChunks": protocol.MAX_CHUNKS,
            "maxFiles": protocol.MAX_FILES,
            "maxNameBytes": protocol.MAX_NAME_BYTES,
            "sendWindow": protocol.SEND_WINDOW,
            "queuedFrameBytes": protocol.QUEUED_FRAME_BYTES,
            "queuedControlChars": protocol.QUEUED_CONTROL_CHARS,
        },
        "hkdf": [
            {
                "ikm": ikm.hex(),
                "salt": salt.hex(),
                "info": info.hex(),
                "length": n,
                "okm": crypto.hkdf_sha256(ikm, salt, info, n).hex(),
            }
            for ikm, salt, info, n in (
                (b"key", b"", b"confirm", 32),
                (_seed("ikm", 64), b"salt", b"session key", 32),
                (b"\0", b"", b"sas", 4),
                (b"x", b"y", b"z", 80),
            )
        ],
        "x25519": {
            "private": x_priv.hex(),
            "public": sodium.crypto_scalarmult_base(x_priv).hex(),
            "peerPrivate": x_peer.hex(),
            "shared": sodium.crypto_scalarmult(x_priv, sodium.crypto_scalarmult_base(x_peer)).hex(),
        },
        "spake2": _spake2(),
        "names": _names(),
        "codes": _codes(),
        "session": session,
        "helloRuns": _hello_runs(),
        "fileKeys": [
            {
                "direction": d,
                "fileId": m.fileId,
                "key": keys.file_key(d, bytes.fromhex(m.fileId)).hex(),
            }
            for d in ROLES
            for m in manifests[:2]
        ],
        "confirmation": _confirmations(keys),
        "descriptions": _descriptions(keys),
        "sas": [
            {"bytes": b.hex(), "words": crypto.short_authentication_string(b)}
            for b in (bytes(4), b"\xff\xff\xff\xff", _seed("sas", 4))
        ],
        "manifests": [
            {
                "fields": json.loads(protocol.encode(m)),
                "encoded": protocol.encode(m).decode(),
                "digest": protocol.manifest_digest(m).hex(),
            }
            for m in manifests
        ],
        "controls": [protocol.encode(c).decode() for c in controls],
        "chunks": {"manifest": protocol.encode(big).decode(), "cases": _chunks(keys, big)},
    }


def render() -> dict[Path, str]:
    return {
        VECTORS: json.dumps(build(), indent=1) + "\n",
        WORDS_JSON: json.dumps(list(WORDS)) + "\n",
    }


def main() -> None:
    for path, text in render().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
