"""The methods this layer gives aiortc's `RTCSctpTransport`: the same association, with
- the sender's congestion control behind `congestion.Controller` (Reno or BBR) and paced;
- SACK handling that costs what changed (new gap blocks, holes), not the whole window;
- fast retransmit only for chunks sent before a chunk the peer has since acknowledged, so a
  retransmission in flight is not sent again and again while older SACKs arrive;
- a receiver that SACKs every second packet or after `SACK_DELAY` (RFC 9260 6.2), and at once
  when a packet opens a new gap, fills the first one, or is a duplicate (6.7); a packet that
  only extends the highest gap block waits for the second-packet rule like in-order data,
  which halves the SACKs (and their cost on both sides) while a loss is being repaired;
  every `congestion.SACK_EVERY_ASKED`th packet instead to a sender whose INIT asks for it
  (`SACK_EVERY_PARAM`: ours, whose controllers count stretched SACKs in full; stock aiortc
  and Chromium do not ask, and keep every second), and while a loss is repaired every second
  packet but at most one SACK per `HELD_SACK_INTERVAL` (`_sack_every_now`);
- a sender that scans its sent queue for retransmissions only while some are pending;
- a receiver that reassembles a message only when a chunk can have completed one;
- the packets one `_transmit` makes leaving together, in UDP_SEGMENT runs (`wire`);
- packets larger than aiortc's 1,189 bytes once a probe of that size came back (`plpmtu`,
  RFC 8899; sent whole by `wire`), for messages cut into chunks from then on; larger than
  1,500 bytes only to a peer whose INIT says it reads DTLS records whole (`RECORDS_PARAM`,
  which this side sends and honours: a stock peer skips it, as RFC 9260 3.2.1 says).
- a receiver that holds at most RECEIVE_WINDOW bytes and MOST_HELD_CHUNKS chunks, and drops
  (or, for a chunk filling a hole, gives up the highest held) as RFC 9260 6.2 says, and a
  sender that keeps within the peer's advertised window (6.2.1), which stock aiortc ignores;
- a peer held to the streams we offered, and DCEP stock asserted on dropped (`streams`).
Everything on the wire stays RFC 9260 SCTP; what is changed is each side's own timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiortc import rtcsctptransport as stock
from aiortc.rtcsctptransport import (
    Chunk,
    DataChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    InitAckChunk,
    InitChunk,
    RTCSctpTransport,
    SackChunk,
)
from aiortc.utils import uint16_add, uint32_gt, uint32_gte

from fileshare.sctp import arrival, congestion, held, plpmtu, streams, wire
from fileshare.sctp.held import TSN_MODULO
from fileshare.sctp.originals import ORIGINALS

SACK_DELAY = 0.02  # seconds; RFC 9260 6.2 allows up to 200 ms (500 ms at most)
SACK_EVERY = 2  # packets with DATA per SACK (RFC 9260 6.2), unless the sender asks for more
HELD_SACK_INTERVAL = 0.001  # seconds; see `_sack_every_now`
SACK_EVERY_MOST = 16  # the most a sender may ask for: every packet held costs it SACK_DELAY
MISSES_TO_RETRANSMIT = 3
# A re-sent chunk still missing this long after it left (x the smoothed RTT: RACK's quarter
# of an RTT for reordering) counts its misses though nothing sent after it was acknowledged.
# A SACK holds only the lowest holes' blocks (`sack_room`): after a start-up overflow left
# 2,000 holes, a lost retransmission of the lowest waited for the T3 timer (which re-sent the
# whole window, 7,000 chunks, at 100 Mbit/s, 150 ms), as no later-sent chunk was reported.
RESENT_LATE_RTTS = 1.25
# The receiver's buffer (RFC 9260 6.2): bytes of user data held for reassembly, what a SACK
# advertises as free (a_rwnd). Twice the bandwidth-delay product of 100 Mbit/s at 300 ms.
# Stock aiortc advertises 1 MiB but holds whatever arrives: a peer sending chunks above a
# hole it never fills, or a message without an end, grew its memory without bound.
RECEIVE_WINDOW = 8 * 2**20
# Chunks held at once: a held chunk costs about CHUNK_COST bytes of Python objects beside its
# data (tests/test_receive_window.py measures it), so one-byte chunks are bounded too.
MOST_HELD_CHUNKS = 16_384
CHUNK_COST = 600  # bytes, at most, besides the user data (the test holds us to it)
# A Gap Ack Block's offsets are 16 bits: a chunk further above the cumulative TSN could not
# be reported (packing its SACK failed), and no sender within our window sends one.
MOST_TSN_AHEAD = 2**16 - 1

Transport = Any  # an RTCSctpTransport with this layer's attributes (aiortc has no stubs for them)


def gap_ranges(gaps: list[tuple[int, int]], shift: int, size: int) -> list[tuple[int, int]]:
    """Gap Ack Blocks (offsets from the cumulative TSN) as sorted, disjoint, inclusive index
    ranges into a sent queue of `size` chunks whose first chunk is `shift` past the cumulative
    TSN. A peer's blocks may overlap, be unsorted or point past what was sent: all are clipped."""
    ranges: list[tuple[int, int]] = []
    for start, end in sorted(gaps):
        first, last = max(start - shift, 0), min(end - shift, size - 1)
        if first > last:
            continue
        if ranges and first <= ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], last))
        else:
            ranges.append((first, last))
    return ranges


