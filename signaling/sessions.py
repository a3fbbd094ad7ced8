"""Session rules: who may join, rejoin or stay, and when a session ends.

Plain functions over a plain record, no I/O: the store applies them atomically (in memory, or
inside a Redis transaction), so every instance enforces exactly the same rules.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from fsproto.schema import RUN_ID_CHARS, PeerId

TOKEN_BYTES: Final = 16  # 128 bits
SESSION_ID_DIGITS: Final = 8  # the default of Config.session_digits
MIN_SESSION_ID_DIGITS, MAX_SESSION_ID_DIGITS = 6, 12
# Stores keep a record this long past its deadline, so whoever finds it ended can tell why.
RETAIN_SECONDS: Final = 30.0


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """`lifetime_seconds` bounds a session until its second peer joins, `max_seconds` one whose
    two peers have met (a long transfer keeps it); idleness ends a session only while one of
    its peers is away: two connected peers are a transfer in progress, whatever they say."""

    idle_seconds: float
    lifetime_seconds: float
    grace_seconds: float
    max_seconds: float = 3 * 86400.0


class PeerSlot(msgspec.Struct):
    key_hash: str
    conn: str  # "" while the peer is away
    left_at: float = 0.0
    instance: str = ""  # the client process's nonce, "" for clients that send none
    runs: bool = False  # the client asked for run ids (schema: `runs`)


class SessionRecord(msgspec.Struct):
    id: str
    token_hash: str
    owner_ip: str
    created_at: float
    last_active: float
    access: str = "token"
    peers: dict[str, PeerSlot] = msgspec.field(default_factory=dict)

    def retain_until(self, policy: SessionPolicy) -> float:
        return self.deadline(policy) + RETAIN_SECONDS

    def lifetime_end(self, policy: SessionPolicy) -> float:
        """When the session expires whatever happens: later once both peers have joined."""
        paired = len(self.peers) == 2
        return self.created_at + (policy.max_seconds if paired else policy.lifetime_seconds)

    def _idle_end(self, policy: SessionPolicy) -> float:
        both_here = len(self.peers) == 2 and all(s.conn for s in self.peers.values())
        return float("inf") if both_here else self.last_active + policy.idle_seconds

    def deadline(self, policy: SessionPolicy) -> float:
        """When the session ends unless something happens before."""
        end = min(self.lifetime_end(policy), self._idle_end(policy))
        for slot in self.peers.values():
            if not slot.conn:
                end = min(end, slot.left_at + policy.grace_seconds)
        return end

    def end_reason(self, now: float, policy: SessionPolicy) -> str | None:
        """Why the session is over at `now`, or None while it lives."""
        if now >= self.lifetime_end(policy):
            return "expired"
        if now >= self._idle_end(policy):
            return "idle"
        if any(not s.conn and now >= s.left_at + policy.grace_seconds for s in self.peers.values()):
            return "peer_timeout"
        return None


def hash_secret(secret: str) -> str:
    """Secrets carry 128 random bits, so one SHA-256 suffices: there is nothing to brute-force."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _matches(secret: str, digest: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), digest)


def run_id(slot: PeerSlot) -> str | None:
    """What tells a peer's runs apart, to the other peer: 16 hex characters of SHA-256 of the
    process's `instance` (a rejoin from the same process keeps its run), or of its connection
    for a client that sends none (each connection is then a new run, as it is not a resume);
    None while such a peer is away. A hash: the instance itself proves a resume."""
    source = slot.instance or slot.conn
    return hash_secret(source)[:RUN_ID_CHARS] if source else None


def new_secret() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_session_id(digits: int = SESSION_ID_DIGITS) -> str:
    """A random number of `digits` digits, no leading zero (9 x 10^(digits-1) of them)."""
    return str(secrets.randbelow(9 * 10 ** (digits - 1)) + 10 ** (digits - 1))


@dataclass(frozen=True, slots=True)
class Created:
    record: SessionRecord
    token: str
    reconnect_key: str


def create(
    session_id: str,
    owner_ip: str,
    conn: str,
    now: float,
    access: str = "token",
    instance: str = "",
    runs: bool = False,
) -> Created:
    token, key = new_secret(), new_secret()
    record = SessionRecord(
        id=session_id,
        token_hash=hash_secret(token),
        owner_ip=owner_ip,
        created_at=now,
        last_active=now,
        access=access,
        peers={"a": PeerSlot(key_hash=hash_secret(key), conn=conn, instance=instance, runs=runs)},
    )
    return Created(record, token, key)


