"""The `doctor` scenario kind: `fileshare doctor --json` runs as a process on a site's host, and
what it finds (NAT mapping and filtering, TURN over each transport, the public address, the
verdict, the path MTU) is checked against what the site's NAT and link must look like
(netsim.expectations.doctor)."""

from __future__ import annotations

import asyncio
import json
import time

from netsim import expectations, link, world
from netsim.lab import Lab
from netsim.results import ScenarioResult
from netsim.scenario import Scenario


def run(scenario: Scenario, net: world.World, lab: Lab) -> ScenarioResult:
    result = ScenarioResult(scenario.name, scenario.kind.value, scenario.description)
    site = scenario.site(scenario.sender.site)
    expected = expectations.doctor(scenario.edges[0])
    result.metrics["nat_a"] = scenario.nat_label(scenario.sender)
    started = time.monotonic()
    client = lab.run("doctor", name="doctor", namespace=net.host(site.name))
    code = asyncio.run(client.wait(timeout=scenario.timeout_s))
    result.metrics["seconds"] = round(time.monotonic() - started, 2)
    errors = client.err.read_text(errors="replace")
    result.check("no traceback", "Traceback" not in errors, "none", errors[-300:] or "none")
    try:
        report = json.loads(client.out.read_text())
    except ValueError:
        result.check("report", False, "doctor's JSON report", client.out.read_text()[-300:])
        return result
    found, said = report["findings"], report["verdict"]
    result.metrics["verdict"] = said["kind"]
    rtt = found["signaling"].get("rtt_ms")  # the server's reply time, as doctor measured it
    if rtt is not None:
        result.metrics["rtt_ms"] = rtt
    signaling = found["signaling"]
    result.check(
        "signaling",
        bool(signaling["reachable"] and signaling["version"]),
        "reachable, with a version",
        signaling,
    )
    offset = signaling.get("clock_offset_s")
    result.check(
        "clock offset", offset is not None and abs(offset) < 2, "under 2 s (one clock)", offset
    )
    if found.get("mtu") is not None:
        result.metrics["mtu"] = found["mtu"]
    result.check("exit", code == 0, 0, code)
    # The host's interface is a veth of 1500 bytes; the site's `mtu` narrows a hop further up,
    # which only the end-to-end probe sees (the answers come back over the same link).
    path_mtu = (site.mtu or link.MTU_BYTES) if expected.turn["udp"] else None
    result.check("path MTU", found.get("mtu") == path_mtu, path_mtu, found.get("mtu"))
    route = found.get("route_mtu")
    result.check("route MTU", route == link.MTU_BYTES, link.MTU_BYTES, route)
    result.check("verdict", said["kind"] == expected.verdict, expected.verdict, said["kind"])
    behaviour = found.get("nat") or {}
    result.check(
        "mapping",
        behaviour.get("mapping") == expected.mapping,
        expected.mapping,
        behaviour.get("mapping"),
    )
    result.check(
        "filtering",
        behaviour.get("filtering") == expected.filtering,
        expected.filtering,
        behaviour.get("filtering"),
    )
    turn = {t["transport"]: t["ok"] for t in found["turn"]}
    result.check("turn", turn == expected.turn, expected.turn, turn)
    if expected.mapping is not None:
        public = net.sites[site.name].public_ip
        mapped = (found["stun"] or [{}])[0].get("mapped") or ""
        result.check("public address", mapped.startswith(public + ":"), public, mapped)
    return result
