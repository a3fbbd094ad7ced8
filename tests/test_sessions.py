"""Session rules: create, join, rejoin, drop, and when a session ends."""

from __future__ import annotations

import hashlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsproto.schema import JoinSession, decode_client
from signaling import sessions
from signaling.sessions import (
    Created,
    Joined,
    PeerSlot,
    Refused,
    SessionPolicy,
    SessionRecord,
    create,
    drop,
    join,
    rejoin,
    run_id,
)

POLICY = SessionPolicy(
    idle_seconds=100.0, lifetime_seconds=1000.0, grace_seconds=10.0, max_seconds=3000.0
)
T0 = 5000.0


def new_session(now: float = T0) -> Created:
    return create("12345678", "192.0.2.1", "conn-a", now)


def joined_session(now: float = T0) -> tuple[Created, Joined]:
    created = new_session(now)
    result = join(created.record, created.token, "conn-b", now + 1, POLICY)
    assert isinstance(result, Joined)
    return created, result


def wrong(secret: str) -> str:
    """A different secret of the same shape."""
    return ("A" if secret[0] != "A" else "B") + secret[1:]


# --- create -------------------------------------------------------------------------------------


def test_create_makes_peer_a() -> None:
    created = new_session()
    record = created.record
    assert record.id == "12345678"
    assert record.owner_ip == "192.0.2.1"
    assert record.created_at == record.last_active == T0
    assert list(record.peers) == ["a"]
    assert record.peers["a"].conn == "conn-a"
    assert record.peers["a"].left_at == 0.0
    assert record.end_reason(T0, POLICY) is None


def test_create_secrets_are_fresh_and_long() -> None:
    created = new_session()
    assert created.token != created.reconnect_key
    for secret in (created.token, created.reconnect_key):
        assert len(secret) >= 22  # 16 random bytes, urlsafe base64
        # Every secret handed out must be accepted back by the wire format.
        raw = b'{"v":1,"type":"join_session","sessionId":"1234","token":"%s"}' % secret.encode()
        assert decode_client(raw, 1000) == JoinSession(v=1, sessionId="1234", token=secret)
    assert sessions.TOKEN_BYTES * 8 >= 128
    others = {new_session().token for _ in range(50)}
    assert len(others) == 50


def test_record_stores_only_hashes() -> None:
    created, joined_b = joined_session()
    record = created.record
    encoded = msgspec.json.encode(record)
    for secret in (created.token, created.reconnect_key, joined_b.reconnect_key):
        assert secret.encode() not in encoded
        assert secret not in repr(record)
    assert record.token_hash == hashlib.sha256(created.token.encode()).hexdigest()
    assert record.peers["a"].key_hash == sessions.hash_secret(created.reconnect_key)
    assert record.peers["b"].key_hash == sessions.hash_secret(joined_b.reconnect_key)


def test_record_round_trips_through_msgspec() -> None:
    created, _ = joined_session()
    raw = msgspec.json.encode(created.record)
    assert msgspec.json.decode(raw, type=SessionRecord) == created.record


def test_new_session_id_is_eight_digits() -> None:
    for digits in (sessions.SESSION_ID_DIGITS, 6):
        for _ in range(200):
            sid = sessions.new_session_id(digits)
            assert len(sid) == digits and sessions.SESSION_ID_DIGITS == 8
            assert sid.isdigit()
            assert sid[0] != "0"
        raw = b'{"v":1,"type":"join_session","sessionId":"%s","token":"t"}' % sid.encode()
        assert decode_client(raw, 1000) == JoinSession(v=1, sessionId=sid, token="t")


# --- join ---------------------------------------------------------------------------------------


def test_join_with_token() -> None:
    created = new_session()
    result = join(created.record, created.token, "conn-b", T0 + 5, POLICY)
    assert isinstance(result, Joined)
    assert result.peer_id == "b"
    assert len(result.reconnect_key) >= 22
    assert result.reconnect_key != created.reconnect_key
    assert result.peer_present is True
    assert result.rejoined is False
    assert result.replaced_conn == ""
    assert created.record.peers["b"].conn == "conn-b"
    assert created.record.last_active == T0 + 5


def test_join_while_creator_is_away() -> None:
    created = new_session()
    assert drop(created.record, "a", "conn-a", T0 + 1)
    result = join(created.record, created.token, "conn-b", T0 + 2, POLICY)
    assert isinstance(result, Joined)
    assert result.peer_present is False


