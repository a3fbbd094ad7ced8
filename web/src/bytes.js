// Byte helpers shared by the protocol modules: encodings the Python side uses (base64, hex,
// big-endian integers, UTF-8), strict on input because peers and servers are not trusted.

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** @param {string} text */
export const utf8 = (text) => encoder.encode(text);

/** @param {Uint8Array} data */
export const fromUtf8 = (data) => strictDecoder.decode(data);

/** @param {Uint8Array} data */
export function toHex(data) {
  return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** @param {string} hex */
export function fromHex(hex) {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(hex)) throw new Error("not hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** @param {Uint8Array} data */
export function toBase64(data) {
  let text = "";
  for (let i = 0; i < data.length; i += 0x8000) {
    text += String.fromCharCode(...data.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

/** Like Python's b64decode(validate=True): anything but canonical base64 is refused.
 * @param {unknown} text */
export function fromBase64(text) {
  if (typeof text !== "string" || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
    throw new Error("not base64");
  }
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** @param {...Uint8Array} parts */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Big-endian unsigned integer of `size` bytes (Python's struct ">I" / ">Q").
 * @param {number | bigint} value @param {number} size */
export function uintBE(value, size) {
  const out = new Uint8Array(size);
  let v = BigInt(value);
  for (let i = size - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  if (v !== 0n) throw new RangeError("integer too large");
  return out;
}

/** @param {Uint8Array} data */
export function bigFromBE(data) {
  let v = 0n;
  for (const b of data) v = (v << 8n) | BigInt(b);
  return v;
}

/** @param {Uint8Array} a @param {Uint8Array} b */
export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
