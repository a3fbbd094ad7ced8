"""Every attack of the toolkit, briefly, against the real server process: the outcome the server
must produce and the resources it may spend while one attacker runs at full speed.

Bounds here: RSS growth at most RSS_BOUND_MIB (issue 11's 64 MiB, it is not noisy) and /healthz
p99 at most CI_P99_BOUND_MS. The issue's 50 ms is what `make fuzz-signaling` holds the server to;
here the bound is 400 ms because this CI machine has two cores shared by several jobs and the
attacker, the server and the prober share them too: runs show p99 of 10-320 ms under harmless
attacks (load average 12); stalls from real findings last seconds (pong flood: 6.8 s, 6cf1116).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversarial.cases import CASES, Case, problems
from tests.adversarial.harness import Patience, deployment, measure
from tests.conftest import require_binary

CI_P99_BOUND_MS = 400.0
CI_SECONDS = 2.0
# A stall past the bound fails whether it lasts 1 s or 20 s: CI does not wait to see which.
CI_PATIENCE = Patience(probe=1.0, recovery=5.0)

# Findings of issue 11 whose fix had not landed on main when this suite was last run: each
# fails here now and must pass once its fix lands (strict: an unexpected pass fails the run).
# Keyed by attack, or by attack-mode where only one way fails (haproxy times slow heads itself).
PENDING: dict[str, str] = {
    "fragment_flood": "issue 11 finding 1: empty continuation frames are kept without a bound",
    "fragment_count": "issue 11 finding 1: fragments per message are not bounded",
    "pong_flood": "issue 11 finding 2: control frames have no rate limit",
    "slow_head_ws": "issue 11 finding 3: no per-address limit before the upgrade",
    "slow_head_http-direct": "issue 11 finding 3: heads over 16 KB outside /ws are not timed",
    "slow_head_metrics": "issue 11 finding 3: no per-address limit before the upgrade",
    "connection_flood": "issue 11 finding 3: over-limit clients get a 101, then a 1013",
    "malformed_http": "issue 11 finding 8: a traceback per malformed request",
    "slow_reader": "issue 11 finding 4: the send queue is bounded by frames, not bytes",
    "join_scan": "new: the failed-join limit is checked before the store's round trip and charged"
    " after it, so joins in flight on an address's concurrent connections all pass it (44 refused"
    " joins answered in 2 s from 40 connections on Redis; budget 11)",
}


# Not strict: the stall (0.4-1 s in four runs on 6cf1116) straddles the CI bound on a loaded
# machine; make fuzz-signaling (50 ms) sees it every time.
FLAKY_UNTIL_FIXED: dict[str, str] = {
    "ping_flood_unread": "issue 11 finding 2 (control frame rate): pings from a client that never"
    " reads stall /healthz for 0.4-1 s before the slow-consumer close",
}


def cases() -> list[Any]:
    params = []
    for case in CASES.values():
        for mode in case.modes:
            marks = []
            reason = PENDING.get(f"{case.attack}-{mode}", PENDING.get(case.attack))
            if reason:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            elif case.attack in FLAKY_UNTIL_FIXED:
                marks.append(pytest.mark.xfail(strict=False, reason=FLAKY_UNTIL_FIXED[case.attack]))
            params.append(pytest.param(case, mode, id=f"{case.attack}-{mode}", marks=marks))
    return params


@pytest.mark.adversarial
@pytest.mark.timeout(90)
@pytest.mark.parametrize(("case", "mode"), cases())
async def test_attack(case: Case, mode: str) -> None:
    if mode == "haproxy":
        require_binary("haproxy")
    if case.turn:
        require_binary("turnserver")
    if case.store == "redis":
        require_binary("redis-server")
    async with deployment(mode, case.store, case.turn, case.args) as target:
        m = await measure(target, case.attack, CI_SECONDS, CI_PATIENCE)
    found = problems(case, m, CI_P99_BOUND_MS)
    assert not found, (
        f"{case.attack} ({mode}): {found}; rss +{m.rss_growth_mib:.1f} MiB, "
        f"fds {m.fds_before}->{m.fds_peak}, /healthz p50/p99/max "
        f"{m.p50_ms:.0f}/{m.p99_ms:.0f}/{m.max_ms:.0f} ms, outcome {m.outcome}"
    )
