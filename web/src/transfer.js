// The DataChannel shells around the protocol machines, as fileshare/transfer.py: the sender
// fills the channel to HIGH_WATER and waits for it to drain below LOW_WATER, reading each chunk
// from the picked file as a slice; the receiver writes each chunk through the store worker and
// acknowledges chunks only once they are flushed. Both send a keepalive every second, and a
// silence longer than the stall timeout ends the link.

import { ChunkBitmap } from "./bitmap.js";
import { listen } from "./link.js";
import { control, decode, encode, QUEUED_CONTROL_CHARS, QUEUED_FRAME_BYTES, TransferError } from "./protocol.js";

const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;
const FLUSH_BYTES = 8 * 1024 * 1024;
const FLUSH_MS = 1000;
const KEEPALIVE = encode(control("keepalive"));
const STALL_MS = 15_000;

export class LinkLost extends Error {}

/** Send on the channel, or LinkLost: it can close while we await a read or the store (the
 * peer's tab reloads), and a send then throws the browser's InvalidStateError, which would end
 * the transfer instead of starting a new link. The state cannot change within this one turn.
 * @param {RTCDataChannel} channel @param {string | Uint8Array<ArrayBuffer>} data */
function put(channel, data) {
  if (channel.readyState !== "open") throw new LinkLost("the data channel closed");
  if (typeof data === "string") channel.send(data); // (one call per overload, for the type check)
  else channel.send(data);
}

/** Wakes a loop on channel events; tracks when the peer was last heard.
 * @param {RTCDataChannel} channel */
function watch(channel) {
  /** @type {{lastHeard: number, wake: (() => void) | null}} */
  const state = { lastHeard: Date.now(), wake: null };
  const poke = () => state.wake?.();
  channel.bufferedAmountLowThreshold = LOW_WATER;
  channel.addEventListener("bufferedamountlow", poke);
  channel.addEventListener("close", poke);
  const keepalive = setInterval(() => {
    if (channel.readyState === "open") channel.send(KEEPALIVE);
    poke();
  }, 1000);
  /** @param {number} ms */
  const sleep = (ms) =>
    new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      state.wake = () => (clearTimeout(timer), (state.wake = null), resolve(undefined));
    });
  const check = () => {
    if (channel.readyState !== "open") throw new LinkLost("the data channel closed");
    if (Date.now() - state.lastHeard > STALL_MS) throw new LinkLost("the link stalled");
  };
  return { state, poke, sleep, check, stop: () => clearInterval(keepalive) };
}

/**
 * @param {RTCDataChannel} channel
 * @param {import("./protocol.js").Sender} sender
 * @param {File[]} files the picked files, by manifest index (undefined for directories)
 * @param {() => void} onProgress
 */
export async function runSend(channel, sender, files, onProgress) {
  const w = watch(channel);
  /** @type {unknown} */
  let failure = null;
  listen(channel, (event) => {
    w.state.lastHeard = Date.now();
    try {
      if (typeof event.data !== "string") throw new TransferError("unexpected", "binary data from the receiver");
      sender.onControl(decode(event.data));
      onProgress();
    } catch (exc) {
      failure ??= exc;
    }
    w.poke();
  });
  try {
    sender.start();
    while (!sender.done) {
      if (failure) throw failure;
      w.check();
      if (channel.bufferedAmount > HIGH_WATER) {
        await w.sleep(1000);
        continue;
      }
      const item = sender.nextItem();
      if (item === null) {
        await w.sleep(1000);
      } else if ("type" in item) {
        put(channel, encode(item));
      } else {
        const file = files[item.fileIndex];
        const data = new Uint8Array(await file.slice(item.offset, item.offset + item.length).arrayBuffer());
        put(channel, /** @type {Uint8Array<ArrayBuffer>} */ (sender.seal(item, data)));
      }
    }
    if (failure) throw failure;
  } catch (exc) {
    if (exc instanceof TransferError && channel.readyState === "open") {
      channel.send(encode(control("error", { code: exc.code, message: exc.message })));
    }
    throw exc;
  } finally {
    w.stop();
    channel.onmessage = null;
  }
}

/** The store worker, as promises. */
export class Store {
  constructor(url = "__STORE_WORKER__") {
    this.worker = new Worker(url, { type: "module" });
    this.seq = 0;
    /** @type {Map<number, {resolve: (v: any) => void, reject: (e: Error) => void}>} */
    this.replies = new Map();
    /** @type {Error | null} */
    this.failed = null;
    this.worker.onmessage = (event) => {
      const { seq, result, error } = event.data;
      const reply = this.replies.get(seq);
      this.replies.delete(seq);
      if (error && !reply) this.failed ??= new TransferError("write_failed", error);
      if (reply) error ? reply.reject(new TransferError("write_failed", error)) : reply.resolve(result);
    };
  }

