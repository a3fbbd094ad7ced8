"""What a person sees of a transfer, on a real pseudo-terminal (an xterm, so Rich draws its live
display): hashing before the code, one line per file plus the total in binary units, a visible
`reconnecting… (reason)` while the link is down, and an error line that starts a line of its own."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from fileshare.display import LINES_BOUND
from tests import ptyrun
from tests.conftest import require_binary
from tests.e2e import Client, Lab, big_file, sha256
from tests.test_resilience_e2e import throttled

XTERM = {"TERM": "xterm-256color", "COLUMNS": "120"}
PAUSED_FILES = 400


def human(lab: Lab, *args: str, code: str | None = None) -> Client:
    return ptyrun.on_tty(lab, *args, name=args[0], code=code, env=XTERM)


async def start_pair(lab: Lab, tmp_path: Path, *extra: str) -> tuple[Client, Client, Path]:
    src = tmp_path / "src"
    src.mkdir()
    big_file(src / "big.bin", 48)
    (src / "small.txt").write_text("a few bytes")
    sender = human(lab, "send", "--no-qr", *extra, str(src / "big.bin"), str(src / "small.txt"))
    code = await ptyrun.code_on(sender)
    receiver = human(lab, "receive", "--out", str(tmp_path / "out"), *extra, code=code)
    return sender, receiver, src


def progress_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(r" / [\d.]+ (B|KiB|MiB|GiB) ", line)]


async def test_progress_lines_and_a_visible_reconnect(lab: Lab, tmp_path: Path) -> None:
    require_binary("nft")
    require_binary("tc")
    fast = ("--stall-timeout", "3", "--timeout", "15")
    with throttled(lab, "40mbit"):
        sender, receiver, src = await start_pair(lab, tmp_path, *fast)
        assert re.search(r"hashing big\.bin", ptyrun.screen(sender)), ptyrun.screen(sender)
        await ptyrun.wait_screen(receiver, r"total .*MiB / 48\.0 MiB .*MiB/s")
        with lab.blocked("meta l4proto udp"):  # every peer path dies, signaling lives
            for client in (sender, receiver):
                await ptyrun.wait_screen(client, r"reconnecting… \(no word from the peer", 30)
            await asyncio.sleep(2)
        assert await receiver.wait(240) == 0, ptyrun.screen(receiver)[-3000:]
        assert await sender.wait(60) == 0, ptyrun.screen(sender)[-3000:]
    assert sha256(tmp_path / "out" / "big.bin") == sha256(src / "big.bin")
    for client in (sender, receiver):
        text = ptyrun.screen(client)
        lines = progress_lines(text)
        assert any(re.match(r"\s*total ", line) for line in lines), text[-3000:]
        assert any(re.match(r"\s+big\.bin ", line) for line in lines), text[-3000:]
        for line in lines:  # one unit system, and a dash where nothing is known yet
            assert "MB" not in line and "?" not in line, line
        assert re.search(r"Done: 2 files, 48\.0 MiB\n", text), text[-3000:]
        assert "Traceback" not in text


async def test_an_error_ends_the_progress_display_first(lab: Lab, tmp_path: Path) -> None:
    """The file shrinks under the sender mid-transfer: the live display is finished, and the
    error is a line of its own (not glued to a bar), exit 1."""
    require_binary("tc")
    with throttled(lab, "24mbit"):
        sender, receiver, src = await start_pair(lab, tmp_path)
        await ptyrun.wait_screen(sender, r"total .*MiB / 48\.0 MiB")
        os.truncate(src / "big.bin", 1024 * 1024)
        assert await sender.wait(60) == 1
        receiver.kill()
    text = ptyrun.screen(sender).rstrip("\n")
    last = text.splitlines()[-1]
    assert last == "fileshare: big.bin changed while being sent", text[-2000:]
    assert progress_lines(text), text[-2000:]


async def test_terminals_paused_with_ctrl_s_stop_neither_side(lab: Lab, tmp_path: Path) -> None:
    """Both terminals paused (Ctrl-S) from the code on: the transfer completes all the same, the
    lines that waited were bounded (the oldest gave way to a notice), and the display resumes
    with the newest lines and the final progress."""
    src = tmp_path / "src"
    src.mkdir()
    big_file(src / "big.bin", 6)  # with the live display on: its redraws fill a pty many times
    for i in range(PAUSED_FILES):  # their "Saved" lines: over LINES_BOUND
        (src / f"{i:04d}-{'n' * 200}.txt").write_text(str(i))
    out = tmp_path / "out"
    with ptyrun.in_lab(lab, "send", "send", "--no-qr", str(src), env=XTERM) as sender:
        code = await ptyrun.code_on(sender)
        sender.pause()
        receive = ("receive", "--yes", "--out", str(out))
        with ptyrun.in_lab(lab, "recv", *receive, code=code, env=XTERM) as receiver:
            receiver.pause()
            await _received(out / "src", PAUSED_FILES + 1)
            assert sha256(out / "src" / "big.bin") == sha256(src / "big.bin")
            terms = (sender, receiver)
            shown = [len(ptyrun.text(term)) for term in terms]
            await asyncio.sleep(1)
            for term, before in zip(terms, shown, strict=True):  # paused: nothing more shown
                assert len(ptyrun.text(term)) == before, ptyrun.screen(term)[-2000:]
                term.resume()
            assert await receiver.wait(60) == 0, ptyrun.screen(receiver)[-3000:]
        assert await sender.wait(60) == 0, ptyrun.screen(sender)[-3000:]
    text = ptyrun.screen(receiver)
    dropped = re.search(r"… (\d+) lines not shown: the terminal took no output", text)
    assert dropped, text[-3000:]
    saved = re.findall(r"^Saved\s+src/(\d{4})-n", text, re.M)  # Rich wraps the long lines
    assert len(saved) < PAUSED_FILES <= len(saved) + int(dropped[1])
    assert re.search(r"\nSaved [^\n]+\n(total [^\n]+\n)*Done: ", text), text[-3000:]  # the newest
    assert len(saved) * len(f"Saved src/0000-{'n' * 200}.txt") <= LINES_BOUND  # what waited
    for term, before in zip(terms, shown, strict=True):
        resumed = ptyrun.text(term)[before:]
        assert len(resumed) < 2 * LINES_BOUND  # progress coalesced; lines bounded
        text = ptyrun.screen(term)
        assert re.search(r"total .* 6\.\d MiB / 6\.\d MiB ", text), text[-3000:]
        assert re.search(rf"Done: {PAUSED_FILES + 1} files and 1 folder, 6\.\d MiB\n", text)
        assert "Traceback" not in text


async def _received(folder: Path, count: int, timeout: float = 90) -> None:
    """Until `folder` holds `count` files under their final names."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (
        folder.is_dir() and len([p for p in folder.iterdir() if p.suffix != ".part"]) == count
    ):
        assert loop.time() < deadline, sorted(folder.iterdir()) if folder.is_dir() else "none"
        await asyncio.sleep(0.2)
