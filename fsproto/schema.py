"""The signaling wire format, version 1: every message either side may send, and its validation.

One module serves the server and the client, so both agree on the format by construction.
Peer-to-peer payloads (SDP, ICE candidates, key exchange) travel as raw JSON objects the server
never decodes: it cannot read or rewrite what it does not parse, and relaying costs no re-encoding.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final, Literal

import msgspec

VERSION: Final = 1
RUN_ID_CHARS: Final = 16  # a run id's length (hex), see JoinSession

SessionId = Annotated[str, msgspec.Meta(min_length=4, max_length=32, pattern=r"^[0-9A-Za-z]+$")]
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_-]+$")]
PeerId = Literal["a", "b"]
RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
RunId = Annotated[str, msgspec.Meta(pattern=f"^[0-9a-f]{{{RUN_ID_CHARS}}}$")]

RELAY_TYPES: Final = frozenset({"offer", "answer", "ice_candidate", "signal"})


class ErrorCode(enum.StrEnum):
    """Stable error codes: clients branch on these, so a code is never renamed or reused."""

    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    JOINS_LIMITED = "joins_limited"  # this address failed too many joins: wait, then retry
    CREDENTIALS_LIMITED = "credentials_limited"  # this address got too many TURN credentials
    NOT_JOINED = "not_joined"
    ALREADY_JOINED = "already_joined"
    SESSION_NOT_FOUND = "session_not_found"
    SESSION_FULL = "session_full"
    SESSION_LIMIT = "session_limit"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    PEER_UNAVAILABLE = "peer_unavailable"
    SLOW_CONSUMER = "slow_consumer"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL_ERROR = "internal_error"
    STORE_UNAVAILABLE = "store_unavailable"  # Redis is failing over: retry in a few seconds


class ProtocolError(Exception):
    """A message the server refuses; carries the code and text of the error reply."""

    def __init__(self, code: ErrorCode, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class _Message(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, omit_defaults=True):
    v: int


# --- client to server ---------------------------------------------------------------------------


Access = Literal["token", "code"]


class CreateSession(_Message, tag="create_session"):
    """`access="code"`: the session is joined by its id alone, once, for a short code whose
    secret part only the peers know (a PAKE). The one join is the one guess: a failed PAKE ends
    the session, and no second peer may join. Default "token": the 128-bit token is required."""

    access: Access = "token"
    instance: Secret | None = None
    runs: bool = False
    id: RequestId | None = None


class JoinSession(_Message, tag="join_session"):
    """`instance` (also in create and rejoin): a nonce the client picks once per process, so a
    rejoin from the same process (its signaling connection came back) can be told from a
    restarted one; see PeerJoined.resumed.

    `runs` (also in create and rejoin): the client wants run ids, `run` and `peerRun` in
    session_created and session_joined, `peerRun` in peer_joined: RUN_ID_CHARS hex characters
    of SHA-256 of a peer's `instance` (of its connection's id if it gave none), the same for a
    resume, new for a restart. A peer addresses its PAKE hello to the other's run, so a hello
    meant for a run that is over is told from one for the current run (a hello relayed just
    before the peer restarted reaches its new run). Clients that do not ask see no change."""

    sessionId: SessionId
    token: Secret | None = None
    instance: Secret | None = None
    runs: bool = False
    id: RequestId | None = None


class RejoinSession(_Message, tag="rejoin_session"):
    """A dropped peer taking its own place back, proven by the reconnect key only it was given."""

    sessionId: SessionId
    peerId: PeerId
    reconnectKey: Secret
    instance: Secret | None = None
    runs: bool = False
    id: RequestId | None = None


class LeaveSession(_Message, tag="leave_session"):
    id: RequestId | None = None


class Ping(_Message, tag="ping"):
    id: RequestId | None = None


class RefreshCredentials(_Message, tag="refresh_credentials"):
    """Fresh ICE servers (TURN credentials) for the session, while both peers are present:
    the creator asks once its peer has joined, either peer again before its TURN credential
    (whose username starts with its expiry) runs out."""

    id: RequestId | None = None


class _Relay(_Message):
    payload: msgspec.Raw
    id: RequestId | None = None


class Offer(_Relay, tag="offer"):
    pass


class Answer(_Relay, tag="answer"):
    pass


class IceCandidate(_Relay, tag="ice_candidate"):
    pass


class Signal(_Relay, tag="signal"):
    """Any other peer-to-peer payload, e.g. the key exchange."""


RelayMessage = Offer | Answer | IceCandidate | Signal
ClientMessage = (
    CreateSession
    | JoinSession
    | RejoinSession
    | LeaveSession
    | Ping
    | RefreshCredentials
    | RelayMessage
)


# --- server to client ---------------------------------------------------------------------------


class IceServer(msgspec.Struct, omit_defaults=True):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class SessionCreated(_Message, tag="session_created"):
    sessionId: str
    token: str
    peerId: PeerId
    reconnectKey: str
    expiresAt: float
    iceServers: list[IceServer]
    re: int | None = None
    # How long the server keeps this peer's place after its connection ends without a leave
    # (an interrupted client may come back within it); 0 from servers that do not say.
    graceSeconds: float = 0.0
    run: RunId | None = None  # this peer's run id, to a client that asked (`runs`)


class SessionJoined(_Message, tag="session_joined"):
    sessionId: str
    peerId: PeerId
    reconnectKey: str
    peerPresent: bool
    rejoined: bool
    expiresAt: float
    iceServers: list[IceServer]
    re: int | None = None
    graceSeconds: float = 0.0  # as in SessionCreated
    run: RunId | None = None  # as in SessionCreated
    peerRun: RunId | None = None  # the other peer's run id (none if it never joined, to `runs`)


class Credentials(_Message, tag="credentials"):
    """The reply to refresh_credentials."""

    iceServers: list[IceServer]
    re: int | None = None


class PeerJoined(_Message, tag="peer_joined"):
    """`resumed`: the peer rejoined from the same process (same `instance`): only its signaling
    connection was lost, its transfer state and data channel are intact. Sent only to a peer
    that gave an instance itself (older clients do not know the field)."""

    peerId: PeerId
    rejoined: bool
    resumed: bool = False
    peerRun: RunId | None = None  # its run id, to a peer that asked for them (`runs`)


class PeerLeft(_Message, tag="peer_left"):
    """The other peer dropped; it may come back within graceSeconds (0: it left for good)."""

    peerId: PeerId
    graceSeconds: float


class SessionClosed(_Message, tag="session_closed"):
    reason: str


class Pong(_Message, tag="pong"):
    re: int | None = None


class Left(_Message, tag="left"):
    re: int | None = None


class Relayed(msgspec.Struct, forbid_unknown_fields=True):
    """A peer's payload as delivered to the other peer; `type` is the relay type it was sent as."""

    v: int
    type: str
    peerId: PeerId
    payload: msgspec.Raw


