"""The figures of `make bench-links`: medians per tool and link, ratios to the link and to each
peer, the wire-format ceilings, as text, Markdown and a plot. Pure functions of the samples."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from fileshare.sctp import plpmtu

GIB = 2**30
# What a full-size packet carries over what it puts on the wire (tbf counts Ethernet frames).
# TCP: 1448 bytes of payload (timestamps on) in a 1514-byte frame.
TCP_CEILING = 1448 / 1514
# aiortc: 1172 bytes of user data + DATA chunk (16) + SCTP common header (12) + DTLS 1.2
# AES-GCM record (13 header + 8 explicit nonce + 16 tag) + UDP (8) + IPv4 (20) + Ethernet (14).
SCTP_CEILING = 1172 / (1172 + 16 + 12 + 37 + 8 + 20 + 14)
# The same with the packets path MTU discovery settles on where the MTU is 1,500 (netsim's).
PLPMTU_PACKET = 1432
PLPMTU_CEILING = plpmtu.user_data_size(PLPMTU_PACKET) / (PLPMTU_PACKET + 37 + 8 + 20 + 14)


def ceiling(tool: str) -> float:
    """The share of the link `tool`'s wire format leaves for payload (bench-links' paths are
    direct, so fileshare's packets are path MTU discovery's)."""
    return PLPMTU_CEILING if tool.startswith("fileshare") else TCP_CEILING


EMULATOR_BUSY = 0.85  # of a core: above this the emulator, not the tool, may set the pace
# Steady goodput leaves out each run's first seconds: a transfer's set-up (fileshare's key
# confirmation and manifest take round trips before the first byte) and its start-up.
STEADY_AFTER_S = 2.0


@dataclass(frozen=True)
class Profile:
    rate_mbit: int
    rtt_ms: int
    loss_percent: float

    @classmethod
    def parse(cls, text: str) -> Profile:
        """ "RATE/RTT/LOSS" in Mbit/s, ms and percent."""
        rate, rtt, loss = text.split("/")
        return cls(int(rate), int(rtt), float(loss))

    @property
    def label(self) -> str:
        delay = f"{self.rtt_ms} ms RTT" if self.rtt_ms else "no added delay"
        return f"{self.rate_mbit} Mbit/s, {delay}, {self.loss_percent:g} %"

    @property
    def slug(self) -> str:
        return f"r{self.rate_mbit}-d{self.rtt_ms}-l{self.loss_percent:g}".replace(".", "_")


@dataclass(frozen=True)
class Sample:
    tool: str
    goodput_mbit: float
    cpu_seconds: float  # sender + receiver processes
    moved_bytes: int
    capped: bool
    emulator_core: float  # the busiest link emulator's share of one core during the run
    steady_mbit: float | None = None  # see steady_rate
    buffer_drops: int = 0  # datagrams a full UDP receive buffer refused, at either end

    @property
    def cpu_per_gib(self) -> float:
        return self.cpu_seconds / (self.moved_bytes / GIB) if self.moved_bytes else float("nan")


def steady_rate(points: list[tuple[float, int]], after: float = STEADY_AFTER_S) -> float | None:
    """Mbit/s from the first point `after` seconds or more into a run to its last; `points` are
    (seconds into the run, bytes done so far), in order. None if that leaves under a second."""
    start = next((point for point in points if point[0] >= after), None)
    if start is None or points[-1][0] - start[0] < 1.0:
        return None
    return (points[-1][1] - start[1]) * 8 / (points[-1][0] - start[0]) / 1e6


def describe(sample: Sample) -> str:
    capped = " (capped)" if sample.capped else ""
    steady = f" (steady {sample.steady_mbit:.1f})" if sample.steady_mbit is not None else ""
    return (
        f"{sample.tool:<15}{sample.goodput_mbit:7.1f} Mbit/s{capped}{steady}  "
        f"CPU {sample.cpu_per_gib:6.1f} s/GiB  emulator {sample.emulator_core:4.0%} of a core"
    )


@dataclass(frozen=True)
class Row:
    profile: Profile
    goodput: dict[str, float]  # medians by tool
    cpu_per_gib: dict[str, float]
    capped: set[str]
    emulator_core: float  # the highest seen in this profile
    steady: dict[str, float]  # medians by tool of the samples that have one
    buffer_drops: dict[str, int]  # totals by tool over its runs (only tools that had any)

    def of_ceiling(self, tool: str) -> str:
        """Whole-run and steady goodput over what `tool`'s wire format allows on this link:
        the clean-link goal, with TCP's own start-up cost beside it."""
        if tool not in self.goodput:
            return "-"
        allowed = self.profile.rate_mbit * ceiling(tool)
        steady = self.steady.get(tool)
        tail = f" (steady {steady / allowed:.3f})" if steady is not None else ""
        return f"{self.goodput[tool] / allowed:.3f}{tail}"

    def ratio(self, tool: str, other: str | None = None) -> float | None:
        """`tool`'s goodput over `other`'s, or over the link rate."""
        if tool not in self.goodput:
            return None
        base = self.profile.rate_mbit if other is None else self.goodput.get(other)
        return self.goodput[tool] / base if base else None


