"""Rate and concurrency limits, driven by explicit times."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsproto.untrusted import shown
from signaling.limits import AddressBuckets, ConnectionLimiter, LogBudget, TokenBucket, address_key


def connections(rate: float, burst: float, max_open: int) -> ConnectionLimiter:
    """A limiter whose byte budgets never matter to the test."""
    return ConnectionLimiter(rate, burst, max_open, bytes_per_second=1e9, byte_burst=1e9)


# --- TokenBucket --------------------------------------------------------------------------------


def test_bucket_starts_full_at_first_use() -> None:
    bucket = TokenBucket(rate=1.0, burst=3.0)
    assert bucket.full(0.0)
    # The first use may be at any clock value (monotonic clocks do not start at zero).
    assert [bucket.take(12345.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=4.0)
    assert all(bucket.take(100.0) for _ in range(4))
    assert not bucket.take(100.0)
    assert not bucket.take(100.25)  # half a token
    assert bucket.take(100.5)  # one token at 2/s, counting from the refused try
    assert not bucket.take(100.5)
    assert [bucket.take(101.5) for _ in range(3)] == [True, True, False]


def test_bucket_refill_is_capped_at_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0)
    assert bucket.take(0.0)
    assert [bucket.take(3600.0) for _ in range(6)] == [True] * 5 + [False]


def test_refused_take_costs_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0)
    assert bucket.take(0.0)
    for _ in range(10):
        assert not bucket.take(0.5)
    assert bucket.take(1.0)


def test_take_with_cost() -> None:
    bucket = TokenBucket(rate=1.0, burst=5.0)
    assert bucket.take(0.0, cost=3.0)
    assert not bucket.take(0.0, cost=3.0)  # only 2 left: nothing taken
    assert bucket.take(0.0, cost=2.0)
    assert not bucket.take(0.0)
    assert not bucket.take(0.0, cost=6.0)
    assert not bucket.take(100.0, cost=6.0)  # more than burst never fits


def test_bucket_full() -> None:
    bucket = TokenBucket(rate=2.0, burst=4.0)
    assert bucket.take(10.0)
    assert not bucket.full(10.0)
    assert not bucket.full(10.49)
    assert bucket.full(10.5)
    assert bucket.full(99.0)


@given(
    st.floats(min_value=0.1, max_value=100.0),
    st.integers(min_value=1, max_value=50),
    st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=50),
)
def test_bucket_never_exceeds_rate_plus_burst(rate: float, burst: int, gaps: list[float]) -> None:
    bucket = TokenBucket(rate=rate, burst=float(burst))
    now = 1000.0
    taken = 0
    for gap in gaps:
        now += gap
        while bucket.take(now):
            taken += 1
    elapsed = now - 1000.0
    assert taken <= burst + rate * elapsed + 1e-6
    assert 0.0 <= bucket.tokens <= burst


def test_a_charge_may_go_into_debt_and_says_how_long_it_takes_to_pay() -> None:
    bucket = TokenBucket(rate=100.0, burst=50.0)
    bucket.charge(5.0, 250.0)  # work already done: paid afterwards
    assert bucket.debt_seconds(5.0) == 2.0 and not bucket.take(6.0)
    assert bucket.debt_seconds(7.0) == 0.0 and bucket.take(7.1)
    assert not bucket.full(7.1) and bucket.full(8.0)


def test_an_address_keeps_its_byte_debt_across_reconnects() -> None:
    limiter = ConnectionLimiter(10.0, 10.0, 10, bytes_per_second=100.0, byte_burst=100.0)
    assert limiter.budget("192.0.2.9") is None  # not admitted
    assert limiter.admit("192.0.2.9", 0.0) is None
    budget = limiter.budget("192.0.2.9")
    assert budget is not None
    budget.charge(0.0, 1100.0)
    limiter.release("192.0.2.9")
    limiter.forget_idle(5.0)  # connections refilled, the debt is not paid yet
    assert limiter.budget("192.0.2.9") is budget
    limiter.forget_idle(11.0)
    assert limiter.budget("192.0.2.9") is None


# --- ConnectionLimiter --------------------------------------------------------------------------


def test_connections_per_ip() -> None:
    limiter = connections(rate=100.0, burst=100.0, max_open=2)
    assert limiter.admit("192.0.2.1", 0.0) is None
    assert limiter.admit("192.0.2.1", 0.0) is None
    assert limiter.admit("192.0.2.1", 0.0) == "connections_per_ip"
    assert limiter.admit("192.0.2.2", 0.0) is None  # per address
    limiter.release("192.0.2.1")
    assert limiter.admit("192.0.2.1", 0.0) is None
    assert limiter.admit("192.0.2.1", 0.0) == "connections_per_ip"


def test_connection_rate() -> None:
    limiter = connections(rate=1.0, burst=2.0, max_open=100)
    assert limiter.admit("198.51.100.7", 50.0) is None
    assert limiter.admit("198.51.100.7", 50.0) is None
    assert limiter.admit("198.51.100.7", 50.0) == "connection_rate"
    assert limiter.admit("198.51.100.8", 50.0) is None  # per address
    assert limiter.admit("198.51.100.7", 50.5) == "connection_rate"
    assert limiter.admit("198.51.100.7", 51.0) is None


def test_release_does_not_refund_rate() -> None:
    limiter = connections(rate=1.0, burst=1.0, max_open=100)
    assert limiter.admit("ip", 0.0) is None
    limiter.release("ip")
    assert limiter.admit("ip", 0.0) == "connection_rate"


def test_refusal_for_open_connections_costs_no_token() -> None:
    limiter = connections(rate=1.0, burst=2.0, max_open=1)
    assert limiter.admit("ip", 0.0) is None
    for _ in range(5):
        assert limiter.admit("ip", 0.0) == "connections_per_ip"
    limiter.release("ip")
    assert limiter.admit("ip", 0.0) is None  # the second burst token is still there


def test_release_unknown_address_is_harmless() -> None:
    limiter = connections(rate=1.0, burst=1.0, max_open=1)
    limiter.release("never-seen")
    assert limiter.tracked() == 0


def test_forget_idle() -> None:
    limiter = connections(rate=1.0, burst=2.0, max_open=10)
    assert limiter.admit("busy", 0.0) is None
    assert limiter.admit("done", 0.0) is None
    assert limiter.admit("done", 0.0) is None
    limiter.release("done")
    limiter.release("done")
    assert limiter.tracked() == 2

    limiter.forget_idle(1.0)  # "done" has nothing open but its bucket is still refilling
    assert limiter.tracked() == 2
    limiter.forget_idle(2.0)  # now full again: forgetting it changes nothing
    assert limiter.tracked() == 1
    limiter.forget_idle(1e6)  # "busy" still has a connection open
    assert limiter.tracked() == 1

    limiter.release("busy")
    limiter.forget_idle(1e6)
    assert limiter.tracked() == 0


def test_forgotten_address_starts_afresh() -> None:
    limiter = connections(rate=1.0, burst=1.0, max_open=10)
    assert limiter.admit("ip", 0.0) is None
    limiter.release("ip")
    limiter.forget_idle(1.0)
    assert limiter.tracked() == 0
    assert limiter.admit("ip", 1.0) is None
    assert limiter.admit("ip", 1.0) == "connection_rate"


def test_refused_address_is_forgotten_once_idle() -> None:
    limiter = connections(rate=1.0, burst=1.0, max_open=0)
    assert limiter.admit("ip", 0.0) == "connections_per_ip"
    assert limiter.tracked() == 1
    limiter.forget_idle(0.0)
    assert limiter.tracked() == 0


@pytest.mark.parametrize("max_open", [1, 3])
def test_open_count_tracks_admit_and_release(max_open: int) -> None:
    limiter = connections(rate=1000.0, burst=1000.0, max_open=max_open)
    for _ in range(3):
        assert all(limiter.admit("ip", 0.0) is None for _ in range(max_open))
        assert limiter.admit("ip", 0.0) == "connections_per_ip"
        for _ in range(max_open):
            limiter.release("ip")


# --- per-address buckets (failed joins, TURN credentials) ---------------------------------------


def test_address_key_groups_an_ipv6_slash_64() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert (
        address_key("2001:db8:1:2::1")
        == address_key("2001:db8:1:2:ffff::9")
        == ("2001:db8:1:2::/64")
    )
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("unknown") == "unknown"


def test_failed_joins_per_address_are_a_token_bucket() -> None:
    """Ten refused joins at once, then one every ten seconds (6 a minute); `allows` spends
    nothing, so only refusals count."""
    buckets = AddressBuckets(rate=6 / 60, burst=10)
    for _ in range(10):
        assert buckets.allows("192.0.2.1", 100.0)
        assert buckets.take("192.0.2.1", 100.0)
    assert not buckets.allows("192.0.2.1", 100.0)
    assert buckets.allows("2001:db8::1", 100.0)  # another address: its own bucket
    assert not buckets.allows("192.0.2.1", 109.9)
    assert buckets.allows("192.0.2.1", 110.0)
    assert buckets.allows("192.0.2.1", 110.0)  # asking twice spends nothing
    assert buckets.take("192.0.2.1", 110.0)
    assert not buckets.allows("192.0.2.1", 110.0)


def test_reserved_tokens_bound_guesses_in_flight() -> None:
    """The failed-join limit is reserved before the lookup: 40 joins in flight at once from one
    address get at most the burst through, and the right ones are given back."""
    buckets = AddressBuckets(rate=6 / 60, burst=10)
    in_flight = [buckets.take("192.0.2.1", 100.0) for _ in range(40)]
    assert in_flight.count(True) == 10
    for _ in range(3):  # three of them were right: free
        buckets.give_back("192.0.2.1", 100.0)
    assert [buckets.take("192.0.2.1", 100.0) for _ in range(4)] == [True, True, True, False]
    for _ in range(20):  # never over the burst
        buckets.give_back("192.0.2.1", 100.0)
    assert [buckets.take("192.0.2.1", 100.0) for _ in range(11)].count(True) == 10


def test_address_buckets_forget_full_ones() -> None:
    buckets = AddressBuckets(rate=1.0, burst=2)
    buckets.take("192.0.2.1", 0.0)
    buckets.allows("192.0.2.2", 0.0)
    buckets.forget_idle(0.5)
    assert buckets.tracked() == 1
    buckets.forget_idle(1.0)
    assert buckets.tracked() == 0


def test_log_budget_suppresses_and_reports() -> None:
    budget = LogBudget(rate=1.0, burst=3, every=10.0)
    assert [budget.admit(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert budget.summary(0.0) == 2  # the first summary is due at once
    assert not budget.admit(0.5)
    assert budget.summary(5.0) == 0  # not again before `every`
    assert budget.admit(5.0)  # refilled
    assert budget.summary(10.0) == 1 and budget.summary(30.0) == 0


def test_log_text_is_escaped_within_its_limit() -> None:
    assert shown("ok 127.0.0.1", 1000) == "ok 127.0.0.1"
    assert shown("\x1b]0;owned\x07\r\nX", 1000) == "\\x1b]0;owned\\x07\\x0d\\x0aX"
    assert shown("\u202etxt.exe", 1000) == "\\u202etxt.exe"  # a bidirectional override
    assert shown("a" * 50, limit=10) == "a" * 10 + "…"
    # Escaped, the line is still at most `limit` long, and no escape is cut in half:
    assert shown("\x00" * 50, limit=10) == "\\x00\\x00" + "…"
    assert shown("ab\x00", limit=3) == "ab…"
