"""The human display on a real pseudo-terminal paused with Ctrl-S: emitting never waits for the
terminal (the event loop, and so the transfer, goes on), what waits for it is bounded (progress
coalesces in the display's state, lines up to LINES_BOUND bytes, the oldest giving way to a
notice), and the display resumes with the newest lines and the final progress."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import Iterator

import pytest
from rich.console import Console

from fileshare.cli import DisplayLog
from fileshare.display import LINES_BOUND, HumanEvents
from fileshare.names import human_size
from tests.ptyrun import START, cleaned, drained, stopped

SAVED = 3 * LINES_BOUND // 60  # "Saved d/NNNNN-xxx…" lines of about 60 bytes: thrice the bound


@pytest.fixture
def paused(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[HumanEvents, int]]:
    """A HumanEvents on a paused xterm (Rich draws its live display there), and the master."""
    monkeypatch.setenv("TERM", "xterm-256color")
    master, slave = os.openpty()
    tty = os.fdopen(slave, "w")
    stopped(master, slave)
    console = Console(file=tty, highlight=False, markup=False, emoji=False, width=100)
    yield HumanEvents(show_qr=True, console=console), master
    tty.close()


def _emit_all(events: HumanEvents) -> None:
    log = logging.getLogger("test_display")
    log.addHandler(DisplayLog(events))
    events.emit("code", code="7-word-word", link="https://example.test/#7-word-word")
    events.emit("manifest", out="/d", files=SAVED, dirs=1, bytes=SAVED, names=["d"], more=0)
    for i in range(SAVED):
        files = [{"name": f"d/{i:05d}", "done": 1, "size": 1}]
        events.emit("progress", done=i, total=SAVED, files=files)
        events.emit("saved", name=f"d/{i:05d}", path=f"/d/d/{i:05d}-" + "x" * 40)
        if i == SAVED // 3:  # as after a reconnect: twice the bound of lines follow the words
            events.emit("sas", words="alpha bravo charlie")
    events.emit("progress", done=SAVED, total=SAVED, files=[])
    log.warning("a warning, in turn")
    events.emit("done", files=SAVED, dirs=1, bytes=SAVED)


def test_a_paused_terminal_blocks_no_emit_and_bounds_what_waits(
    paused: tuple[HumanEvents, int],
) -> None:
    events, master = paused
    emitter = threading.Thread(target=_emit_all, args=(events,), daemon=True)
    emitter.start()
    emitter.join(60)
    assert not emitter.is_alive(), "emit waited for the paused terminal"
    assert 0 < events.outlet.high_water <= LINES_BOUND
    os.write(master, START.encode())
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(drained(master)))
    reader.start()
    events.outlet.close()
    events.console.file.close()
    reader.join(30)
    text = cleaned(output[0])
    dropped = re.search(r"… (\d+) lines not shown: the terminal took no output", text)
    assert dropped, text[-2000:]
    # What the user must see is never dropped: the code, its QR code, the words.
    assert "Code: 7-word-word" in text and "fileshare receive 7-word-word" in text, text[:2000]
    assert "▀" in text or "█" in text, text[:2000]
    assert "Authentication words: alpha bravo charlie" in text, text[:2000]
    saved = re.findall(r"^Saved d/(\d{5})-x+$", text, re.M)
    assert int(dropped[1]) + len(saved) >= SAVED and len(saved) < SAVED
    assert saved[-1] == f"{SAVED - 1:05d}"  # the newest lines were kept, in order
    assert saved == sorted(saved)
    size = human_size(SAVED)
    assert re.search(rf"total .*{size} / {size}", text), text[-2000:]  # the final progress
    assert "a warning, in turn" in text.split("Saved d/")[-1], text[-500:]
    assert text.rstrip().endswith(f"Done: {SAVED} files and 1 folder, {size}"), text[-500:]


async def test_a_prompt_waits_for_the_lines_before_it_then_shows(
    paused: tuple[HumanEvents, int],
) -> None:
    events, master = paused
    events.emit("manifest", out="/d", files=1, dirs=0, bytes=1, names=["a.txt"], more=0)
    shown = asyncio.ensure_future(events.prompt("Receive 1 file into /d? [y/N] "))
    await asyncio.sleep(0.5)
    assert not shown.done()  # it is not on the terminal yet: nobody is asked to answer
    os.write(master, START.encode())
    await asyncio.wait_for(shown, 10)
    out = b""
    while not out.endswith(b"[y/N] "):
        out += await asyncio.to_thread(os.read, master, 4096)
    assert cleaned(out).endswith("Offered 1 file, 1 B:\n  a.txt\nReceive 1 file into /d? [y/N] ")
    events.outlet.close()
    os.close(master)
