// The page: Send and Receive screens over the modules that speak the CLI's protocol. Everything
// a peer or server sends is shown with textContent, never parsed as HTML.

import { sha256 } from "@noble/hashes/sha2.js";
import { encode as qrEncode } from "uqr";
import { toHex, utf8 } from "./bytes.js";
import { codeSecret, codeText, newCode, parseCode } from "./code.js";
import { AuthenticationFailed } from "./crypto.js";
import { describePath, followPath, progressReporter, report } from "./events.js";
import { iceServers, Peer } from "./link.js";
import { DEFAULT_CHUNK, encode, makeManifest, Receiver, Sender } from "./protocol.js";
import { Saves } from "./saves.js";
import { PeerRestarted, Signal, defaultUrl, routed } from "./signal.js";
import { LinkLost, runReceive, runSend, Store } from "./transfer.js";

const HASH_BLOCK = 4 * 1024 * 1024;
const RECONNECTS = 20;
const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** @param {string} tag @param {Record<string, string>} [attrs] @param {...(Node | string)} children */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children) node.append(child); // strings become text nodes
  return node;
}

/** @param {number} n */
export function humanSize(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) (n /= 1024), i++;
  return `${i ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

/** @param {string} state @param {string} [text] */
function setState(state, text) {
  document.body.dataset.state = state;
  if (text !== undefined) $("status").textContent = text;
}

/** @param {unknown} exc */
function showFailure(exc) {
  const message =
    exc instanceof AuthenticationFailed
      ? "Authentication failed: wrong code, or someone tampered with the connection."
      : String(exc instanceof Error ? exc.message : exc);
  const code = exc instanceof AuthenticationFailed ? "authentication_failed" : String(/** @type {any} */ (exc)?.code ?? "error");
  document.body.dataset.error = code;
  setState("failed", message);
  report("error", { code: code.slice(0, 64), message });
}

/** Progress with rate and time left. @param {number} done @param {number} total @param {number} since */
function showProgress(done, total, since) {
  const bar = /** @type {HTMLProgressElement} */ ($("progress"));
  bar.max = Math.max(total, 1);
  bar.value = total ? done : 1;
  const seconds = (Date.now() - since) / 1000;
  const rate = seconds > 0 ? done / seconds : 0;
  const eta = rate > 0 ? Math.ceil((total - done) / rate) : null;
  $("rate").textContent =
    `${humanSize(done)} of ${humanSize(total)} · ${humanSize(rate)}/s` + (eta !== null && done < total ? ` · ${eta} s left` : "");
}

/** @param {string} words */
function showWords(words) {
  report("sas", { words });
  $("sas").textContent = words;
  $("sas-box").hidden = false;
}

// --- send ------------------------------------------------------------------------------------

/** A picked or dropped entry: its relative path, the file (null for a folder) and the
 * modification time the manifest carries (0 where the browser gives none: picked folders).
 * @typedef {{name: string, file: File | null, mtimeMs: number}} Entry */

/** Files and folders from a drop, with their relative paths. @param {DataTransfer} dt */
async function droppedEntries(dt) {
  /** @type {Entry[]} */
  const out = [];
  /** @param {FileSystemEntry} entry @param {string} prefix */
  const walk = async (entry, prefix) => {
    const name = prefix + entry.name;
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => /** @type {FileSystemFileEntry} */ (entry).file(resolve, reject));
      out.push({ name, file, mtimeMs: file.lastModified });
    } else if (entry.isDirectory) {
      out.push({ name, file: null, mtimeMs: await modified(entry) });
      const reader = /** @type {FileSystemDirectoryEntry} */ (entry).createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${name}/`);
      }
    }
  };
  // Every item taken while the drop event runs: after it (our first await) the items are gone.
  const taken = Array.from(dt.items)
    .filter((item) => item.kind === "file") // dropped text or links are not files
    .map((item) => {
      const entry = item.webkitGetAsEntry();
      return { entry, file: entry ? null : item.getAsFile() }; // no entry: not from a file system
    });
  for (const { entry, file } of taken) {
    if (entry) await walk(entry, "");
    else if (file) out.push({ name: file.name, file, mtimeMs: file.lastModified });
  }
  return out;
}

/** A dropped folder's modification time, where the browser tells it (0 otherwise).
 * @param {FileSystemEntry} entry @returns {Promise<number>} */
