"""Congestion control for the SCTP sender, sans I/O: the association feeds it sends, SACKs,
losses and timeouts with their times, and reads back a congestion window and a pacing rate.

Two controllers behind one interface:
- `Reno`: RFC 9260 section 7.2 as stock aiortc does it (slow start, congestion avoidance,
  halving on fast retransmit, one packet after a timeout). Loss is the congestion signal.
- `Bbr`: a model of the path (bottleneck bandwidth from delivery-rate samples, minimum RTT)
  in the manner of BBR v1: it paces at gain x bandwidth and caps the flight at gain x BDP.
  A random loss does not shrink it; only loss sustained over several round trips lowers the
  bandwidth estimate (a path that drops a fifth of what it is offered is congested). A round
  whose loss says the bottleneck's queue overflowed caps the window (BBR v2's inflight_hi,
  simplified) and ends startup. It starts with TCP's window and probes the RTT with BBR v2's
  (half the BDP), not v1's 4 packets. Startup keeps BBR v3's window (2 BDP, not v1's 2.89)
  and also ends when the RTT says the bottleneck's queue is building (RFC 9406's signal).
"""

from __future__ import annotations

from collections import deque
from typing import Literal, NamedTuple, Protocol

MTU = 1172  # aiortc's USERDATA_MAX_LENGTH: user data per DATA chunk, the unit of cwnd until
# path MTU probing confirms larger packets (`set_mtu`)
INITIAL_CWND = 4 * MTU  # RFC 9260 7.2.1: min(4 MTU, max(2 MTU, 4404 bytes))
# BBR's first window: TCP's (RFC 6928, 10 segments, 14,600 bytes), as Chromium's own SCTP
# (dcsctp, 10 MTU) also starts. The 4-MTU window took 1.6 more round trips to fill the pipe:
# 20 Mbit/s, 80 ms, 25 MB went from 0.951 to 0.959 of the wire ceiling (3 runs alternating).
BBR_INITIAL_CWND = 14_600
# Packets with DATA per SACK a sender of ours asks its receiver for while nothing is lost (the
# INIT parameter in `association`); both controllers count a SACK's bytes in full. A peer that
# SACKs every 4th packet instead of every 2nd halved the SACKs and took both ends' CPU per GiB
# from 150 to 130 at 1,432-byte packets, 10.8 -> 14.9 MB/s (a veth, 3 runs alternating).
# Every 8th: the sender's UDP_SEGMENT runs (`wire`) grow with the room a SACK makes; over the
# links bench's emulated routers (each datagram through their netfilter in the sending
# process's time) 100 Mbit/s, 20 ms went from 0.90-0.93 to 0.97 of the wire ceiling, 150 ms
# from 0.62-0.72 to 0.82, 151 -> 132-140 CPU-s/GiB; 20 Mbit/s, 80 ms, 1 % unchanged (0.95).
SACK_EVERY_ASKED = 8

Kind = Literal["reno", "bbr"]


class Stamp(NamedTuple):
    """What the sender knew when a chunk left: the base of a delivery-rate sample. One per
    packet sent, one `Ack` per SACK: a NamedTuple is built in 0.66 µs, a frozen dataclass in
    1.7 (timeit, this machine)."""

    delivered: int  # bytes acknowledged before this chunk was sent
    delivered_time: float  # when that count last grew
    first_sent_time: float  # when the latest acknowledged chunk had been sent
    sent_time: float  # when this chunk was sent
    app_limited: bool  # sent while a gap the sender left (not the path) was in the pipe


class Ack(NamedTuple):
    now: float
    acked_bytes: int  # newly acknowledged (cumulatively or in gap blocks)
    rtt: float | None  # from a chunk sent once (Karn's rule)
    flight_size: int  # bytes outstanding after this SACK
    cwnd_full: bool  # the flight filled the window before this SACK
    in_recovery: bool  # a fast recovery is under way
    newest: Stamp | None  # the stamp of the latest-sent chunk this SACK acknowledged


class Controller(Protocol):
    cwnd: int

    def pacing_rate(self) -> float | None:
        """Bytes per second to pace at, or None to send as the window opens."""

    def stamp(self, now: float, app_limited: bool) -> Stamp:
        """`app_limited`: the sender, not the path, held this chunk back (nothing queued, or
        the process woke too late to keep the pace)."""

    def on_ack(self, ack: Ack) -> None: ...

    def on_loss(self, now: float, lost_bytes: int, new_recovery: bool) -> None:
        """Chunks missed three times; `new_recovery` for the first loss of a recovery."""

    def on_timeout(self, now: float) -> None:
        """T3-rtx expired: everything outstanding is to be sent again."""

    def set_mtu(self, mtu: int) -> None:
        """New DATA chunks carry `mtu` bytes of user data: the unit of the window's steps and
        floors (a floor of 4 x 1,172 bytes would hold no 16 KiB packet at all)."""


