"""Renderings of a `RunReport`: for whoever runs the lab (a terminal table), for CI (JUnit XML,
JSON) and for people reading results later (Markdown with a NAT grid, figures and a plot).

`write_all` writes the files, `print_table` prints the terminal view. Text from results
(names, errors, observed values) may hold anything a crashed peer printed, so every renderer
escapes it for its format: control characters become `\\xNN`, Markdown punctuation is
backslash-escaped, rich markup is never interpreted, XML is built by ElementTree.

Calibration results pair a configured value with a measured one by name: `X` and `measured_X`
(e.g. `rtt_ms` and `measured_rtt_ms`).
"""

from __future__ import annotations

import json
import re
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from netsim.link import NETEM
from netsim.results import Check, Metric, RunReport, ScenarioResult, Status

GRID_KINDS: Final = frozenset({"path", "lan", "udp_blocked"})
THROUGHPUT: Final = "throughput"
PLOT_NAME: Final = "throughput.png"
GRID_PLOT_NAME: Final = "nat-grid.png"
TIMELINE_PREFIX: Final = "timeline-"  # + the scenario's name + .png
MEASURED: Final = "measured_"
_CORNER: Final = "A ↓ · B →"

_STATUS_STYLE: Final = {
    Status.PASSED: "green",
    Status.FAILED: "bold red",
    Status.ERROR: "bold magenta",
    Status.SKIPPED: "yellow",
}
# Worst last: a grid cell holding several scenarios takes the colour of its worst one.
_SEVERITY: Final = (Status.PASSED, Status.SKIPPED, Status.FAILED, Status.ERROR)
_QUANTITIES: Final = {
    "rate_mbit": ("rate", "Mbit/s"),
    "goodput_mbit": ("goodput", "Mbit/s"),
    "rtt_ms": ("RTT", "ms"),
    "jitter_ms": ("jitter", "ms"),
    "loss_percent": ("loss", "%"),
}
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_MARKDOWN_SPECIAL: Final = re.compile(r"([\\`*_\[\]<>|&~])")


# --- shared formatting ------------------------------------------------------------------------


def _printable(text: str) -> str:
    """Control characters (ANSI colours, NULs, lone surrogates from undecodable logs) would
    garble a terminal and make XML unparseable; show them as escapes instead."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match[0])
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(escape, text)


def _md(text: str) -> str:
    """Results' text for Markdown: punctuation escaped, so a `|` cannot split a table row nor
    a `<` open an HTML tag; line breaks kept inside the cell."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _printable(text)).replace("\n", "<br>")


def _num(value: Metric) -> str:
    """Three significant digits without exponent for the usual range; strings as they are."""
    if isinstance(value, str):
        return value
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _number(result: ScenarioResult, key: str) -> int | float | None:
    value = result.metrics.get(key)
    return value if isinstance(value, int | float) else None


def _text(result: ScenarioResult, key: str) -> str | None:
    value = result.metrics.get(key)
    return None if value is None else str(value)


def _with_unit(value: Metric, unit: str) -> str:
    return f"{_num(value)} {unit}".rstrip()


def _quantity(key: str, value: Metric) -> str:
    return _with_unit(value, _QUANTITIES.get(key, (key, ""))[1])


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _check_line(check: Check) -> str:
    if check.ok:
        return f"✓ {check.name}: {check.observed}"
    return f"✗ {check.name}: expected {check.expected}, observed {check.observed}"


def _notes(result: ScenarioResult) -> list[str]:
    """The error (or why it was skipped) and where the logs are."""
    notes = []
    if result.error:
        label = "reason" if result.status is Status.SKIPPED else "error"
        notes.append(f"{label}: {result.error}")
    if result.logs_dir:
        notes.append(f"logs kept in {result.logs_dir}")
    return notes


def _trouble_lines(result: ScenarioResult) -> list[str]:
    """What someone looking into a scenario that did not pass needs first."""
    return [_check_line(check) for check in result.checks if not check.ok] + _notes(result)


def _route(result: ScenarioResult) -> str:
    return "relay" if result.metrics.get("path") == "relay" else "direct"


def _path_transport(result: ScenarioResult) -> str:
    return "/".join(
        str(result.metrics[key]) for key in ("path", "transport") if key in result.metrics
    )


