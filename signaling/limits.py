"""Rate and concurrency limits as plain objects that are told the time, so tests need no clock."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float, cost: float = 1.0) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    def level(self, now: float) -> float:
        """The tokens there are at `now`, none taken."""
        self.take(now, 0.0)
        return self.tokens

    def full(self, now: float) -> bool:
        """True once idle long enough that forgetting the bucket changes nothing."""
        return self.tokens < 0 or self.tokens + (now - self.stamp) * self.rate >= self.burst


@dataclass(slots=True)
class _IpState:
    bucket: TokenBucket
    open: int = 0


@dataclass(slots=True)
class ConnectionLimiter:
    """New connections per second and concurrent connections, per client address."""

    rate: float
    burst: float
    max_open: int
    _by_ip: dict[str, _IpState] = field(default_factory=dict)

    def admit(self, ip: str, now: float) -> str | None:
        """Count a new connection in, or say which limit refuses it."""
        state = self._by_ip.get(ip)
        if state is None:
            state = self._by_ip[ip] = _IpState(TokenBucket(self.rate, self.burst))
        if state.open >= self.max_open:
            return "connections_per_ip"
        if not state.bucket.take(now):
            return "connection_rate"
        state.open += 1
        return None

    def release(self, ip: str) -> None:
        state = self._by_ip.get(ip)
        if state is not None:
            state.open = max(0, state.open - 1)

    def forget_idle(self, now: float) -> None:
        """Drop addresses with nothing open and a full bucket: memory tracks live clients only."""
        idle = [ip for ip, s in self._by_ip.items() if s.open == 0 and s.bucket.full(now)]
        for ip in idle:
            del self._by_ip[ip]

    def tracked(self) -> int:
        return len(self._by_ip)


@dataclass(slots=True)
class LogBudget:
    """Log lines: `rate` a second and `burst` at once; the lines over it are only counted, and
    their number is reported at most every `every` seconds (a flood costs a line, not a disk)."""

    rate: float
    burst: float
    every: float = 10.0
    suppressed: int = 0
    reported: float = float("-inf")  # when the last summary was given
    bucket: TokenBucket = field(init=False)

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(self.rate, self.burst)

    def admit(self, now: float) -> bool:
        """Whether a line may be written now (else it is counted as suppressed)."""
        if self.bucket.take(now):
            return True
        self.suppressed += 1
        return False

    def summary(self, now: float) -> int:
        """The lines suppressed since the last summary, if one is due now (else 0)."""
        if not self.suppressed or now - self.reported < self.every:
            return 0
        count, self.suppressed, self.reported = self.suppressed, 0, now
        return count