def snapshot(record: SessionRecord) -> bytes:
    return msgspec.msgpack.encode(record)


def test_wrong_token_looks_like_an_expired_session() -> None:
    expired = new_session()
    late = join(expired.record, expired.token, "conn-b", T0 + POLICY.lifetime_seconds, POLICY)
    live = new_session()
    before = snapshot(live.record)
    bad = join(live.record, wrong(live.token), "conn-b", T0 + 1, POLICY)
    assert late == bad == sessions.refuse_absent(live.token) == Refused("not_found")
    assert snapshot(live.record) == before  # a refusal writes nothing


def test_idle_session_is_not_found_even_with_the_token() -> None:
    created = new_session()
    result = join(created.record, created.token, "conn-b", T0 + POLICY.idle_seconds, POLICY)
    assert result == Refused("not_found")


def test_wrong_tokens_never_end_a_token_session() -> None:
    """Finding 6: three wrong tokens used to burn the session (a denial of service for
    whoever knew the number). A 128-bit token needs no burning."""
    created = new_session()
    for attempt in range(1000):
        assert join(created.record, f"guess{attempt}", "x", T0 + 1, POLICY) == Refused("not_found")
    assert created.record.end_reason(T0 + 1, POLICY) is None
    assert isinstance(join(created.record, created.token, "conn-b", T0 + 2, POLICY), Joined)


def test_third_peer_is_refused_full() -> None:
    created, _ = joined_session()
    result = join(created.record, created.token, "conn-c", T0 + 2, POLICY)
    assert result == Refused("full")
    assert created.record.peers["b"].conn == "conn-b"


def test_third_peer_with_wrong_token_is_not_found() -> None:
    created, _ = joined_session()
    assert join(created.record, "guess", "conn-c", T0 + 2, POLICY) == Refused("not_found")


def test_joined_code_session_looks_like_no_session() -> None:
    """Finding 6: `session_full` told a scanner which ids are live code sessions."""
    created = create("12345678", "192.0.2.1", "conn-a", T0, access="code")
    assert isinstance(join(created.record, None, "conn-b", T0 + 1, POLICY), Joined)
    before = snapshot(created.record)
    assert join(created.record, None, "conn-c", T0 + 2, POLICY) == Refused("not_found")
    assert snapshot(created.record) == before


def test_full_even_while_b_is_away() -> None:
    created, _ = joined_session()
    assert drop(created.record, "b", "conn-b", T0 + 2)
    assert join(created.record, created.token, "conn-c", T0 + 3, POLICY) == Refused("full")


# --- rejoin -------------------------------------------------------------------------------------


def test_rejoin_after_drop() -> None:
    created, joined_b = joined_session()
    record = created.record
    assert drop(record, "b", "conn-b", T0 + 2)
    result = rejoin(record, "b", joined_b.reconnect_key, "conn-b2", T0 + 5, POLICY)
    run, peer_run = run_id(record.peers["b"]), run_id(record.peers["a"])
    expected = Joined("b", "", True, True, "", run=run, peer_run=peer_run)
    assert result == expected
    assert record.peers["b"].conn == "conn-b2"
    assert record.peers["b"].left_at == 0.0
    assert record.last_active == T0 + 5


@pytest.mark.parametrize(
    ("before", "after", "resumed"),
    [("proc1", "proc1", True), ("proc1", "proc2", False), ("", "", False), ("proc1", "", False)],
)
def test_rejoin_from_the_same_process_resumes(before: str, after: str, resumed: bool) -> None:
    """Same instance nonce: only the signaling connection was lost; a new one: a restart."""
    created = create("12345678", "192.0.2.1", "conn-a", T0, instance="other")
    record = created.record
    joined_b = join(record, created.token, "conn-b", T0 + 1, POLICY, instance=before)
    assert isinstance(joined_b, Joined)
    assert drop(record, "b", "conn-b", T0 + 2)
    result = rejoin(record, "b", joined_b.reconnect_key, "conn-b2", T0 + 3, POLICY, after)
    assert isinstance(result, Joined)
    assert (result.resumed, result.tell_resumed) == (resumed, True)
    assert record.peers["b"].instance == after


def test_resumed_is_not_told_to_a_peer_that_gave_no_instance() -> None:
    """An older client decodes server messages strictly: it never gets the new field."""
    created = new_session()  # peer a gave no instance
    record = created.record
    joined_b = join(record, created.token, "conn-b", T0 + 1, POLICY, instance="proc1")
    assert isinstance(joined_b, Joined)
    result = rejoin(record, "b", joined_b.reconnect_key, "conn-b2", T0 + 3, POLICY, "proc1")
    assert isinstance(result, Joined)
    assert result.resumed and not result.tell_resumed


