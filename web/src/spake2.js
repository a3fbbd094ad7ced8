// SPAKE2 over Ed25519, byte for byte python-spake2 0.9 (the CLI's PAKE): M and N hashed from
// the seeds "M" and "N" (HKDF "SPAKE2 arbitrary element", first point on the curve, times the
// cofactor 8), the password scalar from HKDF "SPAKE2 pw", messages `side byte + point`, and
// key = sha256(sha256(pw) | sha256(idA) | sha256(idB) | X | Y | K).

import { ed25519 } from "@noble/curves/ed25519.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bigFromBE, concat, equalBytes, utf8 } from "./bytes.js";

const Point = ed25519.Point;
const L = Point.Fn.ORDER;
const P = Point.Fp.ORDER;

export class SpakeError extends Error {}

/** @param {Uint8Array} seed @param {string} info @param {number} size */
const expand = (seed, info, size) => hkdf(sha256, seed, new Uint8Array(0), utf8(info), size);

/** A point of unknown discrete log, as python-spake2's arbitrary_element(seed).
 * @param {Uint8Array} seed */
function arbitraryElement(seed) {
  const y0 = bigFromBE(expand(seed, "SPAKE2 arbitrary element", 48)) % P;
  for (let plus = 0n; ; plus++) {
    const y = (y0 + plus) % P;
    const encoded = new Uint8Array(32); // little-endian y, sign bit 0: the even x
    for (let i = 0, v = y; i < 32; i++, v >>= 8n) encoded[i] = Number(v & 0xffn);
    let point;
    try {
      point = Point.fromBytes(encoded);
    } catch {
      continue; // y is not on the curve
    }
    const inGroup = point.multiplyUnsafe(8n);
    if (!inGroup.is0()) return inGroup;
  }
}

const M = arbitraryElement(utf8("M"));
const N = arbitraryElement(utf8("N"));

/** @param {Uint8Array} password */
export const passwordScalar = (password) =>
  bigFromBE(expand(password, "SPAKE2 pw", 48)) % L;

/** @param {import("@noble/curves/abstract/edwards.js").EdwardsPoint} point @param {bigint} n */
const times = (point, n) => (n % L === 0n ? Point.ZERO : point.multiply(n % L));

export class Spake2 {
  /**
   * @param {"A" | "B"} side
   * @param {Uint8Array} password
   * @param {Uint8Array} idA
   * @param {Uint8Array} idB
   * @param {Uint8Array} [entropy] 64 random bytes (tests pass fixed ones)
   */
  constructor(side, password, idA, idB, entropy = crypto.getRandomValues(new Uint8Array(64))) {
    this.side = side;
    this.password = password;
    this.idA = idA;
    this.idB = idB;
    this.pw = passwordScalar(password);
    this.xy = bigFromBE(entropy) % L;
    const blinding = side === "A" ? M : N;
    this.outbound = times(Point.BASE, this.xy).add(times(blinding, this.pw)).toBytes();
  }

  /** The message to send: side byte and point. */
  start() {
    return concat(utf8(this.side), this.outbound);
  }

  /** The shared key from the peer's message; SpakeError if the message is not acceptable.
   * @param {Uint8Array} message */
  finish(message) {
    const other = this.side === "A" ? "B" : "A";
    if (message.length !== 33 || message[0] !== other.charCodeAt(0)) {
      throw new SpakeError("not a message from the other side");
    }
    const inbound = message.subarray(1);
    let element;
    try {
      element = Point.fromBytes(inbound, true);
    } catch {
      throw new SpakeError("not a point on the curve");
    }
    if (element.is0() || !element.isTorsionFree()) throw new SpakeError("not in the group");
    if (equalBytes(element.toBytes(), this.outbound)) throw new SpakeError("reflected message");
    const unblinding = this.side === "A" ? N : M;
    const K = times(element.add(times(unblinding, L - this.pw)), this.xy).toBytes();
    const [X, Y] = this.side === "A" ? [this.outbound, inbound] : [inbound, this.outbound];
    return sha256(
      concat(sha256(this.password), sha256(this.idA), sha256(this.idB), X, Y, K),
    );
  }
}
