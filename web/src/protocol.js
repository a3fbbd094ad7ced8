// The transfer protocol of fileshare/protocol.py as two state machines, Sender and Receiver:
// messages in, actions out; no channel, files or clocks here (app.js is the shell).
// Control messages are JSON text encoded exactly as the CLI's msgspec does (field order,
// defaults included), because a manifest's SHA-256 is bound into every chunk.
// Data chunks: fileId (16 B) + chunkIndex (4 B, big-endian) + ChaCha20-Poly1305(chunk).

import { sha256 } from "@noble/hashes/sha2.js";
import { ChunkBitmap } from "./bitmap.js";
import { concat, fromHex, toHex, uintBE, utf8 } from "./bytes.js";
import { openChunk, sealChunk, TAG_BYTES } from "./crypto.js";
import { checkRelativePath, UnsafeName } from "./names.js";

export const VERSION = 2;
export const HEADER_BYTES = 20;
export const CHUNK_SIZES = [16, 32, 64, 128, 192, 256].map(
  (kib) => kib * 1024 - HEADER_BYTES - TAG_BYTES,
);
export const MAX_CHUNK = CHUNK_SIZES[CHUNK_SIZES.length - 1];
// Chunk bytes a sender has out without a chunk_ack (fileshare/protocol.py SEND_WINDOW): what a
// lagging receiver holds in memory and loses on a crash or reload is bounded by it.
export const SEND_WINDOW = 16 * 1024 * 1024;
export const MAX_FILE_SIZE = 2 ** 50;
export const MAX_CHUNKS = 2 ** 26;
export const MAX_FILES = 100_000;
export const MAX_NAME_BYTES = 32 * 2 ** 20;
// What may wait unread while the receiver is busy (fileshare/protocol.py QUEUED_FRAME_BYTES and
// QUEUED_CONTROL_CHARS): an honest sender's window as frames, and every entry's manifest. A peer
// that sends more ignores the window: the transfer ends (flow_control) rather than hold it.
export const FRAME_OVERHEAD = HEADER_BYTES + TAG_BYTES;
export const QUEUED_FRAME_BYTES = SEND_WINDOW + SEND_WINDOW / 256 + 2 * (MAX_CHUNK + FRAME_OVERHEAD);
export const QUEUED_CONTROL_CHARS = MAX_NAME_BYTES + MAX_FILES * 1024 + 2 ** 20;

export class TransferError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * @typedef {{type: "file_manifest", fileId: string, name: string, size: number,
 *   chunkSize: number, chunkCount: number, checksum: string, kind: "file" | "dir",
 *   mode: number, mtimeMs: number}} FileManifest
 * @typedef {[number, number][]} Ranges
 * @typedef {Record<string, any> & {type: string}} Control
 */

const HEX32 = /^[0-9a-f]{32}$/;
const HEX64 = /^[0-9a-f]{64}$/;
/** @param {number} lo @param {number} hi */
const int = (lo, hi) => (/** @type {unknown} */ v) =>
  typeof v === "number" && Number.isSafeInteger(v) && v >= lo && v <= hi;
/** @param {RegExp} re */
const matches = (re) => (/** @type {unknown} */ v) => typeof v === "string" && re.test(v);
const ranges = (/** @type {unknown} */ v) =>
  Array.isArray(v) &&
  v.every((r) => Array.isArray(r) && r.length === 2 && r.every(int(-(2 ** 53), 2 ** 53)));
/** @param {...unknown} options */
const oneOf = (...options) => (/** @type {unknown} */ v) => options.includes(v);
const text = (/** @type {unknown} */ v) => typeof v === "string";

/** Every control message: its fields in the CLI's order, each [check, default]. A field with a
 * default may be absent; every field is present when encoded (msgspec keeps defaults).
 * @type {Record<string, [string, (v: unknown) => boolean, unknown][]>} */
