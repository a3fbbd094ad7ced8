// The signaling shell's pure parts: the page-load nonce and the reconnect schedule.

import assert from "node:assert/strict";
import { test } from "node:test";
import { INSTANCE, retryDelay } from "../src/signal.js";

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