  /** @param {Record<string, unknown>} msg @returns {Promise<any>} */
  call(msg) {
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.replies.set(seq, { resolve, reject });
      this.worker.postMessage({ ...msg, seq });
    });
  }

  /** @param {string} fileId @param {number} offset @param {Uint8Array} data */
  write(fileId, offset, data) {
    if (this.failed) throw this.failed;
    const copy = data.slice().buffer;
    this.worker.postMessage({ op: "write", fileId, offset, data: copy }, [copy]);
  }

  /** The received file as the browser's disk-backed File (for saving). @param {string} fileId */
  async file(fileId) {
    const root = await navigator.storage.getDirectory();
    const dir = await root.getDirectoryHandle("incoming");
    return (await dir.getFileHandle(`${fileId}.part`)).getFile();
  }

  close() {
    this.worker.terminate();
  }
}

/**
 * @param {RTCDataChannel} channel
 * @param {import("./protocol.js").Receiver} receiver
 * @param {Store} store
 * @param {(manifests: import("./protocol.js").FileManifest[], total: number) => Promise<void>} approve
 * @param {(fileId: string, ok: boolean) => void} onFile
 * @param {() => void} onProgress
 */
export function runReceive(channel, receiver, store, approve, onFile, onProgress) {
  const w = watch(channel);
  let unflushed = 0;
  let lastFlush = Date.now();
  /** @type {Promise<void>} */
  let queue = Promise.resolve();
  return new Promise((resolve, reject) => {
    let over = false;
    /** @param {unknown} exc */
    const fail = (exc) => {
      if (over) return;
      over = true;
      w.stop();
      clearInterval(ticker);
      channel.onmessage = null;
      if (exc instanceof TransferError && channel.readyState === "open") {
        channel.send(encode(control("error", { code: exc.code, message: exc.message })));
      }
      reject(exc);
    };
    /** @param {import("./protocol.js").Action[]} actions @returns {Promise<void>} */
    const perform = async (actions) => {
      for (const action of actions) {
        switch (action.kind) {
          case "send":
            put(channel, encode(action.message));
            break;
          case "admit":
            await approve(action.manifests, action.totalBytes);
            for (const m of action.manifests) {
              const held =
                m.kind === "file" ? await store.call({ op: "open", fileId: m.fileId, size: m.size }) : null;
              await perform(receiver.fileReady(m.fileId, ChunkBitmap.fromBits(m.chunkCount, held)));
            }
            break;
          case "write":
            store.write(action.fileId, action.offset, action.data);
            unflushed += action.data.length;
            if (unflushed >= FLUSH_BYTES) await flush();
            break;
          case "verify": {
            const m = receiver.file(action.fileId).manifest;
            const ok = m.kind === "dir" || (await store.call({ op: "verify", fileId: m.fileId, checksum: m.checksum })) === m.checksum;
            onFile(m.fileId, ok);
            await perform(receiver.onVerified(m.fileId, ok ? "" : "checksum mismatch"));
            break;
          }
          case "finished":
            over = true;
            w.stop();
            clearInterval(ticker);
            channel.onmessage = null;
            resolve(undefined);
            break;
        }
      }
      onProgress();
    };
    const flush = async () => {
      unflushed = 0;
      lastFlush = Date.now();
      const pending = receiver.pending();
      if (!pending.length) return;
      const held = pending.map((id) => [id, receiver.file(id).received.bits.slice().buffer]);
      await store.call({ op: "flush", held });
      for (const fileId of pending) await perform(receiver.onDurable(fileId));
    };
    /** @param {() => Promise<void>} step */
    const enqueue = (step) => {
      queue = queue.then(() => (over ? undefined : step())).catch(fail);
    };
    const ticker = setInterval(() => {
      try {
        w.check();
      } catch (exc) {
        fail(exc);
      }
      if (Date.now() - lastFlush >= FLUSH_MS) enqueue(flush);
    }, 250);
    // What waits in `queue` while a step awaits (the user's answer, a hash): bounded.
    const queued = { frames: 0, chars: 0 };
    listen(channel, (event) => {
      w.state.lastHeard = Date.now();
      const data = event.data;
      const text = typeof data === "string";
      const size = text ? data.length : data.byteLength;
      /** @type {"chars" | "frames"} */
      const kind = text ? "chars" : "frames";
      const limit = text ? QUEUED_CONTROL_CHARS : QUEUED_FRAME_BYTES;
      queued[kind] += size;
      if (queued[kind] > limit) {
        const what = text ? `${limit} characters` : `${limit} bytes of chunks`;
        fail(new TransferError("flow_control", `the peer sent more than ${what} without waiting for answers`));
        return;
      }
      enqueue(async () => {
        queued[kind] -= size;
        if (text) await perform(receiver.onControl(decode(data)));
        else await perform([receiver.onChunk(new Uint8Array(data))]);
      });
    });
  });
}