class Reno:
    """Stock aiortc's behaviour, kept as the reference and the conservative choice."""

    def __init__(self, ssthresh: int = 2**20) -> None:
        self.cwnd = INITIAL_CWND
        self.mtu = MTU
        self.ssthresh = ssthresh
        self._partial_bytes_acked = 0
        self._delivered = 0

    def pacing_rate(self) -> float | None:
        return None

    def stamp(self, now: float, app_limited: bool) -> Stamp:
        return Stamp(self._delivered, 0.0, 0.0, now, app_limited)

    def on_ack(self, ack: Ack) -> None:
        self._delivered += ack.acked_bytes
        if ack.in_recovery or not ack.acked_bytes or not ack.cwnd_full:
            return
        if self.cwnd <= self.ssthresh:
            # slow start, the step per SACK capped at the packets one SACK covers when the
            # receiver does as asked (RFC 3465's limit L, there 2 for an ACK every second
            # segment): a stretched SACK grows the window as the SACKs it stands for would
            self.cwnd += min(ack.acked_bytes, SACK_EVERY_ASKED * self.mtu)
        else:
            self._partial_bytes_acked += ack.acked_bytes
            if self._partial_bytes_acked >= self.cwnd:
                self._partial_bytes_acked -= self.cwnd
                self.cwnd += self.mtu

    def on_loss(self, now: float, lost_bytes: int, new_recovery: bool) -> None:
        if not new_recovery:
            return
        self.ssthresh = max(self.cwnd // 2, 4 * self.mtu)
        self.cwnd = self.ssthresh
        self._partial_bytes_acked = 0

    def on_timeout(self, now: float) -> None:
        self.ssthresh = max(self.cwnd // 2, 4 * self.mtu)
        self.cwnd = self.mtu
        self._partial_bytes_acked = 0

    def set_mtu(self, mtu: int) -> None:
        self.mtu = mtu


class WindowedMax:
    """The largest value seen over the last `span` rounds."""

    def __init__(self, span: int) -> None:
        self.span = span
        self._samples: deque[tuple[int, float]] = deque()  # (round, value), values decreasing

    def update(self, round_count: int, value: float) -> None:
        while self._samples and self._samples[-1][1] <= value:
            self._samples.pop()
        self._samples.append((round_count, value))
        while self._samples[0][0] <= round_count - self.span:
            self._samples.popleft()

    def scale(self, factor: float) -> None:
        self._samples = deque((r, v * factor) for r, v in self._samples)

    def reset(self) -> None:
        self._samples.clear()

    @property
    def value(self) -> float:
        return self._samples[0][1] if self._samples else 0.0


STARTUP_GAIN = 2.885  # 2/ln 2: doubles the delivery rate each round
PROBE_GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
CWND_GAIN = 2.0  # in startup too (BBR v3; v1 had 2.89: see STARTUP_DELAY_SAMPLES)
BW_WINDOW_ROUNDS = 10
MIN_RTT_WINDOW = 10.0  # seconds
PROBE_RTT_TIME = 0.2
# BBR v2's ProbeRTT window (half the BDP), not v1's 4 packets: the queue still drains, so the
# minimum RTT is seen, while the link keeps half its rate. v1's cost 200 ms of nearly idle link
# every 10 s: at 20 Mbit/s, 20 ms RTT a 25 MB transfer went from 0.975 to 0.982 of the wire
# ceiling with this (3 runs alternating in one world; at 80 ms unchanged, 0.958).
PROBE_RTT_CWND_GAIN = 0.5
FULL_BW_GROWTH = 1.25
FULL_BW_ROUNDS = 3
# Startup also ends on RFC 9406 (HyStart++)'s delay signal: a round whose first RTT samples
# all exceed the previous round's least by an eighth of it (4-16 ms): the bottleneck's queue
# is building, so the pipe is full. Waiting three rounds for the bandwidth to stop growing,
# with a window of 2.89 BDP, overflowed the queue for two round trips: at 100 Mbit/s, 150 ms
# (50 ms of queue) 2-3 MB were lost in 2,000 holes, more than a SACK reports, and the repair
# took a second. With both: 0.5-1.2 MB (benches/dc_peer.py in the links bench's world). The
# links bench there, 3 runs each alternating with the tree before: steady 90-95 -> 93-95
# Mbit/s, the whole run 0.76-0.81 -> 0.81-0.82 of the link (within this machine's noise).
# On the simulated path (tests) the signal acts at 20 Mbit/s, 80 ms: 174 -> 61 packets lost.
STARTUP_DELAY_SAMPLES = 8
STARTUP_DELAY_RISE = (0.004, 0.016)  # seconds: the least and most an eighth is taken as
LOSS_THRESHOLD = 0.2  # a round losing more than this fraction is congested ...
LOSS_ROUNDS = 2  # ... when it happens this many rounds in a row
LOSS_BACKOFF = 0.85
# BBR v2's inflight_hi, simplified: a round losing more than this fraction (several times any
# random loss the link profiles carry, 0.5-3 %) overflowed the bottleneck's queue; the window
# is then capped at INFLIGHT_BETA of itself, never below one BDP (the pipe stays full), and the
# cap grows by a packet a round. v1's window of 2 BDP overflows a queue shorter than a BDP at
# each probe: 100 Mbit/s, 150 ms, 50 ms of queue lost 100-700 kB a few times a second.
INFLIGHT_LOSS = 0.05
INFLIGHT_LOSS_PACKETS = 8  # and at least this many packets (BBR v2's count in startup): one
# random loss in a round of 10 packets is not a full queue
INFLIGHT_BETA = 0.85
MIN_CWND_PACKETS = 4
MIN_CWND = MIN_CWND_PACKETS * MTU
# The round trip the window is sized for is never taken below this: a userspace sender's acks
# arrive in bursts of event-loop latency, so on a near-zero-delay path a window of 2 x (bw x
# min RTT) starves the pipe while the bandwidth estimate can never grow.
RTT_FLOOR = 0.01

Mode = Literal["startup", "drain", "probe_bw", "probe_rtt"]


class Bbr:
    """A BBR-style model: see the module docstring."""

    def __init__(self, initial_cwnd: int = BBR_INITIAL_CWND) -> None:
        self.cwnd = self._initial_cwnd = initial_cwnd
        self.mtu = MTU
        self.mode: Mode = "startup"
        self.min_rtt: float | None = None
        self._min_rtt_stamp = 0.0
        self._bw = WindowedMax(BW_WINDOW_ROUNDS)
        self._delivered = 0
        self._delivered_time = 0.0
        self._round = 0
        self._next_round_delivered = 0
        self._full_bw = 0.0
        self._full_bw_rounds = 0
        self._cycle = 0
        self._cycle_stamp = 0.0
        self._probe_rtt_done: float | None = None
        self._prior_cwnd = 0
        self._round_acked = 0
        self._round_lost = 0
        self._lossy_rounds = 0
        self._flight = 0
        self._first_sent_time = 0.0
        self._app_limited = False  # the latest delivery-rate sample's
        self._app_limited_until = 0  # delivered count by which the sender's gap has drained
        self._inflight_hi: int | None = None  # the window's cap after queue-overflow loss
        self._round_rtts = 0  # RTT samples this round (the first STARTUP_DELAY_SAMPLES count)
        self._round_least_rtt = float("inf")
        self._last_round_least_rtt: float | None = None

    @property
    def bandwidth(self) -> float:
        """Bottleneck bandwidth estimate, bytes per second."""
        return self._bw.value

    @property
    def filled_pipe(self) -> bool:
        return self.mode != "startup"

    def bdp(self) -> int:
        if self.min_rtt is None or not self.bandwidth:
            return self._initial_cwnd
        return int(self.bandwidth * max(self.min_rtt, RTT_FLOOR))

    def _pacing_gain(self) -> float:
        if self.mode == "startup":
            return STARTUP_GAIN
        if self.mode == "drain":
            return 1 / STARTUP_GAIN
        if self.mode == "probe_bw":
            return PROBE_GAINS[self._cycle]
        return 1.0

    def pacing_rate(self) -> float | None:
        if not self.bandwidth and self.min_rtt is None:
            return None  # nothing known yet: the initial window goes out at once
        rate = self._pacing_gain() * self.bandwidth
        if self.filled_pipe:
            return rate
        # Until the pipe is full the rate is never below the window's (Linux's
        # bbr_set_pacing_rate): app-limited samples (keepalives while the user reads a
        # question) must not pace the first bulk data at their trickle.
        return max(rate, STARTUP_GAIN * self.cwnd / max(self.min_rtt or 0.0, 1e-3))

    def stamp(self, now: float, app_limited: bool) -> Stamp:
        """As Linux BBR: once the sender leaves a gap, every chunk sent until what was then in
        flight is delivered is marked, so no sample taken across the gap can lower the model."""
        if app_limited:
            self._app_limited_until = self._delivered + self._flight + self.mtu
        limited = self._delivered < self._app_limited_until
        return Stamp(self._delivered, self._delivered_time, self._first_sent_time, now, limited)

    def on_ack(self, ack: Ack) -> None:
        now = ack.now
        self._flight = ack.flight_size
        if not self._delivered_time:
            self._delivered_time = now
        self._delivered += ack.acked_bytes
        self._round_acked += ack.acked_bytes
        round_start = False
        if ack.newest is not None and ack.newest.delivered >= self._next_round_delivered:
            self._next_round_delivered = self._delivered
            self._round += 1
            round_start = True
        if ack.acked_bytes:
            if ack.newest is not None:
                self._app_limited = ack.newest.app_limited
                self._sample(ack.newest, now)
                self._first_sent_time = ack.newest.sent_time
            self._delivered_time = now
        if ack.rtt is not None and ack.rtt > 0:
            expired = now - self._min_rtt_stamp > MIN_RTT_WINDOW
            if self.min_rtt is None or ack.rtt <= self.min_rtt or expired:
                if expired and self.min_rtt is not None and self.mode != "probe_rtt":
                    self._enter_probe_rtt(now)
                self.min_rtt = ack.rtt
                self._min_rtt_stamp = now
        if round_start:
            self._end_round()
            if self._round_rtts >= STARTUP_DELAY_SAMPLES:
                self._last_round_least_rtt = self._round_least_rtt
            self._round_rtts, self._round_least_rtt = 0, float("inf")
        if self.mode == "startup" and ack.rtt is not None and ack.rtt > 0:
            self._startup_delay(ack.rtt)
        self._update_mode(now)
        self._update_cwnd(ack.acked_bytes)

    def _startup_delay(self, rtt: float) -> None:
        """RFC 9406's test on this round's first samples: the queue is building, so the pipe
        is full (startup ends as on a bandwidth plateau)."""
        if self._round_rtts >= STARTUP_DELAY_SAMPLES:
            return
        self._round_rtts += 1
        self._round_least_rtt = min(self._round_least_rtt, rtt)
        last = self._last_round_least_rtt
        if self._round_rtts < STARTUP_DELAY_SAMPLES or last is None or not self.bandwidth:
            return
        least, most = STARTUP_DELAY_RISE
        if self._round_least_rtt >= last + min(max(last / 8, least), most):
            self.mode, self._full_bw_rounds = "drain", FULL_BW_ROUNDS

    def _sample(self, newest: Stamp, now: float) -> None:
        """A delivery-rate sample over the longer of the send and the ack intervals (so acks
        that bunch up cannot make the path look faster than the sender was), kept when it
        spans at least a minimum RTT (BBR's rule against short, noisy samples)."""
        if not newest.delivered_time or not newest.first_sent_time:
            return
        interval = max(now - newest.delivered_time, newest.sent_time - newest.first_sent_time)
        if interval <= 0 or (self.min_rtt is not None and interval < self.min_rtt):
            return
        rate = (self._delivered - newest.delivered) / interval
        if not newest.app_limited or rate >= self.bandwidth:
            self._bw.update(self._round, rate)

    def _end_round(self) -> None:
        sent = self._round_acked + self._round_lost
        if (
            self._round_lost > max(INFLIGHT_LOSS * sent, INFLIGHT_LOSS_PACKETS * self.mtu)
            and self.bandwidth
        ):
            self._inflight_hi = max(int(INFLIGHT_BETA * self.cwnd), self.bdp())
            if self.mode == "startup":  # the queue overflowed: the pipe is full
                self.mode, self._full_bw_rounds = "drain", FULL_BW_ROUNDS
        elif self._inflight_hi is not None:
            self._inflight_hi += self.mtu
        if sent and self._round_lost / sent > LOSS_THRESHOLD:
            self._lossy_rounds += 1
            if self._lossy_rounds >= LOSS_ROUNDS:
                # sustained heavy loss: the path is congested, not merely lossy
                self._bw.scale(LOSS_BACKOFF)
                if self.mode == "startup":
                    self.mode = "drain"
                self._lossy_rounds = 0
        else:
            self._lossy_rounds = 0
        self._round_acked = self._round_lost = 0
        # An app-limited round says nothing of the path's capacity: it never ends startup.
        if self.mode == "startup" and self.bandwidth and not self._app_limited:
            if self.bandwidth >= self._full_bw * FULL_BW_GROWTH:
                self._full_bw = self.bandwidth
                self._full_bw_rounds = 0
            else:
                self._full_bw_rounds += 1
                if self._full_bw_rounds >= FULL_BW_ROUNDS:
                    self.mode = "drain"

    def _update_mode(self, now: float) -> None:
        if self.mode == "drain" and self._flight <= self.bdp():
            self.mode = "probe_bw"
            self._cycle, self._cycle_stamp = 2, now
        elif self.mode == "probe_bw" and self.min_rtt is not None:
            if now - self._cycle_stamp > self.min_rtt:
                self._cycle = (self._cycle + 1) % len(PROBE_GAINS)
                self._cycle_stamp = now
        elif self.mode == "probe_rtt" and now >= (self._probe_rtt_done or now):
            self._min_rtt_stamp = now
            self.mode = "probe_bw" if self._full_bw_rounds >= FULL_BW_ROUNDS else "startup"
            self._cycle, self._cycle_stamp = 2, now
            self.cwnd = max(self.cwnd, self._prior_cwnd)
            self._probe_rtt_done = None

    def _enter_probe_rtt(self, now: float) -> None:
        self.mode = "probe_rtt"
        self._prior_cwnd = self.cwnd
        self._probe_rtt_done = now + max(PROBE_RTT_TIME, self.min_rtt or 0.0)

    def _update_cwnd(self, acked: int) -> None:
        if self.mode == "probe_rtt":
            self.cwnd = max(self.min_cwnd, int(PROBE_RTT_CWND_GAIN * self.bdp()))
            return
        target = int(CWND_GAIN * self.bdp()) + 3 * self.mtu
        if self._inflight_hi is not None:
            target = min(target, max(self._inflight_hi, self.bdp()))
        if self.filled_pipe:
            self.cwnd = min(self.cwnd + acked, target)
        elif self.cwnd < target or not self.bandwidth:
            self.cwnd += acked
        self.cwnd = max(self.cwnd, self.min_cwnd)

    def on_loss(self, now: float, lost_bytes: int, new_recovery: bool) -> None:
        self._round_lost += lost_bytes

    def on_timeout(self, now: float) -> None:
        # everything outstanding is presumed lost: restart from a small window, keep the model
        self._round_lost += self._flight
        self.cwnd = self.min_cwnd

    @property
    def min_cwnd(self) -> int:
        return MIN_CWND_PACKETS * self.mtu

    def set_mtu(self, mtu: int) -> None:
        self.mtu = mtu


def controller(kind: Kind) -> Controller:
    return Bbr() if kind == "bbr" else Reno()


class Pacer:
    """A token bucket in bytes: `allowance(now, rate)` is what may leave now; sends spend it.
    The bucket holds `QUANTUM` of sending; a paced sender wakes once per `BATCH`, and `late`
    tells it when it woke too late to keep the pace (the model must not learn from that)."""

    # seconds of sending the bucket holds: a process on a loaded machine is often descheduled
    # for tens of ms; a 20 ms bucket lost the rest, the model saw the lower rate, paced lower
    # still and spiralled down (tests/test_congestion.py, a starved sender). The window still
    # bounds any burst.
    QUANTUM = 0.05
    # seconds of sending per wake: waking per packet (a timer, a task and a _transmit each)
    # made paced BBR cost more CPU per byte than unpaced Reno
    BATCH = 0.004
    MIN_BURST_PACKETS = 2

    def __init__(self) -> None:
        self.min_burst = self.MIN_BURST_PACKETS * MTU  # bytes; `set_mtu` follows the packets
        self._tokens = 0.0
        self._last = 0.0
        self._waiting = False  # the sender is held by the pace (wait() was asked)
        self.late = False  # the last allowance found the sender woke too late to keep it

    def allowance(self, now: float, rate: float | None) -> float:
        if rate is None:
            return float("inf")
        depth = max(rate * self.QUANTUM, self.min_burst)
        accrued = self._tokens + (now - self._last) * rate
        self.late = self._waiting and accrued > depth  # a starved process lost sending time
        self._waiting = False
        self._tokens = min(depth, accrued)
        self._last = now
        return self._tokens

    def spend(self, size: int) -> None:
        self._tokens -= size

    def wait(self, rate: float) -> float:
        """Seconds until a batch's worth of tokens is back (`BATCH`, at least `min_burst`)."""
        self._waiting = True
        return max(0.0, (max(rate * self.BATCH, self.min_burst) - self._tokens) / rate)

    def set_mtu(self, mtu: int) -> None:
        self.min_burst = self.MIN_BURST_PACKETS * mtu