const SCHEMA = {
  transfer_start: [
    ["fileCount", int(0, MAX_FILES), undefined],
    ["totalBytes", int(0, MAX_FILE_SIZE), undefined],
    ["version", int(-(2 ** 53), 2 ** 53), VERSION],
  ],
  file_manifest: [
    ["fileId", matches(HEX32), undefined],
    ["name", (v) => typeof v === "string" && v.length >= 1 && [...v].length <= 4096, undefined],
    ["size", int(0, MAX_FILE_SIZE), undefined],
    ["chunkSize", int(CHUNK_SIZES[0], MAX_CHUNK), undefined],
    ["chunkCount", int(0, MAX_CHUNKS), undefined],
    ["checksum", matches(HEX64), undefined],
    ["kind", oneOf("file", "dir"), "file"],
    ["mode", int(0, 0o777), 0],
    ["mtimeMs", int(0, 2 ** 53 - 1), 0],
  ],
  manifest_ack: [["fileId", matches(HEX32), undefined]],
  resume_request: [
    ["fileId", matches(HEX32), undefined],
    ["receivedChunks", ranges, undefined],
  ],
  chunk_ack: [
    ["fileId", matches(HEX32), undefined],
    ["ranges", ranges, undefined],
  ],
  transfer_complete: [
    ["fileId", matches(HEX32), undefined],
    ["status", oneOf("success", "failed"), undefined],
    ["error", text, ""],
  ],
  transfer_end: [],
  error: [
    ["code", text, undefined],
    ["message", text, undefined],
  ],
  keepalive: [],
};

/** A control message from its fields, in the CLI's field order with its defaults.
 * @param {string} type @param {Record<string, unknown>} [fields] @returns {Control} */
export function control(type, fields = {}) {
  const spec = SCHEMA[type];
  if (!spec) throw new TypeError(`unknown control message ${type}`);
  /** @type {Control} */
  const msg = { type };
  for (const [name, , fallback] of spec) {
    const value = fields[name] ?? fallback;
    if (value === undefined) throw new TypeError(`${type} needs ${name}`);
    msg[name] = value;
  }
  return msg;
}

/** @param {Control} msg */
export const encode = (msg) => JSON.stringify(control(msg.type, msg));

/** Parse and validate one control message from the peer; TransferError if malformed.
 * @param {string} data @returns {Control} */
export function decode(data) {
  let obj;
  try {
    obj = JSON.parse(data);
  } catch {
    throw new TransferError("bad_message", "malformed control message: not JSON");
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new TransferError("bad_message", "malformed control message: not an object");
  }
  const spec = Object.hasOwn(SCHEMA, obj.type) ? SCHEMA[obj.type] : undefined;
  if (!spec) throw new TransferError("bad_message", "malformed control message: unknown type");
  const known = new Set(["type", ...spec.map(([name]) => name)]);
  for (const key of Object.keys(obj)) {
    if (!known.has(key)) {
      throw new TransferError("bad_message", `malformed control message: unknown field`);
    }
  }
  for (const [name, check, fallback] of spec) {
    if (obj[name] === undefined && fallback !== undefined) continue;
    if (!check(obj[name])) {
      throw new TransferError("bad_message", `malformed control message: bad ${name}`);
    }
  }
  return control(obj.type, obj);
}

/** Bound into every chunk's associated data. @param {FileManifest} m */
export const manifestDigest = (m) => sha256(utf8(encode(m)));

/** @param {number} size @param {number} chunkSize */
export const chunkCount = (size, chunkSize) => Math.ceil(size / chunkSize);

/** @param {FileManifest} m @param {number} index */
export const chunkLength = (m, index) =>
  index < m.chunkCount - 1 ? m.chunkSize : m.size - m.chunkSize * (m.chunkCount - 1);

/** The same file under the same name has the same id in every session (resume across runs).
 * @param {string} name @param {number} size @param {string} checksum */
export function stableFileId(name, size, checksum) {
  const nul = new Uint8Array(1);
  const digest = sha256(
    concat(utf8("fileshare file"), nul, utf8(name), nul, utf8(String(size)), nul, utf8(checksum)),
  );
  return toHex(digest).slice(0, 32);
}

export const DEFAULT_CHUNK = CHUNK_SIZES[2];

/** A manifest for a file (or "dir") the user picked. A page knows no permission bits (mode 0:
 * the receiver's defaults) but does know a file's modification time (File.lastModified, in
 * ms), which the CLI receiver gives the saved file.
 * @param {string} name @param {number} size @param {string} checksum
 * @param {"file" | "dir"} kind @param {number} chunkSize @param {number} mtimeMs
 * @returns {FileManifest} */
export function makeManifest(name, size, checksum, kind = "file", chunkSize = DEFAULT_CHUNK, mtimeMs = 0) {
  return /** @type {FileManifest} */ (
    control("file_manifest", {
      fileId: stableFileId(name, size, checksum),
      name,
      size,
      chunkSize,
      chunkCount: chunkCount(size, chunkSize),
      checksum,
      kind,
      mtimeMs: Number.isSafeInteger(mtimeMs) && mtimeMs > 0 ? mtimeMs : 0,
    })
  );
}

