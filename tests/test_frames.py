"""The RFC 6455 frame codec, fed bytes: every rule of the wire format, and fuzzing (arbitrary
bytes never raise; a stream split anywhere parses exactly as a whole)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling import frames
from signaling.frames import Close, Event, Failure, FrameReader, Message, Ping, Pong
from tests.rawws import RawWebSocket

frame = RawWebSocket.frame
close_payload = RawWebSocket.close_payload
LIMIT = 1000


def feed(*chunks: bytes, limit: int = LIMIT) -> list[Event]:
    reader = FrameReader(limit)
    return [event for chunk in chunks for event in reader.feed(chunk)]


def server_frame(data: bytes) -> tuple[int, bool, bytes]:
    """Decode one (unmasked) server frame: opcode, fin, payload."""
    assert not data[1] & 0x80
    length, at = data[1] & 0x7F, 2
    if length == 126:
        length, at = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        length, at = int.from_bytes(data[2:10], "big"), 10
    assert len(data) == at + length
    return data[0] & 0x0F, bool(data[0] & 0x80), data[at:]


# --- messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 999, 1000])
def test_one_frame_messages(size: int) -> None:
    payload = b"x" * size
    assert feed(frame(payload)) == [Message(payload, True)]
    assert feed(frame(payload, opcode=0x2)) == [Message(payload, False)]


def test_64_bit_length() -> None:
    payload = bytes(range(256)) * 300  # 76,800 bytes: a 64-bit length field
    assert feed(frame(payload, opcode=0x2), limit=100_000) == [Message(payload, False)]


def test_several_frames_in_one_chunk_and_one_frame_in_many() -> None:
    stream = frame(b"one") + frame(b"two") + frame(b"", opcode=0x9) + frame(b"three")
    expected: list[Event] = [
        Message(b"one", True),
        Message(b"two", True),
        Ping(b""),
        Message(b"three", True),
    ]
    assert feed(stream) == expected
    assert feed(*(stream[i : i + 1] for i in range(len(stream)))) == expected


def test_fragmented_message_with_a_ping_between_fragments() -> None:
    events = feed(
        frame(b'{"v":1,', fin=False),
        frame(b"hi", opcode=0x9),
        frame(b'"type":', opcode=0x0, fin=False),
        frame(b'"ping"}', opcode=0x0),
    )
    assert events == [Ping(b"hi"), Message(b'{"v":1,"type":"ping"}', True)]


def test_utf8_split_across_fragments_is_valid() -> None:
    text = "é".encode()
    assert feed(frame(text[:1], fin=False), frame(text[1:], opcode=0x0)) == [Message(text, True)]


def test_ping_and_pong_payloads() -> None:
    assert feed(frame(b"abc", opcode=0x9), frame(b"xyz", opcode=0xA)) == [
        Ping(b"abc"),
        Pong(b"xyz"),
    ]


def test_binary_messages_are_not_utf8_checked() -> None:
    assert feed(frame(b"\xff\xfe", opcode=0x2)) == [Message(b"\xff\xfe", False)]


# --- protocol errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(b"x", masked=False), 1002),
        (frame(b"x", rsv=1), 1002),
        (frame(b"x", rsv=4), 1002),
        *((frame(b"x", opcode=op), 1002) for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)),
        (frame(b"x", opcode=0x0), 1002),  # a continuation with nothing to continue
        (frame(b"x", opcode=0x9, fin=False), 1002),  # a fragmented control frame
        (frame(b"x" * 126, opcode=0x9), 1002),  # a control frame over 125 bytes
        (frame(b"", declared_length=2**63), 1002),  # a length with its top bit set
        (frame(b"\xc3\x28"), 1007),  # invalid UTF-8 in a text message
        (frame(b"\xed\xa0\x80"), 1007),  # a UTF-16 surrogate, encoded: not UTF-8
        (frame(b"x" * (LIMIT + 1)), 1009),
    ],
    ids=[
        "unmasked",
        "rsv1",
        "rsv3",
        *(f"opcode-{op:x}" for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)),
        "stray-continuation",
        "fragmented-control",
        "long-control",
        "length-top-bit",
        "invalid-utf8",
        "surrogate",
        "too-big",
    ],
)
def test_protocol_errors(data: bytes, code: int) -> None:
    events = feed(data)
    assert len(events) == 1 and isinstance(events[0], Failure)
    assert events[0].code == code and events[0].reason


def test_new_message_inside_a_fragmented_one() -> None:
    events = feed(frame(b"a", fin=False), frame(b"b"))
    assert [type(e) for e in events] == [Failure] and events[0].code == 1002  # type: ignore[union-attr]


def test_too_big_is_known_from_the_header_alone() -> None:
    """No payload is awaited (or held) for a frame that declares too much."""
    header = frame(b"", declared_length=2**40)[:14]
    events = feed(header)
    assert events == [Failure(1009, f"message over {LIMIT} bytes", "too_large")]


def test_fragments_add_up_to_the_limit() -> None:
    events = feed(frame(b"x" * 600, fin=False), frame(b"x" * 401, opcode=0x0))
    assert events == [Failure(1009, f"message over {LIMIT} bytes", "too_large")]
    assert feed(frame(b"x" * 600, fin=False), frame(b"x" * 400, opcode=0x0)) == [
        Message(b"x" * 1000, True)
    ]


# --- close frames -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 3000, 4999]
)
def test_valid_close_codes(code: int) -> None:
    assert feed(frame(close_payload(code, b"bye"), opcode=0x8)) == [Close(code, "bye")]


def test_empty_close() -> None:
    assert feed(frame(b"", opcode=0x8)) == [Close(None, "")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_codes_fail_but_still_close(code: int) -> None:
    assert feed(frame(close_payload(code), opcode=0x8)) == [
        Failure(1002, f"invalid close code {code}"),
        Close(None, ""),
    ]


def test_faulty_close_payloads() -> None:
    one_byte = feed(frame(b"\x03", opcode=0x8))
    assert [type(e) for e in one_byte] == [Failure, Close] and one_byte[0].code == 1002  # type: ignore[union-attr]
    bad_reason = feed(frame(close_payload(1000, b"\xff"), opcode=0x8))
    assert [type(e) for e in bad_reason] == [Failure, Close] and bad_reason[0].code == 1007  # type: ignore[union-attr]


def test_nothing_is_read_after_a_close() -> None:
    reader = FrameReader(LIMIT)
    assert reader.feed(frame(b"", opcode=0x8) + frame(b"late")) == [Close(None, "")]
    assert reader.feed(frame(b"later")) == []


# --- after a failure: only the close frame ----------------------------------------------------


def test_after_a_failure_nothing_more_is_read() -> None:
    """A failed connection is failed (RFC 6455 section 7.1.7): what the client sends after the
    failure, in the same read or later, is neither parsed nor held, close frame or not."""
    reader = FrameReader(LIMIT)
    big = frame(b"y" * 50_000)  # over the limit: failed by its header, never held
    events = reader.feed(big[:20] + frame(b"", opcode=0xA) * 10_000)
    assert events == [Failure(1009, f"message over {LIMIT} bytes", "too_large")]
    assert reader.frames == 0 and reader.buffered() == 0
    assert reader.feed(frame(b"ignored") + frame(close_payload(1009), opcode=0x8)) == []
    for bad in (frame(b"x", rsv=2), frame(b"\xff")):
        reader = FrameReader(LIMIT)
        events = reader.feed(bad + frame(b"later") + frame(close_payload(1000), opcode=0x8))
        assert [type(e) for e in events] == [Failure] and reader.buffered() == 0


def test_a_frame_flood_stops_the_parse_at_the_budget() -> None:
    """However much one read delivers, at most `budget` frames of it are parsed."""
    reader = FrameReader(LIMIT)
    events = reader.feed(frame(b"", opcode=0xA) * 100_000, budget=50)
    assert len(events) == 51 and events[-1] == Failure(1008, "too many frames", "frame_flood")
    assert reader.frames == 50 and reader.buffered() == 0


def test_a_closing_client_over_its_budget_is_taken_as_gone() -> None:
    reader = FrameReader(LIMIT)
    reader.skip_data()
    assert reader.feed(frame(b"a") * 100_000, budget=50) == [Close(None, "")]
    assert reader.frames == 50 and reader.buffered() == 0


def test_skip_data_after_the_server_closed() -> None:
    reader = FrameReader(LIMIT)
    reader.skip_data()
    assert reader.feed(frame(b"a") + frame(b"x" * 5000) + frame(b"", opcode=0x8)) == [
        Close(None, "")
    ]


# --- server frames ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_encode_lengths(size: int) -> None:
    payload = bytes(size)
    assert server_frame(frames.encode(payload)) == (0x1, True, payload)
    assert server_frame(frames.encode(payload, frames.OP_PONG)) == (0xA, True, payload)


def test_close_frames() -> None:
    assert server_frame(frames.close_frame(None)) == (0x8, True, b"")
    assert server_frame(frames.close_frame(1012, b"restart")) == (0x8, True, b"\x03\xf4restart")
    opcode, _, payload = server_frame(frames.close_frame(4000, "é".encode() * 100))
    assert opcode == 0x8 and len(payload) <= 125
    payload[2:].decode()  # cut at a character boundary: still UTF-8
    assert frames.PING == b"\x89\x00"


# --- fuzzing ------------------------------------------------------------------------------------


@settings(max_examples=400)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    reader = FrameReader(100)
    events = [e for chunk in chunks for e in reader.feed(chunk)]
    failures = [e for e in events if isinstance(e, Failure)]
    assert len(failures) <= 1  # one failure, then nothing more is read
    assert sum(isinstance(e, Close) for e in events) <= 1
    if failures:  # only a faulty close frame's own Close may come with it
        assert all(isinstance(e, Close) for e in events[events.index(failures[0]) + 1 :])
    for e in events:
        if isinstance(e, Message) and e.text:
            e.data.decode()
        if isinstance(e, Message):
            assert len(e.data) <= 100


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


_frames = st.one_of(
    st.builds(lambda p: frame(p), st.binary(max_size=300).filter(_utf8)),
    st.builds(lambda p: frame(p, opcode=0x2), st.binary(max_size=300)),
    st.builds(lambda p: frame(p, opcode=0x9), st.binary(max_size=125)),
    st.builds(lambda p: frame(p, opcode=0xA), st.binary(max_size=125)),
    st.builds(lambda p: frame(p), st.binary(min_size=1, max_size=8)),  # maybe not UTF-8
    st.just(frame(b"x" * 2000)),  # over the limit
    st.just(frame(b"a", fin=False) + frame(b"b", opcode=0x0)),
    st.just(frame(close_payload(1000), opcode=0x8)),
)


@settings(max_examples=200)
@given(st.lists(_frames, min_size=1, max_size=8), st.data())
def test_a_stream_split_anywhere_parses_the_same(parts: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(parts)
    whole = feed(stream)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=12)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert feed(*pieces) == whole


def test_every_byte_boundary() -> None:
    stream = (
        frame(b"hello")
        + frame(b"x" * 300, opcode=0x2)
        + frame(b"frag", fin=False)
        + frame(b"p", opcode=0x9)
        + frame(b"ment", opcode=0x0)
        + frame(close_payload(1000, b"done"), opcode=0x8)
    )
    whole = feed(stream)
    assert whole == [
        Message(b"hello", True),
        Message(b"x" * 300, False),
        Ping(b"p"),
        Message(b"fragment", True),
        Close(1000, "done"),
    ]
    for cut in range(1, len(stream)):
        assert feed(stream[:cut], stream[cut:]) == whole