def _clients(result: ScenarioResult) -> str | None:
    """The sender's and receiver's client (`browser → cli`), when either is not the CLI."""
    pair = (_text(result, "client_a"), _text(result, "client_b"))
    if None in pair or pair == ("cli", "cli"):
        return None
    return f"{pair[0]} → {pair[1]}"


def peers(result: ScenarioResult) -> str:
    """The NAT pair, each NAT with the client behind it: `symmetric · browser → full_cone · cli`
    (the client is named only where one side is not the CLI)."""
    nats = (_text(result, "nat_a"), _text(result, "nat_b"))
    clients = (_text(result, "client_a"), _text(result, "client_b"))
    show = _clients(result) is not None
    sides = [
        " · ".join(part for part in (nat, client if show else None) if part)
        for nat, client in zip(nats, clients, strict=True)
    ]
    return " → ".join(sides) if any(sides) else ""


def _link(result: ScenarioResult) -> str:
    """The impairment a throughput scenario ran over, as one label."""
    parts = (
        f"{_QUANTITIES[key][0]} {_quantity(key, result.metrics[key])}"
        for key in ("rate_mbit", "rtt_ms", "loss_percent")
        if key in result.metrics
    )
    return " · ".join(parts)


def _goodput(result: ScenarioResult) -> str | None:
    goodput = _number(result, "goodput_mbit")
    if goodput is None:
        return None
    figure = _quantity("goodput_mbit", goodput)
    ratio, rate = _number(result, "ratio"), _number(result, "rate_mbit")
    if ratio is not None and rate is not None:
        figure += f", {_num(ratio)} of {_quantity('rate_mbit', rate)}"
    return figure


def _resume(result: ScenarioResult) -> tuple[int | float, int | float] | None:
    resent, total = _number(result, "resent_chunks"), _number(result, "total_chunks")
    return None if resent is None or total is None else (resent, total)


@dataclass(frozen=True)
class Calibration:
    quantity: str
    configured: int | float
    measured: int | float
    unit: str

    @property
    def deviation(self) -> float | None:
        """Measured against configured, relative; none for a configured zero (e.g. no loss)."""
        return self.measured / self.configured - 1 if self.configured else None


def _calibrations(result: ScenarioResult) -> list[Calibration]:
    found = []
    for key in result.metrics:
        base = key.removeprefix(MEASURED)
        configured, measured = _number(result, base), _number(result, key)
        if key.startswith(MEASURED) and configured is not None and measured is not None:
            label, unit = _QUANTITIES.get(base, (base, ""))
            found.append(Calibration(label, configured, measured, unit))
    return found


def figures(result: ScenarioResult) -> str:
    """The scenario's key figures in one line, from whichever well-known metrics it has."""
    parts = []
    if goodput := _goodput(result):
        parts.append(goodput)
    if resume := _resume(result):
        parts.append(f"resent {_num(resume[0])}/{_num(resume[1])} chunks")
    parts += [
        f"{c.quantity} {_with_unit(c.measured, c.unit)} (configured {_num(c.configured)})"
        for c in _calibrations(result)
    ]
    if "verdict" in result.metrics:  # a doctor scenario: what it told the user
        parts.append(f"doctor: {result.metrics['verdict']} in {_num(result.metrics['seconds'])} s")
    return "; ".join(parts)


def header(report: RunReport) -> str:
    note = "" if report.link_mechanism == NETEM else " (this kernel has no netem)"
    return (
        f"netsim run {report.started} · backend {report.backend}"
        f" · links: {report.link_mechanism}{note}"
    )


def summary(report: RunReport) -> str:
    counts = [
        f"{n} {status.value}"
        for status in Status
        if (n := sum(r.status is status for r in report.results))
    ]
    verdict = "OK" if report.ok else "FAILED"
    if report.stopped is not None:
        verdict = f"STOPPED by {report.stopped}"
        counts.append(f"{report.not_run} not run")
    listed = ", ".join(counts) or "none run"
    return (
        f"{verdict}: {len(report.results)} scenarios ({listed}) in {_duration(report.duration_s)}"
    )