function modified(entry) {
  const withMetadata = /** @type {any} */ (entry);
  if (typeof withMetadata.getMetadata !== "function") return Promise.resolve(0);
  return new Promise((resolve) =>
    withMetadata.getMetadata(
      (/** @type {{modificationTime?: Date}} */ meta) => resolve(meta.modificationTime?.getTime() ?? 0),
      () => resolve(0),
    ),
  );
}

/** Picked files (a folder picker gives relative paths; their folders become entries too).
 * @param {FileList} list */
function pickedEntries(list) {
  /** @type {Entry[]} */
  const out = [];
  const dirs = new Set();
  for (const file of Array.from(list)) {
    const name = file.webkitRelativePath || file.name;
    const parts = name.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (!dirs.has(dir)) dirs.add(dir), out.push({ name: dir, file: null, mtimeMs: 0 });
    }
    out.push({ name, file, mtimeMs: file.lastModified });
  }
  return out;
}

/** SHA-256 of a file read in slices (never whole in memory). @param {File} file */
async function fileChecksum(file) {
  const hash = sha256.create();
  for (let at = 0; at < file.size; at += HASH_BLOCK) {
    hash.update(new Uint8Array(await file.slice(at, at + HASH_BLOCK).arrayBuffer()));
  }
  return toHex(hash.digest());
}

// A send in progress survives a reload of its tab, as a receive does: its place in the session
// and the manifests it announced live in this tab's sessionStorage. A picked File does not
// survive a reload (and a handle kept in IndexedDB would need the user's permission again), so
// the page asks for the same files again and checks each by name, size and modification time,
// then by its SHA-256, before it takes its place back: the receiver then asks only for what it
// is missing.
const SEND_KEY = "fileshare.send";

/** @typedef {{code: string, sessionId: string, reconnectKey: string,
 *   manifests: import("./protocol.js").FileManifest[]}} SendState */

/** @returns {SendState | null} */
function sendState() {
  try {
    const state = JSON.parse(sessionStorage.getItem(SEND_KEY) ?? "null");
    return state && Array.isArray(state.manifests) ? state : null;
  } catch {
    return null;
  }
}

/** @param {SendState} state */
function keepSendState(state) {
  try {
    sessionStorage.setItem(SEND_KEY, JSON.stringify(state));
  } catch {
    // too many names for this tab's storage: this send cannot be resumed after a reload
  }
}

/** @param {Entry[]} entries */
async function send(entries) {
  $("send-pick").hidden = true;
  setState("preparing", "Preparing…");
  /** @type {import("./protocol.js").FileManifest[]} */
  const manifests = [];
  /** @type {File[]} */
  const files = [];
  for (const e of entries) {
    const checksum = e.file ? await fileChecksum(e.file) : toHex(sha256(new Uint8Array(0)));
    manifests.push(makeManifest(e.name, e.file?.size ?? 0, checksum, e.file ? "file" : "dir", DEFAULT_CHUNK, e.mtimeMs));
    files.push(/** @type {File} */ (e.file));
  }
  await sendSession(manifests, files, defaultUrl(), async (signal) => {
    const created = await signal.request({ type: "create_session", access: "code" });
    const code = newCode(created.sessionId);
    keepSendState({ code: codeText(code), sessionId: created.sessionId, reconnectKey: created.reconnectKey, manifests });
    return { code, servers: created.iceServers };
  });
}

/** After a reload: the files picked again, checked against what was announced, then sent from
 * our old place in the session (the receiver holds what it had: only the rest is sent).
 * @param {SendState} saved @param {Entry[]} entries */
async function resumeSend(saved, entries) {
  setState("preparing", "Checking the files against the interrupted send…");
  const mismatch = await differences(saved.manifests, entries);
  if (mismatch) {
    setState("resume", `${mismatch} Pick the same files again, or start over.`);
    return;
  }
  $("send-pick").hidden = true;
  $("resume-send").hidden = true;
  const byName = new Map(entries.map((e) => [e.name, e.file]));
  const files = saved.manifests.map((m) => /** @type {File} */ (byName.get(m.name)));
  // (the session's number in the address, as on every join: a front sends us to its instance)
  await sendSession(saved.manifests, files, routed(defaultUrl(), saved.sessionId), async (signal) => {
    const { sessionId, reconnectKey } = saved;
    const joined = await signal.request({ type: "rejoin_session", sessionId, peerId: "a", reconnectKey });
    signal.peerPresent = Boolean(joined.peerPresent);
    return { code: parseCode(saved.code), servers: joined.iceServers };
  });
}

