// The page's whole-file digest follows the writes and reads back only the rest.

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";
import { PrefixDigest } from "../src/prefix-digest.js";

const CHUNK = 65_536;
/** @param {number} count */
const chunks = (count) => [...Array.from({ length: count - 1 }, () => randomBytes(CHUNK)), randomBytes(1_000)];
/** @param {Uint8Array[]} parts */
const sha = (parts) => createHash("sha256").update(Buffer.concat(parts)).digest("hex");

/** A reader over `file` that counts what it is asked to read. @param {Uint8Array} file */
function reader(file) {
  const asked = { bytes: 0 };
  /** @param {Uint8Array} into @param {number} at */
  const read = (into, at) => {
    const piece = file.subarray(at, at + into.length);
    into.set(piece);
    asked.bytes += piece.length;
    return piece.length;
  };
  return { read, asked };
}

test("writes in order are hashed as they come: nothing is read back", () => {
  const parts = chunks(20);
  const digest = new PrefixDigest();
  parts.forEach((data, index) => digest.wrote(index * CHUNK, data));
  const { read, asked } = reader(Buffer.concat(parts));
  assert.equal(digest.finish(read), sha(parts));
  assert.equal(asked.bytes, 0);
});

test("a resumed file is read back from where the writes stopped following", () => {
  const parts = chunks(12); // 3-5 held before the page ran; 0-2 and 6+ arrive now
  const digest = new PrefixDigest();
  for (const index of [0, 1, 2, 6, 7, 8, 9, 10, 11]) digest.wrote(index * CHUNK, parts[index]);
  const file = Buffer.concat(parts);
  const { read, asked } = reader(file);
  assert.equal(digest.finish(read), sha(parts));
  assert.equal(asked.bytes, file.length - 3 * CHUNK);
});

test("what was written is what is checked", () => {
  const parts = chunks(3);
  const digest = new PrefixDigest();
  digest.wrote(0, parts[0]);
  digest.wrote(CHUNK, new Uint8Array(CHUNK));
  digest.wrote(2 * CHUNK, parts[2]);
  assert.notEqual(digest.finish(reader(Buffer.concat(parts)).read), sha(parts));
});