def subtract(ranges: list[tuple[int, int]], known: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of `ranges` outside `known` (both sorted, disjoint, inclusive)."""
    out: list[tuple[int, int]] = []
    k = 0
    for first, last in ranges:
        while k < len(known) and known[k][1] < first:
            k += 1
        cursor, j = first, k
        while j < len(known) and known[j][0] <= last:
            if known[j][0] > cursor:
                out.append((cursor, known[j][0] - 1))
            cursor = max(cursor, known[j][1] + 1)
            j += 1
        if cursor <= last:
            out.append((cursor, last))
    return out


def holes(ranges: list[tuple[int, int]], upto: int) -> list[tuple[int, int]]:
    """Index ranges from 0 to `upto` (inclusive) that `ranges` do not cover."""
    out: list[tuple[int, int]] = []
    cursor = 0
    for first, last in ranges:
        if first > upto:
            break
        if first > cursor:
            out.append((cursor, first - 1))
        cursor = last + 1
    if cursor <= upto:
        out.append((cursor, upto))
    return out


def make_init(original: Callable[..., None], kind: congestion.Kind) -> Callable[..., None]:
    def __init__(self: Transport, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        arrival.attach(self.transport)
        self._cc = congestion.controller(kind)
        self._cwnd = self._cc.cwnd
        self._pacer = congestion.Pacer()
        self._pace_handle = None
        self._gap_acked = []  # the previous SACK's gap blocks, as (first, last) TSNs
        self._sack_packets = 0
        self._sack_every = SACK_EVERY  # packets per SACK while nothing is held out of order
        self._data_packets = self._sacks_sent = 0  # received with DATA; SACKs sent (stats)
        self._sack_handle = None
        self._sack_urgent = False  # the last packet changed the gap report's edges
        self._sack_time = 0.0  # when the last SACK left
        self._highest_tsn = None  # the highest TSN received (None: the cumulative one)
        self._held_runs = held.HeldRuns()  # _sack_misordered as runs, for the gap blocks
        self._retransmits_pending = False  # a chunk may be marked for retransmission
        self._search = plpmtu.Search()
        self._user_data_max = stock.USERDATA_MAX_LENGTH  # what a new DATA chunk carries
        self._probe_handle = None
        self._probe_nonce = os.urandom(8)  # names this association's probes
        self._t3_in_row = 0  # T3 expiries since data was last acknowledged
        self._batch = None  # DTLS records of the `_transmit` under way
        self._runs = wire.Runs()  # this association's UDP_SEGMENT sends
        self._advertised_rwnd = RECEIVE_WINDOW  # (stock: 1 MiB) advertised from the INIT on
        self._chunks_refused = 0  # DATA dropped or given up for want of room (stats)
        self._peer_rwnd = 0  # the peer's free buffer as we know it (RFC 9260 6.2.1)
        streams.attach(self)

    return __init__


def _mark_received(self: Transport, tsn: int) -> bool:
    """Stock semantics at a cost proportional to what changed: stock aiortc sorts and filters
    every TSN held out of order on each packet, which under loss (hundreds held for a round
    trip) made the receiver the bottleneck. Notes whether the SACK this packet asks for is
    urgent (`_sack_urgent`): a duplicate, a new gap, or the first gap filled."""
    misordered: set[int] = self._sack_misordered
    if uint32_gte(self._last_received_tsn, tsn) or tsn in misordered:
        self._sack_duplicates.append(tsn)
        self._sack_urgent = True
        return True
    last = self._last_received_tsn
    runs: held.HeldRuns = self._held_runs
    runs.sync(last, misordered)
    highest = last if self._highest_tsn is None or not misordered else self._highest_tsn
    if tsn != stock.tsn_plus_one(last):
        misordered.add(tsn)
        runs.add(last, tsn)
        if uint32_gt(tsn, highest):
            if tsn != stock.tsn_plus_one(highest):
                self._sack_urgent = True  # past the top, not extending the highest block
            self._highest_tsn = tsn
        return False
    if misordered:
        self._sack_urgent = True  # the first gap is filled
    last = tsn
    top = runs.advance(last)
    while top is not None and last != top:  # the lowest run joins the cumulative TSN
        last = stock.tsn_plus_one(last)
        misordered.discard(last)
    self._last_received_tsn = last
    if not misordered:
        self._highest_tsn = None
    if self._sack_duplicates:  # as stock: only those above the cumulative TSN are kept
        self._sack_duplicates = [t for t in self._sack_duplicates if uint32_gt(t, last)]
    return False


async def _receive_data_chunk(self: Transport, chunk: DataChunk) -> None:
    """Stock logic within the receive window (`_admit`), and reassembly is scanned only when
    this chunk can complete a message: a chunk that lands after all others and is not a
    message's last fragment completes none."""
    self._sack_needed = True
    if not _admit(self, chunk):
        self._sack_urgent = True  # RFC 9260 6.2: a dropped chunk is answered at once
        self._chunks_refused += 1
        return
    if self._mark_received(chunk.tsn):
        return
    if not streams.negotiated(self, chunk.stream_id):
        await streams.refuse(self, chunk)
        return
    stream = self._get_inbound_stream(chunk.stream_id)
    appended = not stream.reassembly or uint32_gt(chunk.tsn, stream.reassembly[-1].tsn)
    stream.add_chunk(chunk)
    self._advertised_rwnd -= len(chunk.user_data)
    if not appended or chunk.flags & stock.SCTP_DATA_LAST_FRAG:
        for message in stream.pop_messages():
            self._advertised_rwnd += len(message[2])
            await self._receive(*message)
    await self._reset_deferred_streams()


def _admit(self: Transport, chunk: DataChunk) -> bool:
    """Whether a new chunk fits the receive window (RFC 9260 6.2). Without room, one above
    every chunk held is dropped; one below the highest held (it fills a hole, and without it
    nothing held could ever be delivered) takes the room of the highest ones, given up. A
    duplicate is admitted: stock handling counts it."""
    tsn, last = chunk.tsn, self._last_received_tsn
    if not uint32_gt(tsn, last) or tsn in self._sack_misordered:
        return True
    if (tsn - last) % TSN_MODULO > MOST_TSN_AHEAD:
        return False
    size = len(chunk.user_data)
    if self._advertised_rwnd >= size and held_chunks(self) < MOST_HELD_CHUNKS:
        return True
    runs: held.HeldRuns = self._held_runs
    runs.sync(last, self._sack_misordered)
    while self._advertised_rwnd < size or held_chunks(self) >= MOST_HELD_CHUNKS:
        top = runs.highest()
        if top is None or not uint32_gt(top, tsn) or not _give_up(self, top):
            return False
    return True


def held_chunks(self: Transport) -> int:
    return sum(len(stream.reassembly) for stream in self._inbound_streams.values())


def _give_up(self: Transport, tsn: int) -> bool:
    """Free the room of `tsn`, the highest TSN held (reneging on it: the sender keeps a chunk
    until the cumulative TSN covers it, and its T3 timer sends it again). False if its chunk
    has already been delivered (an unordered message): giving it up would deliver it twice."""
    for stream in self._inbound_streams.values():
        if stream.reassembly and stream.reassembly[-1].tsn == tsn:
            self._advertised_rwnd += len(stream.reassembly.pop().user_data)
            break
    else:
        return False
    self._sack_misordered.discard(tsn)
    self._chunks_refused += 1
    runs: held.HeldRuns = self._held_runs
    runs.drop_highest()
    self._highest_tsn = runs.highest()
    return True


async def _send_sack(self: Transport) -> None:
    """Called by the stock `_handle_data` after each packet that needs a SACK: SACK now, or
    arm the delayed-SACK timer. The SACK is stock aiortc's, its gap blocks made cheaper."""
    self._sack_packets += 1
    self._data_packets += 1
    urgent = (
        self._sack_packets >= _sack_every_now(self)
        or self._sack_urgent
        or self._sack_duplicates
        or self._association_state != RTCSctpTransport.State.ESTABLISHED
    )
    self._sack_urgent = False
    if urgent:
        await _sack_now(self)
    elif self._sack_handle is None:
        self._sack_handle = self._loop.call_later(SACK_DELAY, _sack_timer, self)


def _sack_every_now(self: Transport) -> int:
    """Packets per SACK: what the sender asked for; while TSNs are held out of order, every
    second packet, but no more often than one SACK per HELD_SACK_INTERVAL up to what was
    asked. At 100 Mbit/s and 0.5 % loss something is nearly always held, and a SACK every
    second packet (each one carried through the path in the receiver's time) left the link
    CPU-bound at 0.68 of the wire ceiling; a SACK every 8th there gave 0.96, but at 20 Mbit/s,
    80 ms and 1 % loss fell from 0.95 to 0.88 in one run of two: the interval keeps slow
    links' loss repair as it was (two packets take 1.2 ms at 20 Mbit/s)."""
    if not self._sack_misordered or self._sack_every <= SACK_EVERY:
        return int(self._sack_every)
    recent = self._loop.time() - self._sack_time < HELD_SACK_INTERVAL
    return int(self._sack_every) if recent else SACK_EVERY


SACK_HEADER = 16  # the SACK chunk's fixed part (RFC 9260 3.3.4); each block or TSN is 4 more


def sack_room(packet: int) -> int:
    """Gap Ack Blocks and Duplicate TSNs one SACK of at most `packet` bytes holds. RFC 9260
    6.2: as many blocks as fit in the path MTU, the lowest first (they say what to repair
    next). Unbounded, a window with a hole every other packet (a queue overflowing at twice
    its rate, 100 Mbit/s, 150 ms: 2,000 holes) made 8 KB SACKs: a stock aiortc peer reads
    1,500 bytes of a record and drops the rest (broken, so lost), past 16 KB OpenSSL cuts the
    packet into two records, and both ends spent their time building and parsing blocks."""
    return (packet - plpmtu.SCTP_COMMON_HEADER - SACK_HEADER) // 4


async def _sack_now(self: Transport) -> None:
    self._sack_time = self._loop.time()
    if self._sack_handle is not None:
        self._sack_handle.cancel()
        self._sack_handle = None
    self._sack_packets = 0
    sack = SackChunk()
    sack.cumulative_tsn = self._last_received_tsn
    sack.advertised_rwnd = max(0, self._advertised_rwnd)
    runs: held.HeldRuns = self._held_runs
    runs.sync(self._last_received_tsn, self._sack_misordered)
    room = sack_room(self._search.plpmtu)
    sack.gaps = runs.blocks(self._last_received_tsn, room)
    sack.duplicates = self._sack_duplicates[: room - len(sack.gaps)]
    await self._send_chunk(sack)
    self._sacks_sent += 1
    self._sack_duplicates.clear()
    self._sack_needed = False


def _sack_timer(self: Transport) -> None:
    self._sack_handle = None
    if self._sack_needed and self._association_state == RTCSctpTransport.State.ESTABLISHED:
        _background(_sack_now(self))


async def _receive_sack_chunk(self: Transport, chunk: SackChunk) -> None:
    """RFC 9260 6.2.1 / 7.2.4, with work proportional to what the SACK changed."""
    if uint32_gt(self._last_sacked_tsn, chunk.cumulative_tsn):
        return
    now = self._loop.time()
    cc: congestion.Controller = self._cc
    self._last_sacked_tsn = chunk.cumulative_tsn
    cwnd_full = self._flight_size >= self._cwnd
    queue = self._sent_queue
    done = done_bytes = 0
    newest: DataChunk | None = None  # the latest sent of the chunks newly acknowledged
    newest_time = -1.0
    # ... of those sent once: the base of RTT and delivery-rate samples and of the model's
    # rounds. A retransmitted chunk's ack may be its first copy's, arrived late: taken as the
    # retransmission's (Karn's ambiguity), it ended a model round within a fraction of an RTT,
    # so after a timeout re-sent a whole window the rounds raced, the bandwidth estimate aged
    # out in half a second and fell to the recovery's rate (100 Mbit/s, 150 ms: 2.4 MB/s)
    sampled: DataChunk | None = None
    sampled_time = -1.0

    def acked(schunk: DataChunk) -> None:
        nonlocal done_bytes, newest, newest_time, sampled, sampled_time
        if not schunk._acked:
            done_bytes += schunk._book_size
            sent_time = schunk._sent_time
            if sent_time is not None:
                if sent_time >= newest_time:
                    newest, newest_time = schunk, sent_time
                if sent_time >= sampled_time and schunk._sent_count == 1:
                    sampled, sampled_time = schunk, sent_time
        self._flight_size_decrease(schunk)

    while queue and uint32_gte(chunk.cumulative_tsn, queue[0].tsn):
        schunk = queue.popleft()
        done += 1
        acked(schunk)

    loss = False
    lost_bytes = 0
    if chunk.gaps and queue:
        shift = (queue[0].tsn - chunk.cumulative_tsn) % TSN_MODULO
        ranges = gap_ranges(chunk.gaps, shift, len(queue))
        base = queue[0].tsn
        known = [
            ((first - base) % TSN_MODULO, (last - base) % TSN_MODULO)
            for first, last in self._gap_acked
            if not uint32_gt(base, last)
        ]
        known = [(0 if first >= 2**31 else first, last) for first, last in known]
        for first, last in subtract(ranges, known):
            for index in range(first, last + 1):
                schunk = queue[index]
                acked(schunk)
                schunk._acked = True
                schunk._retransmit = False
        self._gap_acked = [
            ((base + first) % TSN_MODULO, (base + last) % TSN_MODULO) for first, last in ranges
        ]
        if newest is not None and ranges:
            for first, last in holes(ranges, ranges[-1][1]):
                for index in range(first, last + 1):
                    schunk = queue[index]
                    if schunk._retransmit or (
                        (schunk._sent_time or 0.0) >= newest_time
                        and not _resent_late(self, schunk, now)
                    ):
                        continue  # pending already, or sent after what was acknowledged
                    schunk._misses += 1
                    if schunk._misses >= MISSES_TO_RETRANSMIT:
                        schunk._misses = 0
                        if not self._maybe_abandon(schunk):
                            schunk._retransmit = True
                            self._retransmits_pending = True
                        schunk._acked = False
                        self._flight_size_decrease(schunk)
                        lost_bytes += schunk._book_size
                        loss = True
    else:
        self._gap_acked = []

    rtt = None
    if sampled is not None:
        rtt = now - sampled_time
        self._update_rto(rtt)
    in_recovery = self._fast_recovery_exit is not None
    cc.on_ack(
        congestion.Ack(
            now=now,
            acked_bytes=done_bytes,
            rtt=rtt,
            flight_size=self._flight_size,
            cwnd_full=cwnd_full,
            in_recovery=in_recovery,
            newest=getattr(sampled, "_cc_stamp", None),
        )
    )
    if loss:
        cc.on_loss(now, lost_bytes, new_recovery=not in_recovery)
        if not in_recovery:
            self._fast_recovery_exit = queue[-1].tsn
            self._fast_recovery_transmit = True
    elif in_recovery and uint32_gte(chunk.cumulative_tsn, self._fast_recovery_exit):
        self._fast_recovery_exit = None
    self._cwnd = cc.cwnd

    if done:
        self._t3_in_row = 0
    if not queue:
        self._t3_cancel()
    elif done:
        self._t3_restart()
    self._update_advanced_peer_ack_point()
    self._peer_rwnd = max(0, chunk.advertised_rwnd - self._flight_size)  # RFC 9260 6.2.1 B
    await self._data_channel_flush()
    await self._transmit()


def _resent_late(self: Transport, chunk: DataChunk, now: float) -> bool:
    """`chunk` was re-sent and should have been acknowledged by now (RESENT_LATE_RTTS)."""
    srtt: float | None = self._srtt
    return (
        chunk._sent_count > 1
        and srtt is not None
        and now - (chunk._sent_time or now) > RESENT_LATE_RTTS * srtt
    )


async def _transmit(self: Transport) -> None:
    """The packets one `_transmit` produces are sealed in order and leave together
    (`wire.send_records`). Building the batch never waits (`_send_chunk` only seals into it,
    a probe goes out at once), so no other `_transmit` runs inside it."""
    self._batch = []
    try:
        await _transmit_batch(self)
    finally:
        batch, self._batch = self._batch, None
        if batch:
            with lost_when_closed():
                await wire.send_records(self.transport, batch, self._runs)


async def _transmit_batch(self: Transport) -> None:
    """Stock `_transmit` with the controller's window, pacing and delivery stamps."""
    if self._forward_tsn_chunk is not None:
        await self._send_chunk(self._forward_tsn_chunk)
        self._forward_tsn_chunk = None
        if not self._t3_handle:
            self._t3_start()
    if not self._search.complete and self._probe_handle is None:
        await _probe(self)
    cc: congestion.Controller = self._cc
    now = self._loop.time()
    rate = cc.pacing_rate()
    allowance = self._pacer.allowance(now, rate)
    cwnd = self._cwnd = cc.cwnd
    if rate is None:  # unpaced: stock aiortc's burst limit (RFC 9260 7.2.1 Max.Burst)
        burst = (2 if self._fast_recovery_exit is not None else 4) * self._user_data_max
        cwnd = min(self._flight_size + burst, cwnd)

    retransmit_earliest = True
    # a scan of the whole sent queue (hundreds of chunks under loss) per SACK was the
    # sender's largest cost; it runs only while a retransmission may be pending
    pending, self._retransmits_pending = self._retransmits_pending, False
    for schunk in self._sent_queue if pending else ():
        if schunk._retransmit:
            if self._fast_recovery_transmit:
                self._fast_recovery_transmit = False
            elif self._flight_size >= cwnd:
                self._retransmits_pending = True
                return
            elif allowance <= 0:
                self._retransmits_pending = True
                _pace_later(self, rate)
                return
            self._flight_size_increase(schunk)
            schunk._misses = 0
            schunk._retransmit = False
            schunk._sent_count += 1
            schunk._sent_time = now
            schunk._cc_stamp = cc.stamp(now, False)
            allowance -= schunk._book_size
            self._peer_rwnd -= schunk._book_size  # RFC 9260 6.2.1 C
            self._pacer.spend(schunk._book_size)
            await self._send_chunk(schunk)
            if retransmit_earliest:
                self._t3_restart()
        retransmit_earliest = False

    outbound = self._outbound_queue
    while outbound and self._flight_size < cwnd:
        if allowance <= 0:
            _pace_later(self, rate)
            return
        if self._flight_size and outbound[0]._book_size > self._peer_rwnd:
            return  # RFC 9260 6.2.1 A: no room at the peer (with nothing out, one probes)
        schunk = outbound.popleft()
        self._sent_queue.append(schunk)
        self._flight_size_increase(schunk)
        schunk._sent_count += 1
        schunk._sent_time = now
        limited = self._pacer.late or not (outbound or self._data_channel_queue)
        schunk._cc_stamp = cc.stamp(now, limited)
        allowance -= schunk._book_size
        self._peer_rwnd -= schunk._book_size
        self._pacer.spend(schunk._book_size)
        await self._send_chunk(schunk)
        if not self._t3_handle:
            self._t3_start()


def _pace_later(self: Transport, rate: float | None) -> None:
    """Wake the sender when the pace allows a batch. `wait()` is asked even while a wake is
    pending, so the pacer knows the sender is held by it and can tell a late wake."""
    if not rate:
        return
    delay = self._pacer.wait(rate)
    if self._pace_handle is None:
        self._pace_handle = self._loop.call_later(delay, _pace_wake, self)


def _pace_wake(self: Transport) -> None:
    self._pace_handle = None
    if self._association_state == RTCSctpTransport.State.ESTABLISHED:
        _background(self._transmit())


def lost_when_closed() -> contextlib.AbstractContextManager[None]:
    """A packet for a DTLS transport that is closing or closed is lost, as on a dead path
    (stock's close ends the association). Raised, it ended the task of whichever timer or
    handler sent it: stock's timers' tasks are never awaited, so it reached the user as an
    unretrieved task exception."""
    return contextlib.suppress(ConnectionError)


_TASKS: set[asyncio.Task[None]] = set()


def _background(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` from a timer callback, holding a reference until it is done."""
    task = asyncio.ensure_future(work)
    _TASKS.add(task)
    task.add_done_callback(_finished)


def _finished(task: asyncio.Task[None]) -> None:
    """An error goes to the loop's exception handler, as an unretrieved exception would."""
    _TASKS.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        context = {"message": "SCTP background task failed", "exception": exc, "task": task}
        task.get_loop().call_exception_handler(context)


def _t3_expired(self: Transport) -> None:
    ORIGINALS["_t3_expired"](self)  # marks everything for retransmission, resets the window
    self._retransmits_pending = True
    self._t3_in_row += 1
    if self._t3_in_row >= BLACK_HOLE_T3 and self._search.plpmtu > plpmtu.BASE:
        _black_hole(self)
    self._cc.on_timeout(self._loop.time())
    self._cwnd = self._cc.cwnd


async def _send(
    self: Transport,
    stream_id: int,
    pp_id: int,
    user_data: bytes,
    expiry: float | None = None,
    max_retransmits: int | None = None,
    ordered: bool = True,
) -> None:
    """Stock `_send`, cutting the message into chunks of `_user_data_max`, not aiortc's
    constant: the size the path was probed to carry when the message was queued."""
    stream_seq = self._outbound_stream_seq.get(stream_id, 0) if ordered else 0
    size = self._user_data_max
    fragments = max(1, -(-len(user_data) // size))
    for fragment in range(fragments):
        chunk = DataChunk()
        chunk.flags = 0 if ordered else stock.SCTP_DATA_UNORDERED
        if fragment == 0:
            chunk.flags |= stock.SCTP_DATA_FIRST_FRAG
        if fragment == fragments - 1:
            chunk.flags |= stock.SCTP_DATA_LAST_FRAG
        chunk.tsn = self._local_tsn
        chunk.stream_id = stream_id
        chunk.stream_seq = stream_seq
        chunk.protocol = pp_id
        chunk.user_data = user_data[fragment * size : (fragment + 1) * size]
        chunk._abandoned = False
        chunk._acked = False
        chunk._book_size = len(chunk.user_data)
        chunk._expiry = expiry
        chunk._in_flight = False
        chunk._max_retransmits = max_retransmits
        chunk._misses = 0
        chunk._retransmit = False
        chunk._sent_count = 0
        chunk._sent_time = None
        self._local_tsn = stock.tsn_plus_one(self._local_tsn)
        self._outbound_queue.append(chunk)
    if ordered:
        self._outbound_stream_seq[stream_id] = uint16_add(stream_seq, 1)
    await self._transmit()


async def _send_chunk(self: Transport, chunk: Chunk) -> None:
    """One chunk, one packet (as stock), its DTLS record sent whole (`wire`); inside a
    `_transmit`, held for its batch."""
    packet = stock.serialize_packet(
        self._local_port, self._remote_port, self._remote_verification_tag, chunk
    )
    with lost_when_closed():
        if self._batch is not None:
            self._batch.append(wire.seal(self.transport, packet))
        else:
            await wire.send_packet(self.transport, packet)


# --- path MTU probing (plpmtu): the I/O around the sans-I/O search ---

PROBE_INFO = b"fileshare-plpmtu"  # opens our probes' Heartbeat Information
HEARTBEAT_INFO = 1  # RFC 9260 3.3.5 parameter type
PAD_CHUNK = 0x84  # RFC 4820: skipped by a receiver that does not know it
BLACK_HOLE_T3 = 2  # T3 expiries in a row, at a probed size, that revert to the base


class _Bundle(Chunk):
    """Chunks already serialised, for `serialize_packet` (which frames one chunk)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data

    def __bytes__(self) -> bytes:
        return self.data


def probe_packet(self: Transport, size: int) -> bytes:
    """A HEARTBEAT naming `size`, padded with a PAD chunk to `size` bytes (RFC 8899 6.2)."""
    heartbeat = HeartbeatChunk()
    info = PROBE_INFO + self._probe_nonce + size.to_bytes(2, "big")
    heartbeat.params = [(HEARTBEAT_INFO, info)]
    body = bytes(heartbeat)
    pad = size - plpmtu.SCTP_COMMON_HEADER - len(body)
    chunks = body + PAD_CHUNK.to_bytes(1, "big") + b"\0" + pad.to_bytes(2, "big") + bytes(pad - 4)
    return stock.serialize_packet(
        self._local_port, self._remote_port, self._remote_verification_tag, _Bundle(chunks)
    )


def probed_size(self: Transport, chunk: HeartbeatAckChunk) -> int | None:
    """The size a HEARTBEAT ACK confirms, if it answers one of our probes."""
    prefix = PROBE_INFO + self._probe_nonce
    for kind, value in chunk.params:
        if kind == HEARTBEAT_INFO and len(value) == len(prefix) + 2 and value.startswith(prefix):
            return int.from_bytes(value[-2:], "big")
    return None


async def _probe(self: Transport) -> None:
    """Send the next probe, if one is due, and arm its timeout. Only on the pair's own socket
    (not a relay: the layer cannot keep a relayed probe from being fragmented)."""
    if self._association_state != RTCSctpTransport.State.ESTABLISHED:
        return
    search: plpmtu.Search = self._search
    route = wire.pair_route(self.transport)
    if route is None:
        search.on_black_hole()  # nothing to probe with: the base size, for good
        return
    size = search.probe(self._loop.time(), self._rto)
    if size is None:
        return
    self._probe_handle = self._loop.call_later(self._rto, _probe_timer, self)
    sent: bool | None = None
    with lost_when_closed():
        sent = wire.send_unfragmented(self.transport, route, probe_packet(self, size))
    if sent is None:
        search.unsent()  # asked again when the timer fires
    elif not sent:
        search.on_black_hole()


def _probe_timer(self: Transport) -> None:
    self._probe_handle = None
    self._search.handle_timer(self._loop.time())
    if not self._search.complete:
        _background(_probe(self))


def _packets_of(self: Transport, user_data: int) -> None:
    """New DATA chunks carry `user_data` bytes: the controller's and pacer's unit too."""
    self._user_data_max = user_data
    self._cc.set_mtu(user_data)
    self._pacer.set_mtu(user_data)


def _confirmed(self: Transport, size: int) -> None:
    self._search.on_ack(size)
    _packets_of(self, plpmtu.user_data_size(self._search.plpmtu))
    if self._probe_handle is not None:
        self._probe_handle.cancel()
        self._probe_handle = None
    if not self._search.complete:
        _background(_probe(self))


def _black_hole(self: Transport) -> None:
    """Data at the probed size is being lost: new messages go back to the base size (chunks
    already cut larger leave as they are, fragmented by IP where the path needs it)."""
    self._search.on_black_hole()
    _packets_of(self, stock.USERDATA_MAX_LENGTH)


# An INIT / INIT ACK parameter whose type's top bits are 10: "skip it, do not report it" (RFC
# 9260 3.2.1), so stock aiortc, Chromium and any RFC stack pass over it. No IANA type is ours:
# the value opens with a name, so another use of the same type is not taken for this one.
RECORDS_PARAM = 0xBF5E
RECORDS_NAME = b"fileshare:reads-records-whole"


def records_param() -> tuple[int, bytes]:
    """Says this side takes SCTP packets up to DTLS's largest record, read whole (`wire`)."""
    return RECORDS_PARAM, RECORDS_NAME + plpmtu.LARGEST.to_bytes(4, "big")


def _ours(params: list[tuple[int, bytes]], kind: int, name: bytes, size: int) -> int | None:
    """The number (`size` bytes, big-endian) after `name` in the parameter of type `kind`;
    None if the INIT (or INIT ACK) has no such parameter of exactly that form."""
    for found, value in params:
        if found == kind and len(value) == len(name) + size and value.startswith(name):
            return int.from_bytes(value[len(name) :], "big")
    return None


def peer_reads(params: list[tuple[int, bytes]]) -> int:
    """The largest packet the peer's INIT (or INIT ACK) says it reads whole: `plpmtu.CEILING`
    unless it carries our parameter."""
    size = _ours(params, RECORDS_PARAM, RECORDS_NAME, 4)
    return plpmtu.CEILING if size is None else max(plpmtu.CEILING, size)


# Another such parameter: how many packets with DATA the sender would have per SACK while
# nothing is lost (as QUIC's ACK_FREQUENCY frame lets a sender ask). Each SACK costs both ends
# a packet's work; a controller that counts a SACK's bytes in full loses nothing by fewer.
SACK_EVERY_PARAM = 0xBF5F
SACK_EVERY_NAME = b"fileshare:sack-every"


def sack_every_param() -> tuple[int, bytes]:
    return SACK_EVERY_PARAM, SACK_EVERY_NAME + bytes([congestion.SACK_EVERY_ASKED])


def sack_every_asked(params: list[tuple[int, bytes]]) -> int:
    """Packets per SACK the peer's INIT (or INIT ACK) asks for, within [SACK_EVERY,
    SACK_EVERY_MOST]: SACK_EVERY unless it carries our parameter."""
    asked = _ours(params, SACK_EVERY_PARAM, SACK_EVERY_NAME, 1)
    return SACK_EVERY if asked is None else min(max(asked, SACK_EVERY), SACK_EVERY_MOST)


def _set_extensions(self: Transport, params: list[tuple[int, bytes]]) -> None:
    ORIGINALS["_set_extensions"](self, params)
    params.extend((records_param(), sack_every_param()))


def _get_extensions(self: Transport, params: list[tuple[int, bytes]]) -> None:
    ORIGINALS["_get_extensions"](self, params)
    self._search.offer(plpmtu.candidates(peer_reads(params)))
    self._sack_every = sack_every_asked(params)


async def _handle_data(self: Transport, data: bytes) -> None:
    """Stock handling of one packet, read whole from its DTLS record."""
    await ORIGINALS["_handle_data"](self, wire.whole_packet(self.transport, data))


async def _receive_chunk(self: Transport, chunk: Chunk) -> None:
    """Stock handling; a HEARTBEAT ACK (which stock ignores) may confirm a probe, and an INIT
    or INIT ACK tells the peer's buffer."""
    if isinstance(chunk, HeartbeatAckChunk):
        size = probed_size(self, chunk)
        if size is not None:
            _confirmed(self, size)
            return
    await ORIGINALS["_receive_chunk"](self, chunk)
    if isinstance(chunk, (InitChunk, InitAckChunk)):
        self._peer_rwnd = chunk.advertised_rwnd  # its buffer, until the first SACK


# The functions this layer replaces (or wraps), each by its name on RTCSctpTransport.
REPLACEMENTS: dict[str, Callable[..., Awaitable[None] | bool | None]] = {
    "_mark_received": _mark_received,
    "_receive_data_chunk": _receive_data_chunk,
    "_send_sack": _send_sack,
    "_receive_sack_chunk": _receive_sack_chunk,
    "_transmit": _transmit,
    "_t3_expired": _t3_expired,
    "_send": _send,
    "_send_chunk": _send_chunk,
    "_receive_chunk": _receive_chunk,
    "_set_extensions": _set_extensions,
    "_get_extensions": _get_extensions,
    "_handle_data": _handle_data,
}