/** Why `entries` are not the files `manifests` announced (null when they are): the same names,
 * sizes and modification times, then the same contents.
 * @param {import("./protocol.js").FileManifest[]} manifests @param {Entry[]} entries */
async function differences(manifests, entries) {
  const picked = new Map(entries.filter((e) => e.file).map((e) => [e.name, /** @type {File} */ (e.file)]));
  const wanted = manifests.filter((m) => m.kind === "file");
  const extra = [...picked.keys()].find((name) => !wanted.some((m) => m.name === name));
  if (extra !== undefined) return `"${extra}" was not part of the interrupted send.`;
  for (const m of wanted) {
    const file = picked.get(m.name);
    if (!file) return `"${m.name}" is missing.`;
    if (file.size !== m.size || (m.mtimeMs && file.lastModified !== m.mtimeMs)) {
      return `"${m.name}" has changed (size or modification time).`;
    }
  }
  for (const m of wanted) {
    if ((await fileChecksum(/** @type {File} */ (picked.get(m.name)))) !== m.checksum) {
      return `"${m.name}" has changed (contents).`;
    }
  }
  return null;
}

/** One send in a session `enter` creates or takes back (through the signaling server at
 * `url`): the code shown, the receiver awaited, authenticated (again with each run of it: a
 * reload, the same command again), and the files sent over as many links as it takes.
 * @param {import("./protocol.js").FileManifest[]} manifests @param {File[]} files @param {string} url
 * @param {(signal: Signal) => Promise<{code: import("./code.js").ShareCode, servers: unknown}>} enter */
async function sendSession(manifests, files, url, enter) {
  const total = manifests.reduce((n, m) => n + m.size, 0);
  report("prepared", { files: manifests.length, bytes: total });
  const signal = await Signal.connect(url);
  try {
    const { code, servers } = await enter(signal);
    const link = `${location.origin}/#${codeText(code)}`;
    $("code").textContent = codeText(code);
    $("link").textContent = link;
    drawQr(link);
    report("code", { code: codeText(code), link });
    $("share").hidden = false;
    setState("waiting", `Waiting for the receiver: ${manifests.length} item(s), ${humanSize(total)}`);
    /** @type {Sender | null} */
    let kept = null; // one across rounds: what the receiver acknowledged stays acknowledged
    const since = Date.now();
    const progress = progressReporter();
    const sender = await rounds(async () => {
      await signal.until(() => signal.peerPresent, null);
      const peer = new Peer("sender", signal, code.sessionId, codeSecret(code), iceServers(servers));
      const keys = await peer.authenticate();
      showWords(keys.sas);
      setState("connecting", "Connecting…");
      await peer.refreshServers();
      const keyFor = (/** @type {Uint8Array} */ id) => keys.fileKey("sender", id);
      if (kept) kept.rekey(keyFor);
      else kept = new Sender(manifests, keyFor);
      const running = kept;
      await epochs(peer, async (channel) => {
        setState("sending", "Sending…");
        await runSend(channel, running, files, () => {
          showProgress(running.bytesAcked, total, since);
          progress(running.bytesAcked, total);
        });
      });
      return running;
    });
    showProgress(total, total, since);
    progress(total, total);
    const chunks = manifests.reduce((n, m) => n + m.chunkCount, 0);
    report("done", { files: manifests.length, bytes: total, chunks, chunksSent: sender.chunksSent });
    setState("done", `Sent ${manifests.length} item(s), ${humanSize(total)}.`);
  } catch (exc) {
    await signal.abort(exc);
    throw exc;
  } finally {
    sessionStorage.removeItem(SEND_KEY); // over, either way: nothing to take back
    await signal.leave();
  }
}

/** @param {string} text */
function drawQr(text) {
  const { data, size } = qrEncode(text, { border: 2 });
  const canvas = /** @type {HTMLCanvasElement} */ ($("qr"));
  const scale = 4;
  canvas.width = canvas.height = size * scale;
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#000";
  data.forEach((row, y) => row.forEach((dark, x) => dark && ctx.fillRect(x * scale, y * scale, scale, scale)));
}

// --- receive ---------------------------------------------------------------------------------

/** Ask before accepting: the words, the names (as text) and the total size.
 * @param {import("./protocol.js").FileManifest[]} manifests @param {number} total */