/** @param {Ranges} held @param {number} count */
function checkedRanges(held, count) {
  for (const [start, end] of held) {
    if (!(start >= 0 && start < end && end <= count)) {
      throw new TransferError("bad_range", `chunk range ${start}-${end} outside 0-${count}`);
    }
  }
  return held;
}

/** @param {number[]} indexes @returns {Ranges} */
function toRanges(indexes) {
  /** @type {Ranges} */
  const out = [];
  for (const i of [...indexes].sort((a, b) => a - b)) {
    const last = out[out.length - 1];
    if (last && last[1] === i) last[1] = i + 1;
    else out.push([i, i + 1]);
  }
  return out;
}

// --- sender ------------------------------------------------------------------------------------

/** @typedef {{fileIndex: number, index: number, offset: number, length: number}} ChunkToSend */

export class Sender {
  /** @param {FileManifest[]} manifests @param {(fileId: Uint8Array) => Uint8Array} keyFor */
  constructor(manifests, keyFor) {
    this.files = manifests.map((m) => ({
      manifest: m,
      digest: manifestDigest(m),
      key: keyFor(fromHex(m.fileId)),
      acked: new ChunkBitmap(m.chunkCount),
      /** @type {Iterator<number>} */
      queue: [][Symbol.iterator](),
      ackedBytes: 0,
      /** @type {Map<number, number>} sent on this connection and not yet acknowledged */
      unacked: new Map(),
      announced: false,
      started: false,
      complete: false,
    }));
    this.byId = new Map(manifests.map((m, i) => [m.fileId, i]));
    /** @type {Control[]} */
    this.controls = [];
    /** @type {number[]} */
    this.streaming = [];
    this.bytesAcked = 0;
    this.chunksSent = 0;
    this.unackedBytes = 0;
    this.totalBytes = manifests.reduce((n, m) => n + m.size, 0);
  }

  get done() {
    return this.files.every((f) => f.complete);
  }

  /** A new authentication round: new keys. @param {(fileId: Uint8Array) => Uint8Array} keyFor */
  rekey(keyFor) {
    for (const f of this.files) f.key = keyFor(fromHex(f.manifest.fileId));
  }

  /** (Re)start on a fresh connection: announce every unfinished file, all up front. */
  start() {
    this.streaming = [];
    const unfinished = this.files.filter((f) => !f.complete);
    for (const f of this.files) {
      f.announced = !f.complete;
      f.started = false;
      f.queue = [][Symbol.iterator]();
      f.unacked.clear();
    }
    this.unackedBytes = 0;
    this.controls = [
      control("transfer_start", {
        fileCount: unfinished.length,
        totalBytes: unfinished.reduce((n, f) => n + f.manifest.size, 0),
      }),
      ...unfinished.map((f) => f.manifest),
      control("transfer_end"),
    ];
  }

  /** The frame for a chunk the shell read. @param {ChunkToSend} chunk @param {Uint8Array} data */
  seal(chunk, data) {
    const f = this.files[chunk.fileIndex];
    if (data.length !== chunk.length) {
      throw new TransferError("source_changed", `${f.manifest.name} changed while being sent`);
    }
    this.chunksSent += 1;
    const header = concat(fromHex(f.manifest.fileId), uintBE(chunk.index, 4));
    const sealed = sealChunk(f.key, header.subarray(0, 16), chunk.index, f.digest, data);
    return concat(header, sealed);
  }

  /** What to put on the channel next; null until the peer answers.
   * @returns {Control | ChunkToSend | null} */
  nextItem() {
    const msg = this.controls.shift();
    if (msg) return msg;
    if (this.unackedBytes >= SEND_WINDOW) return null;
    while (this.streaming.length) {
      const fileIndex = this.streaming[0];
      const f = this.files[fileIndex];
      const next = f.queue.next();
      if (!next.done) {
        const m = f.manifest;
        const index = next.value;
        const length = chunkLength(m, index);
        f.unacked.set(index, length);
        this.unackedBytes += length;
        return { fileIndex, index, offset: index * m.chunkSize, length };
      }
      this.streaming.shift();
    }
    return null;
  }

