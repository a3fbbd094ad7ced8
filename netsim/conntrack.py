"""How long a router's UDP mappings have left to live, read from its conntrack table
(`conntrack -L -p udp`): what shows that keepalives hold a mapping through a pause longer than
the NAT's mapping timeout. Parsing is sans-I/O; `udp_table` is the one call that runs a tool."""

from __future__ import annotations

import subprocess
from collections.abc import Collection
from dataclasses import dataclass

from netsim import netns
from netsim.processes import find_program


@dataclass(frozen=True)
class UdpFlow:
    source: str  # the original direction's, as the LAN host sent it
    destination: str
    seconds_left: int
    replied: bool  # seen both ways: a live pair, not a check that went nowhere


def parse_udp(text: str) -> list[UdpFlow]:
    """`conntrack -L -p udp` lines: `udp 17 SECONDS src=.. dst=.. sport=.. dport=.. ...`."""
    flows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] != "udp" or not fields[2].isdigit():
            continue
        ends = [f.split("=", 1)[1] for f in fields[3:] if f.startswith(("src=", "dst="))]
        if len(ends) < 2:
            continue
        flows.append(UdpFlow(ends[0], ends[1], int(fields[2]), "[UNREPLIED]" not in fields))
    return flows


def peer_flow_left(flows: list[UdpFlow], servers: Collection[str]) -> int | None:
    """Seconds left of the longest-lived replied flow to anything but the servers (the peers'
    direct pair); None when there is none."""
    left = [f.seconds_left for f in flows if f.replied and f.destination not in servers]
    return max(left, default=None)


def udp_table(namespace: str) -> list[UdpFlow]:
    command = [*netns.net_only(namespace), find_program("conntrack"), "-L", "-p", "udp"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    return parse_udp(done.stdout)
