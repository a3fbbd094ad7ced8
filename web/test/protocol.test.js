// The protocol machines alone: a whole transfer between a JS Sender and a JS Receiver, a resume,
// and announcements a hostile sender could make (refused before anything is allocated).

import assert from "node:assert/strict";
import { test } from "node:test";
import { sha256 } from "@noble/hashes/sha2.js";
import { ChunkBitmap } from "../src/bitmap.js";
import { toHex, utf8 } from "../src/bytes.js";
import {
  CHUNK_SIZES,
  control,
  decode,
  encode,
  makeManifest,
  MAX_FILES,
  Receiver,
  SEND_WINDOW,
  Sender,
  TransferError,
} from "../src/protocol.js";

const key = (/** @type {Uint8Array} */ id) => sha256(id);
const CS = CHUNK_SIZES[0];

/** @param {string} name @param {Uint8Array} data */
const manifestOf = (name, data) => makeManifest(name, data.length, toHex(sha256(data)), "file", CS);

/** Runs both machines over an in-memory wire; `held` is what the receiver had before.
 * @param {Record<string, Uint8Array>} files @param {Record<string, ChunkBitmap>} [held] */
function transfer(files, held = {}) {
  const names = Object.keys(files);
  const manifests = names.map((n) => manifestOf(n, files[n]));
  const sender = new Sender(manifests, key);
  const receiver = new Receiver(key);
  /** @type {Record<string, Uint8Array>} */
  const disk = {};
  /** @type {string[]} */
  const toSender = [];
  /** @param {import("../src/protocol.js").Action[]} actions */
  const perform = (actions) => {
    for (const a of actions) {
      if (a.kind === "send") toSender.push(encode(a.message));
      else if (a.kind === "admit") {
        for (const m of a.manifests) {
          const have = held[m.name] ?? new ChunkBitmap(m.chunkCount);
          disk[m.fileId] = new Uint8Array(m.size);
          for (const [start, end] of have.ranges()) {
            const [from, to] = [start * m.chunkSize, Math.min(end * m.chunkSize, m.size)];
            disk[m.fileId].set(files[m.name].subarray(from, to), from);
          }
          perform(receiver.fileReady(m.fileId, have));
        }
      } else if (a.kind === "write") {
        disk[a.fileId].set(a.data, a.offset);
        perform(receiver.onDurable(a.fileId));
      } else if (a.kind === "verify") {
        const m = receiver.file(a.fileId).manifest;
        perform(receiver.onVerified(a.fileId, toHex(sha256(disk[a.fileId])) === m.checksum ? "" : "bad"));
      }
    }
  };
  sender.start();
  for (let rounds = 0; !sender.done && rounds < 10_000; rounds++) {
    const item = sender.nextItem();
    if (item && "type" in item) perform(receiver.onControl(decode(encode(item))));
    else if (item) {
      const m = manifests[item.fileIndex];
      const data = files[m.name].subarray(item.offset, item.offset + item.length);
      perform([receiver.onChunk(sender.seal(item, data))]);
    }
    while (toSender.length) sender.onControl(decode(/** @type {string} */ (toSender.shift())));
  }
  return { sender, receiver, disk, manifests };
}

test("a whole transfer: files arrive intact, empty ones too", () => {
  const files = { "a.bin": crypto.getRandomValues(new Uint8Array(3 * CS + 5)), "empty": new Uint8Array(0) };
  const { sender, receiver, disk, manifests } = transfer(files);
  assert.ok(sender.done && receiver.done);
  assert.deepEqual(disk[manifests[0].fileId], files["a.bin"]);
  assert.equal(sender.chunksSent, 4);
});

test("a resume sends only the missing chunks", () => {
  const data = crypto.getRandomValues(new Uint8Array(4 * CS));
  const held = ChunkBitmap.fromRanges(4, [[0, 2]]);
  const { sender, receiver } = transfer({ "big.bin": data }, { "big.bin": held });
  assert.ok(receiver.done);
  assert.equal(sender.chunksSent, 2);
});

test("the sender has at most a window unacknowledged (fileshare/protocol.py's)", () => {
  const size = 3 * SEND_WINDOW;
  const m = makeManifest("big.bin", size, "00".repeat(32), "file", CHUNK_SIZES[2]);
  const sender = new Sender([m], key);
  sender.start();
  while (sender.nextItem() !== null);
  sender.onControl(control("manifest_ack", { fileId: m.fileId }));
  const drain = () => {
    const out = [];
    for (let item = sender.nextItem(); item !== null; item = sender.nextItem()) out.push(item);
    return out;
  };
  const first = drain();
  assert.ok(sender.unackedBytes >= SEND_WINDOW && sender.unackedBytes < SEND_WINDOW + m.chunkSize);
  sender.onControl(control("chunk_ack", { fileId: m.fileId, ranges: [[0, 8]] }));
  assert.deepEqual(
    drain().map((c) => ("index" in c ? c.index : -1)),
    Array.from({ length: 8 }, (_, i) => first.length + i),
  );
  sender.onControl(control("chunk_ack", { fileId: m.fileId, ranges: [[0, 8]] }));
  assert.equal(drain().length, 0);
  sender.start();
  assert.equal(sender.unackedBytes, 0);
});

test("hostile announcements are refused before anything is allocated", () => {
  const m = manifestOf("a", utf8("x"));
  const cases = [
    [control("transfer_start", { fileCount: 1, totalBytes: 1 }), { ...m, name: "../etc/passwd" }],
    [control("transfer_start", { fileCount: 1, totalBytes: 1 }), { ...m, chunkSize: CS + 1 }],
    [control("transfer_start", { fileCount: 1, totalBytes: 1 }), { ...m, fileId: "0".repeat(32) }],
    [control("transfer_start", { fileCount: 0, totalBytes: 0 }), m],
    [control("transfer_start", { fileCount: 1, totalBytes: 0 }), m],
    [control("transfer_start", { fileCount: 2, totalBytes: 2 }), m, m],
  ];
  for (const [start, ...entries] of cases) {
    const receiver = new Receiver(key);
    assert.throws(() => {
      receiver.onControl(start);
      for (const e of entries) receiver.onControl(e);
      receiver.onControl(control("transfer_end"));
    }, TransferError);
    assert.equal(receiver.files.size, 0);
  }
  assert.throws(() => decode(encode(control("transfer_start", { fileCount: MAX_FILES + 1, totalBytes: 0 }))), TransferError);
});
