"""`netsim.report`: every rendering of hand-built run reports, parsed back where it has a format
(JSON, JUnit XML, PNG), and hostile text from results escaped for each format."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from netsim import report
from netsim.link import FALLBACK, NETEM
from netsim.results import Metric, RunReport, ScenarioResult, Status

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def path_result(
    nat_a: str, nat_b: str, path: str, expected: str, kind: str = "path"
) -> ScenarioResult:
    result = ScenarioResult(
        f"{kind}-{nat_a}-{nat_b}",
        kind,
        f"{nat_a} to {nat_b}",
        duration_s=4.2,
        metrics={"nat_a": nat_a, "nat_b": nat_b, "expected_path": expected, "path": path},
    )
    result.metrics["transport"] = "udp"
    result.check("path", path == expected, expected, path)
    return result


def throughput(name: str, path: str, rate: float, goodput: float) -> ScenarioResult:
    metrics: dict[str, Metric] = {
        "rate_mbit": rate,
        "rtt_ms": 40,
        "loss_percent": 1,
        "path": path,
        "goodput_mbit": goodput,
        "ratio": round(goodput / rate, 3),
    }
    return ScenarioResult(name, "throughput", "bulk transfer", duration_s=12.5, metrics=metrics)


def mixed_results() -> list[ScenarioResult]:
    """Passed, failed (with logs), error, skipped; a grid with one mismatch; no throughput."""
    resume = ScenarioResult(
        "resume-cut",
        "resume",
        "cut the link mid-transfer",
        duration_s=30.0,
        metrics={"resent_chunks": 3, "total_chunks": 120},
    )
    resume.check("sha256", True, "abc", "abc")
    calibration = ScenarioResult(
        "calibrate-rtt",
        "calibration",
        "RTT against its configuration",
        metrics={"rtt_ms": 50, "measured_rtt_ms": 51.23, "loss_percent": 0},
    )
    crashed = ScenarioResult(
        "rebind",
        "rebind",
        "NAT rebinding",
        status=Status.ERROR,
        error="Timeout waiting for peer\nTraceback ...",
        logs_dir="/tmp/netsim/rebind",
    )
    skipped = ScenarioResult(
        "tls-only", "encryption", "TLS relay", status=Status.SKIPPED, error="needs root"
    )
    failed = path_result("symmetric", "full_cone", "relay", "srflx")
    failed.logs_dir = "/tmp/netsim/symmetric-full_cone"
    return [
        path_result("full_cone", "full_cone", "srflx", "srflx"),
        failed,
        path_result("symmetric", "symmetric", "relay", "relay"),
        path_result("udp_blocked", "full_cone", "relay", "relay", kind="udp_blocked"),
        resume,
        calibration,
        crashed,
        skipped,
    ]


def make_report(results: list[ScenarioResult], mechanism: str = FALLBACK) -> RunReport:
    return RunReport("2025-01-02T03:04:05Z", "netns", mechanism, results, duration_s=125.0)


@pytest.fixture
def mixed() -> RunReport:
    return make_report(mixed_results())


@pytest.fixture
def with_throughput() -> RunReport:
    return make_report(
        [
            *mixed_results(),
            throughput("tp-50-direct", "srflx", 50, 42.13),
            throughput("tp-50-relay", "relay", 50, 30.0),
            throughput("tp-1-direct", "host", 1, 0.94),
            ScenarioResult(
                "tp-1-relay",
                "throughput",
                "bulk transfer",
                status=Status.ERROR,
                error="relay refused",
                metrics={"rate_mbit": 1, "rtt_ms": 40, "loss_percent": 1, "path": "relay"},
            ),
        ]
    )


def rendered(run: RunReport) -> str:
    console = Console(record=True, width=200, color_system=None)
    report.print_table(run, console)
    return console.export_text()


# --- the NAT grid ----------------------------------------------------------------------------


def test_grid_rows_columns_and_mismatch(mixed: RunReport) -> None:
    grid = report.nat_grid(mixed)
    assert grid.rows == ["full_cone", "symmetric", "udp_blocked"]
    assert grid.columns == ["full_cone", "symmetric"]
    assert grid.cell("full_cone", "full_cone") == "srflx"
    assert grid.cell("symmetric", "full_cone") == "relay ✗ (expected srflx)"
    assert grid.cell("udp_blocked", "full_cone") == "relay"
    assert grid.cell("full_cone", "symmetric") == ""
    assert grid.worst("symmetric", "full_cone") is Status.FAILED
    assert grid.worst("full_cone", "symmetric") is None


def test_grid_names_scenarios_sharing_a_cell() -> None:
    lan = path_result("full_cone", "full_cone", "host", "host", kind="lan")
    grid = report.nat_grid(
        make_report([path_result("full_cone", "full_cone", "srflx", "srflx"), lan])
    )
    assert grid.cell("full_cone", "full_cone") == (
        "path-full_cone-full_cone: srflx\nlan-full_cone-full_cone: host"
    )


def test_grid_shows_status_where_no_path_was_observed() -> None:
    errored = ScenarioResult(
        "p",
        "path",
        "",
        status=Status.ERROR,
        metrics={"nat_a": "a", "nat_b": "b", "expected_path": "srflx"},
    )
    grid = report.nat_grid(make_report([errored]))
    assert grid.cell("a", "b") == "error"
    assert grid.worst("a", "b") is Status.ERROR


# --- terminal --------------------------------------------------------------------------------


def test_terminal_table(with_throughput: RunReport) -> None:
    text = rendered(with_throughput)
    assert "links: tbf + nft numgen + NFQUEUE delayer (this kernel has no netem)" in text
    assert "backend netns" in text
    for name in ("full_cone", "resume-cut", "calibrate-rtt", "tp-50-relay", "tls-only"):
        assert name in text
    assert "srflx/udp" in text
    assert "42.1 Mbit/s, 0.843 of 50 Mbit/s" in text
    assert "resent 3/120 chunks" in text
    assert "RTT 51.2 ms (configured 50)" in text
    assert "30.0 s" in text
    # failure details under the table
    assert "✗ path: expected srflx, observed relay" in text
    assert "logs kept in /tmp/netsim/symmetric-full_cone" in text
    assert "    error: Timeout waiting for peer\n    Traceback ..." in text
    assert "logs kept in /tmp/netsim/rebind" in text
    assert "reason: needs root" in text
    # the grid, and the verdict
    assert "NAT grid" in text
    assert "relay ✗ (expected srflx)" in text
    assert "FAILED: 12 scenarios (8 passed, 1 failed, 2 error, 1 skipped) in 2 min 05 s" in text


def test_the_client_pair_beside_the_nat_pair(tmp_path: Path) -> None:
    """Each report names the clients where a side is not the CLI: the table, the grid's cell,
    JUnit's output and the JSON metrics."""
    browser = path_result("symmetric", "symmetric", "relay", "relay")
    browser.metrics.update(client_a="cli", client_b="browser")
    cli = path_result("full_cone", "full_cone", "srflx", "srflx")
    cli.metrics.update(client_a="cli", client_b="cli")
    run = make_report([browser, cli])
    assert report.peers(browser) == "symmetric · cli → symmetric · browser"
    assert report.peers(cli) == "full_cone → full_cone"
    text = rendered(run)
    assert "symmetric · cli → symmetric · browser" in text
    assert "relay (cli → browser)" in text  # the grid's cell
    written = report.write_all(run, tmp_path)
    assert "| symmetric · cli → symmetric · browser |" in written["markdown"].read_text("utf-8")
    junit = written["junit"].read_text("utf-8")
    assert "peers = symmetric · cli → symmetric · browser" in junit
    loaded = json.loads(written["json"].read_text("utf-8"))
    assert loaded["results"][0]["metrics"]["client_b"] == "browser"


