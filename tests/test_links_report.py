"""bench-links' figures from samples: medians, ratios to the link and to each peer, notes."""

from __future__ import annotations

from pathlib import Path

from benches.links_report import (
    GIB,
    PLPMTU_CEILING,
    TCP_CEILING,
    Profile,
    Sample,
    plot,
    steady_rate,
    summarise,
)


def sample(
    tool: str,
    goodput: float,
    emulator: float = 0.1,
    capped: bool = False,
    steady: float | None = None,
    drops: int = 0,
) -> Sample:
    return Sample(
        tool,
        goodput,
        cpu_seconds=2.0,
        moved_bytes=GIB // 4,
        capped=capped,
        emulator_core=emulator,
        steady_mbit=steady,
        buffer_drops=drops,
    )


def test_medians_ratios_and_notes(tmp_path: Path) -> None:
    lossy = Profile.parse("20/80/1")
    assert lossy.label == "20 Mbit/s, 80 ms RTT, 1 %" and lossy.slug == "r20-d80-l1"
    results = {
        lossy: [
            sample("fileshare-bbr", 15.0, steady=17.0),
            sample("fileshare-bbr", 16.0, steady=18.0),
            sample("fileshare-bbr", 30.0, drops=1200),
            sample("fileshare-reno", 1.5, capped=True),
            sample("tcp-bbr", 17.0, emulator=0.9),
        ]
    }
    summary = summarise(results, runs=3, cores=2, load=(1.0, 3.0))
    row = summary.rows[0]
    assert row.goodput["fileshare-bbr"] == 16.0  # the median, not the mean
    assert row.ratio("fileshare-bbr") == 0.8
    assert row.ratio("fileshare-bbr", "tcp-bbr") == 16.0 / 17.0
    assert row.cpu_per_gib["tcp-bbr"] == 8.0
    assert row.steady == {"fileshare-bbr": 17.5}  # the median of the runs that have one
    text = summary.text()
    assert "1.5*" in text and "bbr / reno 10.67" in text
    assert "CPU-starved" in text  # load 3 on 2 cores
    assert "link emulator CPU-bound" in text and lossy.label in text
    assert row.buffer_drops == {"fileshare-bbr": 1200}
    assert (
        f"full UDP receive buffer (self-inflicted loss): fileshare-bbr 1,200 on {lossy.label}"
        in text
    )
    markdown = summary.markdown("goodput.png")
    assert "| 20 Mbit/s, 80 ms RTT, 1 % | 16.0 | 1.5* | 17.0 |" in markdown
    assert "| 20 Mbit/s, 80 ms RTT, 1 % | 17.5 (0.88) | - | - |" in markdown
    assert "fileshare-bbr 17.5 (0.88)" in text
    # each tool over its own wire format's ceiling: fileshare's packets, TCP's segments
    ours = f"{16.0 / (20 * PLPMTU_CEILING):.3f} (steady {17.5 / (20 * PLPMTU_CEILING):.3f})"
    assert row.of_ceiling("fileshare-bbr") == ours
    assert row.of_ceiling("tcp-bbr") == f"{17.0 / (20 * TCP_CEILING):.3f}"
    assert row.of_ceiling("wormhole") == "-"
    assert f"| 20 Mbit/s, 80 ms RTT, 1 % | {ours} |" in markdown
    assert f"fileshare-bbr {ours}" in text
    clean = summarise({lossy: [sample("tcp-bbr", 17.0)]}, runs=1, cores=2, load=(1.0, 1.0))
    assert "no datagram was dropped by a full UDP receive buffer" in clean.text()
    plot(summary, tmp_path / "goodput.png")
    assert (tmp_path / "goodput.png").stat().st_size > 1000


def test_steady_rate_leaves_out_the_first_seconds() -> None:
    # 1 MB/s for the first 2 s (set-up and start-up), 2.5 MB/s after.
    points = [(0.5, 0), (1.0, 500_000), (2.0, 2_000_000), (3.0, 4_500_000), (4.0, 7_000_000)]
    assert steady_rate(points) == 20.0
    assert steady_rate(points[:3]) is None  # under a second after the first 2 s
    assert steady_rate([]) is None
