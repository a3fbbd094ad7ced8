"""Every attack of the toolkit, briefly, against the real server process: the outcome the server
must produce and the resources it may spend while one attacker runs at full speed.

Bounds here: RSS growth at most RSS_BOUND_MIB (issue 11's 64 MiB, it is not noisy) and /healthz
p99 at most CI_P99_BOUND_MS. The issue's 50 ms is what `make fuzz-signaling` holds the server to;
here the bound is 400 ms because this CI machine has two cores shared by several jobs and the
attacker, the server and the prober share them too: runs show p99 of 10-320 ms under harmless
attacks (load average 12); stalls from real findings last seconds (pong flood: 6.8 s, 6cf1116).
The cases whose work the address's byte budget pays for (`Case.fair`: big relays) are held to
the issue's 50 ms over the p99 the machine gave a moment before without the attacker, with a
margin of as much again (CI_FAIR_MARGIN_MS): before the budget they took 61-87 ms at p99 over
an idle p99 of a few ms. The budget itself is asserted exactly, in messages handled.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversarial.cases import CASES, Case, problems
from tests.adversarial.harness import Patience, deployment, measure
from tests.conftest import require_binary

CI_P99_BOUND_MS = 400.0
CI_FAIR_MARGIN_MS = 100.0  # 2 x the 50 ms, over the idle p99 measured side by side
CI_SECONDS = 2.0
# A stall past the bound fails whether it lasts 1 s or 20 s: CI does not wait to see which.
CI_PATIENCE = Patience(probe=1.0, recovery=5.0)

# Weaknesses still open when this suite was last run: each fails here now and must pass once
# its fix lands (strict: an unexpected pass fails the run).
# Keyed by attack, or by attack-mode where only one way fails (haproxy times slow heads itself).
PENDING: dict[str, str] = {}


# Not strict: for a stall that straddles the CI bound on a loaded machine (make fuzz-signaling,
# at 50 ms, sees it every time). None now: ping_flood_unread passes since failed connections
# are no longer read.
FLAKY_UNTIL_FIXED: dict[str, str] = {}


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
    bound = CI_P99_BOUND_MS
    if case.fair:
        bound = min(bound, m.idle_p99_ms + CI_FAIR_MARGIN_MS)
    found = problems(case, m, bound)
    assert not found, (
        f"{case.attack} ({mode}): {found}; rss +{m.rss_growth_mib:.1f} MiB, "
        f"fds {m.fds_before}->{m.fds_peak}, /healthz p50/p99/max "
        f"{m.p50_ms:.0f}/{m.p99_ms:.0f}/{m.max_ms:.0f} ms (idle p99 {m.idle_p99_ms:.0f} ms), "
        f"{m.messages:.0f} messages handled, outcome {m.outcome}"
    )
