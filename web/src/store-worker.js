// Received data goes to the origin-private file system, never whole into memory: a dedicated
// worker holds one synchronous access handle per file (random-access writes, flush() for
// durability before a chunk is acknowledged) and hashes each file as it is written
// (prefix-digest.js: only what did not arrive in order is read back).
// Files are named by their fileId: a peer's name never touches the file system here. A file
// whose SHA-256 matched gets a mark (`fileId.ok`) that sw.js checks before serving it.

import { PrefixDigest } from "./prefix-digest.js";

/** The worker-only part of the File System API (not in the DOM typings).
 * @typedef {{write(d: Uint8Array, o: {at: number}): number, read(d: Uint8Array, o: {at: number}): number,
 *   flush(): void, getSize(): number, truncate(n: number): void, close(): void}} SyncHandle */
/** Each open file's access handle and its digest so far.
 * @type {Map<string, {access: SyncHandle, digest: PrefixDigest}>} */
const open = new Map();
/** @type {Promise<FileSystemDirectoryHandle> | null} */
let dir = null;

const incoming = () =>
  (dir ??= navigator.storage.getDirectory().then((root) => root.getDirectoryHandle("incoming", { create: true })));

/** @param {any} msg */
async function handle(msg) {
  switch (msg.op) {
    case "open": {
      const file = await (await incoming()).getFileHandle(`${msg.fileId}.part`, { create: true });
      open.get(msg.fileId)?.access.close(); // opened in an earlier round (the sender restarted)
      const access = await syncHandle(file);
      if (access.getSize() > msg.size) access.truncate(msg.size);
      open.set(msg.fileId, { access, digest: new PrefixDigest() });
      await (await incoming()).removeEntry(`${msg.fileId}.ok`).catch(() => undefined);
      return readHeld(msg.fileId);
    }
    case "clear":
      for (const { access } of open.values()) access.close();
      open.clear();
      dir = null;
      await navigator.storage
        .getDirectory()
        .then((root) => root.removeEntry("incoming", { recursive: true }))
        .catch(() => undefined);
      return null;
    case "write": {
      const opened = open.get(msg.fileId);
      if (!opened) throw new Error("write to a file that is not open");
      const data = new Uint8Array(msg.data);
      let at = 0;
      while (at < data.length) at += opened.access.write(data.subarray(at), { at: msg.offset + at });
      opened.digest.wrote(msg.offset, data);
      return null;
    }
    case "flush": // the data first, then the record of what is held: a record never runs ahead
      for (const { access } of open.values()) access.flush();
      for (const [fileId, bits] of msg.held) await writeHeld(fileId, new Uint8Array(bits));
      return null;
    case "verify": {
      const opened = open.get(msg.fileId);
      if (!opened) throw new Error("verify of a file that is not open");
      const { access, digest } = opened;
      const size = access.getSize();
      const checksum = digest.finish((into, at) => (at < size ? access.read(into, { at }) : 0));
      access.close();
      open.delete(msg.fileId);
      // The mark the service worker asks for before it serves a download: verified, so
      // nothing unverified is ever handed over.
      if (checksum === msg.checksum) await (await incoming()).getFileHandle(`${msg.fileId}.ok`, { create: true });
      return checksum;
    }
    case "remove":
      open.get(msg.fileId)?.access.close();
      open.delete(msg.fileId);
      await (await incoming()).removeEntry(`${msg.fileId}.part`).catch(() => undefined);
      return null;
    default:
      throw new Error(`unknown operation ${msg.op}`);
  }
}

// A reloaded page's worker can ask for a file while the worker of the page it replaced is
// still being torn down and holds it (seen with the hashing of writes making that worker busy):
// the lock is retried for a bounded time before the error stands.
const LOCK_RETRY_MS = 100;
const LOCK_WAIT_MS = 10_000;

/** @param {FileSystemFileHandle} file @returns {Promise<SyncHandle>} */
async function syncHandle(file) {
  for (let waited = 0; ; waited += LOCK_RETRY_MS) {
    try {
      return await /** @type {any} */ (file).createSyncAccessHandle();
    } catch (exc) {
      const held = exc instanceof DOMException && exc.name === "NoModificationAllowedError";
      if (!held || waited >= LOCK_WAIT_MS) throw exc;
      await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS));
    }
  }
}

/** Which chunks of a file a flush made durable (a bitmap), or null. @param {string} fileId */
async function readHeld(fileId) {
  const dir = await incoming();
  const file = await dir.getFileHandle(`${fileId}.held`).catch(() => null);
  if (!file) return null;
  const access = await syncHandle(file);
  const bits = new Uint8Array(access.getSize());
  access.read(bits, { at: 0 });
  access.close();
  return bits;
}

/** @param {string} fileId @param {Uint8Array} bits */
async function writeHeld(fileId, bits) {
  const file = await (await incoming()).getFileHandle(`${fileId}.held`, { create: true });
  const access = await syncHandle(file);
  access.truncate(0);
  access.write(bits, { at: 0 });
  access.flush();
  access.close();
}

/** One operation at a time, in order: writes land before the flush that follows them. */
let queue = Promise.resolve();
self.onmessage = (event) => {
  const msg = event.data;
  queue = queue.then(async () => {
    try {
      const result = await handle(msg);
      if (msg.seq !== undefined) self.postMessage({ seq: msg.seq, result });
    } catch (exc) {
      self.postMessage({ seq: msg.seq, error: String(exc instanceof Error ? exc.message : exc) });
    }
  });
};