@dataclass(frozen=True)
class Summary:
    rows: list[Row]
    tools: list[str]
    runs: int
    cores: int
    load: tuple[float, float]

    @property
    def starved(self) -> bool:
        """Other work wanted more than the machine's cores during the run."""
        return max(self.load) > self.cores

    def _notes(self) -> list[str]:
        notes = [
            f"medians of {self.runs} alternating run(s); load average {self.load[0]:.1f} before,"
            f" {self.load[1]:.1f} after, on {self.cores} cores"
            + (" (CPU-starved: other load exceeded the cores)" if self.starved else ""),
            f"wire ceilings: TCP {TCP_CEILING:.3f} of the link, fileshare (SCTP/DTLS/UDP)"
            f" {SCTP_CEILING:.3f} with aiortc's 1172-byte chunks, {PLPMTU_CEILING:.3f} with"
            f" {PLPMTU_PACKET}-byte packets (path MTU discovery on a 1,500-byte MTU)",
        ]
        busy = [r.profile.label for r in self.rows if r.emulator_core > EMULATOR_BUSY]
        if busy:
            notes.append("link emulator CPU-bound (> 85 % of a core) on: " + "; ".join(busy))
        else:
            notes.append("the link emulator stayed under 85 % of a core throughout")
        dropped = [
            f"{tool} {count:,} on {row.profile.label}"
            for row in self.rows
            for tool, count in row.buffer_drops.items()
        ]
        if dropped:
            notes.append(
                "datagrams dropped by a full UDP receive buffer (self-inflicted loss): "
                + "; ".join(dropped)
            )
        else:
            notes.append("no datagram was dropped by a full UDP receive buffer")
        return notes

    def _ratio_columns(self) -> list[tuple[str, str, str | None]]:
        columns: list[tuple[str, str, str | None]] = []
        for ours in ("fileshare-bbr", "fileshare-reno"):
            if ours not in self.tools:
                continue
            columns.append((f"{ours} / link", ours, None))
            for peer in self.tools:
                if not peer.startswith("fileshare"):
                    columns.append((f"{ours} / {peer}", ours, peer))
        if "fileshare-reno" in self.tools and "fileshare-bbr" in self.tools:
            columns.append(("bbr / reno", "fileshare-bbr", "fileshare-reno"))
        return columns

    def _cells(self, row: Row) -> tuple[list[str], list[str], list[str]]:
        goodput = [
            f"{row.goodput[t]:.1f}{'*' if t in row.capped else ''}" if t in row.goodput else "-"
            for t in self.tools
        ]
        ratios = []
        for _, ours, other in self._ratio_columns():
            value = row.ratio(ours, other)
            ratios.append(f"{value:.2f}" if value is not None else "-")
        cpu = [f"{row.cpu_per_gib.get(t, float('nan')):.1f}" for t in self.tools]
        return goodput, ratios, cpu

    def _steady_cells(self, row: Row) -> list[str]:
        """Steady goodput and its ratio to the link."""
        rate = row.profile.rate_mbit
        return [
            f"{row.steady[t]:.1f} ({row.steady[t] / rate:.2f})" if t in row.steady else "-"
            for t in self.tools
        ]

    def text(self) -> str:
        lines = ["goodput, Mbit/s (* = capped run counted by what it moved)"]
        lines.append(f"{'link':<30}" + "".join(f"{t:>16}" for t in self.tools))
        for row in self.rows:
            goodput, _, _ = self._cells(row)
            lines.append(f"{row.profile.label:<30}" + "".join(f"{g:>16}" for g in goodput))
        lines.append("ratios")
        for row in self.rows:
            _, ratios, _ = self._cells(row)
            names = [column[0] for column in self._ratio_columns()]
            pairs = zip(names, ratios, strict=True)
            lines.append(f"  {row.profile.label}: " + ", ".join(f"{n} {r}" for n, r in pairs))
        lines.append(f"steady goodput after the first {STEADY_AFTER_S:g} s, Mbit/s (/ link)")
        for row in self.rows:
            pairs = zip(self.tools, self._steady_cells(row), strict=True)
            lines.append(f"  {row.profile.label}: " + ", ".join(f"{t} {c}" for t, c in pairs))
        lines.append("of its own wire ceiling, whole run (steady)")
        for row in self.rows:
            shares = ", ".join(f"{t} {row.of_ceiling(t)}" for t in self.tools)
            lines.append(f"  {row.profile.label}: {shares}")
        lines.append("CPU-seconds per GiB, sender + receiver")
        for row in self.rows:
            _, _, cpu = self._cells(row)
            pairs = zip(self.tools, cpu, strict=True)
            lines.append(f"  {row.profile.label}: " + ", ".join(f"{t} {c}" for t, c in pairs))
        return "\n".join(lines + self._notes())

    def markdown(self, plot_name: str) -> str:
        out = ["# bench-links: fileshare against kernel TCP and magic-wormhole", ""]
        out += [f"- {note}" for note in self._notes()]
        cells = [self._cells(row) for row in self.rows]
        names = [c[0] for c in self._ratio_columns()]
        out += _table("Goodput (Mbit/s)", self.tools, self.rows, [c[0] for c in cells])
        out += _table("Ratios", names, self.rows, [c[1] for c in cells])
        out += _table(
            f"Steady goodput after the first {STEADY_AFTER_S:g} s of each run, Mbit/s (/ link)",
            self.tools,
            self.rows,
            [self._steady_cells(row) for row in self.rows],
        )
        out += _table(
            "Goodput over each tool's own wire ceiling, whole run (steady)",
            self.tools,
            self.rows,
            [[row.of_ceiling(t) for t in self.tools] for row in self.rows],
        )
        out += _table(
            "CPU-seconds per GiB (sender + receiver)", self.tools, self.rows, [c[2] for c in cells]
        )
        out += ["", f"![goodput by link and tool]({plot_name})", ""]
        return "\n".join(out)