function askToAccept(manifests, total) {
  const list = $("manifest");
  list.replaceChildren(
    ...manifests.map((m) => el("li", {}, m.kind === "dir" ? `${m.name}/` : `${m.name} (${humanSize(m.size)})`)),
  );
  $("total").textContent = `${manifests.length} item(s), ${humanSize(total)}`;
  $("offer").hidden = false;
  setState("asking", "Check the words, then accept or decline.");
  return new Promise((resolve, reject) => {
    $("accept").onclick = () => (($("offer").hidden = true), resolve(undefined));
    $("decline").onclick = () => {
      $("offer").hidden = true;
      reject(Object.assign(new Error("declined by the receiver"), { code: "declined" }));
    };
  });
}

// A receive in progress survives a reload of its tab: its place in the session (the server's
// reconnect key) and the code live in this tab's sessionStorage, its data and the record of
// which chunks are durable in the origin-private file system.
const RESUME_KEY = "fileshare.receive";

/** @typedef {{code: string, sessionId: string, peerId: string, reconnectKey: string,
 *   accepted?: string}} ResumeState */

/** @returns {ResumeState | null} */
function resumeState() {
  try {
    return JSON.parse(sessionStorage.getItem(RESUME_KEY) ?? "null");
  } catch {
    return null;
  }
}

/** @param {import("./protocol.js").FileManifest[]} manifests */
const announcementDigest = (manifests) => toHex(sha256(utf8(manifests.map((m) => encode(m)).join("\n"))));

/** Our place in the session: taken back after a reload, else joined (and recorded).
 * @param {Signal} signal @param {import("./code.js").ShareCode} code @param {Store} store */
async function joinOrRejoin(signal, code, store) {
  const saved = resumeState();
  if (saved && saved.code === codeText(code)) {
    try {
      const { peerId, reconnectKey, sessionId } = saved;
      const joined = await signal.request({ type: "rejoin_session", sessionId, peerId, reconnectKey });
      return { joined, saved };
    } catch {
      // the session is gone: a fresh join fails the same way, and says why
    }
  }
  sessionStorage.removeItem(RESUME_KEY);
  await store.call({ op: "clear" }); // partial data of an older transfer
  const joined = await signal.request({ type: "join_session", sessionId: code.sessionId });
  /** @type {ResumeState} */
  const state = { code: codeText(code), sessionId: code.sessionId, peerId: joined.peerId, reconnectKey: joined.reconnectKey };
  sessionStorage.setItem(RESUME_KEY, JSON.stringify(state));
  return { joined, saved: state };
}