def _of_kind(report: RunReport, kind: str) -> list[ScenarioResult]:
    return [r for r in report.results if r.kind == kind]


# --- NAT grid ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridEntry:
    scenario: str
    status: Status
    observed: str | None
    expected: str | None
    clients: str | None = None  # e.g. "browser → cli", when a side is not the CLI

    @property
    def mismatch(self) -> bool:
        return None not in (self.observed, self.expected) and self.observed != self.expected

    def text(self, labelled: bool) -> str:
        shown = self.observed or self.status.value
        if self.clients:
            shown += f" ({self.clients})"
        if self.mismatch:
            shown += f" ✗ (expected {self.expected})"
        return f"{self.scenario}: {shown}" if labelled else shown


@dataclass(frozen=True)
class NatGrid:
    """Observed paths by NAT pair (rows: peer A's NAT, columns: peer B's), in run order;
    `behaviours`: each NAT's mapping and filtering (e.g. `EIM/APDF`) by its name."""

    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], list[GridEntry]]
    behaviours: dict[str, str]

    def label(self, name: str) -> str:
        """A NAT's name with its behaviour beside it, where the name does not say it."""
        behaviour = self.behaviours.get(name)
        if behaviour is None or behaviour.replace("/", "-").lower() == name:
            return name
        return f"{name} ({behaviour})"

    def cell(self, row: str, column: str) -> str:
        """Several scenarios for one pair are each named, so none hides another."""
        entries = self.cells.get((row, column), [])
        return "\n".join(entry.text(labelled=len(entries) > 1) for entry in entries)

    def worst(self, row: str, column: str) -> Status | None:
        statuses = [
            Status.FAILED if e.mismatch else e.status for e in self.cells.get((row, column), [])
        ]
        return max(statuses, key=_SEVERITY.index) if statuses else None


def nat_grid(report: RunReport) -> NatGrid:
    rows: dict[str, None] = {}  # ordered sets
    columns: dict[str, None] = {}
    cells: dict[tuple[str, str], list[GridEntry]] = {}
    behaviours: dict[str, str] = {}
    for result in report.results:
        nat_a, nat_b = _text(result, "nat_a"), _text(result, "nat_b")
        if result.kind not in GRID_KINDS or nat_a is None or nat_b is None:
            continue
        rows[nat_a] = columns[nat_b] = None
        for name, key in ((nat_a, "behaviour_a"), (nat_b, "behaviour_b")):
            if (behaviour := _text(result, key)) is not None:
                behaviours[name] = behaviour
        entry = GridEntry(
            result.name,
            result.status,
            _text(result, "path"),
            _text(result, "expected_path"),
            _clients(result),
        )
        cells.setdefault((nat_a, nat_b), []).append(entry)
    return NatGrid(list(rows), list(columns), cells, behaviours)


# --- terminal ---------------------------------------------------------------------------------


def _styled(text: str, status: Status | None = None) -> Text:
    """Results' text as a rich Text: never parsed as markup."""
    return Text(_printable(text), style=_STATUS_STYLE[status] if status else "")


def _scenario_table(report: RunReport) -> Table:
    table = Table(header_style="bold")
    for column in ("scenario", "status", "peers", "path", "figures"):
        table.add_column(column)
    table.add_column("time", justify="right")
    for result in report.results:
        table.add_row(
            _styled(result.name),
            _styled(result.status.value, result.status),
            _styled(peers(result)),
            _styled(_path_transport(result)),
            _styled(figures(result)),
            _duration(result.duration_s),
        )
    return table


def _trouble(report: RunReport) -> Group:
    parts: list[Text] = []
    for result in report.results:
        if result.status is not Status.PASSED:
            parts.append(_styled(f"{result.name} ({result.status.value})", result.status))
            parts.append(_styled(textwrap.indent("\n".join(_trouble_lines(result)), "    ")))
    return Group(*parts)


def _grid_table(grid: NatGrid) -> Table:
    table = Table(title="NAT grid: observed path", header_style="bold", show_lines=True)
    table.add_column(_CORNER, style="bold")
    for column in grid.columns:
        table.add_column(_styled(column))
    for row in grid.rows:
        cells = (_styled(grid.cell(row, col), grid.worst(row, col)) for col in grid.columns)
        table.add_row(_styled(row), *cells)
    return table


