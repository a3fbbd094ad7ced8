"""The matrix in shards: a deterministic, balanced assignment (sans-I/O), and a small matrix run
for real as 3 shards whose merged report equals the unsharded run's."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netsim import report, shards
from netsim.results import RunReport, ScenarioResult, Status
from tests.conftest import require_root

KINDS = [("a", "lan"), ("b", "path"), ("c", "path"), ("d", "calibration"), ("e", "throughput")]


def test_shard_argument() -> None:
    assert shards.parse_shard("2/4") == shards.Shard(2, 4)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        with pytest.raises(ValueError, match="K"):
            shards.parse_shard(bad)


def test_longest_first_into_the_lightest_shard() -> None:
    seconds = {"a": 10.0, "b": 40.0, "c": 30.0, "d": 20.0, "e": 5.0}
    assert shards.assign(seconds, 2) == [["b", "a", "e"], ["c", "d"]]  # 55 and 50
    assert shards.assign(seconds, 5) == [["b"], ["c"], ["d"], ["a"], ["e"]]
    assert shards.assign(seconds, 7)[5:] == [[], []]  # more machines than scenarios


def test_every_scenario_in_exactly_one_shard_in_matrix_order() -> None:
    durations = {"a": 10.0, "b": 40.0, "c": 30.0}  # d and e never measured
    picked = [shards.pick(KINDS, shards.Shard(k, 3), durations) for k in (1, 2, 3)]
    assert sorted(n for names in picked for n in names) == ["a", "b", "c", "d", "e"]
    for names in picked:
        assert names == [n for n, _ in KINDS if n in names]
    assert picked == [shards.pick(KINDS, shards.Shard(k, 3), durations) for k in (1, 2, 3)]


def test_unmeasured_scenarios_count_as_their_kinds_mean() -> None:
    seconds = shards.estimate(KINDS, {"b": 40.0, "a": 10.0})
    assert seconds == {"a": 10.0, "b": 40.0, "c": 40.0, "d": 60.0, "e": 60.0}


def _shard_report(index: int, count: int, names: list[str], matrix: list[str]) -> RunReport:
    return RunReport(
        started=f"2026-12-02T00:00:0{index}+00:00",
        backend="netns",
        link_mechanism="tbf",
        results=[ScenarioResult(n, "lan", "", duration_s=index) for n in names],
        duration_s=float(index),
        matrix=matrix,
        shard={"index": index, "count": count},
    )


def test_merge_joins_in_matrix_order_and_refuses_gaps() -> None:
    matrix = ["a", "b", "c"]
    parts = [_shard_report(2, 2, ["b"], matrix), _shard_report(1, 2, ["a", "c"], matrix)]
    merged = shards.merge(parts)
    assert [r.name for r in merged.results] == matrix
    assert (merged.shard, merged.duration_s, merged.started[-10:]) == (None, 2.0, "0:01+00:00")
    with pytest.raises(ValueError, match=r"need each of 1\.\.2"):
        shards.merge(parts[:1])
    with pytest.raises(ValueError, match="no result for c"):
        shards.merge([_shard_report(1, 2, ["a"], matrix), parts[0]])
    with pytest.raises(ValueError, match="different matrices"):
        shards.merge([parts[1], _shard_report(2, 2, ["b"], ["a", "b", "c", "x"])])
    again = shards.report_from_json(json.loads(json.dumps(merged.to_json())))
    assert again == merged
    assert shards.updated_durations(merged, {"z": 3.0}) == {"a": 1.0, "b": 2.0, "c": 1.0, "z": 3.0}


SMALL_MATRIX = """
[[scenario]]
name = "lan"
kind = "lan"
description = "two hosts on one LAN behind a port-restricted NAT"
sites = [{ name = "home", nat = "port_restricted", hosts = 2 }]
sender = "home:0"
receiver = "home:1"

[[scenario]]
name = "calibration-loss"
kind = "calibration"
description = "3 % loss up, 2 % down"

[[scenario.sites]]
name = "a"
nat = "port_restricted"
uplink = { loss_percent = 3 }
downlink = { loss_percent = 2 }
"""


async def _netsim(*args: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "netsim", *args, stdout=subprocess.DEVNULL
    )
    return await proc.wait()


def _essence(run: RunReport) -> list[tuple[object, ...]]:
    """What must agree between runs: pass/fail, paths, checks (not times or figures)."""
    return [
        (r.name, r.kind, r.status, r.metrics.get("path"), [(c.name, c.ok) for c in r.checks])
        for r in run.results
    ]


def _junit(path: Path) -> list[tuple[str | None, bool]]:
    cases = ET.parse(path).getroot().iter("testcase")
    return [(case.get("name"), case.find("failure") is None) for case in cases]


async def test_three_shards_merge_into_the_unsharded_report(tmp_path: Path) -> None:
    require_root()
    matrix = tmp_path / "small.toml"
    matrix.write_text(SMALL_MATRIX)
    whole = tmp_path / "whole"
    assert await _netsim("run", "--file", str(matrix), "--out", str(whole)) == 0
    # Three machines at once (namespaces carry each run's prefix: they never collide).
    parts = [tmp_path / f"shard{k}" for k in (1, 2, 3)]
    codes = await asyncio.gather(
        *(
            _netsim("run", "--file", str(matrix), "--out", str(out), "--shard", f"{k}/3")
            for k, out in enumerate(parts, 1)
        )
    )
    assert codes == [0, 0, 0]
    ran = [json.loads((p / "report.json").read_text())["results"] for p in parts]
    assert sorted(len(r) for r in ran) == [0, 1, 1]  # two scenarios, three machines
    merged_dir = tmp_path / "merged"
    durations = tmp_path / "durations.json"
    assert (
        await _netsim(
            "merge", *map(str, parts), "--out", str(merged_dir), "--durations", str(durations)
        )
        == 0
    )
    one, merged = (
        shards.report_from_json(json.loads((d / "report.json").read_text()))
        for d in (whole, merged_dir)
    )
    assert _essence(merged) == _essence(one)
    assert all(r.status is Status.PASSED for r in merged.results)
    assert merged.matrix == one.matrix == ["lan", "calibration-loss"]
    assert report.nat_grid(merged) == report.nat_grid(one)
    assert report.nat_grid(one).cells  # the lan scenario is in the grid
    assert _junit(merged_dir / "junit.xml") == _junit(whole / "junit.xml")
    assert set(json.loads(durations.read_text())) == {"lan", "calibration-loss"}
    assert await _netsim("merge", str(parts[0]), "--out", str(tmp_path / "x")) == 2