  /** @param {Control} msg */
  onControl(msg) {
    switch (msg.type) {
      case "manifest_ack":
        return this.beginStreaming(msg.fileId, []);
      case "resume_request":
        return this.beginStreaming(msg.fileId, msg.receivedChunks);
      case "chunk_ack": {
        const f = this.file(msg.fileId);
        return this.ack(f, checkedRanges(msg.ranges, f.manifest.chunkCount));
      }
      case "transfer_complete": {
        const f = this.file(msg.fileId);
        if (msg.status !== "success") {
          throw new TransferError(
            "verify_failed",
            `receiver rejected ${f.manifest.name}: ${String(msg.error).slice(0, 200)}`,
          );
        }
        this.bytesAcked += f.manifest.size - f.ackedBytes;
        f.ackedBytes = f.manifest.size;
        f.complete = true;
        for (const length of f.unacked.values()) this.unackedBytes -= length;
        f.unacked.clear();
        return undefined;
      }
      case "error":
        throw new TransferError(
          `peer_${msg.code}`.slice(0, 64),
          `receiver stopped: ${String(msg.message).slice(0, 300)}`,
        );
      case "keepalive":
        return undefined;
      default:
        throw new TransferError("unexpected", `unexpected ${msg.type} from receiver`);
    }
  }

  /** @param {Sender["files"][number]} f @param {Ranges} held */
  ack(f, held) {
    for (const [start, end] of held) {
      for (let i = start; i < end; i++) {
        this.unackedBytes -= f.unacked.get(i) ?? 0;
        f.unacked.delete(i);
        if (f.acked.add(i)) {
          const length = chunkLength(f.manifest, i);
          f.ackedBytes += length;
          this.bytesAcked += length;
        }
      }
    }
  }

  /** @param {string} fileId */
  file(fileId) {
    const index = this.byId.get(fileId);
    if (index === undefined) {
      throw new TransferError("unknown_file", "receiver named a file that is not being sent");
    }
    return this.files[index];
  }

  /** @param {string} fileId @param {Ranges} held */
  beginStreaming(fileId, held) {
    const f = this.file(fileId);
    if (!f.announced || f.started) {
      throw new TransferError("unexpected", "receiver answered a manifest twice");
    }
    f.started = true;
    const have = ChunkBitmap.fromRanges(
      f.manifest.chunkCount,
      checkedRanges(held, f.manifest.chunkCount),
    );
    this.ack(f, have.ranges());
    f.queue = have.missing();
    this.streaming.push(/** @type {number} */ (this.byId.get(fileId)));
  }
}

// --- receiver ----------------------------------------------------------------------------------

/**
 * @typedef {{kind: "send", message: Control}
 *   | {kind: "admit", manifests: FileManifest[], totalBytes: number}
 *   | {kind: "write", fileId: string, index: number, offset: number, data: Uint8Array}
 *   | {kind: "verify", fileId: string}
 *   | {kind: "finished"}} Action
 * @typedef {{manifest: FileManifest, digest: Uint8Array, key: Uint8Array,
 *   received: ChunkBitmap, unacked: number[], ready: boolean, verifying: boolean,
 *   complete: boolean}} Incoming
 */

export class Receiver {
  /** @param {(fileId: Uint8Array) => Uint8Array} keyFor */
  constructor(keyFor) {
    this.keyFor = keyFor;
    /** @type {Map<string, Incoming>} */
    this.files = new Map();
    this.ended = false;
    this.admitted = false;
    /** @type {Control | null} */
    this.expected = null;
    /** @type {FileManifest[]} */
    this.announced = [];
    this.announcedBytes = 0;
    this.announcedChunks = 0;
    this.announcedNameBytes = 0;
    this.fileCount = 0;
    this.totalBytes = 0;
    this.bytesReceived = 0;
    /** @type {[string, string][]} */
    this.failed = [];
  }

  get done() {
    return this.ended && [...this.files.values()].every((f) => f.complete);
  }

  /** @param {string} fileId */
  file(fileId) {
    return /** @type {Incoming} */ (this.files.get(fileId));
  }