def print_table(report: RunReport, console: Console) -> None:
    """The run as its operator sees it at the end: what ran, what failed and where to look."""
    console.print(_styled(header(report)))
    console.print(_scenario_table(report))
    console.print(_trouble(report))
    grid = nat_grid(report)
    if grid.cells:
        console.print(_grid_table(grid))
    verdict = Status.PASSED if report.ok else Status.FAILED
    console.print(_styled(summary(report), verdict))


# --- JUnit XML --------------------------------------------------------------------------------


def _counts(report: RunReport) -> dict[str, str]:
    def count(status: Status) -> str:
        return str(sum(r.status is status for r in report.results))

    return {
        "name": "netsim",
        "tests": str(len(report.results)),
        "failures": count(Status.FAILED),
        "errors": count(Status.ERROR),
        "skipped": count(Status.SKIPPED),
        "time": f"{report.duration_s:.3f}",
    }


def _testcase(suite: ET.Element, result: ScenarioResult) -> None:
    case = ET.SubElement(
        suite,
        "testcase",
        name=_printable(result.name),
        classname=_printable(result.kind),
        time=f"{result.duration_s:.3f}",
    )
    body = _printable("\n".join(_trouble_lines(result)))
    headline = result.error.splitlines()[0] if result.error else result.status.value
    if result.status is Status.FAILED:
        failed = [c.name for c in result.checks if not c.ok]
        message = f"{len(failed)} check(s) failed: {', '.join(failed)}" if failed else headline
        ET.SubElement(case, "failure", message=_printable(message), type="CheckFailed").text = body
    elif result.status is Status.ERROR:
        ET.SubElement(case, "error", message=_printable(headline), type="ScenarioError").text = body
    elif result.status is Status.SKIPPED:
        ET.SubElement(case, "skipped", message=_printable(result.error or ""))
    out = [result.description, *(f"{k} = {v}" for k, v in result.metrics.items())]
    if pair := peers(result):
        out.insert(1, f"peers = {pair}")
    ET.SubElement(case, "system-out").text = _printable("\n".join(out))


def junit_xml(report: RunReport) -> str:
    """One testsuite "netsim" with a testcase per scenario, classname = its kind, so CI shows
    scenarios grouped by family."""
    root = ET.Element("testsuites", _counts(report))
    suite = ET.SubElement(root, "testsuite", {**_counts(report), "timestamp": report.started})
    properties = ET.SubElement(suite, "properties")
    shown = [("backend", report.backend), ("links", report.link_mechanism)]
    if report.stopped is not None:
        shown.append(("stopped", f"{report.stopped} ({report.not_run} not run)"))
    for name, value in shown:
        ET.SubElement(properties, "property", name=name, value=_printable(value))
    for result in report.results:
        _testcase(suite, result)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")


# --- Markdown ---------------------------------------------------------------------------------


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Cells are escaped here, once, so no caller can forget."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(_md(cell) for cell in cells) + " |"

    return [line(headers), "|" + "---|" * len(headers), *(line(row) for row in rows), ""]


def _grid_md(grid: NatGrid, plot: str | None) -> list[str]:
    rows = [
        [grid.label(row), *(grid.cell(row, column) for column in grid.columns)] for row in grid.rows
    ]
    headers = [_CORNER, *map(grid.label, grid.columns)]
    image = [f"![observed path by mapping and filtering]({plot})", ""] if plot else []
    return ["## NAT grid", "", *_md_table(headers, rows), *image]


def _scenarios_md(report: RunReport) -> list[str]:
    rows = [
        [
            r.name,
            r.kind,
            r.status.value,
            peers(r),
            _path_transport(r),
            figures(r),
            _duration(r.duration_s),
            "\n".join([_check_line(c) for c in r.checks] + _notes(r)),
        ]
        for r in report.results
    ]
    headers = ["scenario", "kind", "status", "peers", "path", "figures", "time", "checks"]
    return ["## Scenarios", "", *_md_table(headers, rows)]


