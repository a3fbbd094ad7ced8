"""Packetization-layer path MTU discovery (RFC 8899) for our SCTP packets, sans I/O.

aiortc sends every SCTP packet at 1,189 bytes (what fits the minimum IPv6 MTU after UDP and
DTLS), and every packet costs the same Python work on both sides whatever it carries: larger
packets are fewer steps per byte. A larger size is used only once a probe of that size (a
HEARTBEAT padded with a PAD chunk, RFC 8899 6.2) came back acknowledged, so it crossed the
whole path and the peer's DTLS and SCTP; a size whose probes go unanswered MAX_PROBES times
ends the search. Sizes are SCTP packet bytes (what DTLS encrypts). `CEILING` is the most a stock
aiortc peer takes whole: it reads 1,500 bytes of each DTLS record and keeps the rest for its
next read, so a larger record would shift every later packet by one (measured, OpenSSL 3).
A peer that says it reads records whole (this layer's INIT parameter, `association`) is also
probed at jumbo-frame sizes and at DTLS's largest record (`candidates`).

Time is an input: `get_timer()` says when `handle_timer(now)` is due; `probe(now)` says which
size to probe when the caller may send one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASE = 1189  # aiortc's SCTP_MAX_PACKET_LENGTH
CEILING = 1500  # a stock aiortc peer's DTLS read size
# Ascending, whole 4-byte words (SCTP pads chunks): 1,412 and 1,432 are what an IPv6 / IPv4 MTU
# of 1,500 leaves after DTLS (37 bytes with AES-GCM), UDP and IP; 1,500 fits paths with a
# larger MTU (loopback).
CANDIDATES = (1412, 1432, CEILING)
JUMBO = (8912, 8932)  # the same for an MTU of 9,000 (jumbo Ethernet frames)
LARGEST = 2**14  # DTLS's largest record plaintext (RFC 6347 4.1): loopback carries it
MAX_PROBES = 3  # RFC 8899 MAX_PROBES
SCTP_COMMON_HEADER = 12
DATA_CHUNK_HEADER = 16


def candidates(peer_reads: int) -> tuple[int, ...]:
    """The sizes to probe for a peer that takes packets of up to `peer_reads` bytes whole."""
    return tuple(size for size in (*CANDIDATES, *JUMBO, LARGEST) if size <= peer_reads)


def user_data_size(packet: int) -> int:
    """User data per DATA chunk in a packet of `packet` bytes (chunks pad to 4 bytes)."""
    return (packet - SCTP_COMMON_HEADER - DATA_CHUNK_HEADER) // 4 * 4


@dataclass
class Search:
    """Which packet size is confirmed, and which to probe next."""

    candidates: tuple[int, ...] = CANDIDATES
    plpmtu: int = BASE  # the largest size confirmed
    _next: int = 0  # index into candidates of the size being probed
    _sent: int = 0  # probes of that size sent
    _deadline: float | None = None  # when the outstanding probe counts as lost
    _failed: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self._next >= len(self.candidates)

    @property
    def probing(self) -> int | None:
        """The size of the outstanding probe, if one is."""
        return self.candidates[self._next] if self._deadline is not None else None

    def probe(self, now: float, timeout: float) -> int | None:
        """The size to send a probe of now (then an answer is due within `timeout`), or None
        while one is outstanding or the search is over."""
        if self.complete or self._deadline is not None:
            return None
        self._sent += 1
        self._deadline = now + timeout
        return self.candidates[self._next]

    def unsent(self) -> None:
        """The probe `probe` just gave could not leave (the socket was busy): it does not count
        as sent, nor as lost; `probe` gives it again."""
        if self._deadline is not None:
            self._deadline = None
            self._sent -= 1

    def on_ack(self, size: int) -> None:
        """A probe of `size` came back: it is confirmed; the next larger one is up."""
        if size != self.probing:
            return  # a late answer to an earlier probe, or not ours to count
        self.plpmtu = size
        self._advance()

    def offer(self, candidates: tuple[int, ...]) -> None:
        """Search `candidates` instead (what the peer said it takes), unless a probe has gone."""
        if self._next == 0 and self._sent == 0:
            self.candidates = candidates

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        """The outstanding probe is lost when its time is up; MAX_PROBES losses end the search
        (a larger candidate cannot pass where a smaller one did not)."""
        if self._deadline is None or now < self._deadline:
            return
        self._deadline = None
        if self._sent >= MAX_PROBES:
            self._failed.append(self.candidates[self._next])
            self._next = len(self.candidates)

    def on_black_hole(self) -> None:
        """Data at the confirmed size stopped getting through (the path changed): back to
        BASE, and no further search on this association."""
        self.plpmtu = BASE
        self._deadline = None
        self._next = len(self.candidates)

    def _advance(self) -> None:
        self._deadline = None
        self._sent = 0
        self._next += 1