  /** @param {Control} msg @returns {Action[]} */
  onControl(msg) {
    switch (msg.type) {
      case "transfer_start":
        if (msg.version !== VERSION) {
          throw new TransferError("unsupported_version", `peer speaks version ${msg.version}`);
        }
        if (this.expected !== null) {
          throw new TransferError("unexpected", "a second transfer_start before the end");
        }
        this.expected = msg;
        this.announced = [];
        this.ended = false;
        this.announcedBytes = this.announcedChunks = this.announcedNameBytes = 0;
        return [];
      case "file_manifest":
        this.onManifest(/** @type {FileManifest} */ (msg));
        return [];
      case "transfer_end":
        return this.onAnnounced();
      case "error":
        throw new TransferError(
          `peer_${msg.code}`.slice(0, 64),
          `sender stopped: ${String(msg.message).slice(0, 300)}`,
        );
      case "keepalive":
        return [];
      default:
        throw new TransferError("unexpected", `unexpected ${msg.type} from sender`);
    }
  }

  /** @param {FileManifest} m */
  onManifest(m) {
    const expected = this.expected;
    if (expected === null) {
      throw new TransferError("bad_manifest", "a file manifest outside the announcement");
    }
    try {
      checkRelativePath(m.name);
    } catch (exc) {
      if (exc instanceof UnsafeName) throw new TransferError("unsafe_name", exc.message);
      throw exc;
    }
    if (m.kind === "dir" && (m.size || m.chunkCount)) {
      throw new TransferError("bad_manifest", "a directory entry carries data");
    }
    if (!CHUNK_SIZES.includes(m.chunkSize)) {
      throw new TransferError("bad_manifest", `chunk size ${m.chunkSize} is not a protocol size`);
    }
    if (m.chunkCount !== chunkCount(m.size, m.chunkSize)) {
      throw new TransferError("bad_manifest", "chunk count does not match size and chunk size");
    }
    if (m.fileId !== stableFileId(m.name, m.size, m.checksum)) {
      throw new TransferError("bad_manifest", "file id does not match the manifest");
    }
    if (this.admitted) {
      const known = this.files.get(m.fileId);
      if (!known || encode(known.manifest) !== encode(m)) {
        throw new TransferError("outside_manifest", "an entry outside the admitted transfer");
      }
    }
    this.announced.push(m);
    this.announcedBytes += m.size;
    this.announcedChunks += m.chunkCount;
    this.announcedNameBytes += utf8(m.name).length;
    if (this.announced.length > expected.fileCount) {
      throw new TransferError("bad_manifest", `more than the ${expected.fileCount} announced entries`);
    }
    if (this.announcedBytes > expected.totalBytes) {
      throw new TransferError("bad_manifest", "entries larger than the announced total");
    }
    if (this.announcedChunks > MAX_CHUNKS) {
      throw new TransferError("too_large", `more than ${MAX_CHUNKS} chunks in one transfer`);
    }
    if (this.announcedNameBytes > MAX_NAME_BYTES) {
      throw new TransferError("too_large", `names longer than ${MAX_NAME_BYTES} bytes together`);
    }
  }

  /** @returns {Action[]} */
  onAnnounced() {
    const expected = this.expected;
    const manifests = this.announced;
    if (expected === null) {
      throw new TransferError("unexpected", "transfer_end without transfer_start");
    }
    if (manifests.length !== expected.fileCount || this.announcedBytes !== expected.totalBytes) {
      throw new TransferError("bad_manifest", "the entries do not add up to the announcement");
    }
    checkNamesApart(manifests);
    this.expected = null;
    this.announced = [];
    this.ended = true;
    if (this.admitted) {
      /** @type {Action[]} */
      const actions = [];
      for (const m of manifests) {
        const f = this.file(m.fileId);
        if (f.complete) {
          const message = control("transfer_complete", { fileId: m.fileId, status: "success" });
          actions.push({ kind: "send", message });
        } else if (f.ready) {
          actions.push(heldReply(f));
        }
      }
      return this.done ? [...actions, { kind: "finished" }] : actions;
    }
    this.admitted = true;
    this.fileCount = manifests.length;
    this.totalBytes = expected.totalBytes;
    for (const m of manifests) {
      this.files.set(m.fileId, {
        manifest: m,
        digest: manifestDigest(m),
        key: this.keyFor(fromHex(m.fileId)),
        received: new ChunkBitmap(0),
        unacked: [],
        ready: false,
        verifying: false,
        complete: false,
      });
    }
    /** @type {Action[]} */
    const admit = [{ kind: "admit", manifests, totalBytes: expected.totalBytes }];
    return manifests.length ? admit : [...admit, { kind: "finished" }];
  }

