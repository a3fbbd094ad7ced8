// One side of an authenticated WebRTC link, as fileshare/peer.py: the PAKE hello exchange,
// sealed offer/answer (the CLI does not trickle: a description carries all its candidates), the
// confirmation MAC over both DTLS fingerprints, and the DataChannel "fileshare".

import { PeerRestarted } from "./signal.js";
import {
  checkConfirmation,
  confirmationMessage,
  fingerprints,
  Handshake,
  openDescription,
  sealDescription,
  AuthenticationFailed,
} from "./crypto.js";

export const CHANNEL_LABEL = "fileshare";
const CONFIRM_GRACE_MS = 5_000;
// What the peer may send before our transfer loop listens (its first messages race our key
// confirmation on the signaling server): kept, not lost; a peer that sends more is cut off.
const EARLY_MESSAGES = 1024;
/** @type {WeakMap<RTCDataChannel, MessageEvent[]>} */
const early = new WeakMap();

/** Hand `channel`'s messages to `handler`, those that came before it first.
 * @param {RTCDataChannel} channel @param {(event: MessageEvent) => void} handler */
export function listen(channel, handler) {
  channel.onmessage = handler;
  const kept = early.get(channel) ?? [];
  early.delete(channel);
  for (const event of kept) handler(event);
}

/** @typedef {import("./crypto.js").Role} Role
 * @typedef {import("./crypto.js").SessionKeys} SessionKeys
 * @typedef {import("./signal.js").Signal} Signal
 * @typedef {import("./signal.js").IceServer} IceServer */

/** ICE servers are only ever the signaling server's: never a browser or public default.
 * @param {unknown} servers @returns {RTCIceServer[]} */
export function iceServers(servers) {
  if (!Array.isArray(servers)) return [];
  return servers
    .filter((s) => s && Array.isArray(s.urls) && s.urls.every((/** @type {unknown} */ u) => typeof u === "string"))
    .map((s) => ({
      urls: s.urls.filter((/** @type {string} */ u) => /^(stun|turn|turns):/.test(u)),
      ...(typeof s.username === "string" ? { username: s.username } : {}),
      ...(typeof s.credential === "string" ? { credential: s.credential } : {}),
    }))
    .filter((s) => s.urls.length);
}

/** @param {RTCPeerConnection} pc @param {number} timeoutMs */
function gathered(pc, timeoutMs) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve(undefined);
    const timer = setTimeout(resolve, timeoutMs); // send what we have: the peer's checks find us
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve(undefined);
      }
    });
    return undefined;
  });
}

export class Peer {
  /** @param {Role} role @param {Signal} signal @param {string} sessionId
   * @param {Uint8Array} codeSecret @param {RTCIceServer[]} servers */
  constructor(role, signal, sessionId, codeSecret, servers, timeoutMs = 60_000) {
    this.role = role;
    this.signal = signal;
    this.servers = servers;
    this.timeoutMs = timeoutMs;
    this.handshake = new Handshake(role, codeSecret, sessionId);
    /** @type {SessionKeys | null} */
    this.keys = null;
    this.epoch = 0;
    this.round = signal.arrivals; // the peer's run these keys and messages belong to
    this.to = signal.peerRun; // its run id, if the server gives them
  }

  /** Why this round is over (the peer restarted since it began), or null. */
  outdated() {
    return this.signal.arrivals === this.round ? null : new PeerRestarted();
  }

  /** The signal's until(), ended by the peer's restart. @param {() => boolean} ready
   * @param {number | null} timeoutMs */
  until(ready, timeoutMs) {
    return this.signal.until(ready, timeoutMs, () => this.outdated());
  }

  /** @param {string} kind @param {number | null} timeoutMs */
  expect(kind, timeoutMs) {
    return this.signal.expect(kind, timeoutMs, () => this.outdated());
  }

  /** Rejects with PeerRestarted once the peer restarts; otherwise never settles: the end of
   * the session is for the work it races to notice (a receiver that is done may leave while our
   * last acknowledgements drain).
   * @returns {Promise<never>} */
  restarted() {
    return this.until(() => false, null).then(
      () => new Promise(() => undefined),
      (exc) => {
        if (exc instanceof PeerRestarted) throw exc;
        return new Promise(() => undefined);
      },
    );
  }

  /** Relay, unless the peer restarted: it would read our last round's message under its new
   * keys. @param {"offer" | "answer" | "signal"} type @param {Record<string, unknown>} payload */
  relay(type, payload) {
    const over = this.outdated();
    if (over) throw over;
    this.signal.relay(type, payload);
  }

