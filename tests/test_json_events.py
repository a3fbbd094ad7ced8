"""`--json` events reach a reader that falls behind without stopping the emitter (the event
loop, and so the transfer): a 1 GiB send whose stdout nobody drained froze once its pipe was
full, and the receiver gave up on its silence. Real pipes, shrunk to one page."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading

from fileshare.cli import JsonEvents

F_SETPIPE_SZ = 1031  # <linux/fcntl.h>


def _pipe() -> tuple[int, int]:
    read, write = os.pipe()
    fcntl.fcntl(write, F_SETPIPE_SZ, 4096)
    return read, write


def test_a_full_pipe_does_not_block_emit_and_nothing_but_progress_is_dropped() -> None:
    read, write = _pipe()
    out = os.fdopen(write, "w")
    events = JsonEvents(out)
    for i in range(20_000):  # far more than the pipe holds: emit returns all the same
        events.emit("progress", done=i)
        if i % 5000 == 0:
            events.emit("file", index=i, name="x" * 200)
    events.emit("done", bytes=1)
    drained: list[bytes] = []
    reader = threading.Thread(target=lambda: drained.append(_read_all(read)))
    reader.start()
    events.close()
    out.close()
    reader.join()
    lines = [json.loads(line) for line in drained[0].decode().splitlines()]
    kinds = [line["event"] for line in lines]
    assert [line["index"] for line in lines if line["event"] == "file"] == [0, 5000, 10000, 15000]
    assert kinds[-1] == "done"
    progress = [line["done"] for line in lines if line["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 19_999
    assert len(progress) < 20_000  # coalesced while the reader lagged


def test_a_reader_that_goes_away_ends_the_output_not_the_emitter() -> None:
    read, write = _pipe()
    out = os.fdopen(write, "w")
    saved = os.dup(1)  # the writer sends stdout to /dev/null on a broken pipe: restore it
    try:
        events = JsonEvents(out)
        os.close(read)
        for i in range(100):
            events.emit("progress", done=i)
            events.emit("file", index=i)
        events.close()  # returns: nothing left waiting for a reader that is gone
        assert events.out is None
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        with contextlib.suppress(BrokenPipeError):
            out.close()


def _read_all(fd: int) -> bytes:
    chunks = []
    while block := os.read(fd, 65536):
        chunks.append(block)
    os.close(fd)
    return b"".join(chunks)