def _table(title: str, headers: list[str], rows: list[Row], cells: list[list[str]]) -> list[str]:
    lines = ["", f"## {title}", "", "| link | " + " | ".join(headers) + " |"]
    lines.append("|---" * (len(headers) + 1) + "|")
    for row, values in zip(rows, cells, strict=True):
        lines.append(f"| {row.profile.label} | " + " | ".join(values) + " |")
    return lines


def summarise(
    results: dict[Profile, list[Sample]], runs: int, cores: int, load: tuple[float, float]
) -> Summary:
    rows = []
    tools: list[str] = []
    for profile, samples in results.items():
        by_tool: dict[str, list[Sample]] = {}
        for sample in samples:
            by_tool.setdefault(sample.tool, []).append(sample)
            if sample.tool not in tools:
                tools.append(sample.tool)
        rows.append(
            Row(
                profile,
                {t: statistics.median(s.goodput_mbit for s in ss) for t, ss in by_tool.items()},
                {t: statistics.median(s.cpu_per_gib for s in ss) for t, ss in by_tool.items()},
                {t for t, ss in by_tool.items() if any(s.capped for s in ss)},
                max((s.emulator_core for s in samples), default=0.0),
                {
                    t: statistics.median(found)
                    for t, ss in by_tool.items()
                    if (found := [s.steady_mbit for s in ss if s.steady_mbit is not None])
                },
                {
                    t: drops
                    for t, ss in by_tool.items()
                    if (drops := sum(s.buffer_drops for s in ss))
                },
            )
        )
    return Summary(rows, tools, runs, cores, load)


def plot(summary: Summary, path: Path) -> None:
    """Grouped bars: goodput as a fraction of the link, per profile and tool."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(max(6, 1.8 * len(summary.rows)), 4))
    width = 0.8 / max(1, len(summary.tools))
    for i, tool in enumerate(summary.tools):
        xs = [j + i * width for j in range(len(summary.rows))]
        ys = [row.ratio(tool) or 0.0 for row in summary.rows]
        axes.bar(xs, ys, width, label=tool)
    axes.axhline(TCP_CEILING, color="grey", linestyle=":", linewidth=1)
    axes.axhline(SCTP_CEILING, color="black", linestyle="--", linewidth=1)
    axes.set_xticks([j + 0.4 - width / 2 for j in range(len(summary.rows))])
    axes.set_xticklabels([r.profile.label.replace(", ", "\n") for r in summary.rows], fontsize=7)
    axes.set_ylabel("goodput / link rate")
    axes.set_ylim(0, 1.05)
    axes.legend(fontsize=7, ncol=len(summary.tools))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
