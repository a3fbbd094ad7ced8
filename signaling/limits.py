"""Rate and concurrency limits as plain objects that are told the time, so tests need no clock."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

_UNUSED = -math.inf  # a bucket's tokens before its first use (it starts full then)


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up. `charge` may take more than there
    is: the bucket goes into debt, and `debt_seconds` says how long it takes to pay."""

    rate: float
    burst: float
    tokens: float = _UNUSED
    stamp: float = 0.0

    def available(self, now: float) -> float:
        """Tokens there are at `now` (refilled since the last call)."""
        if self.tokens == _UNUSED:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)
        return self.tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        if self.available(now) < cost:
            return False
        self.tokens -= cost
        return True

    def charge(self, now: float, cost: float) -> None:
        """Take `cost` whatever there is: work already done is paid for afterwards."""
        self.tokens = self.available(now) - cost

    def debt_seconds(self, now: float) -> float:
        """How long until the bucket is out of debt (0 if it is not in debt)."""
        return max(0.0, -self.available(now) / self.rate)

    def give_back(self, now: float, amount: float = 1.0) -> None:
        """Refund what was taken for something that turned out free (never over the burst)."""
        self.tokens = min(self.burst, self.available(now) + amount)

    def level(self, now: float) -> float:
        """The tokens there are at `now`, none taken."""
        self.take(now, 0.0)
        return self.tokens

    def full(self, now: float) -> bool:
        """True once idle long enough that forgetting the bucket changes nothing."""
        tokens = self.tokens
        return tokens == _UNUSED or tokens + (now - self.stamp) * self.rate >= self.burst


@dataclass(slots=True)
class _IpState:
    bucket: TokenBucket  # new connections
    work: TokenBucket  # bytes read from all its connections (`ConnectionLimiter.budget`)
    open: int = 0


@dataclass(slots=True)
class ConnectionLimiter:
    """New connections per second and concurrent connections, per client address; and the
    bytes per second all of an address's connections may make the server read and handle."""

    rate: float
    burst: float
    max_open: int
    bytes_per_second: float
    byte_burst: float
    _by_ip: dict[str, _IpState] = field(default_factory=dict)

    def admit(self, ip: str, now: float) -> str | None:
        """Count a new connection in, or say which limit refuses it."""
        state = self._by_ip.get(ip)
        if state is None:
            work = TokenBucket(self.bytes_per_second, self.byte_burst)
            state = self._by_ip[ip] = _IpState(TokenBucket(self.rate, self.burst), work)
        if state.open >= self.max_open:
            return "connections_per_ip"
        if not state.bucket.take(now):
            return "connection_rate"
        state.open += 1
        return None

    def budget(self, ip: str) -> TokenBucket | None:
        """The byte budget an admitted address's connections share (kept while any is open,
        and until its debt is paid: reconnecting does not wipe it)."""
        state = self._by_ip.get(ip)
        return state.work if state is not None else None

    def release(self, ip: str) -> None:
        state = self._by_ip.get(ip)
        if state is not None:
            state.open = max(0, state.open - 1)

    def forget_idle(self, now: float) -> None:
        """Drop addresses with nothing open and full buckets: memory tracks live clients only."""
        idle = [
            ip
            for ip, s in self._by_ip.items()
            if s.open == 0 and s.bucket.full(now) and s.work.full(now)
        ]
        for ip in idle:
            del self._by_ip[ip]

    def tracked(self) -> int:
        return len(self._by_ip)


def address_key(ip: str) -> str:
    """What a per-address limit counts by: an IPv4 address, or an IPv6 /64 (one subscriber's
    usual share: counting single IPv6 addresses would give each attacker 2**64 buckets)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return ip


@dataclass(slots=True)
class AddressBuckets:
    """One token bucket per client address (see `address_key`), created full on first use
    and forgotten once full again: memory tracks recent spenders only."""

    rate: float
    burst: float
    _by_key: dict[str, TokenBucket] = field(default_factory=dict)

    def _bucket(self, ip: str) -> TokenBucket:
        key = address_key(ip)
        bucket = self._by_key.get(key)
        if bucket is None:
            bucket = self._by_key[key] = TokenBucket(self.rate, self.burst)
        return bucket

    def allows(self, ip: str, now: float) -> bool:
        """Whether `ip` has a token left, without spending it."""
        return self._bucket(ip).available(now) >= 1.0

    def take(self, ip: str, now: float) -> bool:
        return self._bucket(ip).take(now)

    def give_back(self, ip: str, now: float) -> None:
        """Refund a token taken before the outcome was known (a reservation that was free)."""
        self._bucket(ip).give_back(now)

    def forget_idle(self, now: float) -> None:
        for key in [k for k, b in self._by_key.items() if b.full(now)]:
            del self._by_key[key]

    def tracked(self) -> int:
        return len(self._by_key)


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
