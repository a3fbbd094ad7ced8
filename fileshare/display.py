"""What a person sees of a transfer: the code and its QR code, the words to compare, and a
progress display: one line per file on the move plus the total, sizes and rates in one unit
system (binary: KiB, MiB, MiB/s), a visible `reconnecting… (reason)` state whose clock keeps
running, and the hashing of large files before the code appears.

Every field comes through `shown()` (names and reasons are the peer's or the server's), and
Rich's markup and emoji codes are off: `[link=…]` in a peer's file name is printed as text.
The live display is always stopped before an error line, so a failure never lands in the middle
of a bar.

Nothing here writes on the caller's thread (the event loop): a terminal paused with Ctrl-S, or a
pty nobody reads, would block it and stop the transfer. Lines, the QR code, the display's start
and stop go to an Outlet's thread, in order, at most LINES_BOUND bytes of lines waiting (past it
the oldest give way to a `… N lines not shown` line); progress only changes the display's state,
which Rich's own refresh thread draws, so progress coalesces by itself while the terminal is
stopped.
"""

from __future__ import annotations

import functools
import io
import os
import time
from collections.abc import Callable
from typing import Any, Final

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.text import Text

from fileshare.names import counts_text, human_size
from fileshare.outlet import Outlet
from fsproto.untrusted import shown

STALLED_SECONDS: Final = 3.0  # no bytes for this long: the rate and ETA show a dash, not a guess
NAME_CHARS: Final = 40  # of a file's name on its line
MAX_FILE_LINES: Final = 4  # a transfer moves a few files at once; the list is bounded anyway
LINES_BOUND: Final = 64 * 1024  # bytes of lines waiting for a stopped terminal: ~1,000 lines


class SizeColumn(ProgressColumn):
    """`12.0 MiB / 2.0 GiB`, binary units like every size fileshare prints."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text(human_size(int(task.completed)))
        return Text(f"{human_size(int(task.completed))} / {human_size(int(task.total))}")


def _moving(task: Task) -> float | None:
    """Bytes per second, or None while nothing has moved lately (a reconnect, a stall)."""
    if task.finished:
        return task.finished_speed
    last = task.fields.get("last_moved", 0.0)
    if time.monotonic() - last > STALLED_SECONDS:
        return None
    return task.speed


class RateColumn(ProgressColumn):
    """`3.2 MiB/s`; a dash until it is known or while nothing moves (never `?`)."""

    def render(self, task: Task) -> Text:
        speed = _moving(task)
        return Text("-" if not speed else f"{human_size(int(speed))}/s")


class EtaColumn(ProgressColumn):
    """Time left at the current rate; a dash when there is no rate to go by."""

    def render(self, task: Task) -> Text:
        speed = _moving(task)
        if task.finished:
            return Text("done")
        if not speed or task.total is None:
            return Text("-")
        left = int((task.total - task.completed) / speed)
        return Text(f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}")


class QuietProgress(Progress):
    """Rich's progress display, drawn only by its live display's thread and around printed
    lines: `add_task` would redraw it on the caller's thread, the event loop, and block there
    while the terminal is stopped."""

    def refresh(self) -> None:
        """The live display's thread redraws it within 1/10 s."""


