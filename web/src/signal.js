// The signaling conversation (schema v1, signaling/schema.py): requests with replies, and the
// other peer's messages stashed by kind, as fileshare/peer.py's Inbox does, so a transfer can
// notice the peer leaving or aborting while it is busy with the data channel.

import { toHex } from "./bytes.js";
import { AuthenticationFailed, helloIsCurrent, RUN_ID } from "./crypto.js";
import { report } from "./events.js";

export const SCHEMA_VERSION = 1;
const REQUEST_TIMEOUT_MS = 10_000;
const MAX_STASHED = 64; // per kind: a flooding server cannot make us hold more
// This page load's nonce (schema: `instance`): our rejoin after a signaling blip tells the peer
// "same page, same transfer" (peer_joined.resumed), so it keeps the data channel; a reload is a
// new page load, so a new nonce: the peer hears a restart.
export const INSTANCE = toHex(crypto.getRandomValues(new Uint8Array(16)));
const JOINS = new Set(["create_session", "join_session", "rejoin_session"]);
// A lost signaling connection is retried with jittered exponential backoff (as the CLI's
// fileshare/reconnect.py), until this long after it dropped.
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 15_000;
export const GIVE_UP_MS = 120_000;

/** The wait before retry number `attempt` (0, 1, ...): up to a capped exponential bound.
 * @param {number} attempt @param {() => number} [random] */
export function retryDelay(attempt, random = Math.random) {
  const bound = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** attempt);
  return attempt === 0 ? random() * bound : bound / 2 + (random() * bound) / 2;
}

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

/** The peer came back as a new page or process (a reload, the same command again): the keys
 * and messages of its last run are void, and a new round (a PAKE with the same code) takes the
 * transfer up, as fileshare/app.py's rounds do. */