/** @param {string} input */
async function receive(input) {
  const code = parseCode(input);
  $("receive-form").hidden = true;
  setState("connecting", "Connecting…");
  const signal = await Signal.connect(routed(defaultUrl(), code.sessionId));
  const store = new Store();
  try {
    const { joined, saved: place } = await joinOrRejoin(signal, code, store);
    signal.peerPresent = Boolean(joined.peerPresent);
    let since = Date.now();
    const saved = $("saved");
    const saves = new Saves(); // across rounds: a new one verifies again what an earlier one did
    /** Each listed file's Save button and damage note. @type {Map<string, {button: HTMLButtonElement, damaged: HTMLElement}>} */
    const rows = new Map();
    const show = (/** @type {string} */ fileId) => {
      const row = rows.get(fileId);
      if (!row) return;
      row.button.hidden = row.button.disabled = !saves.saveable(fileId);
      row.damaged.hidden = saves.state(fileId) !== "damaged";
    };
    const approve = async (/** @type {any} */ manifests, /** @type {number} */ total) => {
      // Opened anew (their verified marks dropped): no Save until verified again.
      for (const fileId of saves.reopened(manifests.map((/** @type {any} */ m) => m.fileId))) show(fileId);
      report("manifest", { files: manifests.length, bytes: total }); // announced, as the CLI's
      const digest = announcementDigest(manifests);
      if (place.accepted !== digest) {
        await askToAccept(manifests, total); // after a reload or the sender's, accepted once is enough
        place.accepted = digest;
        sessionStorage.setItem(RESUME_KEY, JSON.stringify(place));
      }
      since = Date.now();
      setState("receiving", "Receiving…");
    };
    const onFile = (/** @type {import("./protocol.js").FileManifest} */ m, /** @type {boolean} */ ok) => {
      const fileId = m.fileId;
      if (m.kind === "dir") return;
      if (saves.verified(fileId, ok)) {
        report(ok ? "saved" : "file_failed", ok ? { name: m.name, fileId, size: m.size } : { name: m.name, reason: "checksum mismatch" });
      }
      if (!rows.has(fileId)) {
        const button = /** @type {HTMLButtonElement} */ (el("button", { type: "button", "data-file-id": fileId }, "Save"));
        button.onclick = () => (saves.saveable(fileId) ? saveFile(store, fileId, m.name) : undefined);
        const damaged = el("strong", {}, "damaged: not saved");
        rows.set(fileId, { button, damaged });
        saved.append(el("li", {}, `${m.name} `, button, damaged));
      }
      show(fileId);
    };
    const progress = progressReporter();
    const receiver = await rounds(async () => {
      const peer = new Peer("receiver", signal, code.sessionId, codeSecret(code), iceServers(joined.iceServers));
      const keys = await peer.authenticate();
      showWords(keys.sas);
      await peer.refreshServers();
      // New keys, and what the store holds: the sender sends only the rest.
      const receiver = new Receiver((id) => keys.fileKey("sender", id));
      const onVerified = (/** @type {string} */ fileId, /** @type {boolean} */ ok) => onFile(receiver.file(fileId).manifest, ok);
      // A new offer means the sender lost the link and is rebuilding it: follow it.
      const newOffer = () =>
        peer.until(() => signal.has("offer"), null).then(() => {
          throw new LinkLost("the sender reconnected");
        });
      await epochs(peer, async (channel) => {
        const work = runReceive(channel, receiver, store, approve, onVerified, () => {
          showProgress(receiver.bytesReceived, receiver.totalBytes, since);
          progress(receiver.bytesReceived, receiver.totalBytes);
        });
        work.catch(() => undefined); // when the new offer wins, the old link's failure is moot
        await Promise.race([work, newOffer()]);
        await drained(channel);
      });
      return receiver;
    });
    const failed = receiver.failed.length;
    report("done", { files: receiver.fileCount, bytes: receiver.bytesReceived, failed });
    setState(failed ? "failed" : "done", failed ? `${failed} file(s) did not arrive intact.` : `Received ${receiver.fileCount} item(s), ${humanSize(receiver.totalBytes)}: verified.`);
  } catch (exc) {
    await signal.abort(exc);
    throw exc;
  } finally {
    sessionStorage.removeItem(RESUME_KEY); // over, either way: nothing to rejoin
    await signal.leave();
  }
}

/** Authentication rounds, as the CLI's (fileshare/app.py): the peer may come back as a new page
 * or process (a reload, the same command again) that joins the session anew; then a new PAKE
 * with the same code gives new keys, and the transfer goes on from what the receiver holds.
 * @template T @param {() => Promise<T>} run @returns {Promise<T>} */
async function rounds(run) {
  for (let round = 0; ; round++) {
    try {
      return await run();
    } catch (exc) {
      if (!(exc instanceof PeerRestarted) || round >= RECONNECTS) throw exc;
      setState("reconnecting", `Reconnecting: ${exc.message}`);
      report("reconnecting", { reason: exc.message, attempt: 0 });
    }
  }
}

/** Connect, run, and on a lost link connect again (a new epoch, confirmed under the same
 * keys) once both sides are back on the signaling server (the other may be reloading): the
 * protocol then sends only what is missing. A peer's restart ends the round (PeerRestarted).
 * @param {Peer} peer @param {(channel: RTCDataChannel) => Promise<void>} run */
async function epochs(peer, run) {
  const signal = peer.signal;
  for (let attempt = 0; ; attempt++) {
    if (attempt) await peer.until(() => signal.peerPresent && signal.connected, null);
    const { pc, channel, epoch } = await peer.connect();
    const at = Date.now();
    describePath(pc).then((path) => report("connected", { epoch, path }, at)); // never delays the run
    followPath(pc, epoch);
    try {
      const work = run(channel);
      work.catch(() => undefined); // when the restart wins, the old link's failure is moot
      await Promise.race([work, peer.restarted()]);
      return;
    } catch (exc) {
      if (!(exc instanceof LinkLost) || attempt >= RECONNECTS) throw exc;
      setState("reconnecting", `Reconnecting: ${exc.message}`);
      report("reconnecting", { reason: exc.message, attempt: attempt + 1 });
    } finally {
      pc.close();
    }
  }
}