class HumanEvents:
    """A person's view of the events, on stderr (stdout stays free for --json's events)."""

    def __init__(self, show_qr: bool, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, markup=False, emoji=False)
        self.show_qr = show_qr
        self.outlet = Outlet("display", LINES_BOUND, self.console.file.fileno(), self._dropped)
        self.progress: Progress | None = None  # the live display, one per phase
        self.live = False
        self.total: TaskID | None = None
        self.files: dict[str, TaskID] = {}  # file name -> its line, while it moves
        self.hashing: TaskID | None = None
        self.out = ""  # the receiver's --out, as the offer names it

    def close(self) -> None:
        """End the live display so what follows starts on a clean line; a later one is new."""
        if self.progress is not None and self.live:
            self.outlet.put(self.progress.stop, 0)
        self.progress, self.live, self.total, self.files = None, False, None, {}

    async def prompt(self, text: str) -> None:
        """`text` after the lines before it, with no newline; returns once it is shown."""
        self.outlet.put(functools.partial(self.console.out, text, end=""), 0)
        await self.outlet.written()

    def log(self, line: str) -> None:
        """A log record's line, above the live display like the others."""
        self._raw(f"{line}\n")

    def _print(self, line: RenderableType, kept: bool = False) -> None:
        """`kept`: never dropped while the terminal takes no output (what the user must see:
        the code, the words, the error; a few lines a run)."""
        self.outlet.put(functools.partial(self.console.print, line), 0 if kept else _size(line))

    def _raw(self, text: str, kept: bool = False) -> None:
        """As it is: not wrapped nor cut at the terminal's width."""
        size = 0 if kept else len(text.encode())
        self.outlet.put(functools.partial(self.console.out, text, end=""), size)

    def _dropped(self, lines: int) -> Callable[[], None]:
        notice = f"… {lines} lines not shown: the terminal took no output for a while"
        return functools.partial(self.console.print, notice)

    def _display(self) -> Progress:
        if self.progress is None:
            self.progress = QuietProgress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                SizeColumn(),
                RateColumn(),
                EtaColumn(),
                console=self.console,
                transient=False,
            )
        return self.progress

    def _start(self) -> None:
        if not self.live:
            self.outlet.put(self._display().start, 0)
            self.live = True

    def emit(self, event: str, **fields: Any) -> None:
        f: dict[str, Any] = {k: shown(v) if isinstance(v, str) else v for k, v in fields.items()}
        match event:
            case "hashing":
                self._hashing(f["name"], f["done"], f["size"])
            case "prepared":
                self._hashed()
                self._print(f"Sending {counts_text(f['files'], f['dirs'], f['bytes'])}")
            case "code":
                self._code(f["code"], fields["link"])
            case "sas":
                self._print(
                    Text.assemble(
                        "Authentication words: ",
                        (f["words"], "bold"),
                        " (the same on both sides, or something is wrong)",
                    ),
                    kept=True,
                )
            case "connected":
                p = {k: shown(v) for k, v in f["path"].items()}  # remote: the peer's candidate
                via = f", TURN over {p['turn']}" if "turn" in p else ""
                self._print(f"Connected ({p['local']} -> {p['remote']} over {p['protocol']}{via})")
                self._describe_total("total")
            case "manifest":
                self.out = fields["out"] + os.sep  # "Saved" lines name files under it
                self._print(f"Offered {counts_text(f['files'], f['dirs'], f['bytes'])}:")
                for name in fields["names"]:
                    self._print(f"  {shown(name)}")
                if f["more"]:
                    self._print(f"  … and {f['more']} more")
            case "peer_paused":
                self._print(
                    f"The other side was interrupted; waiting up to {f['seconds']} s "
                    "for it to run the same command again"
                )
            case "reconnecting":
                if self.total is None:
                    self._print(f"Reconnecting… ({f['reason']})")
                self._describe_total(f"reconnecting… ({f['reason']})")
            case "signaling_restored":
                self._print(f"Back on the signaling server after {f['after']} s")
            case "skipped":
                self._print(f"Skipped {f['path']}: {f['reason']}")
            case "file" if f["resumed"] and f["resumed"] == f["chunks"]:
                self._print(f"Already received {f['name']} ({human_size(f['size'])})")
            case "file" if f["resumed"]:  # the offer listed the names; per file, only news
                self._print(
                    f"Resuming {f['name']} ({human_size(f['size'])}): "
                    f"{f['resumed']} of {f['chunks']} chunks held"
                )
            case "saved":
                self._file_done(fields["name"])
                self._print(f"Saved {shown(fields['path'].removeprefix(self.out))}")
            case "file_failed":
                self._file_done(fields["name"])
                self._print(Text.assemble(("Failed", "red"), f" {f['name']}: {f['reason']}"))
            case "progress":
                self._progress(f["done"], f["total"], fields.get("files", []))
            case "done":
                self.close()
                self._print(f"Done: {counts_text(f['files'], f['dirs'], f['bytes'])}")
            case "error":
                self.close()
                self._raw(f"fileshare: {f['message']}\n", kept=True)

    def _code(self, code: str, link: str) -> None:
        self._print(Text.assemble("Code: ", (code, "bold")), kept=True)
        self._print(f"On the other machine: fileshare receive {code}", kept=True)
        if self.show_qr:
            import segno

            self._print(f"Or scan this code (opens {shown(link)}):", kept=True)
            qr = io.StringIO()
            segno.make(link, error="m").terminal(qr, compact=True)
            self._raw(qr.getvalue(), kept=True)

    def _hashing(self, name: str, done: int, size: int) -> None:
        label = f"hashing {_cut(name)}"
        if self.hashing is None:  # added before the display starts, which draws it at once
            self.hashing = self._display().add_task(label, total=size, last_moved=time.monotonic())
        self._display().update(
            self.hashing, description=label, completed=done, total=size, last_moved=time.monotonic()
        )
        self._start()

    def _hashed(self) -> None:
        if self.hashing is not None:
            self._display().remove_task(self.hashing)
            self.hashing = None
        self.close()

    def _describe_total(self, description: str) -> None:
        if self.total is not None:
            self._display().update(self.total, description=description)

    def _progress(self, done: int, total: int, files: list[dict[str, Any]]) -> None:
        """The total first, then a line per file on the move; a file's line goes when it
        leaves the list (finished), so the screen holds what is moving now."""
        now = time.monotonic()
        if self.total is None:
            self.total = self._display().add_task("total", total=total, last_moved=now)
        self._start()
        self._update(self.total, done, total, now)
        moving = {str(item["name"]): item for item in files[:MAX_FILE_LINES]}
        for name in [n for n in self.files if n not in moving]:
            self._file_done(name)
        for name, item in moving.items():
            line = self.files.get(name)
            if line is None:
                line = self._display().add_task(f"  {_cut(shown(name))}", last_moved=now)
                self.files[name] = line
            self._update(line, int(item["done"]), int(item["size"]), now)

    def _update(self, task_id: TaskID, done: int, total: int, now: float) -> None:
        progress = self._display()
        task = next(t for t in progress.tasks if t.id == task_id)
        moved = done != task.completed
        progress.update(
            task_id,
            completed=done,
            total=total,
            last_moved=now if moved else task.fields["last_moved"],
        )
        if moved and task_id == self.total:
            progress.update(task_id, description="total")

    def _file_done(self, name: str) -> None:
        line = self.files.pop(name, None)
        if line is not None:
            self._display().remove_task(line)


def _size(line: RenderableType) -> int:
    return len(str(line).encode())


def _cut(name: str) -> str:
    return name if len(name) <= NAME_CHARS else "…" + name[-(NAME_CHARS - 1) :]
