"""Reading a router's UDP mappings from `conntrack -L -p udp` (sans-I/O)."""

from __future__ import annotations

from netsim import conntrack

# Lines as a port-restricted router of a scenario listed them (its host 10.0.1.2, the peer's
# public address 198.51.100.6, the servers on 203.0.113.10).
TABLE = """\
udp      17 17 src=10.0.1.2 dst=198.51.100.6 sport=47535 dport=59890 src=198.51.100.6 \
dst=198.51.100.2 sport=59890 dport=47535 [ASSURED] mark=0 use=1
udp      17 19 src=10.0.1.2 dst=203.0.113.10 sport=39316 dport=3478 src=203.0.113.10 \
dst=198.51.100.2 sport=3478 dport=39316 [ASSURED] mark=0 use=1
udp      17 3 src=10.0.1.2 dst=10.0.2.2 sport=47535 dport=59890 [UNREPLIED] src=10.0.2.2 \
dst=198.51.100.2 sport=59890 dport=47535 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.
"""


def test_parse_udp() -> None:
    flows = conntrack.parse_udp(TABLE)
    assert flows == [
        conntrack.UdpFlow("10.0.1.2", "198.51.100.6", 17, True),
        conntrack.UdpFlow("10.0.1.2", "203.0.113.10", 19, True),
        conntrack.UdpFlow("10.0.1.2", "10.0.2.2", 3, False),
    ]


def test_peer_flow_left_skips_servers_and_unreplied_checks() -> None:
    flows = conntrack.parse_udp(TABLE)
    assert conntrack.peer_flow_left(flows, {"203.0.113.10", "203.0.113.11"}) == 17
    assert conntrack.peer_flow_left(flows, {"198.51.100.6", "203.0.113.10"}) is None
    assert conntrack.parse_udp("garbage\nudp 17 x src=1\ntcp 6 5 src=a dst=b\n") == []