def _throughput_md(results: list[ScenarioResult], plot: str | None) -> list[str]:
    def cell(result: ScenarioResult, key: str) -> str:
        value = result.metrics.get(key)
        return "—" if value is None else _quantity(key, value)

    rows = [
        [
            r.name,
            cell(r, "rate_mbit"),
            cell(r, "rtt_ms"),
            cell(r, "loss_percent"),
            _route(r),
            _path_transport(r),
            cell(r, "goodput_mbit"),
            cell(r, "ratio"),
            r.status.value,
        ]
        for r in results
    ]
    headers = ["scenario", "rate", "RTT", "loss", "route", "path", "goodput", "ratio", "status"]
    image = [f"![goodput by link, direct and relay]({plot})", ""] if plot else []
    return ["## Throughput", "", *_md_table(headers, rows), *image]


def _calibration_md(results: list[ScenarioResult]) -> list[str]:
    rows = [
        [
            r.name,
            c.quantity,
            _with_unit(c.configured, c.unit),
            _with_unit(c.measured, c.unit),
            "—" if c.deviation is None else f"{c.deviation:+.1%}",
            r.status.value,
        ]
        for r in results
        for c in _calibrations(r)
    ]
    headers = ["scenario", "quantity", "configured", "measured", "deviation", "status"]
    return ["## Calibration", "", *_md_table(headers, rows)] if rows else []


def _resume_md(results: list[ScenarioResult]) -> list[str]:
    rows = []
    for r in results:
        if resume := _resume(r):
            resent, total = resume
            share = f"{resent / total:.1%}" if total else "—"
            rows.append([r.name, _num(resent), _num(total), share, r.status.value])
    headers = ["scenario", "resent chunks", "total chunks", "resent share", "status"]
    return ["## Resume", "", *_md_table(headers, rows)] if rows else []


def timeline_name(result: ScenarioResult) -> str:
    """The file of a scenario's timeline plot (a name from a merged report.json is anything)."""
    return TIMELINE_PREFIX + re.sub(r"[^a-z0-9_.-]", "_", result.name.lower())[:64] + ".png"


def _seconds(value: Metric | None) -> str:
    return "—" if value is None else _with_unit(value, "s")


def _timelines_md(results: list[ScenarioResult], plots: frozenset[str]) -> list[str]:
    """Per scenario with a timeline: its plot and each fault, when and for how long, and how
    long until data moved again (`recover_s_N_KIND`) or a new connection came up."""
    lines: list[str] = []
    for r in results:
        if not r.timeline:
            continue
        rows = []
        for number, fault in enumerate(r.timeline.get("faults", ()), 1):
            key = f"{number}_{fault['kind']}"
            rows.append(
                [
                    str(fault["kind"]),
                    _with_unit(fault["start"], "s"),
                    _with_unit(round(float(fault["end"]) - float(fault["start"]), 2), "s"),
                    _seconds(r.metrics.get(f"recover_s_{key}")),
                    _seconds(r.metrics.get(f"new_connection_s_{key}")),
                ]
            )
        headers = ["fault", "at", "lasted", "data again after", "new connection after"]
        image = timeline_name(r)
        shown = [f"![goodput over time, faults marked]({image})", ""] if image in plots else []
        bin_s = _num(r.timeline.get("bin_s", 0))
        lines += [f"### {_md(r.name)}", "", f"goodput per {bin_s} s, {_md(figures(r))}", ""]
        lines += [*shown, *(_md_table(headers, rows) if rows else [])]
    return ["## Timelines", "", *lines] if lines else []