def test_terminal_header_with_netem_and_all_passed() -> None:
    text = rendered(make_report([path_result("a", "b", "srflx", "srflx")], mechanism=NETEM))
    assert "links: netem" in text
    assert "no netem" not in text
    assert "OK: 1 scenarios (1 passed)" in text


# --- JSON ------------------------------------------------------------------------------------


def test_json_round_trips(with_throughput: RunReport, tmp_path: Path) -> None:
    written = report.write_all(with_throughput, tmp_path)
    loaded = json.loads(written["json"].read_text(encoding="utf-8"))
    assert loaded == with_throughput.to_json()
    assert loaded["ok"] is False
    assert [r["status"] for r in loaded["results"]].count("error") == 2
    assert written["json"] == tmp_path / "report.json"


# --- JUnit XML -------------------------------------------------------------------------------


def test_junit_structure_and_counts(mixed: RunReport) -> None:
    root = ET.fromstring(report.junit_xml(mixed))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "netsim"
    assert suite.get("timestamp") == "2025-01-02T03:04:05Z"
    for element in (root, suite):
        assert element.get("tests") == "8"
        assert element.get("failures") == "1"
        assert element.get("errors") == "1"
        assert element.get("skipped") == "1"
    cases = suite.findall("testcase")
    assert len(cases) == 8
    assert len(suite.findall("testcase/failure")) == 1
    assert len(suite.findall("testcase/error")) == 1
    assert len(suite.findall("testcase/skipped")) == 1
    assert {p.get("name"): p.get("value") for p in suite.iter("property")} == {
        "backend": "netns",
        "links": FALLBACK,
    }

    by_name = {case.get("name"): case for case in cases}
    failed = by_name["path-symmetric-full_cone"]
    assert failed.get("classname") == "path"
    assert failed.get("time") == "4.200"
    failure = failed.find("failure")
    assert failure is not None
    assert failure.get("message") == "1 check(s) failed: path"
    assert failure.text is not None
    assert "✗ path: expected srflx, observed relay" in failure.text
    assert "logs kept in /tmp/netsim/symmetric-full_cone" in failure.text
    system_out = failed.findtext("system-out")
    assert system_out is not None
    assert "nat_a = symmetric" in system_out

    error = by_name["rebind"].find("error")
    assert error is not None
    assert error.get("message") == "Timeout waiting for peer"
    assert error.text is not None
    assert "Traceback" in error.text
    skipped = by_name["tls-only"].find("skipped")
    assert skipped is not None
    assert skipped.get("message") == "needs root"
    passed = by_name["resume-cut"]
    assert [child.tag for child in passed] == ["system-out"]


