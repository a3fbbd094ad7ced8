"""A short, bounded locust run against the real topologies: honest users see no failure, and
every kind of abuse is refused with its own code. No timing is asserted here (the benchmark
measures speed); a noisy machine only makes the run slower."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.run import ABUSE_KINDS, problems, run_locust
from loadtest.stack import stack
from tests.conftest import require_binary

EXPECTED_REFUSALS = {
    "bad_token: session_not_found",
    "burn: session_not_found",
    "bad_message: bad_json",
    "bad_message: unsupported_version",
    "bad_message: unknown_type",
    "bad_message: bad_message",
    "too_large: too_large",
    "flood: close 1008",
    "conn_flood: too_many_connections then close 1013",
}


@pytest.mark.parametrize("mode", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_short_locust_run(mode: str, tmp_path: Path) -> None:
    if mode == "redis":
        require_binary("redis-server")
        require_binary("haproxy")
    async with stack(mode) as target:
        result = await run_locust(
            target.url,
            tmp_path / "locust",
            users=3 + len(ABUSE_KINDS),
            run_time=5,
            extra=("--abusers", str(len(ABUSE_KINDS)), "--hold-seconds", "2"),
        )
    assert problems(result, "all") == []
    assert result.failure_count == 0
    assert result.count("join") > 0
    assert result.count("relay") > 0
    assert set(result.tally["refusals"]) == EXPECTED_REFUSALS
    if mode == "redis":
        assert result.tally["placement"].get("cross", 0) > 0
    assert Path(f"{tmp_path / 'locust'}.html").stat().st_size > 0