def markdown(
    report: RunReport,
    plot: str | None = None,
    grid_plot: str | None = None,
    timelines: frozenset[str] = frozenset(),
) -> str:
    """The report for people: `plot` and `grid_plot` are the images' paths relative to it,
    `timelines` the timeline plots written beside it."""
    grid = nat_grid(report)
    throughput = _of_kind(report, THROUGHPUT)
    lines = [
        "# netsim report",
        "",
        f"**{_md(summary(report))}**",
        "",
        _md(header(report)),
        "",
        *(_grid_md(grid, grid_plot) if grid.cells else []),
        *_scenarios_md(report),
        *(_throughput_md(throughput, plot) if throughput else []),
        *_calibration_md(report.results),
        *_resume_md(report.results),
        *_timelines_md(report.results, timelines),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


# --- plot -------------------------------------------------------------------------------------

_ROUTE_COLOURS: Final = {"direct": "tab:blue", "relay": "tab:orange"}


def plot_throughput(report: RunReport, path: Path) -> bool:
    """Goodput per throughput scenario grouped by link, direct beside relay, each group with its
    link rate as a dashed reference. Writes nothing (False) when no scenario measured goodput.
    """
    groups: dict[str, list[tuple[str, float]]] = {}  # link -> (route, goodput)
    rates: dict[str, float] = {}
    for result in _of_kind(report, THROUGHPUT):
        goodput, rate = _number(result, "goodput_mbit"), _number(result, "rate_mbit")
        if goodput is None:
            continue
        groups.setdefault(_link(result), []).append((_route(result), float(goodput)))
        if rate is not None:
            rates[_link(result)] = float(rate)
    if not groups:
        return False
    widest = max(len(members) for members in groups.values())
    width = 0.8 / widest
    figure = Figure(figsize=(max(6.0, 1.8 * len(groups)), 4.5), layout="constrained")
    FigureCanvasAgg(figure)  # Agg: renders to a file, needs no display
    axes = figure.add_subplot()
    for index, (link, members) in enumerate(groups.items()):
        left = index - width * len(members) / 2
        ordered = sorted(members, key=lambda member: member[0] == "relay")  # direct first
        for offset, (route, goodput) in enumerate(ordered):
            bars = axes.bar(
                left + width * (offset + 0.5), goodput, width * 0.9, color=_ROUTE_COLOURS[route]
            )
            axes.bar_label(bars, labels=[_num(goodput)], label_type="center", fontsize=8)
        if link in rates:
            right = left + width * len(members)
            axes.hlines(rates[link], left, right, colors="black", linestyles="--")
    values = [goodput for members in groups.values() for _, goodput in members]
    values += rates.values()
    if min(values) > 0 and max(values) / min(values) >= 20:  # 1 and 100 Mbit/s both visible
        axes.set_yscale("log")
    axes.set_xticks(range(len(groups)), [label.replace(" · ", "\n") for label in groups])
    axes.set_ylabel("goodput (Mbit/s)")
    axes.set_title("netsim throughput")
    handles: list[Artist] = [Patch(color=c, label=route) for route, c in _ROUTE_COLOURS.items()]
    handles.append(Line2D([], [], color="black", linestyle="--", label="link rate"))
    axes.margins(y=0.15)  # room above the rate markers for the legend
    axes.legend(handles=handles, loc="best", fontsize=8)
    figure.savefig(path, format="png", dpi=110)
    return True


def plot_timeline(result: ScenarioResult, path: Path) -> bool:
    """Goodput over the transfer, each fault a shaded span (a line for one that strikes at
    once) labelled with its kind. False (nothing written) without a timeline."""
    data = result.timeline
    if not data or not data.get("goodput"):
        return False
    points = [(float(t), float(mbit)) for t, mbit in data["goodput"]]
    figure = Figure(figsize=(9.0, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.step([t for t, _ in points], [m for _, m in points], where="pre", color="tab:blue")
    top = max(m for _, m in points) or 1.0
    for fault in data.get("faults", ()):
        start, end = float(fault["start"]), float(fault["end"])
        if end - start >= 0.5:
            axes.axvspan(start, end, color="tab:red", alpha=0.25)
        else:
            axes.axvline(start, color="tab:red", linestyle="--")
        axes.annotate(_printable(str(fault["kind"])), (start, top * 1.05), color="tab:red")
    axes.set_ylim(0, top * 1.15)
    axes.set_xlabel("seconds since connected")
    axes.set_ylabel(f"goodput (Mbit/s, per {_num(data.get('bin_s', 1))} s)")
    axes.set_title(f"{_printable(result.name)}: goodput over time, faults marked")
    figure.savefig(path, format="png", dpi=110)
    return True


_PATH_COLOURS: Final = {"host": "#4c9f70", "srflx": "#8cc0e8", "relay": "#f2b36d"}
_NO_PATH: Final = "#d9d9d9"
_MAPPINGS: Final = ("EIM", "ADM", "APDM")
_FILTERINGS: Final = ("EIF", "ADF", "APDF")


def _grid_order(grid: NatGrid, name: str) -> tuple[int, str]:
    """Mapping-major, then filtering (the 3 x 3 of RFC 4787), then everything else by name."""
    mapping, _, filtering = grid.behaviours.get(name, "").partition("/")
    if mapping in _MAPPINGS and filtering in _FILTERINGS:
        return 3 * _MAPPINGS.index(mapping) + _FILTERINGS.index(filtering), name
    return 99, name


def plot_grid(report: RunReport, path: Path) -> bool:
    """The NAT grid as a picture: A's NAT down, B's across, both ordered mapping x filtering;
    each cell coloured by the path taken (grey: none observed), crossed and labelled with the
    expectation where it differs. A pair appears in both of its cells. False (nothing
    written) when the run had no grid scenario."""
    grid = nat_grid(report)
    if not grid.cells:
        return False
    names = sorted({*grid.rows, *grid.columns}, key=lambda n: _grid_order(grid, n))
    size = len(names)
    figure = Figure(figsize=(2.2 + 0.75 * size, 1.8 + 0.6 * size), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for (a, b), entries in grid.cells.items():
        entry = entries[-1]
        for row, column in {(a, b), (b, a)}:
            x, y = names.index(column), names.index(row)
            colour = _PATH_COLOURS.get(entry.observed or "", _NO_PATH)
            axes.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=colour))
            text = entry.observed or entry.status.value
            if entry.mismatch:
                text = f"✗ {text}\n(expected\n{entry.expected})"
            axes.text(
                x,
                y,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="darkred" if entry.mismatch else "black",
            )
    labels = [grid.label(n).replace(" (", "\n(") for n in names]
    axes.set_xlim(-0.5, size - 0.5)
    axes.set_ylim(size - 0.5, -0.5)
    axes.set_xticks(range(size), labels, rotation=90, fontsize=7)
    axes.set_yticks(range(size), labels, fontsize=7)
    blocks = [_grid_order(grid, n)[0] // 3 for n in names]  # mapping blocks, then the rest
    for index in range(1, size):
        if blocks[index] != blocks[index - 1]:
            axes.axhline(index - 0.5, color="black", linewidth=1)
            axes.axvline(index - 0.5, color="black", linewidth=1)
    axes.set_xlabel("peer B's NAT")
    axes.set_ylabel("peer A's NAT")
    axes.set_title("netsim NAT grid: path taken")
    handles: list[Artist] = [Patch(color=c, label=p) for p, c in _PATH_COLOURS.items()]
    handles.append(Patch(color=_NO_PATH, label="no path"))
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    figure.savefig(path, format="png", dpi=110)
    return True


# --- files ------------------------------------------------------------------------------------


def write_all(report: RunReport, out_dir: Path) -> dict[str, Path]:
    """Every file rendering into `out_dir`; returns them by kind (json, junit, markdown, plot).
    The plot exists only when a throughput scenario measured goodput."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "json": out_dir / "report.json",
        "junit": out_dir / "junit.xml",
        "markdown": out_dir / "report.md",
    }
    written["json"].write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    written["junit"].write_text(junit_xml(report), encoding="utf-8")
    plot = out_dir / PLOT_NAME
    plot.unlink(missing_ok=True)  # an earlier run's plot must not pass for this one's
    if plot_throughput(report, plot):
        written["plot"] = plot
    grid_plot = out_dir / GRID_PLOT_NAME
    grid_plot.unlink(missing_ok=True)
    if plot_grid(report, grid_plot):
        written["grid_plot"] = grid_plot
    for old in out_dir.glob(f"{TIMELINE_PREFIX}*.png"):
        old.unlink()
    timelines = set()
    for result in report.results:
        image = out_dir / timeline_name(result)
        if plot_timeline(result, image):
            written[f"timeline {result.name}"] = image
            timelines.add(image.name)
    text = markdown(
        report,
        PLOT_NAME if "plot" in written else None,
        GRID_PLOT_NAME if "grid_plot" in written else None,
        frozenset(timelines),
    )
    written["markdown"].write_text(text, encoding="utf-8")
    return written