def test_junit_failure_without_failed_checks() -> None:
    failed = ScenarioResult("f", "lan", "", status=Status.FAILED, error="peer exited 1\nmore")
    root = ET.fromstring(report.junit_xml(make_report([failed])))
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message") == "peer exited 1"
    assert failure.text == "error: peer exited 1\nmore"


def test_junit_file_parses(mixed: RunReport, tmp_path: Path) -> None:
    written = report.write_all(mixed, tmp_path)
    assert ET.parse(written["junit"]).getroot().get("tests") == "8"


# --- Markdown --------------------------------------------------------------------------------


def test_markdown_sections(with_throughput: RunReport, tmp_path: Path) -> None:
    written = report.write_all(with_throughput, tmp_path)
    text = written["markdown"].read_text(encoding="utf-8")
    assert text.startswith("# netsim report\n")
    assert "**FAILED: 12 scenarios (8 passed, 1 failed, 2 error, 1 skipped) in 2 min 05 s**" in (
        text
    )
    assert "(this kernel has no netem)" in text
    for section in ("## NAT grid", "## Scenarios", "## Throughput", "## Calibration", "## Resume"):
        assert section in text
    assert "| A ↓ · B → | full\\_cone | symmetric |" in text
    assert "| symmetric | relay ✗ (expected srflx) | relay |" in text
    assert "| udp\\_blocked | relay |  |" in text
    # all scenarios with their checks, and the notes of those that did not pass
    assert "✓ path: srflx" in text
    assert "✗ path: expected srflx, observed relay<br>logs kept in /tmp/netsim/" in text
    assert "error: Timeout waiting for peer<br>Traceback ..." in text
    # throughput: rate, RTT, loss and route -> goodput, ratio
    assert (
        "| tp-50-direct | 50 Mbit/s | 40 ms | 1 % | direct | srflx | 42.1 Mbit/s | 0.843 |" in text
    )
    assert "| tp-50-relay | 50 Mbit/s | 40 ms | 1 % | relay | relay | 30 Mbit/s | 0.6 |" in text
    assert "| tp-1-relay | 1 Mbit/s | 40 ms | 1 % | relay | relay | — | — | error |" in text
    assert "![goodput by link, direct and relay](throughput.png)" in text
    assert "| calibrate-rtt | RTT | 50 ms | 51.2 ms | +2.5% | passed |" in text
    assert "| resume-cut | 3 | 120 | 2.5% | passed |" in text
    # every table row has as many cells as its header
    for block in text.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            assert len({row.replace("\\|", "").count("|") for row in rows}) == 1, block


