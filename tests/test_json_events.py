"""`--json` events reach a reader that falls behind without stopping the emitter (the event
loop, and so the transfer): a 1 GiB send whose stdout nobody drained froze once its pipe was
full, and the receiver gave up on its silence. Real pipes, shrunk to one page."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from typing import Any, TextIO

from fileshare.cli import JsonEvents
from tests.ptyrun import drained

F_SETPIPE_SZ = 1031  # <linux/fcntl.h>


def small_pipe() -> tuple[int, int]:
    """A pipe that holds one page."""
    read, write = os.pipe()
    fcntl.fcntl(write, F_SETPIPE_SZ, 4096)
    return read, write


def test_a_full_pipe_does_not_block_emit_and_nothing_but_progress_is_dropped() -> None:
    read, write = small_pipe()
    out = os.fdopen(write, "w")
    events = JsonEvents(out)
    for i in range(20_000):  # far more than the pipe holds: emit returns all the same
        events.emit("progress", done=i)
        if i % 5000 == 0:
            events.emit("file", index=i, name="x" * 200)
    events.emit("done", bytes=1)
    lines = _closed(events, out, read)
    kinds = [line["event"] for line in lines]
    assert [line["index"] for line in lines if line["event"] == "file"] == [0, 5000, 10000, 15000]
    assert kinds[-1] == "done"
    progress = [line["done"] for line in lines if line["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 19_999
    assert len(progress) < 20_000  # coalesced while the reader lagged


def test_lines_waiting_for_a_stopped_reader_are_bounded_and_the_loss_reported() -> None:
    read, write = small_pipe()
    out = os.fdopen(write, "w")
    events = JsonEvents(out)
    line = len(json.dumps({"event": "saved", "ts": 0.0, "name": "x" * 1000})) + 1
    total = 3 * JsonEvents.JSON_BOUND // line
    for i in range(total):  # three times what may wait
        events.emit("saved", index=i, name="x" * 1000)
    assert events.outlet.high_water <= JsonEvents.JSON_BOUND
    events.emit("done", bytes=1)
    lines = _closed(events, out, read)
    lost = sum(line["lines"] for line in lines if line["event"] == "dropped")
    saved = [line["index"] for line in lines if line["event"] == "saved"]
    assert lost > total // 2 and len(saved) + lost == total, (lost, len(saved))
    assert saved[-1] == total - 1 and lines[-1]["event"] == "done"  # the oldest gave way


def test_a_reader_that_goes_away_ends_the_output_not_the_emitter() -> None:
    read, write = small_pipe()
    out = os.fdopen(write, "w")
    events = JsonEvents(out)
    os.close(read)
    for i in range(100):
        events.emit("progress", done=i)
        events.emit("file", index=i)
    events.close()  # returns: nothing left waiting for a reader that is gone
    assert events.outlet.broken
    out.close()  # what it held goes to /dev/null, where the writer pointed its descriptor


def _closed(events: JsonEvents, out: TextIO, read: int) -> list[dict[str, Any]]:
    """The events written, read as the writer ends."""
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(drained(read)))
    reader.start()
    events.close()
    out.close()
    reader.join()
    return [json.loads(line) for line in output[0].decode().splitlines()]
