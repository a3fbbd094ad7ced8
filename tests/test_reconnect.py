"""The signaling reconnect schedule (fileshare.reconnect.Backoff), fed a clock: no sleeps."""

from __future__ import annotations

import random

import pytest

from fileshare.reconnect import Backoff, GaveUp


def backoff(give_up_after: float = 600.0, seed: int = 1) -> Backoff:
    return Backoff(give_up_after, first_delay=0.5, max_delay=15.0, rng=random.Random(seed))


def test_first_attempt_comes_soon_and_later_ones_back_off_to_the_cap() -> None:
    policy, now = backoff(), 100.0
    policy.lost(now, "closed 1012")
    assert 0.0 <= policy.next_attempt(now) <= 0.5
    waits = []
    for attempt in range(1, 12):
        policy.failed(now, "refused")
        wait = policy.next_attempt(now)
        bound = min(15.0, 0.5 * 2**attempt)
        assert bound / 2 <= wait <= bound, (attempt, wait)
        waits.append(wait)
        now += wait
    assert max(waits) <= 15.0 and waits[-1] >= 7.5  # capped, not growing past it
    assert policy.attempts == 11 and policy.reason == "refused"


def test_jitter_spreads_clients_dropped_at_once() -> None:
    """A draining instance drops everyone at the same instant: their retries must not align."""
    firsts = set()
    for seed in range(50):
        policy = backoff(seed=seed)
        policy.lost(0.0, "closed 1012")
        policy.failed(0.0, "refused")
        policy.failed(0.0, "refused")
        firsts.add(round(policy.next_attempt(0.0), 3))
    assert len(firsts) > 40


def test_gives_up_at_the_deadline_with_the_last_reason() -> None:
    policy = backoff(give_up_after=60.0)
    policy.lost(0.0, "closed 1006")
    policy.failed(59.0, "connection refused")
    assert policy.next_attempt(59.0) <= 1.0  # never waits past the deadline
    with pytest.raises(GaveUp, match=r"60 s.*connection refused"):
        policy.next_attempt(60.0)


def test_restored_ends_the_outage_and_the_next_starts_afresh() -> None:
    policy = backoff(give_up_after=60.0)
    policy.lost(10.0, "closed 1012")
    policy.lost(12.0, "closed again")  # still the same outage: its start stays
    for _ in range(5):
        policy.failed(40.0, "refused")
    assert policy.restored(50.0) == 40.0
    assert policy.lost_at is None and policy.attempts == 0
    policy.lost(200.0, "closed 1006")  # a new outage: a new deadline, a short first wait
    assert policy.next_attempt(200.0) <= 0.5
    assert policy.next_attempt(259.0) == 0.0