  /** @returns {Role} */
  get peerRole() {
    return this.role === "sender" ? "receiver" : "sender";
  }

  /** The PAKE: one hello each way; the keys are unproven until connect() confirms them. */
  async authenticate() {
    this.relay("signal", this.handshake.hello(this.to));
    const hello = await this.expect("hello", this.timeoutMs);
    this.keys = this.handshake.onHello(hello);
    return this.keys;
  }

  /** Fresh TURN credentials, once both peers are in (the server refuses otherwise). */
  async refreshServers() {
    try {
      const reply = await this.signal.request({ type: "refresh_credentials" });
      this.servers = iceServers(reply.iceServers);
    } catch {
      // keep what we have (STUN only, or nothing): a direct path may still work
    }
  }

  /** A new peer connection for this epoch, authenticated end to end.
   * @returns {Promise<{pc: RTCPeerConnection, channel: RTCDataChannel, epoch: number}>} */
  async connect() {
    const keys = /** @type {SessionKeys} */ (this.keys);
    const pc = new RTCPeerConnection({ iceServers: this.servers });
    try {
      return await this.connectWith(pc, keys);
    } catch (exc) {
      pc.close();
      throw exc;
    }
  }

  /** @param {RTCPeerConnection} pc @param {SessionKeys} keys */
  async connectWith(pc, keys) {
    const signal = this.signal;
    /** @type {RTCDataChannel | null} */
    let channel = null;
    let open = false;
    const opened = (/** @type {RTCDataChannel} */ ch) => {
      channel = ch;
      channel.binaryType = "arraybuffer";
      const kept = /** @type {MessageEvent[]} */ ([]);
      early.set(ch, kept);
      ch.onmessage = (e) => (kept.length < EARLY_MESSAGES ? kept.push(e) : ch.close());
      const mark = () => ((open = true), signal.notify());
      if (ch.readyState === "open") mark();
      else ch.addEventListener("open", mark, { once: true });
    };
    // The sender's channel, to the receiver; any other a peer opens is closed at once.
    pc.addEventListener("datachannel", (e) => {
      if (this.role === "receiver" && e.channel.label === CHANNEL_LABEL && channel === null) opened(e.channel);
      else e.channel.close();
    });
    let offerSdp, answerSdp;
    if (this.role === "sender") {
      opened(pc.createDataChannel(CHANNEL_LABEL, { ordered: true }));
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, 5_000);
      offerSdp = /** @type {RTCSessionDescription} */ (pc.localDescription).sdp;
      const sealed = sealDescription(keys, this.role, this.epoch, offerSdp);
      this.relay("offer", { type: "offer", sealed, epoch: this.epoch });
      const answer = await this.expect("answer", this.timeoutMs);
      answerSdp = openDescription(keys, this.peerRole, this.epoch, answer.sealed);
      await pc.setRemoteDescription({ type: "answer", sdp: answerSdp });
    } else {
      const offer = await this.expect("offer", this.timeoutMs);
      const epoch = offer.epoch;
      if (Number.isInteger(epoch) && epoch >= 0 && epoch < 2 ** 32) this.epoch = epoch;
      offerSdp = openDescription(keys, this.peerRole, this.epoch, offer.sealed);
      await pc.setRemoteDescription({ type: "offer", sdp: offerSdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc, 5_000);
      answerSdp = /** @type {RTCSessionDescription} */ (pc.localDescription).sdp;
      const sealed = sealDescription(keys, this.role, this.epoch, answerSdp);
      this.relay("answer", { type: "answer", sealed });
    }
    const offerFp = fingerprints(offerSdp);
    const answerFp = fingerprints(answerSdp);
    this.relay("signal", confirmationMessage(keys, this.role, offerFp, answerFp, this.epoch));
    await this.until(() => signal.has("confirm") || open, this.timeoutMs);
    if (!signal.has("confirm")) {
      await this.until(() => signal.has("confirm"), CONFIRM_GRACE_MS).catch(() => {
        throw this.outdated() ?? signal.ended ?? new AuthenticationFailed("no key confirmation from the other side");
      });
    }
    const theirs = await this.expect("confirm", null);
    checkConfirmation(keys, this.peerRole, theirs.mac, offerFp, answerFp, this.epoch);
    await this.until(() => open, this.timeoutMs);
    const epoch = this.epoch;
    this.epoch += 1;
    return { pc, channel: /** @type {RTCDataChannel} */ (/** @type {unknown} */ (channel)), epoch };
  }
}