@dataclass(frozen=True, slots=True)
class Joined:
    peer_id: PeerId
    reconnect_key: str  # empty on a rejoin: the peer keeps the key it has
    peer_present: bool
    rejoined: bool
    replaced_conn: str  # a stale connection of the same peer that must be dropped
    resumed: bool = False  # a rejoin from the same client process (only signaling was lost)
    tell_resumed: bool = False  # the other peer gave an instance, so it understands `resumed`
    run: str | None = None  # run ids (run_id) of the joiner and of the other peer
    peer_run: str | None = None
    tell_run: bool = False  # the other peer asked for run ids, so it understands `peerRun`


@dataclass(frozen=True, slots=True)
class Refused:
    """`full` only to a joiner who holds the session's token; everyone else hears `not_found`,
    so a scan cannot tell a live session from none. Refusals never change the record: a
    stranger's guesses cannot end a session (128-bit secrets need no burning) and cost one
    read of the store, as an unknown session does."""

    reason: Literal["not_found", "full"]


# What a join to no session compares its secret with, so that it costs what a wrong one costs.
_ABSENT_HASH: Final = hash_secret("no session has this secret")


def refuse_absent(secret: str | None) -> Refused:
    """The refusal of a join or rejoin to a session that does not exist, after the same work
    as a wrong secret (a hash and a constant-time compare): timing tells the two apart no more
    than the reply does."""
    _matches(secret or "", _ABSENT_HASH)
    return Refused("not_found")


def other_peer(peer_id: PeerId) -> PeerId:
    return "b" if peer_id == "a" else "a"


def join(
    record: SessionRecord,
    token: str | None,
    conn: str,
    now: float,
    policy: SessionPolicy,
    instance: str = "",
    runs: bool = False,
) -> Joined | Refused:
    """A second peer joins with the session's token (or, for a code session, its id alone).
    A wrong token, and a code session already joined, look exactly like no session."""
    token_ok = _matches(token or "", record.token_hash)  # always: the same work either way
    if record.end_reason(now, policy) is not None:
        return Refused("not_found")
    if record.access == "code":
        if "b" in record.peers:
            return Refused("not_found")
    elif not token_ok:
        return Refused("not_found")
    elif "b" in record.peers:
        return Refused("full")
    key = new_secret()
    slot = record.peers["b"] = PeerSlot(hash_secret(key), conn, instance=instance, runs=runs)
    record.last_active = now
    other = record.peers["a"]
    return Joined(
        "b",
        key,
        peer_present=bool(other.conn),
        rejoined=False,
        replaced_conn="",
        run=run_id(slot),
        peer_run=run_id(other),
        tell_run=other.runs,
    )


def rejoin(
    record: SessionRecord,
    peer_id: PeerId,
    key: str,
    conn: str,
    now: float,
    policy: SessionPolicy,
    instance: str = "",
    runs: bool = False,
) -> Joined | Refused:
    """A peer takes its own place back; a connection it left behind (or that died) is replaced.
    The same `instance` as before means the same process: it resumes, it did not restart."""
    slot = record.peers.get(peer_id)
    if record.end_reason(now, policy) is not None or slot is None:
        return refuse_absent(key)
    if not _matches(key, slot.key_hash):
        return Refused("not_found")
    replaced = slot.conn
    resumed = bool(instance) and hmac.compare_digest(instance, slot.instance)
    slot.conn, slot.left_at, slot.instance, slot.runs = conn, 0.0, instance, runs
    record.last_active = now
    other = record.peers.get(other_peer(peer_id))
    return Joined(
        peer_id,
        "",
        peer_present=bool(other and other.conn),
        rejoined=True,
        replaced_conn=replaced,
        resumed=resumed,
        tell_resumed=bool(other and other.instance),
        run=run_id(slot),
        peer_run=run_id(other) if other else None,
        tell_run=bool(other and other.runs),
    )


def drop(record: SessionRecord, peer_id: PeerId, conn: str, now: float) -> bool:
    """The peer's connection ended without a goodbye: keep its place for the grace period.

    Returns False when `conn` no longer holds the place (it was taken over by a rejoin).
    """
    slot = record.peers.get(peer_id)
    if slot is None or not conn or slot.conn != conn:
        return False
    slot.conn, slot.left_at = "", now
    touch(record, now)  # idleness counts from here: until now, two peers held the session
    return True


def touch(record: SessionRecord, now: float) -> None:
    record.last_active = max(record.last_active, now)


def credential_seconds(
    record: SessionRecord,
    peer_id: PeerId,
    conn: str,
    now: float,
    policy: SessionPolicy,
    longest: int,
) -> int:
    """How long a TURN credential handed to `peer_id` on `conn` may live from `now`: 0 unless
    both peers are connected to the live session (a lone peer has nobody to relay to), at most
    `longest`, never past the session's lifetime."""
    slot, other = record.peers.get(peer_id), record.peers.get(other_peer(peer_id))
    if record.end_reason(now, policy) is not None or slot is None or other is None:
        return 0
    if slot.conn != conn or not other.conn:
        return 0
    return max(0, min(longest, int(record.lifetime_end(policy) - now)))
