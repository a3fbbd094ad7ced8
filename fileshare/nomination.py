"""A direct path whenever one exists, even when TURN is offered.

aioice's controlling agent nominates aggressively: the first pair whose check answers carries
the connection for good (aiortc has no ICE restart). A relay pair can answer first, e.g. while
two NATs are still opening their mappings to each other, and then every byte goes through the
TURN server although a direct path works. So the checks of pairs that use a relay wait while a
direct pair may still succeed, for at most `grace` seconds after checking began; when every
direct pair has failed they start at once. The cost: when only the relay works, it is chosen up
to `grace` seconds later.

"For good" needs help too: aioice's controlling agent puts USE-CANDIDATE on every check it
sends, also on the triggered check a peer's ping starts after ICE has completed, and sends on
the pair nominated last. A peer that keeps checking its other pairs (Chromium pings every pair
about every 2.5 s) thus moved us, seconds into a transfer, from a working direct pair to
whichever pair it pinged next, often its relay, and Chromium, controlled, follows the data.
So once a component has its nominated pair, the controlling agent starts no more checks on it
(the peer's pings are still answered: aioice does that before any check).

And the controlled agent must be able to follow a better pair: when the peer nominates, aioice
ends ICE and cancels every check still in progress, also a check of a pair of higher priority
than the nominated one whose first request a NAT dropped. Behind a symmetric NAT facing an
address-restricted one, that check is the one direct path: the address-restricted NAT lets its
retransmission in once the other peer has pinged our NAT's address, and the peer (Chromium
does) then moves to it. RFC 5245 8.1.2 asks to cease retransmissions only for in-progress
checks of lower priority than the nominated pair; so those of higher priority run on.

aiortc exposes none of this, so all three are wrappers around aioice's `Connection.check_start`,
reading its `_nominated`, `_check_list` and `_closing`, and relying on `connect()` and `close()`
cancelling checks through `pair.task`: written against aioice 0.13.0, and `check_pinned`
refuses another release or changed sources (`fileshare.pinned`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aioice
from aioice.ice import CandidatePair, Connection, candidate_pair_priority

from fileshare import turnrefresh

# The aioice functions whose behaviour the wrappers rely on (where checks start, nominate and
# complete, and where ICE's end and close cancel them), as of aioice 0.13.0.
PINNED_SOURCES: Final = {
    "connect": "da51be46190141ee23c03ab8d77c030b45e412b6430369790ba4665a7a7886d2",
    "close": "25dcfac536f5f37c3113b3c73f2144643d9016bbadac1113846253c8dc29797d",
    "check_start": "7de056d252f46a155c8b9c2061077360d2aa6b0dc0ca7f4f5a4fa2fec2417bca",
    "check_incoming": "cb3e32bd47e5fa8284b06afa7cb22a1d361315ed2d451c3c9d838adc3f491c6d",
    "check_complete": "52f939709eabc0abc0b4aa20c262f3107235e98b433261d2bd3881c06257db92",
}
DIRECT_GRACE_SECONDS: Final = 3.0
_POLL_SECONDS: Final = 0.05
_PENDING: Final = (
    CandidatePair.State.FROZEN,
    CandidatePair.State.WAITING,
    CandidatePair.State.IN_PROGRESS,
)


def relayed(pair: CandidatePair) -> bool:
    return "relay" in (pair.local_candidate.type, pair.remote_candidate.type)


def direct_pending(pairs: list[CandidatePair]) -> bool:
    """Whether a pair without a relay is still being (or yet to be) checked."""
    return any(not relayed(p) and p.state in _PENDING for p in pairs)


def check_pinned(version: str = aioice.__version__) -> None:
    """Raise `IncompatibleAioice` unless aioice is the release the wrappers were written for."""
    found = {name: getattr(Connection, name) for name in PINNED_SOURCES}
    turnrefresh.check(version, found, PINNED_SOURCES, __name__)


def prefer_direct(connection: Connection, grace: float = DIRECT_GRACE_SECONDS) -> None:
    """Hold relay checks back on `connection` (see the module's docstring)."""
    original: Callable[[CandidatePair], Awaitable[None]] = connection.check_start
    loop = asyncio.get_running_loop()
    deadline: list[float] = []  # set by the first check

    def hold(pair: CandidatePair) -> bool:
        return (
            connection.ice_controlling
            and relayed(pair)
            and loop.time() < deadline[0]
            and direct_pending(connection._check_list)
        )

    async def check_start(pair: CandidatePair) -> None:
        if not deadline:
            deadline.append(loop.time() + grace)
        while hold(pair):  # noqa: ASYNC110 (aioice signals no state change to wait on)
            await asyncio.sleep(_POLL_SECONDS)
        await original(pair)

    setattr(connection, "check_start", check_start)  # noqa: B010 (an instance attribute)


def settled(connection: Connection, pair: CandidatePair) -> bool:
    """Whether a check of `pair` would nominate a second pair of its component (see the
    module's docstring): only the controlling agent nominates."""
    chosen = connection._nominated.get(pair.component)
    return connection.ice_controlling and chosen is not None and chosen is not pair


def nominate_once(connection: Connection) -> None:
    """Keep the first nominated pair on `connection` (see the module's docstring)."""
    original: Callable[[CandidatePair], Awaitable[None]] = connection.check_start

    async def check_start(pair: CandidatePair) -> None:
        if not settled(connection, pair):
            await original(pair)

    setattr(connection, "check_start", check_start)  # noqa: B010 (an instance attribute)


def ice_connection(pc: Any) -> Connection:
    """The aioice connection under an aiortc peer connection's data channel transport."""
    connection: Connection = pc.sctp.transport.transport._connection
    return connection


def outranks_nominated(connection: Connection, pair: CandidatePair) -> bool:
    """Whether `pair`'s check, in progress, should outlive ICE's completion on the controlled
    agent `connection` (see the module's docstring)."""
    chosen = connection._nominated.get(pair.component)
    if connection.ice_controlling or connection._closing or chosen in (None, pair):
        return False

    def priority(p: CandidatePair) -> int:
        return candidate_pair_priority(p.local_candidate, p.remote_candidate, False)

    return pair.state is CandidatePair.State.IN_PROGRESS and priority(pair) > priority(chosen)


def finish_better_checks(connection: Connection) -> None:
    """Let the checks `outranks_nominated` picks run on past the cancellation at the end of
    aioice's `connect()`; install it last, as the outermost wrapper (aioice's task runs it)."""
    original: Callable[[CandidatePair], Awaitable[None]] = connection.check_start

    async def check_start(pair: CandidatePair) -> None:
        running = asyncio.ensure_future(original(pair))
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            if not running.done() and outranks_nominated(connection, pair):
                pair.task = running  # from now on, close() cancels the check itself
            else:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
            raise

    setattr(connection, "check_start", check_start)  # noqa: B010 (an instance attribute)
