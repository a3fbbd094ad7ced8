"""The signaling wire format: what decodes, what is refused with which code, what is relayed."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from signaling import schema
from signaling.schema import (
    CLIENT_TYPES,
    RELAY_TYPES,
    VERSION,
    Answer,
    ClientMessage,
    CreateSession,
    Credentials,
    Error,
    ErrorCode,
    IceCandidate,
    IceServer,
    JoinSession,
    LeaveSession,
    Left,
    Offer,
    PeerJoined,
    PeerLeft,
    Ping,
    Pong,
    ProtocolError,
    RefreshCredentials,
    RejoinSession,
    Relayed,
    SessionClosed,
    SessionCreated,
    SessionJoined,
    Signal,
    decode_client,
    decode_server,
    encode,
    relayed,
)

MAX = 65536

RELAY_CLASSES: dict[str, type[Offer | Answer | IceCandidate | Signal]] = {
    "offer": Offer,
    "answer": Answer,
    "ice_candidate": IceCandidate,
    "signal": Signal,
}


def frame(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def refuse(raw: bytes | str, max_size: int = MAX) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_client(raw, max_size)
    return info.value


# --- every client message decodes ---------------------------------------------------------------


VALID_CLIENT: list[tuple[bytes, ClientMessage]] = [
    (frame(v=1, type="create_session"), CreateSession(v=1)),
    (frame(v=1, type="create_session", id=7), CreateSession(v=1, id=7)),
    (
        frame(v=1, type="join_session", sessionId="12345678", token="tok_en-1", id=2),
        JoinSession(v=1, sessionId="12345678", token="tok_en-1", id=2),
    ),
    (
        frame(v=1, type="rejoin_session", sessionId="abcD", peerId="b", reconnectKey="k-_9"),
        RejoinSession(v=1, sessionId="abcD", peerId="b", reconnectKey="k-_9"),
    ),
    (frame(v=1, type="leave_session", id=0), LeaveSession(v=1, id=0)),
    (frame(v=1, type="ping", id=2**53), Ping(v=1, id=2**53)),
    (frame(v=1, type="ping"), Ping(v=1)),
    (frame(v=1, type="refresh_credentials", id=4), RefreshCredentials(v=1, id=4)),
]


@pytest.mark.parametrize(("raw", "expected"), VALID_CLIENT)
def test_client_message_decodes(raw: bytes, expected: ClientMessage) -> None:
    assert decode_client(raw, MAX) == expected
    assert decode_client(raw.decode(), MAX) == expected


@pytest.mark.parametrize("type_", sorted(RELAY_TYPES))
def test_relay_message_decodes(type_: str) -> None:
    raw = b'{"v":1,"type":"%s","payload":{"sdp":"v=0"},"id":3}' % type_.encode()
    msg = decode_client(raw, MAX)
    assert type(msg) is RELAY_CLASSES[type_]
    assert isinstance(msg, Offer | Answer | IceCandidate | Signal)
    assert bytes(msg.payload) == b'{"sdp":"v=0"}'
    assert msg.id == 3


def test_every_client_type_is_covered() -> None:
    covered = {str(type(m).__struct_config__.tag) for _, m in VALID_CLIENT} | set(RELAY_CLASSES)
    assert covered == CLIENT_TYPES
    assert RELAY_TYPES <= CLIENT_TYPES


def test_empty_payload_object_is_allowed() -> None:
    msg = decode_client(b'{"v":1,"type":"signal","payload":{}}', MAX)
    assert isinstance(msg, Signal)
    assert bytes(msg.payload) == b"{}"


def test_message_exactly_at_the_limit_is_accepted() -> None:
    raw = frame(v=1, type="ping", id=1)
    assert decode_client(raw, len(raw)) == Ping(v=1, id=1)


# --- each error path ----------------------------------------------------------------------------


ERROR_CASES: list[tuple[str, bytes, ErrorCode, int | None]] = [
    ("not json", b"{nope", ErrorCode.BAD_JSON, None),
    ("not utf-8", b"\xff\xfe\x00", ErrorCode.BAD_JSON, None),
    ("trailing garbage", b'{"v":1,"type":"ping"} x', ErrorCode.BAD_JSON, None),
    ("empty", b"", ErrorCode.BAD_JSON, None),
    ("array", b'[{"v":1,"type":"ping"}]', ErrorCode.BAD_MESSAGE, None),
    ("string", b'"ping"', ErrorCode.BAD_MESSAGE, None),
    ("number", b"1", ErrorCode.BAD_MESSAGE, None),
    ("null", b"null", ErrorCode.BAD_MESSAGE, None),
    (
        "missing field",
        frame(v=1, type="join_session", token="abc", id=4),
        ErrorCode.BAD_MESSAGE,
        4,
    ),
    (
        "missing payload",
        frame(v=1, type="offer", id=5),
        ErrorCode.BAD_MESSAGE,
        5,
    ),
    (
        "wrong field type",
        frame(v=1, type="join_session", sessionId=12345678, token="t", id=6),
        ErrorCode.BAD_MESSAGE,
        6,
    ),
    (
        "field breaks constraint",
        frame(v=1, type="join_session", sessionId="ab", token="t", id=7),
        ErrorCode.BAD_MESSAGE,
        7,
    ),
    (
        "bad peer id",
        frame(v=1, type="rejoin_session", sessionId="abcd", peerId="c", reconnectKey="k", id=8),
        ErrorCode.BAD_MESSAGE,
        8,
    ),
    (
        "unknown extra field",
        frame(v=1, type="ping", id=9, extra=True),
        ErrorCode.BAD_MESSAGE,
        9,
    ),
    (
        "payload is an array",
        frame(v=1, type="offer", payload=[1, 2], id=10),
        ErrorCode.BAD_MESSAGE,
        10,
    ),
    (
        "payload is a string",
        frame(v=1, type="answer", payload="{}", id=11),
        ErrorCode.BAD_MESSAGE,
        11,
    ),
    ("payload is null", frame(v=1, type="signal", payload=None), ErrorCode.BAD_MESSAGE, None),
    (
        "payload is a number",
        frame(v=1, type="ice_candidate", payload=3),
        ErrorCode.BAD_MESSAGE,
        None,
    ),
    ("unknown type", frame(v=1, type="hello", id=12), ErrorCode.UNKNOWN_TYPE, 12),
    ("server type from client", frame(v=1, type="pong", id=13), ErrorCode.UNKNOWN_TYPE, 13),
    ("type missing", frame(v=1, id=14), ErrorCode.UNKNOWN_TYPE, 14),
    ("type not a string", frame(v=1, type=["ping"], id=15), ErrorCode.UNKNOWN_TYPE, 15),
    ("version 2", frame(v=2, type="ping", id=16), ErrorCode.UNSUPPORTED_VERSION, 16),
    ("version 0", frame(v=0, type="ping", id=17), ErrorCode.UNSUPPORTED_VERSION, 17),
    ("version missing", frame(type="ping", id=18), ErrorCode.UNSUPPORTED_VERSION, 18),
    ("version is a string", frame(v="1", type="ping", id=19), ErrorCode.UNSUPPORTED_VERSION, 19),
    (
        "version 2 of unknown type",
        frame(v=2, type="from_the_future", id=20),
        ErrorCode.UNSUPPORTED_VERSION,
        20,
    ),
    (
        "version 2 with unknown fields",
        frame(v=2, type="ping", id=21, newField=1),
        ErrorCode.UNSUPPORTED_VERSION,
        21,
    ),
    ("id is a string", frame(v=1, type="ping", id="22"), ErrorCode.BAD_MESSAGE, None),
    ("id is a bool", frame(v=1, type="hello", id=True), ErrorCode.UNKNOWN_TYPE, None),
    ("id is negative", frame(v=1, type="hello", id=-1), ErrorCode.UNKNOWN_TYPE, None),
    ("id is a float", frame(v=1, type="hello", id=1.5), ErrorCode.UNKNOWN_TYPE, None),
]


@pytest.mark.parametrize(
    ("raw", "code", "request_id"),
    [pytest.param(raw, code, rid, id=name) for name, raw, code, rid in ERROR_CASES],
)
def test_error_code(raw: bytes, code: ErrorCode, request_id: int | None) -> None:
    exc = refuse(raw)
    assert exc.code is code
    assert exc.request_id == request_id
    assert exc.message
    assert len(exc.message) <= 300
    assert str(exc) == exc.message


def test_too_large_is_checked_before_parsing() -> None:
    raw = frame(v=1, type="ping", id=1)
    exc = refuse(raw, len(raw) - 1)
    assert exc.code is ErrorCode.TOO_LARGE
    assert exc.request_id is None
    assert str(len(raw)) in exc.message
    # Even garbage is refused for its size first: no parsing work on oversized frames.
    assert refuse(b"x" * 100, 10).code is ErrorCode.TOO_LARGE


def test_version_of_a_valid_shape_echoes_request_id() -> None:
    exc = refuse(frame(v=3, type="join_session", sessionId="abcd", token="t", id=99))
    assert exc.code is ErrorCode.UNSUPPORTED_VERSION
    assert exc.request_id == 99
    assert "3" in exc.message


def test_bad_message_names_the_field() -> None:
    exc = refuse(frame(v=1, type="join_session", sessionId=5, token="t"))
    assert "sessionId" in exc.message
    exc = refuse(frame(v=1, type="ping", surprise=1))
    assert "surprise" in exc.message


def test_unknown_type_message_is_truncated() -> None:
    exc = refuse(frame(v=1, type="x" * 1000))
    assert exc.code is ErrorCode.UNKNOWN_TYPE
    assert len(exc.message) < 100


def test_error_frame_helper() -> None:
    raw = schema.error(ErrorCode.SESSION_FULL, "full", 5)
    assert decode_server(raw) == Error(v=VERSION, code="session_full", message="full", re=5)
    assert b'"re"' not in schema.error(ErrorCode.BAD_JSON, "x")


@pytest.mark.parametrize("depth", [2000, 5000, 30000])
def test_deeply_nested_json_is_a_protocol_error(depth: int) -> None:
    raw = b"[" * depth + b"]" * depth  # 4-60 kB, under the default 64 kB message limit
    exc = refuse(raw)
    assert exc.code is ErrorCode.BAD_JSON
    assert exc.request_id is None


def test_deeply_nested_payload_is_a_protocol_error() -> None:
    depth = 3000
    payload = b'{"a":' * depth + b"1" + b"}" * depth
    raw = b'{"v":1,"type":"signal","payload":' + payload + b',"id":5}'
    assert refuse(raw).code is ErrorCode.BAD_JSON


def test_moderately_nested_payload_is_relayed() -> None:
    depth = 200
    payload = b'{"a":' * depth + b"1" + b"}" * depth
    msg = decode_client(b'{"v":1,"type":"signal","payload":' + payload + b"}", MAX)
    assert isinstance(msg, Signal)
    assert bytes(msg.payload) == payload


def test_str_frame_with_lone_surrogate_is_a_protocol_error() -> None:
    assert refuse('{"v":1,"type":"ping","x":"\ud800"}').code is ErrorCode.BAD_JSON
    assert refuse("\udcff").code is ErrorCode.BAD_JSON


def test_str_frame_size_counts_utf8_bytes() -> None:
    text = '{"v":1,"type":"signal","payload":{"t":"' + "\u00e9" * 10 + '"}}'
    size = len(text.encode())
    assert size == len(text) + 10
    assert isinstance(decode_client(text, size), Signal)
    exc = refuse(text, size - 1)
    assert exc.code is ErrorCode.TOO_LARGE
    assert str(size) in exc.message


# --- relaying -----------------------------------------------------------------------------------

ODD_PAYLOAD = (
    b'{ "sdp" : "v=0\\r\\no=- 1 2 IN IP4 127.0.0.1" ,\n\t"n":[1, 2.50, 1e3],"u":"\\u00e9\xc3\xa9" }'
)


@pytest.mark.parametrize("type_", sorted(RELAY_TYPES))
@pytest.mark.parametrize("sender", ["a", "b"])
def test_relayed_keeps_payload_bytes(type_: str, sender: schema.PeerId) -> None:
    raw = b'{"v":1,"type":"%s","payload":%s,"id":1}' % (type_.encode(), ODD_PAYLOAD)
    msg = decode_client(raw, MAX)
    assert isinstance(msg, Offer | Answer | IceCandidate | Signal)
    out = relayed(msg, sender)
    assert ODD_PAYLOAD in out
    back = decode_server(out)
    assert isinstance(back, Relayed)
    assert back.v == VERSION
    assert back.type == type_
    assert back.peerId == sender
    assert bytes(back.payload) == ODD_PAYLOAD
    # The request id is the sender's business, not the receiver's.
    assert set(json.loads(out)) == {"v", "type", "peerId", "payload"}


def test_relayed_overrides_any_peer_id_inside_payload() -> None:
    payload = b'{"peerId":"a"}'
    msg = decode_client(b'{"v":1,"type":"signal","payload":%s}' % payload, MAX)
    assert isinstance(msg, Signal)
    frame_ = json.loads(relayed(msg, "b"))
    assert frame_["peerId"] == "b"
    assert frame_["payload"] == {"peerId": "a"}


# --- server messages ----------------------------------------------------------------------------

ICE = [
    IceServer(urls=["stun:stun.example.org:3478"]),
    IceServer(
        urls=["turn:t.example.org:3478", "turns:t.example.org:5349"], username="1:s", credential="c"
    ),
]

SERVER_MESSAGES: list[msgspec.Struct] = [
    SessionCreated(
        v=1,
        sessionId="12345678",
        token="tok",
        peerId="a",
        reconnectKey="key",
        expiresAt=1700000000.25,
        iceServers=ICE,
        re=1,
    ),
    SessionCreated(
        v=1, sessionId="1", token="t", peerId="a", reconnectKey="k", expiresAt=0.0, iceServers=[]
    ),
    SessionJoined(
        v=1,
        sessionId="12345678",
        peerId="b",
        reconnectKey="key",
        peerPresent=True,
        rejoined=False,
        expiresAt=1.5,
        iceServers=ICE,
        re=2,
    ),
    SessionJoined(
        v=1,
        sessionId="12345678",
        peerId="a",
        reconnectKey="",
        peerPresent=False,
        rejoined=True,
        expiresAt=2.0,
        iceServers=[],
    ),
    Credentials(v=1, iceServers=ICE, re=6),
    PeerJoined(v=1, peerId="b", rejoined=False),
    PeerJoined(v=1, peerId="a", rejoined=True),
    PeerLeft(v=1, peerId="a", graceSeconds=60.0),
    PeerLeft(v=1, peerId="b", graceSeconds=0.0),
    SessionClosed(v=1, reason="expired"),
    Pong(v=1, re=3),
    Pong(v=1),
    Left(v=1, re=4),
    Left(v=1),
    Error(v=1, code="bad_json", message="message is not valid JSON", re=5),
    Error(v=1, code="internal_error", message="internal error"),
]


@pytest.mark.parametrize("msg", SERVER_MESSAGES, ids=lambda m: type(m).__name__)
def test_server_message_round_trips(msg: msgspec.Struct) -> None:
    raw = encode(msg)
    assert decode_server(raw) == msg
    assert decode_server(raw.decode()) == msg
    head = json.loads(raw)
    assert head["v"] == VERSION
    assert head["type"] == type(msg).__struct_config__.tag


def test_optional_fields_are_omitted() -> None:
    assert json.loads(encode(Pong(v=1))) == {"v": 1, "type": "pong"}
    assert "username" not in json.loads(encode(ICE[0]))


def test_server_type_is_not_a_client_type() -> None:
    for msg in SERVER_MESSAGES:
        assert refuse(encode(msg)).code is ErrorCode.UNKNOWN_TYPE


# --- properties ---------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=6)

session_ids = st.from_regex(r"[0-9A-Za-z]{4,32}", fullmatch=True)
secrets_ = st.from_regex(r"[0-9A-Za-z_\-]{1,128}", fullmatch=True)
request_ids = st.none() | st.integers(min_value=0, max_value=2**53)
senders: st.SearchStrategy[schema.PeerId] = st.sampled_from(["a", "b"])

# Near-valid messages: the right keys with arbitrary values, so every branch of the diagnosis runs.
near_messages = st.fixed_dictionaries(
    {
        "v": st.just(1) | json_values,
        "type": st.sampled_from(sorted(CLIENT_TYPES)) | json_values,
    },
    optional={
        "id": st.integers(min_value=-5, max_value=2**60) | json_values,
        "sessionId": session_ids | json_values,
        "token": secrets_ | json_values,
        "peerId": st.sampled_from(["a", "b"]) | json_values,
        "reconnectKey": secrets_ | json_values,
        "payload": json_objects | json_values,
        "extra": json_values,
    },
)


def check_total(raw: bytes | str, max_size: int = MAX) -> None:
    """decode_client is total: a message, or a ProtocolError, never any other exception."""
    outcome: ClientMessage | ProtocolError
    try:
        outcome = decode_client(raw, max_size)
    except ProtocolError as exc:
        outcome = exc
    if isinstance(outcome, ProtocolError):
        assert isinstance(outcome.code, ErrorCode)
        rid = outcome.request_id
        assert rid is None or (isinstance(rid, int) and rid >= 0)
    else:
        assert outcome.v == VERSION
        assert str(type(outcome).__struct_config__.tag) in CLIENT_TYPES


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_protocol_error(raw: bytes) -> None:
    check_total(raw)


@given(st.text(max_size=300))
def test_arbitrary_text_decode_or_protocol_error(raw: str) -> None:
    check_total(raw)


@given(json_values)
def test_arbitrary_json_decode_or_protocol_error(value: Any) -> None:
    check_total(json.dumps(value).encode())


@given(near_messages, st.sampled_from([32, 256, MAX]))
def test_near_valid_messages_decode_or_protocol_error(value: dict[str, Any], size: int) -> None:
    check_total(json.dumps(value).encode(), size)
    check_total(json.dumps(value, ensure_ascii=False), size)


@given(session_ids, secrets_, request_ids)
def test_generated_join_session_decodes(session_id: str, token: str, rid: int | None) -> None:
    fields: dict[str, Any] = {
        "v": 1,
        "type": "join_session",
        "sessionId": session_id,
        "token": token,
    }
    if rid is not None:
        fields["id"] = rid
    msg = decode_client(json.dumps(fields).encode(), MAX)
    assert msg == JoinSession(v=1, sessionId=session_id, token=token, id=rid)


@given(session_ids, senders, secrets_, request_ids)
def test_generated_rejoin_session_decodes(
    session_id: str, peer: schema.PeerId, key: str, rid: int | None
) -> None:
    raw = frame(
        v=1, type="rejoin_session", sessionId=session_id, peerId=peer, reconnectKey=key, id=rid
    )
    msg = decode_client(raw, MAX)
    assert msg == RejoinSession(v=1, sessionId=session_id, peerId=peer, reconnectKey=key, id=rid)


@given(
    st.sampled_from(sorted(RELAY_TYPES)),
    json_objects,
    st.sampled_from([None, 0, 2, "\t"]),
    st.booleans(),
    senders,
    request_ids,
)
def test_generated_relay_payload_is_byte_identical(
    type_: str,
    obj: dict[str, Any],
    indent: int | str | None,
    ascii_only: bool,
    sender: schema.PeerId,
    rid: int | None,
) -> None:
    payload = json.dumps(obj, indent=indent, ensure_ascii=ascii_only).encode()
    tail = b"" if rid is None else b',"id":%d' % rid
    raw = b'{"v":1,"type":"%s","payload":%s%s}' % (type_.encode(), payload, tail)
    msg = decode_client(raw, len(raw))
    assert type(msg) is RELAY_CLASSES[type_]
    assert isinstance(msg, Offer | Answer | IceCandidate | Signal)
    assert msg.id == rid
    assert bytes(msg.payload) == payload

    out = relayed(msg, sender)
    back = decode_server(out)
    assert isinstance(back, Relayed)
    assert (back.type, back.peerId) == (type_, sender)
    assert bytes(back.payload) == payload
    assert json.loads(out)["payload"] == obj


JOIN_FIELDS = frozenset({"v", "type", "sessionId", "token", "id"})
not_a_string = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
)
not_a_request_id = (
    st.text(max_size=20)
    | st.booleans()
    | st.integers(max_value=-1)
    | st.integers(min_value=2**53 + 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.integers(), max_size=3)
)
not_version_one = (not_a_string | st.text(max_size=20)).filter(
    lambda v: not (type(v) is int and v == VERSION)
)
bad_fields = (
    st.tuples(st.just("sessionId"), not_a_string)
    | st.tuples(st.just("id"), not_a_request_id)
    | st.tuples(st.just("v"), not_version_one)
    | st.tuples(st.just("type"), not_a_string)
    | st.tuples(st.text(max_size=12).filter(lambda k: k not in JOIN_FIELDS), not_a_string)
)
long_secrets = st.from_regex(r"[0-9A-Za-z_\-]{16,128}", fullmatch=True)


@given(long_secrets, bad_fields, st.permutations(sorted(JOIN_FIELDS)))
def test_join_error_never_echoes_token(token: str, bad: tuple[str, Any], order: list[str]) -> None:
    good: dict[str, Any] = {
        "v": 1,
        "type": "join_session",
        "sessionId": "12345678",
        "token": token,
        "id": 1,
    }
    good[bad[0]] = bad[1]
    fields = {key: good[key] for key in [*order, *good.keys() - JOIN_FIELDS]}
    exc = refuse(json.dumps(fields).encode())
    assert token not in exc.message


@given(long_secrets, st.sampled_from(["!", " ", "é", "/", "x" * 130]))
def test_invalid_token_is_not_echoed(token: str, spoil: str) -> None:
    bad_token = token + spoil
    exc = refuse(frame(v=1, type="join_session", sessionId="12345678", token=bad_token))
    assert exc.code is ErrorCode.BAD_MESSAGE
    assert token not in exc.message


@given(long_secrets, st.text(max_size=10) | not_a_string)
def test_rejoin_error_never_echoes_reconnect_key(key: str, peer: Any) -> None:
    assume(peer not in ("a", "b"))
    assume(not isinstance(peer, str) or key not in peer)
    raw = frame(v=1, type="rejoin_session", sessionId="12345678", peerId=peer, reconnectKey=key)
    exc = refuse(raw)
    assert exc.code is ErrorCode.BAD_MESSAGE
    assert key not in exc.message
