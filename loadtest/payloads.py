"""Realistic peer-to-peer payloads: what a browser or aiortc peer sends for one DataChannel.

Sizes follow real sessions: an SDP of about 1 KB per side and eight trickled ICE candidates of
about 200 bytes (host, server-reflexive and relay candidates over IPv4 and IPv6). Addresses are
documentation ranges; nothing is ever sent to them.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Final

import msgspec

CANDIDATES_PER_PEER: Final = 8
SENT_AT: Final = "sentAt"  # the payload field stamped with its send time, for relay latency

_SDP = (
    "v=0\r\no=- {sid} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=ice-options:trickle\r\n"
    "a=fingerprint:sha-256 {fingerprint}\r\na=setup:{setup}\r\na=mid:0\r\n"
    "a=sctp-port:5000\r\na=max-message-size:262144\r\n"
)

_CANDIDATES: Final = (
    "candidate:{f} 1 udp 2122260223 192.0.2.{n} {port} typ host generation 0 ufrag {ufrag} "
    "network-id 1 network-cost 10",
    "candidate:{f} 1 udp 2122197247 2001:db8::{n:x} {port} typ host generation 0 ufrag {ufrag} "
    "network-id 2 network-cost 10",
    "candidate:{f} 1 tcp 1518280447 192.0.2.{n} 9 typ host tcptype active generation 0 "
    "ufrag {ufrag} network-id 1 network-cost 10",
    "candidate:{f} 1 udp 1686052607 203.0.113.{n} {port} typ srflx raddr 192.0.2.{n} "
    "rport {port} generation 0 ufrag {ufrag} network-id 1 network-cost 10",
    "candidate:{f} 1 udp 41885439 198.51.100.{n} {port} typ relay raddr 203.0.113.{n} "
    "rport {port} generation 0 ufrag {ufrag} network-id 1 network-cost 10",
)


def _fingerprint() -> str:
    return ":".join(f"{b:02X}" for b in secrets.token_bytes(32))


def description(kind: str) -> dict[str, Any]:
    """An offer or answer for one DataChannel."""
    sdp = _SDP.format(
        sid=secrets.randbelow(2**62),
        ufrag=secrets.token_urlsafe(3),
        pwd=secrets.token_urlsafe(18),
        fingerprint=_fingerprint(),
        setup="actpass" if kind == "offer" else "active",
    )
    return {"type": kind, "sdp": sdp}


def candidates(count: int = CANDIDATES_PER_PEER) -> list[dict[str, Any]]:
    """`count` trickled candidates of one peer."""
    ufrag = secrets.token_urlsafe(3)
    out = []
    for i in range(count):
        line = _CANDIDATES[i % len(_CANDIDATES)].format(
            f=secrets.randbelow(2**32), n=1 + i, port=40000 + secrets.randbelow(20000), ufrag=ufrag
        )
        out.append(
            {
                "candidate": line,
                "sdpMid": "0",
                "sdpMLineIndex": 0,
                "usernameFragment": ufrag,
            }
        )
    return out


def stamped(payload: dict[str, Any]) -> msgspec.Raw:
    """The payload as raw JSON, stamped with its send time (wall clock, one process)."""
    return msgspec.Raw(msgspec.json.encode({**payload, SENT_AT: time.time()}))


class _Stamp(msgspec.Struct):
    sentAt: float = 0.0


class _Framed(msgspec.Struct):
    payload: _Stamp


_stamp_decoder = msgspec.json.Decoder(_Stamp)
_framed_decoder = msgspec.json.Decoder(_Framed)


def age(payload: bytes) -> float:
    """Seconds since this payload was stamped."""
    return time.time() - _stamp_decoder.decode(payload).sentAt


def frame_age(frame: bytes) -> float:
    """Seconds since the payload inside this frame (relayed, or echoed as sent) was stamped."""
    return time.time() - _framed_decoder.decode(frame).payload.sentAt
