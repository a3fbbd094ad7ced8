"""The connection's state machine, fed bytes and ticks: no socket, no sleep. Every bound a
client can push against (head, frames, fragments, control frames, send queue, time) is
driven to its edge, and the bytes held are asserted, not just the close code."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from signaling import frames, handshake, wscore
from signaling.limits import TokenBucket
from signaling.wscore import (
    ABORT,
    CLOSE,
    CLOSING,
    DONE,
    FAILED,
    HAND_OFF,
    HEAD,
    HTTP,
    KEEP,
    LINGER,
    OPEN,
    Limits,
    WebSocketCore,
)
from tests.rawws import RawWebSocket, upgrade_request

frame = RawWebSocket.frame
LIMITS = Limits(frozenset({"/ws"}), max_message_bytes=1000, send_queue_bytes=4096)


class Recorder(WebSocketCore):
    """The core with its hooks recorded, and its output collected as a client would read it."""

    __slots__ = ("_limits", "messages", "rejections", "wire")

    def __init__(self, limits: Limits = LIMITS) -> None:
        super().__init__()
        self._limits = limits
        self.messages: list[bytes] = []
        self.rejections: list[str] = []
        self.wire = b""

    @property
    def limits(self) -> Limits:
        return self._limits

    def on_message(self, data: bytes) -> None:
        self.messages.append(data)

    def on_rejected(self, reason: str, detail: str) -> None:
        self.rejections.append(reason)

    def drain(self) -> bytes:
        out = self.take_output() or []
        self.wire += b"".join(out)
        return b"".join(out)


def opened(limits: Limits = LIMITS) -> Recorder:
    core = Recorder(limits)
    core.receive(upgrade_request(80), 0.0)
    assert core.state == OPEN and core.drain().startswith(b"HTTP/1.1 101 ")
    return core


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        length, at = data[pos + 1] & 0x7F, pos + 2
        if length == 126:
            length, at = struct.unpack("!H", data[at : at + 2])[0], at + 2
        elif length == 127:
            length, at = struct.unpack("!Q", data[at : at + 8])[0], at + 8
        out.append((data[pos] & 0x0F, data[at : at + length]))
        pos = at + length
    return out


def close_code(data: bytes) -> int | None:
    closes = [payload for opcode, payload in server_frames(data) if opcode == 0x8]
    assert closes, "no close frame"
    return int.from_bytes(closes[-1][:2], "big")


# --- finding 1: fragments ---------------------------------------------------------------------


def test_empty_continuation_frames_are_bounded_by_count() -> None:
    """Issue 11 finding 1: a FIN=0 text frame and empty continuations kept forever."""
    core = opened()
    flood = frame(b"a", fin=False) + frame(b"", opcode=0x0, fin=False) * 10_000
    core.receive(flood, 0.0)
    assert core.rejections == ["fragments"]
    assert close_code(core.drain()) == frames.CLOSE_POLICY
    assert core.state == FAILED and core.buffered() == 0
    core.receive(frame(b"", opcode=0x0, fin=False) * 1000, 0.1)  # not read, not held
    assert core.buffered() == 0


def test_fragments_within_the_bounds_make_a_message() -> None:
    core = opened()
    parts = [frame(b"ab", fin=False)] + [frame(b"c", opcode=0x0, fin=False)] * 62
    core.receive(b"".join(parts) + frame(b"d", opcode=0x0), 0.0)
    assert core.messages == [b"ab" + b"c" * 62 + b"d"] and core.rejections == []


def test_fragment_bytes_add_up_to_the_message_limit() -> None:
    core = opened()
    core.receive(frame(b"x" * 600, fin=False), 0.0)
    assert 600 <= core.buffered() < 700
    core.receive(frame(b"x" * 401, opcode=0x0), 0.0)
    assert core.rejections == ["too_large"] and close_code(core.drain()) == frames.CLOSE_TOO_BIG
    assert core.buffered() == 0


# --- finding 2: control frames and frames per second ---------------------------------------


def test_unsolicited_pongs_are_rate_limited() -> None:
    """Issue 11 finding 2: a pong flood needed no reply, so nothing ever limited it."""
    core = opened()
    core.receive(frame(b"", opcode=0xA) * 10, 0.0)  # the burst
    assert core.rejections == []
    core.receive(frame(b"", opcode=0xA), 0.01)
    assert core.rejections == ["control_flood"]
    assert close_code(core.drain()) == frames.CLOSE_POLICY


def test_a_failed_connection_reads_nothing_more_and_lingers_briefly() -> None:
    """A flood goes on after the 1008: from the failure on, nothing the client sends is parsed
    (in the same read or later), and the connection is aborted after LINGER_TICKS of the head
    wheel."""
    core = opened()
    core.receive(frame(b"", opcode=0xA) * 1000, 0.0)  # 10 allowed, then one read of 990
    assert core.rejections == ["control_flood"]
    assert (core.state, core.action) == (FAILED, LINGER)
    assert close_code(core.drain()) == frames.CLOSE_POLICY
    assert core._input is None  # no reader left: nothing can be parsed any more
    for second in range(1, 50):
        core.receive(frame(b"", opcode=0xA) * 1000, float(second))
    assert core.buffered() == 0 and core.rejections == ["control_flood"]
    core.action = KEEP  # (the shell carries it out)
    for _ in range(wscore.LINGER_TICKS):
        core.advance(100.0)
    assert core.action == ABORT


def test_a_failure_inside_a_read_stops_its_parse() -> None:
    """One read of megabytes costs at most the frame budget of parsing, failed or not."""
    core = opened(Limits(frozenset({"/ws"}), frame_burst=100))
    core.receive(frame(b"x", rsv=2) + frame(b"{}") * 200_000, 0.0)
    assert core.rejections == ["ws_error"] and core.messages == []
    core = opened(Limits(frozenset({"/ws"}), frame_burst=100))
    core.receive(frame(b"{}") * 200_000, 0.0)
    assert len(core.messages) == 100 and core.rejections == ["frame_flood"]


def test_the_pong_to_our_ping_is_free_and_pings_refill() -> None:
    core = opened(Limits(frozenset({"/ws"}), control_per_second=1.0, control_burst=2))
    for second in range(100):  # one heartbeat after another: never a flood
        core.advance(float(second))
        core.advance(float(second))  # quiet 2: pinged
        assert (0x9, b"") in server_frames(core.drain())
        core.receive(frame(b"", opcode=0xA), second + 0.5)
    core.receive(frame(b"p", opcode=0x9), 100.0)  # a ping of the client's own: answered
    assert server_frames(core.drain()) == [(0xA, b"p")] and core.rejections == []


def test_frames_per_second_stop_the_parse_at_the_burst() -> None:
    limits = Limits(frozenset({"/ws"}), frames_per_second=10, frame_burst=20)
    core = opened(limits)
    core.receive(frame(b"{}") * 20, 0.0)
    assert len(core.messages) == 20 and core.rejections == []
    core.receive(frame(b"{}") * 100_000, 0.0)  # not one more is parsed
    assert len(core.messages) == 20 and core.rejections == ["frame_flood"]
    assert close_code(core.drain()) == frames.CLOSE_POLICY


def test_a_quiet_client_needs_no_rate_buckets() -> None:
    """Setting up a session and answering heartbeats allocates nothing (memory per socket)."""
    core = opened()
    core.receive(frame(b"{}") * 20, 0.0)
    for tick in range(30):
        core.advance(float(tick))
        if tick % 2:
            core.receive(frame(b"", opcode=0xA), float(tick))  # our pings' pongs
    assert core._rates is None and core.rejections == []


def test_frames_refill_with_time() -> None:
    core = opened(Limits(frozenset({"/ws"}), frames_per_second=10, frame_burst=20))
    for n in range(200):
        core.receive(frame(b"{}"), n * 0.1)
    assert len(core.messages) == 200 and core.rejections == []


# --- the work a client makes us do: bytes read, paid from byte budgets ------------------------

BYTES = Limits(
    frozenset({"/ws"}), max_message_bytes=100_000, bytes_per_second=10_000, byte_burst=20_000
)


def test_bytes_over_the_budget_pause_reading_and_fail_nothing() -> None:
    """A read past the burst is handled (the work is done), and the debt says how long the
    client is not read: backpressure, not a close."""
    core = opened(BYTES)
    message = frame(b"{" + b"x" * 29_998 + b"}")
    core.receive(message, 0.0)
    assert len(core.messages) == 1 and core.rejections == []
    debt = len(message) - 20_000
    assert core.read_pause(0.0) == debt / 10_000
    assert core.read_pause(debt / 10_000) == 0.0 and core.read_pause(10.0) == 0.0
    core.receive(message, 10.0)  # paid, and refilled up to the burst only
    assert core.read_pause(10.0) == debt / 10_000 and core.state == OPEN


def test_small_reads_need_no_byte_bucket_until_they_add_up() -> None:
    quiet, busy = opened(BYTES), opened(BYTES)
    quiet.receive(frame(b"{}") * 10, 0.0)
    assert quiet._rates is None and quiet.read_pause(0.0) == 0.0
    busy.receive(frame(b"{" + b"x" * (wscore.FREE_BYTES + 10) + b"}")[:-5], 0.0)  # in part
    assert busy._rates is not None  # and charged with that read
    assert busy._rates.bytes.level(0.0) <= BYTES.byte_burst - wscore.FREE_BYTES


def test_an_address_budget_is_shared_by_its_connections() -> None:
    """The address pays for every connection's reads: one busy connection makes the next read
    of another wait too (a hundred connections are not a hundred budgets)."""
    shared = TokenBucket(rate=1000, burst=1000)
    busy, other = opened(BYTES), opened(BYTES)
    busy.budget = other.budget = shared
    busy.receive(frame(b"{" + b"x" * 1500 + b"}"), 0.0)
    waiting = other.read_pause(0.0)
    assert busy.read_pause(0.0) == waiting > 0.5  # before it read anything
    other.receive(frame(b"{}"), 0.0)  # read (it was sent): then it queues behind the debt
    assert len(other.messages) == 1 and other.read_pause(0.0) > waiting
    assert other.read_pause(2.0) == busy.read_pause(2.0) == 0.0


# --- finding 4: the send queue in bytes ----------------------------------------------------


def test_a_slow_reader_holds_at_most_the_send_queue_in_bytes() -> None:
    """Issue 11 finding 4: the queue was 256 frames of any size."""
    core = opened()
    core.pause()  # the transport pushes back: nothing leaves
    sent = 0
    while core.state == OPEN:
        core.send(b"x" * 1000)
        sent += 1
        assert core.queued <= LIMITS.send_queue_bytes + 200
    assert sent == 5  # 4 frames of 1,004 bytes fit in 4,096; the fifth drops the client
    assert core.rejections == ["slow_consumer"]
    core.resume()
    assert server_frames(core.drain()) == [(0x8, struct.pack("!H", 1013) + b"slow consumer")]


def test_a_reader_that_keeps_up_is_never_dropped() -> None:
    core = opened()
    for _ in range(1000):
        core.send(b"x" * 1000)
        core.drain()
    assert core.rejections == [] and core.state == OPEN


# --- findings 3 and 8: request heads ---------------------------------------------------------


def test_every_request_head_is_timed() -> None:
    core = Recorder()
    core.receive(b"GET /healthz HTTP/1.1\r\n", 0.0)
    for _ in range(LIMITS.head_ticks - 1):
        core.advance(0.0)
    assert core.action == KEEP
    core.advance(0.0)
    assert (core.action, core.rejections) == (ABORT, ["head_timeout"])


def test_an_oversized_head_is_refused_on_any_path() -> None:
    """Issue 11 finding 3: over 16 KB on another path went to aiohttp, untimed."""
    core = Recorder()
    core.receive(b"GET /healthz HTTP/1.1\r\nX: " + b"a" * handshake.MAX_HEAD, 0.0)
    assert (core.state, core.action, core.rejections) == (DONE, LINGER, ["head_too_large"])
    assert core.drain().startswith(b"HTTP/1.1 431 ")
    assert core.buffered() == 0


def test_a_malformed_request_is_answered_here_never_handed_on() -> None:
    """Issue 11 finding 8: aiohttp logged a traceback for each."""
    core = Recorder()
    core.receive(b"\x16\x03\x01\x00garbage\r\n\r\n", 0.0)
    assert (core.state, core.rejections) == (DONE, ["bad_request"])
    assert core.drain().startswith(b"HTTP/1.1 400 ")


def test_other_requests_are_handed_off_and_still_timed() -> None:
    core = Recorder()
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    core.receive(request, 0.0)
    assert (core.state, core.action, bytes(core._head or b"")) == (HTTP, HAND_OFF, request)
    core.action = KEEP  # (the shell carries it out)
    for _ in range(LIMITS.head_ticks):
        core.advance(0.0)
    assert (core.action, core.rejections) == (ABORT, ["http_timeout"])


def test_a_connection_refused_at_once_is_closed_after_its_answer() -> None:
    """Over the per-address limits at connection time: the 429 goes out and the connection
    closes; the head is never waited for (nor read)."""
    core = Recorder()
    core.refuse(handshake.Refused(429, "too many").response(), CLOSE)
    assert core.action == CLOSE and core.drain().startswith(b"HTTP/1.1 429 ")
    core.receive(b"GET /ws HTTP/1.1\r\n" * 100, 0.0)
    assert core.buffered() == 0 and core.state == DONE


def test_a_refused_connection_lingers_one_tick_at_most() -> None:
    core = Recorder()
    core.refuse(handshake.Refused(429, "too many").response())
    assert core.action == LINGER and core.drain().startswith(b"HTTP/1.1 429 ")
    core.action = KEEP
    core.advance(0.0)
    core.advance(0.0)
    assert core.action == ABORT


# --- heartbeat and close ---------------------------------------------------------------------


def test_heartbeat_pings_then_drops_a_silent_client() -> None:
    core = opened()
    core.advance(0.0)
    assert core.drain() == b""
    core.advance(0.0)
    assert server_frames(core.drain()) == [(0x9, b"")]
    core.advance(0.0)
    assert core.action == ABORT


def test_the_client_closes_and_we_answer_with_its_code() -> None:
    core = opened()
    core.receive(frame(struct.pack("!H", 1001), opcode=0x8), 0.0)
    assert core.action == CLOSE and close_code(core.drain()) == 1001


def test_a_closing_connection_is_aborted_if_the_client_never_answers() -> None:
    core = opened()
    core.close(1000)
    core.drain()
    core.advance(0.0)
    assert core.action == KEEP
    core.advance(0.0)
    assert core.action == ABORT


# --- fuzzing ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=300), max_size=30),
    times=st.lists(st.floats(0, 5), min_size=30, max_size=30),
)
def test_arbitrary_bytes_never_raise_and_stay_bounded(
    chunks: list[bytes], times: list[float]
) -> None:
    core = opened(Limits(frozenset({"/ws"}), max_message_bytes=1000, send_queue_bytes=4096))
    core.pause()
    for chunk, now in zip(chunks, sorted(times), strict=False):
        core.receive(chunk, now)
        assert core.buffered() <= 1000 + 14 + 64 * 41 + 4096 + 130
    assert core.state in (OPEN, CLOSING, 3, FAILED)


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(
        st.tuples(
            st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]), st.binary(max_size=40), st.booleans()
        ),
        max_size=200,
    )
)
def test_arbitrary_frames_never_raise_and_stay_bounded(
    parts: list[tuple[int, bytes, bool]],
) -> None:
    core = opened()
    for opcode, payload, fin in parts:
        core.receive(frame(payload, opcode=opcode, fin=fin), 0.0)
        core.drain()
        assert core.buffered() <= 1000 + 14 + 64 * 41
    assert set(core.rejections) <= {"ws_error", "too_large", "fragments", "control_flood"}


def test_head_state_is_the_start() -> None:
    assert Recorder().state == HEAD


def test_a_head_dripped_byte_by_byte_still_completes() -> None:
    core = Recorder()
    for byte in upgrade_request(80):
        core.receive(bytes([byte]), 0.0)
    assert core.state == OPEN and core.drain().startswith(b"HTTP/1.1 101 ")