class Error(_Message, tag="error"):
    code: str
    message: str
    re: int | None = None


ServerMessage = (
    SessionCreated
    | SessionJoined
    | Credentials
    | PeerJoined
    | PeerLeft
    | SessionClosed
    | Pong
    | Left
    | Error
)

_client_decoder = msgspec.json.Decoder(ClientMessage)
_generic_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def decode_client(raw: bytes | str, max_size: int) -> ClientMessage:
    """Validate one client frame; raise ProtocolError with the most specific code that applies."""
    if isinstance(raw, str):
        try:
            raw = raw.encode()
        except UnicodeEncodeError:
            raise ProtocolError(ErrorCode.BAD_JSON, "message is not valid UTF-8") from None
    if len(raw) > max_size:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message of {len(raw)} bytes exceeds {max_size}")
    try:
        msg: ClientMessage = _client_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _diagnose(raw, exc) from None
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_JSON, "message is nested too deeply") from None
    if msg.v != VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {msg.v} is not supported (this server speaks {VERSION})",
            msg.id,
        )
    # (a view of its first byte: copying the payload to look at it cost 64 KB per relay)
    if isinstance(msg, _Relay) and memoryview(msg.payload)[:1].tobytes() != b"{":
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "payload must be a JSON object", msg.id)
    return msg


def _diagnose(raw: bytes, exc: Exception) -> ProtocolError:
    """Slow path, for refused frames only: say which of the possible faults it is."""
    try:
        obj = _generic_decoder.decode(raw)
    except msgspec.DecodeError:
        return ProtocolError(ErrorCode.BAD_JSON, "message is not valid JSON")
    except RecursionError:
        return ProtocolError(ErrorCode.BAD_JSON, "message is nested too deeply")
    if not isinstance(obj, dict):
        return ProtocolError(ErrorCode.BAD_MESSAGE, "message must be a JSON object")
    request_id = obj.get("id")
    if (
        not isinstance(request_id, int)
        or isinstance(request_id, bool)
        or not 0 <= request_id <= 2**53
    ):
        request_id = None
    version = obj.get("v")
    if version != VERSION:
        return ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported (this server speaks {VERSION})",
            request_id,
        )
    msg_type = obj.get("type")
    if not isinstance(msg_type, str) or msg_type not in CLIENT_TYPES:
        return ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown message type {str(msg_type)[:40]!r}", request_id
        )
    return ProtocolError(ErrorCode.BAD_MESSAGE, f"invalid {msg_type}: {exc}"[:300], request_id)


CLIENT_TYPES: Final = frozenset(
    str(cls.__struct_config__.tag)
    for cls in (
        CreateSession,
        JoinSession,
        RejoinSession,
        LeaveSession,
        Ping,
        RefreshCredentials,
        *RelayMessage.__args__,
    )
)


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


def relayed(msg: RelayMessage, sender: PeerId) -> bytes:
    """The frame the other peer receives: the sender's payload, untouched."""
    return _encoder.encode(
        Relayed(v=VERSION, type=str(msg.__struct_config__.tag), peerId=sender, payload=msg.payload)
    )


def error(code: ErrorCode, message: str, request_id: int | None = None) -> bytes:
    return _encoder.encode(Error(v=VERSION, code=code.value, message=message, re=request_id))


_server_decoder = msgspec.json.Decoder(ServerMessage)


def decode_server(raw: bytes | str) -> ServerMessage | Relayed:
    """For clients: decode one server frame (relayed payloads stay raw JSON)."""
    head = _generic_decoder.decode(raw)
    if isinstance(head, dict) and head.get("type") in RELAY_TYPES:
        return msgspec.json.decode(raw, type=Relayed)
    msg: ServerMessage = _server_decoder.decode(raw)
    return msg
