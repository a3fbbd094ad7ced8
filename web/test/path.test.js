// Which path the page reports (src/events.js pathOf): the ICE transport's selected pair, which
// is current, over the stats' one, which Chromium may serve from a 50 ms cache.

import assert from "node:assert/strict";
import { test } from "node:test";
import { pathOf } from "../src/events.js";

/** A stats report as Chromium's cache held it just after a switch: still the relay pair. */
const stale = new Map(
  Object.entries({
    T: { type: "transport", selectedCandidatePairId: "P1" },
    P1: { type: "candidate-pair", localCandidateId: "L1", remoteCandidateId: "R1", nominated: true, state: "succeeded" },
    P2: { type: "candidate-pair", localCandidateId: "L2", remoteCandidateId: "R1", nominated: true, state: "succeeded" },
    L1: { type: "local-candidate", candidateType: "relay", address: "203.0.113.10", port: 60876, protocol: "udp", relayProtocol: "tcp" },
    L2: { type: "local-candidate", candidateType: "srflx", address: "198.51.100.6", port: 36686, protocol: "udp" },
    R1: { type: "remote-candidate", candidateType: "srflx", address: "198.51.100.2", port: 51984, protocol: "udp" },
  }),
);
const report = /** @type {RTCStatsReport} */ (/** @type {unknown} */ (stale));
/** @param {string} type @param {string} address @param {number} port */
const candidate = (type, address, port) => ({ type, address, port, protocol: "udp" });

test("the transport's selected pair wins over a stale stats report", () => {
  const chosen = { local: candidate("srflx", "198.51.100.6", 36686), remote: candidate("srflx", "198.51.100.2", 51984) };
  assert.deepEqual(pathOf(report, chosen), {
    local: "srflx",
    remote: "srflx",
    protocol: "udp",
    localAddress: "198.51.100.6:36686",
    remoteAddress: "198.51.100.2:51984",
  });
});

test("a relay candidate's TURN transport comes from its stats when the candidate lacks it", () => {
  const chosen = { local: candidate("relay", "203.0.113.10", 60876), remote: candidate("srflx", "198.51.100.2", 51984) };
  assert.equal(pathOf(report, chosen).turn, "tcp");
  assert.equal(pathOf(report, { ...chosen, local: { ...chosen.local, relayProtocol: "udp" } }).turn, "udp");
});

test("without the transport's pair, the stats' selected pair", () => {
  assert.deepEqual(pathOf(report, null), {
    local: "relay",
    remote: "srflx",
    protocol: "udp",
    localAddress: "203.0.113.10:60876",
    remoteAddress: "198.51.100.2:51984",
    turn: "tcp",
  });
  assert.deepEqual(pathOf(/** @type {any} */ (new Map()), null), { local: "unknown", remote: "unknown", protocol: "unknown" });
});
