// Every vector the Python side wrote (tests/vectors/protocol.json, `make vectors`) must come out
// byte for byte here: a change on either side that breaks the other fails at once.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { x25519 } from "@noble/curves/ed25519.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { ChunkBitmap } from "../src/bitmap.js";
import { fromHex, toBase64, toHex, utf8 } from "../src/bytes.js";
import { codeSecret, parseCode } from "../src/code.js";
import * as crypto from "../src/crypto.js";
import { checkRelativePath, UnsafeName } from "../src/names.js";
import * as protocol from "../src/protocol.js";
import { Spake2 } from "../src/spake2.js";

const V = JSON.parse(
  readFileSync(new URL("../../tests/vectors/protocol.json", import.meta.url), "utf8"),
);

/** A session whose randomness is the vectors'. @param {"sender" | "receiver"} role */
const handshake = (role) =>
  new crypto.Handshake(role, utf8(V.session.secret), V.session.sessionId, {
    pakeEntropy: fromHex(V.session.pakeEntropy[role]),
    x25519Private: fromHex(V.session.x25519Private[role]),
  });

function sessionKeys() {
  return handshake("sender").onHello(V.session.hello.receiver);
}

test("protocol constants", () => {
  assert.equal(protocol.VERSION, V.protocolVersion);
  assert.deepEqual(protocol.CHUNK_SIZES, V.chunkSizes);
  assert.equal(protocol.MAX_FILE_SIZE, V.limits.maxFileSize);
  assert.equal(protocol.MAX_CHUNKS, V.limits.maxChunks);
  assert.equal(protocol.MAX_FILES, V.limits.maxFiles);
  assert.equal(protocol.MAX_NAME_BYTES, V.limits.maxNameBytes);
  assert.equal(protocol.SEND_WINDOW, V.limits.sendWindow);
  assert.equal(protocol.QUEUED_FRAME_BYTES, V.limits.queuedFrameBytes);
  assert.equal(protocol.QUEUED_CONTROL_CHARS, V.limits.queuedControlChars);
});

test("HKDF-SHA256", () => {
  for (const c of V.hkdf) {
    const okm = crypto.hkdfSha256(fromHex(c.ikm), fromHex(c.salt), fromHex(c.info), c.length);
    assert.equal(toHex(okm), c.okm);
  }
});

test("X25519", () => {
  const x = V.x25519;
  assert.equal(toHex(x25519.getPublicKey(fromHex(x.private))), x.public);
  const peerPublic = x25519.getPublicKey(fromHex(x.peerPrivate));
  assert.equal(toHex(x25519.getSharedSecret(fromHex(x.private), peerPublic)), x.shared);
});

test("SPAKE2 as python-spake2 0.9", () => {
  for (const c of V.spake2) {
    const [pw, idA, idB] = [fromHex(c.password), fromHex(c.idA), fromHex(c.idB)];
    const a = new Spake2("A", pw, idA, idB, fromHex(c.entropyA));
    const b = new Spake2("B", pw, idA, idB, fromHex(c.entropyB));
    assert.equal(toHex(a.start()), c.messageA);
    assert.equal(toHex(b.start()), c.messageB);
    assert.equal(toHex(a.finish(fromHex(c.messageB))), c.key);
    assert.equal(toHex(b.finish(fromHex(c.messageA))), c.key);
  }
});

test("SPAKE2 refuses a reflected message, its own side, and a point outside the group", () => {
  const c = V.spake2[0];
  /** @type {[Uint8Array, Uint8Array, Uint8Array]} */
  const args = [fromHex(c.password), fromHex(c.idA), fromHex(c.idB)];
  const a = new Spake2("A", ...args, fromHex(c.entropyA));
  const reflected = fromHex(c.messageA);
  reflected[0] = "B".charCodeAt(0);
  assert.throws(() => a.finish(reflected), /reflected/);
  assert.throws(() => new Spake2("A", ...args).finish(fromHex(c.messageA)), /other side/);
  const zero = new Uint8Array(33);
  zero[0] = "B".charCodeAt(0);
  zero[1] = 1; // y = 1: the neutral element
  assert.throws(() => new Spake2("A", ...args).finish(zero), /group/);
});

