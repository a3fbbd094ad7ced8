// End-to-end keys, as fileshare/crypto.py: SPAKE2 over the share code, bound to ephemeral
// X25519 and to both DTLS fingerprints, then HKDF-separated keys for ChaCha20-Poly1305.
// No I/O: the handshake takes the peer's messages and returns its own.

import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import {
  concat,
  equalBytes,
  fromBase64,
  fromUtf8,
  toBase64,
  uintBE,
  utf8,
} from "./bytes.js";
import { Spake2, SpakeError } from "./spake2.js";
import WORDS from "./words.json" with { type: "json" };

/** @typedef {"sender" | "receiver"} Role */
export const PROTOCOL = utf8("fileshare-v1");
export const TAG_BYTES = 16;
const EMPTY = new Uint8Array(0);

export class AuthenticationFailed extends Error {
  static code = "authentication_failed";
  /** @param {string} [detail] @param {boolean} [fromPeer] */
  constructor(detail = "", fromPeer = false) {
    super(
      "authentication failed: wrong code, or someone tampered with the connection" +
        (detail ? ` (${detail})` : ""),
    );
    this.code = AuthenticationFailed.code;
    this.fromPeer = fromPeer;
  }
}

/** RFC 5869 HKDF-SHA256 (an empty salt is 32 zero bytes, as in Python).
 * @param {Uint8Array} ikm @param {Uint8Array} salt @param {Uint8Array | string} info */
export function hkdfSha256(ikm, salt, info, length = 32) {
  return hkdf(sha256, ikm, salt, typeof info === "string" ? utf8(info) : info, length);
}

/** Length-prefixed concatenation: no two different part lists encode alike.
 * @param {...Uint8Array} parts */
const frame = (...parts) => concat(...parts.flatMap((p) => [uintBE(p.length, 4), p]));

/** @param {unknown} text @param {number} [size] */
function unb64(text, size) {
  let data;
  try {
    data = fromBase64(text);
  } catch {
    throw new AuthenticationFailed("malformed handshake message");
  }
  if (size !== undefined && data.length !== size) {
    throw new AuthenticationFailed("malformed handshake message");
  }
  return data;
}

/** Four words people can read to each other: 32 bits from the session key.
 * @param {Uint8Array} data */
export function shortAuthenticationString(data) {
  let value = ((data[0] << 24) | (data[1] << 16) | (data[2] << 8) | data[3]) >>> 0;
  const words = [];
  for (let i = 0; i < 4; i++) {
    words.push(WORDS[value % WORDS.length]);
    value = Math.floor(value / WORDS.length);
  }
  return words.join(" ");
}

export class SessionKeys {
  /** @param {Uint8Array} secret @param {Uint8Array} transcript */
  constructor(secret, transcript) {
    this.secret = secret;
    this.transcript = transcript;
    this.sas = shortAuthenticationString(hkdfSha256(secret, EMPTY, "sas", 4));
  }

  /** One key per file and direction. @param {Role} direction @param {Uint8Array} fileId */
  fileKey(direction, fileId) {
    return hkdfSha256(this.secret, fileId, `file key from ${direction}`);
  }

  /** MAC over the transcript and the DTLS fingerprints of one connection (epoch).
   * @param {Role} role @param {string} offerFp @param {string} answerFp @param {number} epoch */
  confirmation(role, offerFp, answerFp, epoch) {
    const key = hkdfSha256(this.secret, EMPTY, "confirm");
    const data = frame(
      utf8(role),
      this.transcript,
      utf8(offerFp),
      utf8(answerFp),
      uintBE(epoch, 8),
    );
    return hmac(sha256, key, data);
  }
}

export const RUN_ID = /^[0-9a-f]{16}$/; // schema: RUN_ID_CHARS hex characters

/** Whether a peer's hello is for this run of ours (`run`, `peerRun`: the signaling server's run
 * ids, ours and the peer's), as fileshare/crypto.py's hello_is_current: one addressed (`to`) to
 * another run was meant for a run of ours that is over (relayed just before this page loaded,
 * it reached this one) and is dropped before the PAKE, where it would fail authentication; the
 * peer's hello for this run follows. A hello without `to` (a peer that predates run ids) is
 * taken, as is any while we know no run of ours. A `to` that is not a run id, or that names the
 * peer's own run (our hello reflected to us), is a forgery.
 * @param {Record<string, unknown>} hello @param {string | null} run @param {string | null} peerRun */
export function helloIsCurrent(hello, run, peerRun) {
  if (!Object.hasOwn(hello, "to")) return true;
  const to = hello.to;
  if (typeof to !== "string" || !RUN_ID.test(to)) throw new AuthenticationFailed("malformed handshake message");
  if (to === run) return true;
  if (to === peerRun) throw new AuthenticationFailed("a hello addressed to its own sender");
  return run === null;
}

/** SPAKE2 (the code) + X25519 (forward secrecy), each side sending one `hello`. */
export class Handshake {
  /**
   * @param {Role} role @param {Uint8Array} codeSecret @param {string} sessionId
   * @param {{pakeEntropy?: Uint8Array, x25519Private?: Uint8Array}} [fixed] for tests only
   */
  constructor(role, codeSecret, sessionId, fixed = {}) {
    this.role = role;
    this.sessionId = utf8(sessionId);
    this.pake = new Spake2(
      role === "sender" ? "A" : "B",
      codeSecret,
      utf8("fileshare sender"),
      utf8("fileshare receiver"),
      fixed.pakeEntropy,
    );
    this.pakeMessage = this.pake.start();
    this.dhPrivate = fixed.x25519Private ?? x25519.utils.randomSecretKey();
    this.dhPublic = x25519.getPublicKey(this.dhPrivate);
  }