def test_run_ids_keep_with_the_process_and_are_told_to_peers_that_ask() -> None:
    """A run id hashes the instance (the connection's id without one): a resume keeps it, a
    restart changes it; `tell_run` only where the other peer asked for run ids."""
    created = create("12345678", "192.0.2.1", "conn-a", T0, instance="proc-a", runs=True)
    record = created.record
    joined_b = join(record, created.token, "conn-b", T0 + 1, POLICY, "proc-b")
    assert isinstance(joined_b, Joined) and joined_b.tell_run
    assert joined_b.run == hashlib.sha256(b"proc-b").hexdigest()[:16]
    assert (
        joined_b.peer_run == run_id(record.peers["a"]) == hashlib.sha256(b"proc-a").hexdigest()[:16]
    )
    key = joined_b.reconnect_key
    assert drop(record, "b", "conn-b", T0 + 2)
    resumed = rejoin(record, "b", key, "conn-b2", T0 + 3, POLICY, "proc-b", runs=True)
    assert isinstance(resumed, Joined) and resumed.run == joined_b.run
    restarted = rejoin(record, "b", key, "conn-b3", T0 + 4, POLICY, "proc-b2", runs=True)
    assert isinstance(restarted, Joined) and restarted.run not in (None, joined_b.run)
    assert record.peers["b"].runs
    back = rejoin(record, "a", created.reconnect_key, "conn-a2", T0 + 5, POLICY)  # asks not
    assert isinstance(back, Joined) and back.tell_run and back.peer_run == restarted.run
    again = rejoin(record, "b", key, "conn-b4", T0 + 6, POLICY, "proc-b2")
    assert isinstance(again, Joined) and not again.tell_run
    without = rejoin(record, "b", key, "conn-b5", T0 + 7, POLICY)
    assert isinstance(without, Joined) and without.run not in (None, again.run)  # per connection
    assert drop(record, "b", "conn-b5", T0 + 8)
    assert run_id(record.peers["b"]) is None  # away, and no instance to come back with


def test_rejoin_reports_absent_peer() -> None:
    created = new_session()
    assert drop(created.record, "a", "conn-a", T0 + 1)
    result = rejoin(created.record, "a", created.reconnect_key, "conn-a2", T0 + 2, POLICY)
    assert isinstance(result, Joined)
    assert result.peer_present is False


def test_rejoin_replaces_old_connection() -> None:
    created, _ = joined_session()
    record = created.record
    result = rejoin(record, "a", created.reconnect_key, "conn-a2", T0 + 3, POLICY)
    assert isinstance(result, Joined)
    assert result.replaced_conn == "conn-a"
    assert result.peer_id == "a"
    assert result.reconnect_key == ""
    assert result.peer_present is True
    assert record.peers["a"].conn == "conn-a2"


def test_rejoin_with_wrong_key_is_not_found_and_changes_nothing() -> None:
    created, joined_b = joined_session()
    record = created.record
    assert drop(record, "b", "conn-b", T0 + 2)
    before = snapshot(record)
    # Peer b's key does not open peer a's place, and vice versa.
    for _ in range(5):
        assert rejoin(record, "a", joined_b.reconnect_key, "x", T0 + 3, POLICY) == Refused(
            "not_found"
        )
        assert rejoin(record, "b", created.reconnect_key, "x", T0 + 3, POLICY) == Refused(
            "not_found"
        )
    assert snapshot(record) == before
    assert isinstance(rejoin(record, "b", joined_b.reconnect_key, "y", T0 + 4, POLICY), Joined)


def test_rejoin_unknown_peer_is_not_found() -> None:
    created = new_session()
    result = rejoin(created.record, "b", created.reconnect_key, "x", T0 + 1, POLICY)
    assert result == Refused("not_found")


def test_rejoin_after_grace_is_not_found() -> None:
    created, joined_b = joined_session()
    record = created.record
    assert drop(record, "b", "conn-b", T0 + 2)
    late = T0 + 2 + POLICY.grace_seconds
    assert record.end_reason(late, POLICY) == "peer_timeout"
    assert rejoin(record, "b", joined_b.reconnect_key, "x", late, POLICY) == Refused("not_found")