test("the handshake: hellos, transcript, session key and authentication words", () => {
  for (const role of /** @type {const} */ (["sender", "receiver"])) {
    assert.deepEqual(handshake(role).hello(), V.session.hello[role]);
  }
  const keys = sessionKeys();
  assert.equal(toHex(keys.transcript), V.session.transcript);
  assert.equal(toHex(keys.secret), V.session.secretKey);
  assert.equal(keys.sas, V.session.sas);
  const other = handshake("receiver").onHello(V.session.hello.sender);
  assert.equal(toHex(other.secret), V.session.secretKey);
  const code = parseCode(V.session.code);
  assert.equal(new TextDecoder().decode(codeSecret(code)), V.session.secret);
});

test("a wrong code gives other keys, and a bad hello fails authentication", () => {
  const wrong = new crypto.Handshake("sender", utf8("acid-acid-acid"), V.session.sessionId);
  assert.notEqual(toHex(wrong.onHello(V.session.hello.receiver).secret), V.session.secretKey);
  const bad = { ...V.session.hello.receiver, x25519: "AAAA" };
  assert.throws(() => handshake("sender").onHello(bad), crypto.AuthenticationFailed);
  const garbage = { ...V.session.hello.receiver, pake: toBase64(new Uint8Array(33)) };
  assert.throws(() => handshake("sender").onHello(garbage), crypto.AuthenticationFailed);
});

test("a hello addressed to a run, and which hellos a run takes", () => {
  const R = V.helloRuns;
  const addressed = handshake("sender").hello(R.to);
  assert.deepEqual(addressed, R.hello);
  assert.equal(JSON.stringify(addressed), R.encoded);
  for (const c of R.cases) {
    let verdict;
    try {
      verdict = crypto.helloIsCurrent(c.hello, c.run, c.peerRun) ? "current" : "stale";
    } catch (exc) {
      assert.ok(exc instanceof crypto.AuthenticationFailed);
      verdict = "forged";
    }
    assert.equal(verdict, c.verdict, JSON.stringify(c));
  }
});

test("per-file keys", () => {
  const keys = sessionKeys();
  for (const c of V.fileKeys) {
    assert.equal(toHex(keys.fileKey(c.direction, fromHex(c.fileId))), c.key);
  }
});

test("the confirmation MAC over both DTLS fingerprints", () => {
  const keys = sessionKeys();
  const c = V.confirmation;
  assert.equal(crypto.fingerprints(c.offerSdp), c.offerFingerprints);
  assert.equal(crypto.fingerprints(c.answerSdp), c.answerFingerprints);
  for (const m of c.macs) {
    const msg = crypto.confirmationMessage(keys, m.role, c.offerFingerprints, c.answerFingerprints, m.epoch);
    assert.deepEqual(msg, { kind: "confirm", mac: m.mac });
    crypto.checkConfirmation(keys, m.role, m.mac, c.offerFingerprints, c.answerFingerprints, m.epoch);
    assert.throws(
      () => crypto.checkConfirmation(keys, m.role, m.mac, c.answerFingerprints, c.offerFingerprints, m.epoch),
      crypto.AuthenticationFailed,
    );
  }
  assert.throws(() => crypto.fingerprints("v=0\r\n"), crypto.AuthenticationFailed);
});

test("sealed session descriptions", () => {
  const keys = sessionKeys();
  for (const c of V.descriptions) {
    assert.equal(crypto.sealDescription(keys, c.role, c.epoch, c.sdp, fromHex(c.nonce)), c.sealed);
    assert.equal(crypto.openDescription(keys, c.role, c.epoch, c.sealed), c.sdp);
    const otherRole = c.role === "sender" ? "receiver" : "sender";
    assert.throws(() => crypto.openDescription(keys, otherRole, c.epoch, c.sealed), crypto.AuthenticationFailed);
    assert.throws(() => crypto.openDescription(keys, c.role, c.epoch + 1, c.sealed), crypto.AuthenticationFailed);
  }
});