  /** @param {string | null} [to] the peer's run this hello is for (see helloIsCurrent), if the
   * server told it */
  hello(to = null) {
    const hello = { kind: "hello", pake: toBase64(this.pakeMessage), x25519: toBase64(this.dhPublic) };
    return to === null ? hello : { ...hello, to };
  }

  /** @param {Record<string, unknown>} payload */
  onHello(payload) {
    const peerPake = unb64(payload.pake);
    const peerX = unb64(payload.x25519, 32);
    let pakeKey, dh;
    try {
      pakeKey = this.pake.finish(peerPake);
      dh = x25519.getSharedSecret(this.dhPrivate, peerX);
    } catch (exc) {
      const what = exc instanceof SpakeError ? exc.message : "malformed handshake message";
      throw new AuthenticationFailed(`bad PAKE message (${what})`);
    }
    const msgs =
      this.role === "sender"
        ? [this.pakeMessage, peerPake, this.dhPublic, peerX]
        : [peerPake, this.pakeMessage, peerX, this.dhPublic];
    const transcript = sha256(frame(PROTOCOL, this.sessionId, ...msgs));
    return new SessionKeys(hkdfSha256(concat(pakeKey, dh), transcript, "session key"), transcript);
  }
}

/** @param {SessionKeys} keys @param {Role} peerRole @param {unknown} mac
 * @param {string} offerFp @param {string} answerFp @param {number} epoch */
export function checkConfirmation(keys, peerRole, mac, offerFp, answerFp, epoch) {
  if (!equalBytes(keys.confirmation(peerRole, offerFp, answerFp, epoch), unb64(mac, 32))) {
    throw new AuthenticationFailed();
  }
}

/** @param {SessionKeys} keys @param {Role} role @param {string} offerFp
 * @param {string} answerFp @param {number} epoch */
export function confirmationMessage(keys, role, offerFp, answerFp, epoch) {
  return { kind: "confirm", mac: toBase64(keys.confirmation(role, offerFp, answerFp, epoch)) };
}

/** @param {SessionKeys} keys @param {Role} role */
const signalKey = (keys, role) =>
  hkdfSha256(keys.secret, EMPTY, `session description from ${role}`);

/** An SDP sealed under the PAKE's key (the server never sees our addresses).
 * @param {SessionKeys} keys @param {Role} role @param {number} epoch @param {string} sdp
 * @param {Uint8Array} [nonce] for tests only */
export function sealDescription(keys, role, epoch, sdp, nonce) {
  const iv = nonce ?? crypto.getRandomValues(new Uint8Array(12));
  const aad = concat(utf8(role), uintBE(epoch, 8));
  return toBase64(concat(iv, chacha20poly1305(signalKey(keys, role), iv, aad).encrypt(utf8(sdp))));
}

/** @param {SessionKeys} keys @param {Role} peerRole @param {number} epoch @param {unknown} sealed */
export function openDescription(keys, peerRole, epoch, sealed) {
  const data = unb64(sealed);
  const aad = concat(utf8(peerRole), uintBE(epoch, 8));
  try {
    const key = signalKey(keys, peerRole);
    return fromUtf8(chacha20poly1305(key, data.subarray(0, 12), aad).decrypt(data.subarray(12)));
  } catch {
    throw new AuthenticationFailed("the session description is not sealed under our key");
  }
}

const FINGERPRINT = /^a=fingerprint:(\S+) (\S+)\s*$/gm;

/** The DTLS certificate fingerprints an SDP commits to, in the CLI's canonical form.
 * @param {string} sdp */
export function fingerprints(sdp) {
  const found = Array.from(
    sdp.matchAll(FINGERPRINT),
    (m) => `${m[1].toLowerCase()} ${m[2].toUpperCase()}`,
  ).sort();
  if (!found.length) {
    throw new AuthenticationFailed("no DTLS fingerprint in the session description");
  }
  return found.join(",");
}

/** @param {number} index */
export const chunkNonce = (index) => concat(new Uint8Array(4), uintBE(index, 8));

/** @param {Uint8Array} fileId @param {number} index @param {Uint8Array} manifestDigest */
export const chunkAad = (fileId, index, manifestDigest) =>
  concat(fileId, uintBE(index, 4), manifestDigest);

/** @param {Uint8Array} key @param {Uint8Array} fileId @param {number} index
 * @param {Uint8Array} manifestDigest @param {Uint8Array} data */
export function sealChunk(key, fileId, index, manifestDigest, data) {
  return chacha20poly1305(key, chunkNonce(index), chunkAad(fileId, index, manifestDigest)).encrypt(
    data,
  );
}

/** Throws if the chunk was altered. @param {Uint8Array} key @param {Uint8Array} fileId
 * @param {number} index @param {Uint8Array} manifestDigest @param {Uint8Array} sealed */
export function openChunk(key, fileId, index, manifestDigest, sealed) {
  return chacha20poly1305(key, chunkNonce(index), chunkAad(fileId, index, manifestDigest)).decrypt(
    sealed,
  );
}