export class PeerRestarted extends Error {
  constructor() {
    super("the other side restarted; taking the transfer up again");
  }
}

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
  /** @param {WebSocket} ws @param {string} url */
  constructor(ws, url) {
    this.ws = ws;
    this.url = url;
    /** Our place in the session, to take back after a blip. @type {{sessionId: string,
     * peerId: string, reconnectKey: string} | null} */
    this.member = null;
    this.connected = true;
    this.leaving = false;
    /** When the current outage began (null while connected), and its failed attempts. */
    this.lostAt = /** @type {number | null} */ (null);
    this.attempts = 0;
    this.nextId = 1;
    /** @type {Map<number, {resolve: (m: any) => void, reject: (e: Error) => void}>} */
    this.pending = new Map();
    /** @type {Map<string, Record<string, any>[]>} */
    this.stash = new Map();
    this.peerPresent = false;
    this.arrivals = 0;
    /** Run ids (schema `runs`) of this page load and of the peer's current run: our hello is
     * addressed to the peer's, and one addressed to another run of ours is stale.
     * @type {string | null} */
    this.run = null;
    /** @type {string | null} */
    this.peerRun = null;
    /** @type {Error | null} */
    this.ended = null;
    /** @type {Set<() => void>} */
    this.waiters = new Set();
    this.attach(ws);
  }

  /** @param {WebSocket} ws */
  attach(ws) {
    this.ws = ws;
    ws.addEventListener("message", (e) => this.onFrame(e.data));
    ws.addEventListener("close", () => {
      for (const p of this.pending.values()) p.reject(new SessionEnded("lost the signaling server"));
      this.pending.clear();
      if (this.member && !this.leaving && !this.ended) this.reconnect();
      else this.end(new SessionEnded("lost the signaling server"));
    });
  }

  /** The signaling server of the page's own origin. @param {string} [url] */
  static async connect(url = defaultUrl()) {
    return new Signal(await open(url), url);
  }

  /** Back into our place after the connection dropped (the data channel carries on meanwhile),
   * or the session ends: it is gone, or the server stayed away past GIVE_UP_MS. */
  async reconnect() {
    this.connected = false;
    this.notify();
    const member = /** @type {NonNullable<Signal["member"]>} */ (this.member);
    this.lostAt ??= Date.now(); // one outage across the rounds a flapping server starts
    for (; Date.now() - this.lostAt < GIVE_UP_MS; this.attempts++) {
      report("reconnecting", { reason: "signaling: lost the signaling server", attempt: this.attempts + 1 });
      await new Promise((r) => setTimeout(r, retryDelay(this.attempts)));
      let ws;
      try {
        ws = await open(this.url);
      } catch {
        continue;
      }
      this.attempts++;
      this.attach(ws);
      try {
        const joined = await this.request({ type: "rejoin_session", ...member });
        this.peerPresent = Boolean(joined.peerPresent);
        this.connected = true;
        report("signaling_restored", { after: Math.round((Date.now() - this.lostAt) / 100) / 10 });
        this.lostAt = null;
        this.attempts = 0;
        this.notify();
        return;
      } catch (exc) {
        if (exc instanceof SignalError && exc.code === "session_not_found") {
          return this.end(new SessionEnded("the session ended while we were away"));
        }
        // the new connection's close handler starts the next round; this one stops here
        return undefined;
      }
    }
    return this.end(new SessionEnded("lost the signaling server"));
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
        // A hello for this run of ours starts a round: what came before it (an offer under the
        // last round's keys, sent while this tab was reloading) belongs to a round that is
        // over. One for a run of ours that is over is dropped (as the CLI's Inbox).
        if (kind === "hello") {
          let current;
          try {
            current = helloIsCurrent(payload, this.run, this.peerRun);
          } catch (exc) {
            this.end(/** @type {Error} */ (exc));
            break;
          }
          if (!current) break;
          this.stash.clear();
        }
        const queue = this.stash.get(kind) ?? [];
        if (queue.length < MAX_STASHED) queue.push(payload);
        this.stash.set(kind, queue);
        break;
      }
      case "peer_joined":
        this.peerPresent = true;
        if (msg.resumed === true) break; // its signaling came back: same page or process
        this.stash.clear(); // whatever came before belongs to the peer's last run
        this.peerRun = runId(msg.peerRun);
        this.arrivals += 1;
        break;
      case "peer_left":
        this.peerPresent = false;
        break;
      case "session_closed":
        this.end(new SessionEnded(`the session ended (${String(msg.reason).slice(0, 100)})`));
        break;
      case "error":
        // Something we relayed found the peer away (its tab reloading between our link
        // dropping and its rejoin): the peer is gone for now, not the session (as the CLI's).
        if (msg.code === "peer_unavailable") this.peerPresent = false;
        else this.end(new SignalError(String(msg.code), String(msg.message).slice(0, 300)));
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
      this.send({ ...msg, ...(JOINS.has(String(msg.type)) ? { instance: INSTANCE, runs: true } : {}), id });
    }).then((reply) => {
      if (!JOINS.has(String(msg.type))) return reply;
      this.run = runId(reply.run);
      if (reply.type === "session_joined") this.peerRun = runId(reply.peerRun);
      if (typeof reply.peerId === "string" && typeof reply.reconnectKey === "string") {
        this.member = { sessionId: String(reply.sessionId), peerId: reply.peerId, reconnectKey: reply.reconnectKey };
        this.url = routed(this.url, this.member.sessionId);
      }
      return reply;
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

  /** Wait until `ready()`; rejects at once if the session ends or the peer aborts first, or
   * with what `stale` returns: it is asked before `ready`, because a message that came after a
   * peer's restart belongs to its new run, never to a wait of the last one.
   * @param {() => boolean} ready @param {number | null} timeoutMs
   * @param {() => Error | null} [stale] */
  until(ready, timeoutMs, stale = () => null) {
    return new Promise((resolve, reject) => {
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const check = () => {
        let done = false;
        const over = stale();
        if (over) done = (reject(over), true);
        else if (ready()) done = (resolve(undefined), true);
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

  /** The peer's next message of this kind.
   * @param {string} kind @param {number | null} timeoutMs @param {() => Error | null} [stale] */
  async expect(kind, timeoutMs, stale) {
    await this.until(() => this.has(kind), timeoutMs, stale);
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
    this.leaving = true;
    try {
      await this.request({ type: "leave_session" });
    } catch {
      // leaving a session that is already over
    }
    this.ws.close();
  }
}

/** A run id the server gave, or null (none given, or not one). @param {unknown} value */
function runId(value) {
  return typeof value === "string" && RUN_ID.test(value) ? value : null;
}

/** A WebSocket, once open. @param {string} url @returns {Promise<WebSocket>} */
function open(url) {
  const ws = new WebSocket(url);
  return new Promise((resolve, reject) => {
    ws.addEventListener("open", () => resolve(ws), { once: true });
    ws.addEventListener("error", () => reject(new SessionEnded("cannot reach the signaling server")), { once: true });
  });
}

/** `url` with `?s=<session number>`: a front that knows the instance tags (the number begins
 * with its creator's) sends the connection to the instance holding the session, so relays stay
 * inside one process; any other server ignores it (as the CLI's signal_client.routed).
 * @param {string} url @param {string} sessionId */
export function routed(url, sessionId) {
  const u = new URL(url);
  u.searchParams.set("s", sessionId);
  return u.toString();
}

export function defaultUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}