test("authentication words", () => {
  for (const c of V.sas) assert.equal(crypto.shortAuthenticationString(fromHex(c.bytes)), c.words);
});

test("manifests encode, digest and identify files as the CLI does", () => {
  for (const c of V.manifests) {
    const f = c.fields;
    const m = protocol.makeManifest(f.name, f.size, f.checksum, f.kind, f.chunkSize, f.mtimeMs);
    assert.equal(protocol.encode(m), c.encoded);
    assert.equal(toHex(protocol.manifestDigest(m)), c.digest);
    assert.deepEqual(protocol.decode(c.encoded), m);
  }
});

test("control messages round-trip byte for byte", () => {
  for (const text of V.controls) assert.equal(protocol.encode(protocol.decode(text)), text);
});

test("control messages from a peer are validated", () => {
  const bad = [
    "nope",
    "[]",
    '{"type":"keepalive","extra":1}',
    '{"type":"surprise"}',
    '{"type":"manifest_ack","fileId":"XYZ"}',
    '{"type":"transfer_start","fileCount":-1,"totalBytes":0}',
    '{"type":"chunk_ack","fileId":"00000000000000000000000000000000","ranges":[[0]]}',
    '{"type":"__proto__"}',
  ];
  for (const text of bad) assert.throws(() => protocol.decode(text), protocol.TransferError);
});

test("chunk sealing: nonce, associated data and frame", () => {
  const keys = sessionKeys();
  const manifest = /** @type {protocol.FileManifest} */ (protocol.decode(V.chunks.manifest));
  const data = new Uint8Array(100_000);
  for (let i = 0, at = 0; at < data.length; i++) {
    const block = sha256(utf8(`data/${i}`));
    data.set(block.subarray(0, data.length - at), at);
    at += block.length;
  }
  const sender = new protocol.Sender([manifest], (id) => keys.fileKey("sender", id));
  const receiver = new protocol.Receiver((id) => keys.fileKey("sender", id));
  receiver.onControl(protocol.control("transfer_start", { fileCount: 1, totalBytes: manifest.size }));
  receiver.onControl(manifest);
  assert.equal(receiver.onControl(protocol.control("transfer_end"))[0].kind, "admit");
  receiver.fileReady(manifest.fileId, new ChunkBitmap(manifest.chunkCount));
  for (const c of V.chunks.cases) {
    const piece = data.subarray(c.offset, c.offset + c.length);
    const frame = sender.seal({ fileIndex: 0, index: c.index, offset: c.offset, length: c.length }, piece);
    assert.equal(toHex(sha256(frame)), c.frameSha256);
    assert.equal(toHex(frame.subarray(0, 64)), c.frameHead);
    assert.equal(toHex(frame.subarray(frame.length - 32)), c.frameTail);
    const tampered = frame.slice();
    tampered[40] ^= 1;
    assert.throws(() => receiver.onChunk(tampered), /altered/);
    const write = receiver.onChunk(frame);
    assert.equal(write.kind, "write");
    assert.deepEqual(write.kind === "write" && write.data, piece);
  }
});

test("names the CLI refuses are refused here", () => {
  for (const c of V.names) {
    if (c.problem) {
      assert.throws(() => checkRelativePath(c.name), (exc) => exc instanceof UnsafeName && exc.problem === c.problem, c.name);
    } else {
      checkRelativePath(c.name);
    }
  }
});

test("share codes parse as the CLI parses them", () => {
  for (const c of V.codes) {
    if (c.error) assert.throws(() => parseCode(c.text));
    else assert.deepEqual(parseCode(c.text), { sessionId: c.sessionId, words: c.words });
  }
  assert.deepEqual(parseCode("https://example.org/#48213907-crane-opera-lemon").words, ["crane", "opera", "lemon"]);
});
