"""Which scenarios of a run may overlap (sans-I/O)."""

from __future__ import annotations

from netsim import schedule


def test_measuring_kinds_run_alone_the_rest_longest_first() -> None:
    scenarios = [
        ("cone", "path"),
        ("tput", "throughput"),
        ("cut", "resume"),
        ("cal", "calibration"),
        ("lan", "lan"),
        ("rebind", "rebind"),
    ]
    seconds = {"cone": 10.0, "cut": 90.0, "lan": 10.0, "rebind": 30.0, "tput": 200.0}
    plan = schedule.plan(scenarios, seconds)
    assert plan.together == ["cut", "rebind", "cone", "lan"]  # ties in the matrix's order
    assert plan.alone == ["tput", "cal"]
    assert schedule.plan([], {}) == schedule.Plan([], [])