def test_drop_by_stale_conn_is_ignored() -> None:
    created = new_session()
    record = created.record
    assert isinstance(rejoin(record, "a", created.reconnect_key, "conn-a2", T0 + 1, POLICY), Joined)
    assert drop(record, "a", "conn-a", T0 + 2) is False
    assert record.peers["a"] == PeerSlot(key_hash=record.peers["a"].key_hash, conn="conn-a2")
    assert drop(record, "a", "conn-a2", T0 + 3) is True
    assert record.peers["a"].conn == ""
    assert record.peers["a"].left_at == T0 + 3
    # A second drop of the same connection no longer holds the place either.
    assert drop(record, "a", "conn-a2", T0 + 4) is False
    assert record.peers["a"].left_at == T0 + 3


def test_drop_unknown_peer() -> None:
    created = new_session()
    assert drop(created.record, "b", "conn-a", T0) is False


def test_other_peer() -> None:
    assert sessions.other_peer("a") == "b"
    assert sessions.other_peer("b") == "a"


def test_touch_never_moves_back() -> None:
    record = new_session().record
    sessions.touch(record, T0 + 10)
    assert record.last_active == T0 + 10
    sessions.touch(record, T0 + 5)
    assert record.last_active == T0 + 10


# --- deadline and end_reason --------------------------------------------------------------------


def test_idle_deadline() -> None:
    record = new_session().record
    assert record.deadline(POLICY) == T0 + POLICY.idle_seconds
    assert record.end_reason(T0 + POLICY.idle_seconds - 0.001, POLICY) is None
    assert record.end_reason(T0 + POLICY.idle_seconds, POLICY) == "idle"
    sessions.touch(record, T0 + 50)
    assert record.deadline(POLICY) == T0 + 50 + POLICY.idle_seconds
    assert record.end_reason(T0 + POLICY.idle_seconds, POLICY) is None


def test_lifetime_deadline_wins_over_activity() -> None:
    record = new_session().record
    end = T0 + POLICY.lifetime_seconds
    now = T0
    while now < end:
        sessions.touch(record, now)
        assert record.end_reason(now, POLICY) is None
        now += POLICY.idle_seconds / 2
    sessions.touch(record, end - 1)
    assert record.deadline(POLICY) == end
    assert record.end_reason(end - 0.001, POLICY) is None
    assert record.end_reason(end, POLICY) == "expired"


def test_lifetime_reason_comes_first() -> None:
    record = new_session().record
    assert drop(record, "a", "conn-a", T0)
    assert record.end_reason(T0 + POLICY.lifetime_seconds, POLICY) == "expired"
    assert record.end_reason(T0 + POLICY.idle_seconds, POLICY) == "idle"


def test_grace_deadline() -> None:
    created, _ = joined_session()
    record = created.record
    assert drop(record, "b", "conn-b", T0 + 20)
    assert record.deadline(POLICY) == T0 + 20 + POLICY.grace_seconds
    assert record.end_reason(T0 + 20 + POLICY.grace_seconds - 0.001, POLICY) is None
    assert record.end_reason(T0 + 20 + POLICY.grace_seconds, POLICY) == "peer_timeout"


def test_rejoin_clears_grace_deadline() -> None:
    created, joined_b = joined_session()
    record = created.record
    assert drop(record, "b", "conn-b", T0 + 20)
    assert isinstance(rejoin(record, "b", joined_b.reconnect_key, "c", T0 + 25, POLICY), Joined)
    assert record.deadline(POLICY) == T0 + POLICY.max_seconds  # both here: only the hard limit
    assert record.end_reason(T0 + 20 + POLICY.grace_seconds, POLICY) is None


def test_two_connected_peers_hold_their_session_until_the_hard_limit() -> None:
    """A long transfer says nothing on the signaling server: it must not end its session."""
    created, _ = joined_session()
    record = created.record
    late = T0 + POLICY.lifetime_seconds + POLICY.idle_seconds * 5
    assert record.end_reason(late, POLICY) is None
    assert record.end_reason(T0 + POLICY.max_seconds, POLICY) == "expired"
    assert record.deadline(POLICY) == T0 + POLICY.max_seconds
    assert drop(record, "b", "conn-b", late)  # idleness and grace count from the drop
    assert record.deadline(POLICY) == late + POLICY.grace_seconds
    assert record.end_reason(late + POLICY.grace_seconds - 1, POLICY) is None


