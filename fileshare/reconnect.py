"""When to try the signaling server again after losing it: a sans-I/O policy with injected time.

Jittered exponential backoff ("full jitter": a random delay up to a capped exponential bound) so
that a thousand clients dropped at once by a draining instance do not come back in step, and an
overall deadline after which the outage counts as a failure. The shell (fileshare.peer.Inbox)
feeds it the clock and the outcome of each attempt; it never sleeps or connects itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

FIRST_DELAY_SECONDS: Final = 0.5
MAX_DELAY_SECONDS: Final = 15.0
DEFAULT_GIVE_UP_SECONDS: Final = 1800.0


class GaveUp(Exception):
    """The signaling server stayed out of reach past the deadline (not a ConnectionError:
    nothing may retry it)."""


@dataclass
class Backoff:
    """One outage at a time: `lost` starts it, `next_attempt` says when to try, `failed` counts
    a refused attempt, `restored` ends it."""

    give_up_after: float = DEFAULT_GIVE_UP_SECONDS
    first_delay: float = FIRST_DELAY_SECONDS
    max_delay: float = MAX_DELAY_SECONDS
    rng: random.Random = field(default_factory=random.Random)
    lost_at: float | None = None  # start of the current outage, None while connected
    attempts: int = 0  # failed attempts in the current outage
    reason: str = ""
    _due: float = 0.0

    def lost(self, now: float, reason: str) -> None:
        """The connection dropped (or a first attempt is about to be made): the outage starts
        now unless one is already running; the first retry comes after a short random delay."""
        if self.lost_at is None:
            self.lost_at, self.attempts = now, 0
            self._due = now + self.rng.uniform(0, self.first_delay)
        self.reason = reason

    def failed(self, now: float, reason: str) -> None:
        """An attempt did not get us back in; the next waits up to twice as long (capped)."""
        assert self.lost_at is not None, "failed() outside an outage"
        self.attempts += 1
        self.reason = reason
        bound = min(self.max_delay, self.first_delay * 2**self.attempts)
        self._due = now + self.rng.uniform(bound / 2, bound)

    def restored(self, now: float) -> float:
        """Back in the session; returns how long the outage lasted, for the user."""
        assert self.lost_at is not None, "restored() outside an outage"
        lasted, self.lost_at, self.attempts = now - self.lost_at, None, 0
        return lasted

    def next_attempt(self, now: float) -> float:
        """Seconds to wait before the next attempt (0: now); raises GaveUp past the deadline."""
        assert self.lost_at is not None, "next_attempt() outside an outage"
        deadline = self.lost_at + self.give_up_after
        if now >= deadline:
            raise GaveUp(
                f"the signaling server stayed unreachable for {self.give_up_after:.0f} s "
                f"(last: {self.reason})"
            )
        return max(0.0, min(self._due, deadline) - now)