def long_haul(name: str = "long-haul") -> ScenarioResult:
    result = throughput(name, "relay", 20, 12.5)
    result.metrics.update(recover_s_1_cut=1.5, recover_s_2_rebind=20.1)
    result.metrics["new_connection_s_2_rebind"] = 19.4
    result.timeline = {
        "bin_s": 1.0,
        "goodput": [[1.0, 10.0], [2.0, 0.0], [3.0, 0.0], [4.0, 15.0]],
        "faults": [
            {"kind": "cut", "start": 1.2, "end": 2.7},
            {"kind": "rebind", "start": 3.1, "end": 3.1},
        ],
    }
    return result


def test_a_timeline_is_plotted_and_its_faults_tabled(tmp_path: Path) -> None:
    (tmp_path / "timeline-gone.png").write_bytes(PNG_MAGIC)  # an earlier run's
    written = report.write_all(
        make_report([long_haul(), path_result("a", "b", "relay", "relay")]), tmp_path
    )
    image = written["timeline long-haul"]
    assert image == tmp_path / "timeline-long-haul.png"
    assert image.read_bytes().startswith(PNG_MAGIC)
    assert not (tmp_path / "timeline-gone.png").exists()
    text = written["markdown"].read_text(encoding="utf-8")
    assert "## Timelines" in text and "### long-haul" in text
    assert "![goodput over time, faults marked](timeline-long-haul.png)" in text
    assert "| cut | 1.2 s | 1.5 s | 1.5 s | — |" in text
    assert "| rebind | 3.1 s | 0 s | 20.1 s | 19.4 s |" in text
    json_back = json.loads(written["json"].read_text(encoding="utf-8"))
    assert json_back["results"][0]["timeline"]["faults"][1]["kind"] == "rebind"


def test_a_timeline_from_a_hostile_report_stays_in_its_folder(tmp_path: Path) -> None:
    result = long_haul("../../x|<y>")
    result.timeline["faults"][0]["kind"] = "<b>|cut"  # type: ignore[index]
    written = report.write_all(make_report([result]), tmp_path)
    (image,) = [path for key, path in written.items() if key.startswith("timeline")]
    assert image.parent == tmp_path and image.name == "timeline-.._.._x__y_.png"
    text = written["markdown"].read_text(encoding="utf-8")
    assert "<b>" not in text and "| \\<b\\>\\|cut | 1.2 s |" in text


def test_markdown_without_throughput_has_no_plot(mixed: RunReport) -> None:
    text = report.markdown(mixed)
    assert "## Throughput" not in text
    assert "![" not in text
    assert "## NAT grid" in text


# --- the plot --------------------------------------------------------------------------------


def test_plot_written_for_throughput(with_throughput: RunReport, tmp_path: Path) -> None:
    written = report.write_all(with_throughput, tmp_path)
    assert written["plot"] == tmp_path / "throughput.png"
    data = written["plot"].read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 5000


def test_no_plot_without_throughput(mixed: RunReport, tmp_path: Path) -> None:
    (tmp_path / "throughput.png").write_bytes(PNG_MAGIC)  # an earlier run's
    written = report.write_all(mixed, tmp_path)
    assert set(written) == {"json", "junit", "markdown", "grid_plot"}
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["junit.xml", "nat-grid.png", "report.json", "report.md"]


def _with_behaviours(a: str, b: str, found: str, expected: str, ba: str, bb: str) -> ScenarioResult:
    result = path_result(a, b, found, expected)
    result.metrics.update(behaviour_a=ba, behaviour_b=bb)
    return result


