"""bench-links' figures from samples: medians, ratios to the link and to each peer, notes."""

from __future__ import annotations

from pathlib import Path

from benches.links_report import GIB, Profile, Sample, plot, summarise


def sample(tool: str, goodput: float, emulator: float = 0.1, capped: bool = False) -> Sample:
    return Sample(
        tool, goodput, cpu_seconds=2.0, moved_bytes=GIB // 4, capped=capped, emulator_core=emulator
    )


def test_medians_ratios_and_notes(tmp_path: Path) -> None:
    lossy = Profile.parse("20/80/1")
    assert lossy.label == "20 Mbit/s, 80 ms RTT, 1 %" and lossy.slug == "r20-d80-l1"
    results = {
        lossy: [
            sample("fileshare-bbr", 15.0),
            sample("fileshare-bbr", 16.0),
            sample("fileshare-bbr", 30.0),
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
    text = summary.text()
    assert "1.5*" in text and "bbr / reno 10.67" in text
    assert "CPU-starved" in text  # load 3 on 2 cores
    assert "link emulator CPU-bound" in text and lossy.label in text
    markdown = summary.markdown("goodput.png")
    assert "| 20 Mbit/s, 80 ms RTT, 1 % | 16.0 | 1.5* | 17.0 |" in markdown
    plot(summary, tmp_path / "goodput.png")
    assert (tmp_path / "goodput.png").stat().st_size > 1000
