// The signaling shell's pure parts: the page-load nonce and the reconnect schedule.

import assert from "node:assert/strict";
import { test } from "node:test";
import { INSTANCE, retryDelay, routed } from "../src/signal.js";

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
