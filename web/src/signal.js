// The signaling conversation (schema v1, signaling/schema.py): requests with replies, and the
// other peer's messages stashed by kind, as fileshare/peer.py's Inbox does, so a transfer can
// notice the peer leaving or aborting while it is busy with the data channel.

import { AuthenticationFailed } from "./crypto.js";

export const SCHEMA_VERSION = 1;
const REQUEST_TIMEOUT_MS = 10_000;
const MAX_STASHED = 64; // per kind: a flooding server cannot make us hold more

export class SignalError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(`${message} (${code})`);
    this.code = code;
  }
}

export class PeerStopped extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(`the other side stopped: ${message}`);
    this.code = `peer_${code}`.slice(0, 64);
  }
}

export class SessionEnded extends Error {}

/** @typedef {{urls: string[], username?: string, credential?: string}} IceServer */

/** @param {Record<string, unknown>} payload */
function abortReason(payload) {
  const code = String(payload.code ?? "error");
  if (code === AuthenticationFailed.code) {
    return new AuthenticationFailed("the other side could not authenticate", true);
  }
  return new PeerStopped(code, String(payload.message ?? "").slice(0, 300));
}

export class Signal {
  /** @param {WebSocket} ws */
  constructor(ws) {
    this.ws = ws;
    this.nextId = 1;
    /** @type {Map<number, {resolve: (m: any) => void, reject: (e: Error) => void}>} */
    this.pending = new Map();
    /** @type {Map<string, Record<string, any>[]>} */
    this.stash = new Map();
    this.peerPresent = false;
    this.arrivals = 0;
    /** @type {Error | null} */
    this.ended = null;
    /** @type {Set<() => void>} */
    this.waiters = new Set();
    ws.addEventListener("message", (e) => this.onFrame(e.data));
    ws.addEventListener("close", () => {
      this.end(new SessionEnded("lost the signaling server"));
      for (const p of this.pending.values()) p.reject(new SessionEnded("lost the signaling server"));
      this.pending.clear();
    });
  }

  /** The signaling server of the page's own origin. @param {string} [url] */
  static async connect(url = defaultUrl()) {
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      ws.addEventListener("open", resolve, { once: true });
      ws.addEventListener("error", () => reject(new SessionEnded("cannot reach the signaling server")), { once: true });
    });
    return new Signal(ws);
  }

  /** @param {Error} reason */
  end(reason) {
    if (!this.ended) this.ended = reason;
    this.notify();
  }

  /** Wake every until(): something it may wait for changed. */
  notify() {
    for (const wake of [...this.waiters]) wake();
  }

  /** @param {unknown} data */
  onFrame(data) {
    let msg;
    try {
      msg = JSON.parse(String(data));
    } catch {
      return this.end(new SessionEnded("the signaling server sent garbage"));
    }
    if (typeof msg !== "object" || msg === null) return undefined;
    const re = typeof msg.re === "number" ? this.pending.get(msg.re) : undefined;
    if (re) {
      this.pending.delete(msg.re);
      if (msg.type === "error") re.reject(new SignalError(String(msg.code), String(msg.message)));
      else re.resolve(msg);
      return undefined;
    }
    switch (msg.type) {
      case "offer":
      case "answer":
      case "ice_candidate":
      case "signal": {
        const payload = msg.payload;
        if (typeof payload !== "object" || payload === null || Array.isArray(payload)) break;
        const kind = msg.type === "signal" ? String(payload.kind ?? "") : msg.type;
        if (kind === "abort") this.end(abortReason(payload));
        // A hello starts a round: what came before it (an offer under the last round's keys,
        // sent while this tab was reloading) belongs to a round that is over.
        if (kind === "hello") this.stash.clear();
        const queue = this.stash.get(kind) ?? [];
        if (queue.length < MAX_STASHED) queue.push(payload);
        this.stash.set(kind, queue);
        break;
      }
      case "peer_joined":
        this.stash.clear(); // whatever came before belongs to the peer's last run
        this.peerPresent = true;
        this.arrivals += 1;
        break;
      case "peer_left":
        this.peerPresent = false;
        break;
      case "session_closed":
        this.end(new SessionEnded(`the session ended (${String(msg.reason).slice(0, 100)})`));
        break;
      case "error":
        this.end(new SignalError(String(msg.code), String(msg.message).slice(0, 300)));
        break;
    }
    this.notify();
    return undefined;
  }

  /** Send a request with a fresh id; resolve with its reply (an error reply rejects).
   * @param {Record<string, unknown>} msg @returns {Promise<Record<string, any>>} */
  request(msg) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SignalError("timeout", "the signaling server did not answer"));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, {
        resolve: (m) => (clearTimeout(timer), resolve(m)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.send({ ...msg, id });
    });
  }

  /** @param {Record<string, unknown>} msg */
  send(msg) {
    if (this.ws.readyState !== WebSocket.OPEN) throw this.ended ?? new SessionEnded("not connected");
    this.ws.send(JSON.stringify({ v: SCHEMA_VERSION, ...msg }));
  }

  /** @param {"offer" | "answer" | "signal"} type @param {Record<string, unknown>} payload */
  relay(type, payload) {
    this.send({ type, payload });
  }

  /** Wait until `ready()`; rejects at once if the session ends or the peer aborts first.
   * @param {() => boolean} ready @param {number | null} timeoutMs */
  until(ready, timeoutMs) {
    return new Promise((resolve, reject) => {
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const check = () => {
        let done = false;
        if (ready()) done = (resolve(undefined), true);
        else if (this.ended) done = (reject(this.ended), true);
        if (done) {
          this.waiters.delete(check);
          clearTimeout(timer);
        }
      };
      if (timeoutMs !== null) {
        timer = setTimeout(() => {
          this.waiters.delete(check);
          reject(new SessionEnded("timed out waiting for the other side"));
        }, timeoutMs);
      }
      this.waiters.add(check);
      check();
    });
  }

  /** @param {string} kind */
  has(kind) {
    return (this.stash.get(kind) ?? []).length > 0;
  }

  /** The peer's next message of this kind. @param {string} kind @param {number | null} timeoutMs */
  async expect(kind, timeoutMs) {
    await this.until(() => this.has(kind), timeoutMs);
    return /** @type {Record<string, any>} */ (this.stash.get(kind)?.shift());
  }

  /** Say why we stop, so the peer reports the cause, then leave. @param {any} exc */
  async abort(exc) {
    if (exc instanceof PeerStopped || exc instanceof SessionEnded || exc?.fromPeer) return;
    try {
      const code = String(exc?.code ?? exc?.name ?? "error").slice(0, 64);
      this.relay("signal", { kind: "abort", code, message: String(exc?.message ?? exc).slice(0, 300) });
    } catch {
      // the server is gone: nobody to tell
    }
  }

  async leave() {
    try {
      await this.request({ type: "leave_session" });
    } catch {
      // leaving a session that is already over
    }
    this.ws.close();
  }
}

export function defaultUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}
