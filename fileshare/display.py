"""What a person sees of a transfer: the code and its QR code, the words to compare, and a
progress display: one line per file on the move plus the total, sizes and rates in one unit
system (binary: KiB, MiB, MiB/s), a visible `reconnecting… (reason)` state whose clock keeps
running, and the hashing of large files before the code appears.

Every field comes through `shown()` (names and reasons are the peer's or the server's), and
Rich's markup and emoji codes are off: `[link=…]` in a peer's file name is printed as text.
The live display is always stopped before an error line, so a failure never lands in the middle
of a bar.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.text import Text

from fileshare.names import counts_text, human_size
from fsproto.untrusted import shown

STALLED_SECONDS: Final = 3.0  # no bytes for this long: the rate and ETA show a dash, not a guess
NAME_CHARS: Final = 40  # of a file's name on its line
MAX_FILE_LINES: Final = 4  # a transfer moves a few files at once; the list is bounded anyway


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


class HumanEvents:
    """A person's view of the events, on stderr (stdout stays free for --json's events)."""

    def __init__(self, show_qr: bool) -> None:
        self.console = Console(stderr=True, highlight=False, markup=False, emoji=False)
        self.show_qr = show_qr
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            SizeColumn(),
            RateColumn(),
            EtaColumn(),
            console=self.console,
            transient=False,
        )
        self.live = False
        self.total: TaskID | None = None
        self.files: dict[str, TaskID] = {}  # file name -> its line, while it moves
        self.hashing: TaskID | None = None
        self.out = ""  # the receiver's --out, as the offer names it

    def close(self) -> None:
        """End the live display so what follows starts on a clean line."""
        if self.live:
            self.progress.stop()
            self.live = False

    def _start(self) -> None:
        if not self.live:
            self.progress.start()
            self.live = True

    def emit(self, event: str, **fields: Any) -> None:
        f: dict[str, Any] = {k: shown(v) if isinstance(v, str) else v for k, v in fields.items()}
        match event:
            case "hashing":
                self._hashing(f["name"], f["done"], f["size"])
            case "prepared":
                self._hashed()
                self.console.print(f"Sending {counts_text(f['files'], f['dirs'], f['bytes'])}")
            case "code":
                self._code(f["code"], fields["link"])
            case "sas":
                self.console.print(
                    Text.assemble(
                        "Authentication words: ",
                        (f["words"], "bold"),
                        " (the same on both sides, or something is wrong)",
                    )
                )
            case "connected":
                p = {k: shown(v) for k, v in f["path"].items()}  # remote: the peer's candidate
                via = f", TURN over {p['turn']}" if "turn" in p else ""
                self.console.print(
                    f"Connected ({p['local']} -> {p['remote']} over {p['protocol']}{via})"
                )
                self._describe_total("total")
            case "manifest":
                self.out = fields["out"] + os.sep  # "Saved" lines name files under it
                self.console.print(f"Offered {counts_text(f['files'], f['dirs'], f['bytes'])}:")
                for name in fields["names"]:
                    self.console.print(f"  {shown(name)}")
                if f["more"]:
                    self.console.print(f"  … and {f['more']} more")
            case "peer_paused":
                self.console.print(
                    f"The other side was interrupted; waiting up to {f['seconds']} s "
                    "for it to run the same command again"
                )
            case "reconnecting":
                if self.total is None:
                    self.console.print(f"Reconnecting… ({f['reason']})")
                self._describe_total(f"reconnecting… ({f['reason']})")
            case "signaling_restored":
                self.console.print(f"Back on the signaling server after {f['after']} s")
            case "skipped":
                self.console.print(f"Skipped {f['path']}: {f['reason']}")
            case "file" if f["resumed"] and f["resumed"] == f["chunks"]:
                self.console.print(f"Already received {f['name']} ({human_size(f['size'])})")
            case "file" if f["resumed"]:  # the offer listed the names; per file, only news
                self.console.print(
                    f"Resuming {f['name']} ({human_size(f['size'])}): "
                    f"{f['resumed']} of {f['chunks']} chunks held"
                )
            case "saved":
                self._file_done(fields["name"])
                self.console.print(f"Saved {shown(fields['path'].removeprefix(self.out))}")
            case "file_failed":
                self._file_done(fields["name"])
                self.console.print(Text.assemble(("Failed", "red"), f" {f['name']}: {f['reason']}"))
            case "progress":
                self._progress(f["done"], f["total"], fields.get("files", []))
            case "done":
                self.close()
                self.console.print(f"Done: {counts_text(f['files'], f['dirs'], f['bytes'])}")
            case "error":
                self.close()

    def _code(self, code: str, link: str) -> None:
        self.console.print(Text.assemble("Code: ", (code, "bold")))
        self.console.print(f"On the other machine: fileshare receive {code}")
        if self.show_qr:
            import segno

            self.console.print(f"Or scan this code (opens {shown(link)}):")
            qr = segno.make(link, error="m")
            with contextlib.redirect_stdout(sys.stderr):
                qr.terminal(compact=True)

    def _hashing(self, name: str, done: int, size: int) -> None:
        label = f"hashing {_cut(name)}"
        if self.hashing is None:  # added before the display starts, which draws it at once
            self.hashing = self.progress.add_task(label, total=size, last_moved=time.monotonic())
        self.progress.update(
            self.hashing, description=label, completed=done, total=size, last_moved=time.monotonic()
        )
        self._start()

    def _hashed(self) -> None:
        if self.hashing is not None:
            self.progress.remove_task(self.hashing)
            self.hashing = None
        self.close()

    def _describe_total(self, description: str) -> None:
        if self.total is not None:
            self.progress.update(self.total, description=description)

    def _progress(self, done: int, total: int, files: list[dict[str, Any]]) -> None:
        """The total first, then a line per file on the move; a file's line goes when it
        leaves the list (finished), so the screen holds what is moving now."""
        now = time.monotonic()
        if self.total is None:
            self.total = self.progress.add_task("total", total=total, last_moved=now)
        self._start()
        self._update(self.total, done, total, now)
        moving = {str(item["name"]): item for item in files[:MAX_FILE_LINES]}
        for name in [n for n in self.files if n not in moving]:
            self._file_done(name)
        for name, item in moving.items():
            line = self.files.get(name)
            if line is None:
                line = self.progress.add_task(f"  {_cut(shown(name))}", last_moved=now)
                self.files[name] = line
            self._update(line, int(item["done"]), int(item["size"]), now)

    def _update(self, task_id: TaskID, done: int, total: int, now: float) -> None:
        task = next(t for t in self.progress.tasks if t.id == task_id)
        moved = done != task.completed
        self.progress.update(
            task_id,
            completed=done,
            total=total,
            last_moved=now if moved else task.fields["last_moved"],
        )
        if moved and task_id == self.total:
            self.progress.update(task_id, description="total")

    def _file_done(self, name: str) -> None:
        line = self.files.pop(name, None)
        if line is not None:
            self.progress.remove_task(line)


def _cut(name: str) -> str:
    return name if len(name) <= NAME_CHARS else "…" + name[-(NAME_CHARS - 1) :]
