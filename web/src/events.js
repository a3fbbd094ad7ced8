// The page's events, named and shaped as the CLI's `--json` events (fileshare/cli.py), as DOM
// events on `window` ("fileshare", detail = one event): whoever drives the page (the netsim
// browser runner, netsim/browser_client.py) reads the same stream it reads from the CLI.

export const EVENT_TYPE = "fileshare";
const PROGRESS_EVERY_MS = 200; // as the CLI: a progress event at most five times a second

/** @param {string} event @param {Record<string, unknown>} [fields] @param {number} [at] when it
 * happened (ms since the epoch), if not now */
export function report(event, fields = {}, at = Date.now()) {
  const detail = { event, ts: Math.round(at) / 1000, ...fields };
  window.dispatchEvent(new CustomEvent(EVENT_TYPE, { detail }));
}

/** A progress reporter that drops events closer than PROGRESS_EVERY_MS, except the last one. */
export function progressReporter() {
  let last = 0;
  /** @param {number} done @param {number} total */
  return (done, total) => {
    const now = Date.now();
    if (done < total && now - last < PROGRESS_EVERY_MS) return;
    last = now;
    report("progress", { done, total });
  };
}

/** Which candidate pair carries the link, named as the CLI names it (fileshare/peer.py
 * describe_path and Link.path): candidate types, transport, and the TURN leg's transport.
 * @param {RTCPeerConnection} pc @returns {Promise<Record<string, string>>} */
export async function describePath(pc) {
  const ice = /** @type {any} */ (pc.sctp?.transport.iceTransport);
  return pathOf(await pc.getStats(), ice?.getSelectedCandidatePair?.() ?? null);
}

/** The path from the ICE transport's selected pair (`chosen`) where the browser has one, else
 * from the stats' selected pair. The transport's is current; the stats are not always:
 * Chromium answers getStats from a cache for 50 ms, so the report asked for at a switch just
 * after the one asked for at `connected` still named the old pair (a relay, in netsim's grid,
 * while the page already sent on the direct pair). The stats still give a relay candidate's
 * TURN transport, which a candidate object may lack.
 * @param {RTCStatsReport} stats @param {{ local: any, remote: any } | null} chosen
 * @returns {Record<string, string>} */
export function pathOf(stats, chosen) {
  /** @param {any} c */
  const fromCandidate = (c) => ({
    candidateType: c.type,
    address: c.address,
    port: c.port,
    protocol: c.protocol,
    relayProtocol: c.relayProtocol ?? relayProtocolOf(stats, c),
  });
  /** @type {any} */
  let pair = null;
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) {
    stats.forEach((s) => {
      if (!pair && s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
    });
  }
  const local = chosen ? fromCandidate(chosen.local) : pair && stats.get(pair.localCandidateId);
  const remote = chosen ? fromCandidate(chosen.remote) : pair && stats.get(pair.remoteCandidateId);
  if (!local || !remote) return { local: "unknown", remote: "unknown", protocol: "unknown" };
  /** @param {any} c @param {string} key */
  const where = (c, key) => (c.address ? { [key]: `${c.address}:${c.port}` } : {});
  return {
    local: String(local.candidateType),
    remote: String(remote.candidateType),
    protocol: String(local.protocol),
    ...where(local, "localAddress"),
    ...where(remote, "remoteAddress"),
    ...(local.candidateType === "relay" && local.relayProtocol ? { turn: String(local.relayProtocol) } : {}),
  };
}

/** A local relay candidate's TURN transport, from its stats (same address and port).
 * @param {RTCStatsReport} stats @param {any} candidate @returns {string | undefined} */
function relayProtocolOf(stats, candidate) {
  /** @type {string | undefined} */
  let found;
  stats.forEach((s) => {
    if (s.type === "local-candidate" && s.address === candidate.address && s.port === candidate.port) {
      found = s.relayProtocol ?? found;
    }
  });
  return found;
}

/** A `path` event each time the link moves to another candidate pair: Chromium, as the
 * controlling agent, nominates the first pair that works (often the relay) and moves to a
 * better one (a direct pair) once its checks succeed.
 * @param {RTCPeerConnection} pc @param {number} epoch */
export function followPath(pc, epoch) {
  const ice = pc.sctp?.transport.iceTransport;
  ice?.addEventListener("selectedcandidatepairchange", async () => {
    if (pc.connectionState !== "closed") report("path", { epoch, path: await describePath(pc) });
  });
}