def test_grid_picture_orders_by_mapping_and_filtering(tmp_path: Path) -> None:
    """Each NAT's behaviour beside its name; the picture orders NATs mapping-major, then
    filtering, then the rest; a NAT named by its behaviours is not labelled twice."""
    run = make_report(
        [
            _with_behaviours(
                "udp_blocked", "apdm-eif", "relay", "relay", "EIM/APDF, UDP blocked", "APDM/EIF"
            ),
            _with_behaviours("port_restricted", "adm-adf", "relay", "srflx", "EIM/APDF", "ADM/ADF"),
            _with_behaviours(
                "eim-eif", "open", "srflx", "srflx", "EIM/EIF", "EIM/EIF (public address)"
            ),
        ]
    )
    grid = report.nat_grid(run)
    assert grid.label("port_restricted") == "port_restricted (EIM/APDF)"
    assert grid.label("adm-adf") == "adm-adf"
    order = sorted({*grid.rows, *grid.columns}, key=lambda n: report._grid_order(grid, n))
    assert order == ["eim-eif", "port_restricted", "adm-adf", "apdm-eif", "open", "udp_blocked"]
    text = report.markdown(run, grid_plot="nat-grid.png")
    assert "| port\\_restricted (EIM/APDF) |  | relay ✗ (expected srflx) |" in text
    assert "![observed path by mapping and filtering](nat-grid.png)" in text
    assert report.plot_grid(run, tmp_path / "g.png")
    data = (tmp_path / "g.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert not report.plot_grid(make_report([]), tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_no_plot_when_no_throughput_measured(tmp_path: Path) -> None:
    unmeasured = ScenarioResult(
        "tp", "throughput", "", status=Status.ERROR, metrics={"rate_mbit": 5}
    )
    assert not report.plot_throughput(make_report([unmeasured]), tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_empty_run_renders(tmp_path: Path) -> None:
    empty = make_report([])
    written = report.write_all(empty, tmp_path)
    assert set(written) == {"json", "junit", "markdown"}
    assert ET.parse(written["junit"]).getroot().get("tests") == "0"
    assert "## NAT grid" not in written["markdown"].read_text(encoding="utf-8")
    assert "OK: 0 scenarios (none run)" in rendered(empty)


# --- hostile text ----------------------------------------------------------------------------

HOSTILE_NAME = 'a|b <c> & "d" [/red] *e*'
HOSTILE_ERROR = "boom </error> ]]> \x1b[31mred\x1b[0m \x00 | \ud800 end"


@pytest.fixture
def hostile() -> RunReport:
    result = ScenarioResult(
        HOSTILE_NAME,
        "path",
        "<script>",
        status=Status.ERROR,
        error=HOSTILE_ERROR,
        logs_dir="/tmp/x|y",
        metrics={"nat_a": "n|a", "nat_b": "[bold]b", "path": "relay", "expected_path": "srflx"},
    )
    result.check("c|<x>", False, "a & b", "<none>")
    return make_report([result])


def test_hostile_junit(hostile: RunReport, tmp_path: Path) -> None:
    written = report.write_all(hostile, tmp_path)
    case = ET.parse(written["junit"]).getroot().find("testsuite/testcase")
    assert case is not None
    assert case.get("name") == HOSTILE_NAME
    error = case.find("error")
    assert error is not None
    expected = "boom </error> ]]> \\x1b[31mred\\x1b[0m \\x00 | \\ud800 end"
    assert error.get("message") == expected
    assert error.text is not None
    assert "✗ c|<x>: expected a & b, observed <none>" in error.text


def test_hostile_json(hostile: RunReport, tmp_path: Path) -> None:
    written = report.write_all(hostile, tmp_path)
    loaded = json.loads(written["json"].read_text(encoding="utf-8"))
    assert loaded["results"][0]["error"] == HOSTILE_ERROR


def test_hostile_markdown(hostile: RunReport) -> None:
    text = report.markdown(hostile)
    assert 'a\\|b \\<c\\> \\& "d" \\[/red\\] \\*e\\*' in text
    assert "<script>" not in text
    assert "<c>" not in text
    assert "\x1b" not in text
    assert "\\\\x1b\\[31mred" in text
    assert "✗ c\\|\\<x\\>: expected a \\& b, observed \\<none\\>" in text
    assert "| n\\|a | relay ✗ (expected srflx) |" in text
    (row,) = [line for line in text.splitlines() if line.startswith("| a\\|b")]
    assert row.replace("\\|", "").count("|") == 9  # eight cells, as in the header


def test_hostile_terminal(hostile: RunReport) -> None:
    text = rendered(hostile)
    assert HOSTILE_NAME in text
    assert "[bold]b" in text
    assert "\x1b" not in text
    assert "\\x1b[31mred" in text
    assert "logs kept in /tmp/x|y" in text