def test_a_lone_creator_still_expires_by_idleness_and_lifetime() -> None:
    record = new_session().record
    assert record.end_reason(T0 + POLICY.idle_seconds, POLICY) == "idle"
    assert record.deadline(POLICY) == T0 + POLICY.idle_seconds


def test_earliest_grace_of_two_absent_peers() -> None:
    created, _ = joined_session()
    record = created.record
    assert drop(record, "a", "conn-a", T0 + 3)
    assert drop(record, "b", "conn-b", T0 + 6)
    assert record.deadline(POLICY) == T0 + 3 + POLICY.grace_seconds


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (SessionPolicy(100.0, 50.0, 200.0), "expired"),
        (SessionPolicy(30.0, 1000.0, 200.0), "idle"),
        (SessionPolicy(100.0, 1000.0, 5.0), "peer_timeout"),
    ],
)
def test_deadline_names_the_first_limit(policy: SessionPolicy, reason: str) -> None:
    record = new_session().record
    assert drop(record, "a", "conn-a", T0 + 10)
    end = record.deadline(policy)
    assert record.end_reason(end - 0.001, policy) is None
    assert record.end_reason(end, policy) == reason


events = st.lists(
    st.tuples(
        st.sampled_from(["touch", "drop_a", "drop_b", "rejoin_a", "rejoin_b"]),
        st.floats(min_value=0.0, max_value=50.0),
    ),
    max_size=12,
)
policies = st.builds(
    SessionPolicy,
    idle_seconds=st.floats(min_value=1.0, max_value=200.0),
    lifetime_seconds=st.floats(min_value=1.0, max_value=2000.0),
    grace_seconds=st.floats(min_value=0.0, max_value=100.0),
)


def check_deadline(record: SessionRecord, now: float, policy: SessionPolicy) -> bool:
    """The deadline is exactly where end_reason turns on; returns whether the session lives."""
    end = record.deadline(policy)
    assert record.end_reason(end, policy) is not None
    if record.end_reason(now, policy) is not None:
        assert end <= now
        return False
    assert end > now
    mid = (now + end) / 2
    assert mid >= end or record.end_reason(mid, policy) is None
    return True


@given(events, policies)
def test_deadline_agrees_with_end_reason(
    steps: list[tuple[str, float]], policy: SessionPolicy
) -> None:
    created = create("1234", "ip", "conn-a", 0.0)
    record = created.record
    keys = {"a": created.reconnect_key}
    now = 0.0
    result = join(record, created.token, "conn-b", now, policy)
    if isinstance(result, Joined):
        keys["b"] = result.reconnect_key
    for action, delay in steps:
        if not check_deadline(record, now, policy):
            return
        if record.end_reason(now + delay, policy) is not None:
            assert record.deadline(policy) <= now + delay
            return
        now += delay
        kind, _, peer = action.partition("_")
        if kind == "touch":
            sessions.touch(record, now)
        elif kind == "drop" and peer in record.peers and record.peers[peer].conn:
            drop(record, "a" if peer == "a" else "b", record.peers[peer].conn, now)
        elif kind == "rejoin" and peer in keys:
            result = rejoin(record, "a" if peer == "a" else "b", keys[peer], f"c{now}", now, policy)
            assert isinstance(result, Joined)
    check_deadline(record, now, policy)


# --- TURN credentials ---------------------------------------------------------------------------


def test_credentials_only_while_both_peers_are_connected() -> None:
    """Finding 5: a lone creator gets no TURN credential; its session's lifetime caps one."""
    created = new_session()
    record = created.record
    assert sessions.credential_seconds(record, "a", "conn-a", T0, POLICY, 600) == 0
    assert isinstance(join(record, created.token, "conn-b", T0 + 1, POLICY), Joined)
    assert sessions.credential_seconds(record, "a", "conn-a", T0 + 2, POLICY, 600) == 600
    assert sessions.credential_seconds(record, "b", "conn-b", T0 + 2, POLICY, 600) == 600
    assert sessions.credential_seconds(record, "a", "conn-x", T0 + 2, POLICY, 600) == 0
    near_end = T0 + POLICY.max_seconds - 100  # a paired session's lifetime is the hard limit
    assert sessions.credential_seconds(record, "a", "conn-a", near_end, POLICY, 600) == 100
    assert drop(record, "b", "conn-b", near_end)
    assert sessions.credential_seconds(record, "a", "conn-a", near_end, POLICY, 600) == 0
    ended = T0 + POLICY.max_seconds
    assert sessions.credential_seconds(record, "a", "conn-a", ended, POLICY, 600) == 0
