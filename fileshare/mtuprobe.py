"""Path MTU toward a STUN/TURN server, probed end to end, sans-I/O: the largest UDP datagram
(counted as an IP packet) that reaches the server and gets an answer.

The kernel's route MTU is only what the first hop allows (or what an ICMP 'fragmentation needed'
told it); a smaller link further on that drops big packets silently (a PMTU black hole) shows
only end to end. So Binding requests padded with a SOFTWARE attribute to a given packet size are
sent with DF set (the shell's IP_PMTUDISC_PROBE), and the largest size that is answered is found
by binary search: first the route MTU (the common case ends there), then the floor (576, which
every IPv4 path carries; no answer: no figure), then halving the gap down to the 4-byte steps
STUN messages come in. Any answer with our transaction id counts (an error too: the request
got there). Each size is tried MAX_TRIES times within `step_seconds`; at most 2 + log2(gap / 4)
sizes, so time and packets are bounded (about 10 sizes and 30 datagrams from 1500).

The caller owns the socket and the clock, as with `fileshare.natprobe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fsproto import stun

IPV4_UDP_HEADERS: Final = 28  # what a datagram adds to its STUN message in an IPv4 packet
IPV6_UDP_HEADERS: Final = 48
FLOOR: Final = 576  # RFC 791: every IPv4 host takes datagrams of this size
CEILING: Final = 9000  # jumbo frames; loopback's 64 KiB would only lengthen the search
MAX_TRIES: Final = 3
FIRST_RTO: Final = 0.1
STEP: Final = 4  # STUN messages are whole 32-bit words
_TAG: Final = b"fileshare doctor path MTU probe "
# header, SOFTWARE's type and length, FINGERPRINT: what a request holds besides the padding
_FIXED: Final = stun.HEADER.size + 4 + 8


@dataclass
class _Try:
    size: int
    tid: bytes
    deadline: float
    next_send: float
    sent: int = 0
    rto: float = FIRST_RTO


def request(size: int, headers: int) -> stun.Message:
    """A Binding request that makes an IP packet of exactly `size` bytes."""
    room = size - headers - _FIXED
    if room < len(_TAG) or room % STEP:
        raise ValueError(f"no Binding request fills a packet of {size} bytes")
    message = stun.Message(stun.BINDING, stun.REQUEST)
    return message.add(stun.SOFTWARE, _TAG + b"." * (room - len(_TAG)))


class MtuProbe:
    """Binary search between FLOOR and `ceiling` (the route MTU) for the largest packet the
    server answers; `result` is that size, or None if not even the floor was answered."""

    def __init__(
        self,
        ceiling: int,
        now: float,
        headers: int = IPV4_UDP_HEADERS,
        step_seconds: float = 0.6,
    ) -> None:
        self.headers = headers
        self.step_seconds = step_seconds
        ceiling = min(ceiling, CEILING)
        self.ceiling = ceiling - (ceiling - headers) % STEP  # the largest size a request fills
        self.result: int | None = None
        self.done = False
        self.sizes_tried = 0
        self._low = 0  # the largest size answered so far (0: none)
        self._high = self.ceiling + STEP  # the smallest size known to go unanswered
        self._outbox: list[tuple[bytes, int]] = []
        self._try: _Try | None = None
        self._encoded = b""
        if self.ceiling < FLOOR:
            self.done = True  # a route below the floor: nothing worth probing
        else:
            self._start(self.ceiling, now)

    # --- the caller's side -----------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, int]]:
        """Datagrams, each with the packet size it makes (for the shell's checks)."""
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        t = self._try
        if t is None:
            return None
        return t.deadline if t.sent >= MAX_TRIES else min(t.next_send, t.deadline)

    def handle_timer(self, now: float) -> None:
        t = self._try
        if t is None:
            return
        if now >= t.deadline:
            self._high = t.size
            self._next(now)
        elif now >= t.next_send and t.sent < MAX_TRIES:
            self._send(t, now)

    def receive(self, data: bytes, now: float) -> None:
        """One datagram from the server: the answer to the size being tried, or dropped."""
        t = self._try
        if t is None:
            return
        message = stun.answer(data, t.tid)
        if message is None or message.cls not in (stun.SUCCESS, stun.ERROR):
            return
        self._low = t.size
        self._next(now)

    # --- the search -------------------------------------------------------------------------------

    def _start(self, size: int, now: float) -> None:
        message = request(size, self.headers)
        self._try = _Try(size, message.tid, now + self.step_seconds, now)
        self._encoded = message.encode()
        self.sizes_tried += 1
        self._send(self._try, now)

    def _send(self, t: _Try, now: float) -> None:
        self._outbox.append((self._encoded, t.size))
        t.sent += 1
        t.next_send = now + t.rto
        t.rto *= 2

    def _next(self, now: float) -> None:
        """The next size: the floor after an unanswered ceiling, then the middle of the gap."""
        self._try = None
        floor = FLOOR + (self.headers - FLOOR) % STEP  # the smallest size a request fills
        if self._low == 0 and self._high > floor:
            self._start(floor, now)
        elif self._low and self._high - self._low > STEP:
            middle = (self._low + self._high) // 2
            self._start(middle - (middle - self.headers) % STEP, now)
        else:  # no answer even at the floor (None), or the gap is closed
            self.result, self.done = self._low or None, True
