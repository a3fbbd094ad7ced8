// The signaling shell's pure parts: the page-load nonce, the reconnect schedule, and which
// round (which run of the peer) a message belongs to.

import assert from "node:assert/strict";
import { test } from "node:test";
import { AuthenticationFailed } from "../src/crypto.js";
import { Peer } from "../src/link.js";
import { INSTANCE, PeerRestarted, retryDelay, routed, Signal } from "../src/signal.js";

test("the instance nonce fits the schema's Secret and is fresh per load", () => {
  assert.match(INSTANCE, /^[0-9a-f]{32}$/);
});

test("retries back off exponentially, jittered and capped", () => {
  assert.equal(retryDelay(0, () => 0), 0);
  assert.equal(retryDelay(0, () => 1), 500);
  assert.equal(retryDelay(3, () => 0), 2_000);
  assert.equal(retryDelay(3, () => 1), 4_000);
  assert.equal(retryDelay(40, () => 1), 15_000);
  assert.equal(retryDelay(40, () => 0), 7_500);
});

test("routed names the session for the front and keeps the rest of the address", () => {
  assert.equal(routed("wss://example.org/ws", "1248213907"), "wss://example.org/ws?s=1248213907");
  assert.equal(routed("ws://127.0.0.1:8765/ws?s=1&x=2", "55512345"), "ws://127.0.0.1:8765/ws?s=55512345&x=2");
});

/** A Signal over a stand-in socket: frames go in through onFrame, as from the server. */
function signalFor() {
  const signal = new Signal(/** @type {any} */ (new EventTarget()), "ws://127.0.0.1/ws");
  /** @param {Record<string, unknown>} msg */
  const hear = (msg) => signal.onFrame(JSON.stringify({ v: 1, ...msg }));
  const peer = () => new Peer("receiver", signal, "1248213907", new Uint8Array(32), []);
  return { signal, hear, peer };
}

const OFFER = { type: "offer", payload: { type: "offer", sealed: "c2VhbGVk", epoch: 0 } };

test("a restarted peer ends the waits of its last round; its new run's messages wait for the next", async () => {
  const { signal, hear, peer } = signalFor();
  const old = peer();
  const offer = old.expect("offer", null);
  hear({ type: "peer_joined", peerId: "a", rejoined: true }); // a new page or process
  hear(OFFER);
  await assert.rejects(offer, PeerRestarted);
  await assert.rejects(old.until(() => true, null), PeerRestarted); // even when ready
  assert.throws(() => old.relay("signal", { kind: "hello" }), PeerRestarted); // never sent
  assert.ok(signal.has("offer"), "the new run's offer is kept for the new round");
  assert.deepEqual(await peer().expect("offer", null), OFFER.payload);
});

test("a signaling blip (the same page or process back) is no restart", async () => {
  const { hear, peer } = signalFor();
  const same = peer();
  const offer = same.expect("offer", null);
  hear({ type: "peer_left", peerId: "a", graceSeconds: 60 });
  hear({ type: "peer_joined", peerId: "a", rejoined: true, resumed: true });
  hear(OFFER);
  assert.deepEqual(await offer, OFFER.payload);
  assert.equal(same.outdated(), null);
});

test("a round's watch for the peer's restart fires on a restart, and never on the session's end", async () => {
  const restart = signalFor();
  const watched = restart.peer().restarted();
  restart.hear({ type: "peer_joined", peerId: "a", rejoined: true });
  await assert.rejects(watched, PeerRestarted);

  const end = signalFor();
  const quiet = end.peer().restarted().then(
    () => "settled",
    () => "settled",
  );
  end.hear({ type: "session_closed", reason: "peer_left" }); // e.g. a receiver done and gone
  const tick = new Promise((resolve) => setTimeout(() => resolve("pending"), 20));
  assert.equal(await Promise.race([quiet, tick]), "pending");
});

test("a relay that found the peer away (reloading) marks it absent and keeps the session", async () => {
  const { signal, hear, peer } = signalFor();
  hear({ type: "peer_joined", peerId: "b", rejoined: false });
  const round = peer();
  hear({ type: "error", code: "peer_unavailable", message: "the other peer is not connected", re: null });
  assert.equal(signal.peerPresent, false);
  assert.equal(signal.ended, null);
  hear({ type: "peer_joined", peerId: "b", rejoined: true }); // the reloaded tab
  await assert.rejects(round.expect("answer", null), PeerRestarted);
  hear({ type: "error", code: "session_not_found", message: "no such session", re: null });
  assert.ok(signal.ended);
});

const RUN = "ffdcf55e30c72f96"; // this page load's run, as the server names it
const LAST_RUN = "49d43d6a0ad451b5"; // the run before this page was reloaded
const PEER_RUN = "9c1b0910cffad2fb";
/** @param {Record<string, unknown>} fields */
const hello = (fields = {}) => ({ type: "signal", payload: { kind: "hello", pake: "cGFrZQ==", x25519: "eA==", ...fields } });

test("a hello for a run of ours that is over is dropped, and clears nothing", async () => {
  const { signal, hear } = signalFor();
  signal.run = RUN;
  hear(OFFER); // (kept for the test: the stash is what a stale hello must not clear)
  hear(hello({ to: LAST_RUN }));
  assert.equal(signal.has("hello"), false);
  assert.ok(signal.has("offer"));
  assert.equal(signal.ended, null);
});

test("a hello for this run starts a round: what came before it is cleared", async () => {
  const { signal, hear, peer } = signalFor();
  signal.run = RUN;
  hear(OFFER);
  hear(hello({ to: RUN }));
  assert.equal(signal.has("offer"), false);
  assert.deepEqual(await peer().expect("hello", null), hello({ to: RUN }).payload);
  hear(hello()); // a peer that predates run ids names none: taken
  assert.ok(signal.has("hello"));
});

test("a hello whose `to` is not a run id, or names the peer's own run (ours reflected), fails authentication", () => {
  for (const to of [RUN.toUpperCase(), PEER_RUN]) {
    const { signal, hear } = signalFor();
    signal.run = RUN;
    signal.peerRun = PEER_RUN;
    hear(hello({ to }));
    assert.ok(signal.ended instanceof AuthenticationFailed, to);
    assert.equal(signal.has("hello"), false);
  }
});

test("our hello is addressed to the peer's current run, as the server names it", () => {
  const { signal, hear, peer } = signalFor();
  hear({ type: "peer_joined", peerId: "a", rejoined: false, peerRun: LAST_RUN });
  assert.equal(peer().to, LAST_RUN);
  hear({ type: "peer_joined", peerId: "a", rejoined: true, peerRun: RUN }); // it restarted
  assert.equal(signal.peerRun, RUN);
  assert.equal(peer().to, RUN);
  hear({ type: "peer_joined", peerId: "a", rejoined: true, peerRun: "not a run" });
  assert.equal(peer().to, null);
});