/** Let the last acknowledgements reach the sender before the connection closes.
 * @param {RTCDataChannel} channel */
async function drained(channel) {
  for (let i = 0; i < 50 && channel.readyState === "open" && channel.bufferedAmount > 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 500));
}

/** Offer a verified file for saving, streamed from the origin-private file system: through the
 * File System Access save picker where the browser has one; else as a download the service
 * worker streams (sw.js); else (no service worker in control) as a Blob over the disk-backed
 * File, which copies nothing.
 * @param {Store} store @param {string} fileId @param {string} name */
async function saveFile(store, fileId, name) {
  const base = name.split("/").pop() ?? "download";
  const picker = /** @type {any} */ (window).showSaveFilePicker;
  if (picker && !navigator.webdriver) {
    const target = await picker({ suggestedName: base });
    await (await store.file(fileId)).stream().pipeTo(await target.createWritable());
    return;
  }
  if (navigator.serviceWorker?.controller) {
    // A navigation (which the worker answers as an attachment: the page stays); a link with a
    // `download` attribute would not reach the worker in Chromium.
    location.assign(`/download/${fileId}/${encodeURIComponent(base)}`);
    return;
  }
  // (the Blob's type keeps the browser from guessing an extension)
  const url = URL.createObjectURL(new Blob([await store.file(fileId)], { type: "application/octet-stream" }));
  const a = el("a", { href: url, download: base });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// --- wiring ----------------------------------------------------------------------------------

/** @param {Promise<unknown>} work */
const guarded = (work) => work.catch(showFailure);

function main() {
  $("tab-send").onclick = () => (($("send").hidden = false), ($("receive").hidden = true));
  $("tab-receive").onclick = () => (($("send").hidden = true), ($("receive").hidden = false));
  const picker = /** @type {HTMLInputElement} */ ($("files"));
  const folder = /** @type {HTMLInputElement} */ ($("folder"));
  /** @param {Entry[]} entries */
  const sendEntries = (entries) => {
    const saved = sendState();
    return saved ? resumeSend(saved, entries) : send(entries);
  };
  for (const input of [picker, folder]) {
    input.onchange = () => {
      if (!input.files?.length) return;
      const entries = pickedEntries(input.files);
      input.value = ""; // picking the same files again (after a refusal) is a change too
      guarded(sendEntries(entries));
    };
  }
  const drop = $("drop");
  drop.ondragover = (e) => e.preventDefault();
  drop.ondrop = (e) => {
    e.preventDefault();
    if (e.dataTransfer) guarded(droppedEntries(e.dataTransfer).then((entries) => (entries.length ? sendEntries(entries) : undefined)));
  };
  const codeInput = /** @type {HTMLInputElement} */ ($("code-input"));
  $("receive-form").onsubmit = (e) => {
    e.preventDefault();
    guarded(receive(codeInput.value));
  };
  const takeCodeFromLink = () => {
    if (location.hash.length <= 1) return;
    codeInput.value = decodeURIComponent(location.hash.slice(1));
    history.replaceState(null, "", location.pathname); // the code leaves the address bar
    $("tab-receive").click();
  };
  takeCodeFromLink();
  window.addEventListener("hashchange", takeCodeFromLink);
  const unfinished = resumeState();
  if (unfinished && !codeInput.value) {
    $("tab-receive").click();
    codeInput.value = unfinished.code;
    setState("ready", "");
    guarded(receive(unfinished.code));
    return;
  }
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => undefined);
  const unsent = sendState();
  if (unsent) askForTheSameFiles(unsent);
  else setState("ready", "");
}

/** A send this tab was running before a reload: the user picks the same files to carry on.
 * @param {SendState} saved */
function askForTheSameFiles(saved) {
  const files = saved.manifests.filter((m) => m.kind === "file");
  const total = files.reduce((n, m) => n + m.size, 0);
  $("resume-what").textContent = `${files.length} file(s), ${humanSize(total)}, code ${saved.code}`;
  $("resume-names").replaceChildren(...files.slice(0, 20).map((m) => el("li", {}, m.name)));
  $("resume-send").hidden = false;
  $("start-over").onclick = () => {
    sessionStorage.removeItem(SEND_KEY); // the receiver's wait for us ends with the session's grace
    $("resume-send").hidden = true;
    setState("ready", "");
  };
  setState("resume", "This page was reloaded while sending: pick the same files again to carry on.");
}

main();
