"""`netsim.timeline`: goodput over time from a receiver's progress events, faults marked."""

from __future__ import annotations

from netsim import timeline


def test_bins_hold_the_bytes_newly_held_in_them() -> None:
    # 1 MB held by 0.5 s, 3 MB by 1.5 s, then a restarted receiver counting from 2 MB again.
    progress = [(100.0, 0), (100.5, 1_000_000), (101.5, 3_000_000), (102.2, 2_000_000)]
    points = timeline.goodput(progress, 100.0, 103.0)
    assert points == [[1.0, 8.0], [2.0, 16.0], [3.0, 0.0]]


def test_what_was_held_before_the_start_is_not_goodput() -> None:
    points = timeline.goodput([(9.0, 5_000_000), (10.5, 6_000_000)], 10.0, 11.0)
    assert points == [[1.0, 8.0]]


def test_long_transfers_get_wider_bins_and_at_most_max_points() -> None:
    assert timeline.bin_seconds(30) == 1.0
    assert timeline.bin_seconds(1500) == 4.0
    progress = [(float(t), t * 2_500_000) for t in range(1501)]
    points = timeline.goodput(progress, 0.0, 1500.0)
    assert len(points) <= timeline.MAX_POINTS
    assert {mbit for _, mbit in points[1:-1]} == {20.0}  # 2.5 MB/s (the last bin holds its end)


def test_build_takes_progress_events_only_and_marks_relative_to_the_start() -> None:
    events = [
        {"event": "connected", "ts": 50.0},
        {"event": "progress", "ts": 51.0, "done": 250_000},
        {"event": "reconnecting", "ts": 52.0},
        {"event": "progress", "ts": 53.5, "done": 500_000},
    ]
    marks = [timeline.Mark("cut", 51.2, 56.2), timeline.Mark("rebind", 57.0, 57.0)]
    built = timeline.build(events, marks, 50.0)
    assert built["bin_s"] == 1.0
    assert built["goodput"] == [[1.0, 0.0], [2.0, 2.0], [3.0, 0.0], [4.0, 2.0]]
    assert built["faults"] == [
        {"kind": "cut", "start": 1.2, "end": 6.2},
        {"kind": "rebind", "start": 7.0, "end": 7.0},
    ]


def test_no_progress_is_an_empty_timeline() -> None:
    assert timeline.build([], [], 10.0)["goodput"] == [[1.0, 0.0]]