  /** The shell prepared the file; `held` is what it already holds, durably.
   * @param {string} fileId @param {ChunkBitmap} held @returns {Action[]} */
  fileReady(fileId, held) {
    const f = this.file(fileId);
    f.received = held;
    f.ready = true;
    for (const [start, end] of held.ranges()) {
      for (let i = start; i < end; i++) this.bytesReceived += chunkLength(f.manifest, i);
    }
    /** @type {Action[]} */
    const actions = [heldReply(f)];
    if (held.complete) {
      f.verifying = true;
      actions.push({ kind: "verify", fileId });
    }
    return actions;
  }

  /** @param {Uint8Array} frame @returns {Action} */
  onChunk(frame) {
    if (frame.length < HEADER_BYTES + TAG_BYTES) {
      throw new TransferError("bad_chunk", "a data chunk is too short");
    }
    const rawId = frame.subarray(0, 16);
    const index = new DataView(frame.buffer, frame.byteOffset + 16, 4).getUint32(0);
    const f = this.files.get(toHex(rawId));
    if (!f || !f.ready || f.verifying || f.complete) {
      throw new TransferError("bad_chunk", "a chunk arrived for a file that is not being received");
    }
    const m = f.manifest;
    if (index >= m.chunkCount) {
      throw new TransferError("bad_chunk", `chunk ${index} is out of range for ${m.chunkCount}`);
    }
    if (f.received.has(index)) throw new TransferError("bad_chunk", `chunk ${index} arrived twice`);
    if (frame.length - HEADER_BYTES !== chunkLength(m, index) + TAG_BYTES) {
      throw new TransferError("bad_chunk", `chunk ${index} has the wrong size`);
    }
    let data;
    try {
      data = openChunk(f.key, rawId, index, f.digest, frame.subarray(HEADER_BYTES));
    } catch {
      throw new TransferError("tampered", `chunk ${index} failed authentication: the data was altered`);
    }
    f.received.add(index);
    f.unacked.push(index);
    this.bytesReceived += data.length;
    return { kind: "write", fileId: m.fileId, index, offset: index * m.chunkSize, data };
  }

  /** The chunks written and not yet acknowledged are durable: acknowledge them.
   * @param {string} fileId @returns {Action[]} */
  onDurable(fileId) {
    const f = this.file(fileId);
    if (!f.unacked.length) return [];
    const acked = toRanges(f.unacked);
    f.unacked = [];
    /** @type {Action[]} */
    const actions = [
      { kind: "send", message: control("chunk_ack", { fileId, ranges: acked }) },
    ];
    if (f.received.complete && !f.verifying) {
      f.verifying = true;
      actions.push({ kind: "verify", fileId });
    }
    return actions;
  }

  /** @param {string} fileId @param {string} [error] @returns {Action[]} */
  onVerified(fileId, error = "") {
    const f = this.file(fileId);
    f.verifying = false;
    f.complete = true;
    /** @type {Action[]} */
    const actions = [];
    if (error) {
      this.failed.push([f.manifest.name, error]);
      actions.push({
        kind: "send",
        message: control("transfer_complete", { fileId, status: "failed", error }),
      });
    } else {
      actions.push({
        kind: "send",
        message: control("transfer_complete", { fileId, status: "success" }),
      });
    }
    if (this.done) actions.push({ kind: "finished" });
    return actions;
  }

  /** Files with chunks written but not yet acknowledged. */
  pending() {
    return [...this.files.values()].filter((f) => f.unacked.length).map((f) => f.manifest.fileId);
  }
}

/** @param {Incoming} f @returns {Action} */
function heldReply(f) {
  const held = f.received.ranges();
  const message = held.length
    ? control("resume_request", { fileId: f.manifest.fileId, receivedChunks: held })
    : control("manifest_ack", { fileId: f.manifest.fileId });
  return { kind: "send", message };
}

/** No two entries on one name (NFC), no entry inside a file. @param {FileManifest[]} manifests */
function checkNamesApart(manifests) {
  const seen = new Set();
  const files = new Set();
  for (const m of manifests) {
    const key = m.name.normalize("NFC");
    if (seen.has(key)) throw new TransferError("bad_manifest", "two entries with the same name");
    seen.add(key);
    if (m.kind === "file") files.add(key);
  }
  for (const key of seen) {
    const parts = key.split("/");
    for (let i = 1; i < parts.length; i++) {
      if (files.has(parts.slice(0, i).join("/"))) {
        throw new TransferError("bad_manifest", "an entry inside a file");
      }
    }
  }
}
