"""The CLI as people use it (issue 17, findings 3-8), through real processes in a namespace lab:
where a resumed transfer goes, what `transfers` says, Ctrl-C / SIGTERM / a closed pipe, the
accept prompt on a terminal, and what a folder keeps (links, counts, modes, times)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fileshare import filemeta
from netsim import netns
from tests.e2e import Client, Lab, big_file, sha256, wait_progress
from tests.test_resilience_e2e import throttled

RATE = "40mbit"  # the interrupt tests' loopback: 32 MiB last about 7 s, so a signal lands mid-way


def everything_said(lab: Lab) -> str:
    return "".join(p.read_text(errors="replace") for p in lab.workdir.glob("*.[eo][ru][rt]"))


# --- finding 4 and 5: Ctrl-C and SIGTERM ---------------------------------------------------------


async def interrupt(client: Client, other: Client) -> None:
    """Ctrl-C on `client` mid-transfer: exit 130 with an `interrupted` error that says how to
    resume, and the other side waiting for it to come back (`peer_paused`, the 60 s grace)."""
    client.proc.send_signal(signal.SIGINT)
    assert await client.wait(30) == 130
    error = client.first("error")
    assert error is not None and error["code"] == "interrupted"
    assert "run the same command again within 60 seconds to resume" in error["message"]
    assert (await other.wait_event("peer_paused", 20))["seconds"] == 60


async def test_interrupted_receiver_resumes_with_the_same_code(lab: Lab, tmp_path: Path) -> None:
    src = big_file(tmp_path / "big.bin", 32)
    out = tmp_path / "out"
    with throttled(lab, RATE):
        sender, code = await lab.send(src)
        first = lab.receive(code, out)
        await wait_progress(first, 0.2)
        await interrupt(first, sender)
    again = lab.receive(code, out)  # the same command, the same code
    assert await again.wait() == 0, again.err.read_text()
    assert await sender.wait() == 0, sender.err.read_text()
    assert sha256(out / "big.bin") == sha256(src)
    resumed = again.first("file")
    assert resumed is not None and resumed["resumed"] > 0
    said = everything_said(lab)
    assert "peer_left" not in said and "Traceback" not in said


async def test_interrupted_sender_resumes_with_the_same_code(lab: Lab, tmp_path: Path) -> None:
    """Ctrl-C on the sender: the receiver waits; the same send command again rejoins the
    session, shows the same code, and the transfer carries on from what the receiver holds."""
    src = big_file(tmp_path / "big.bin", 32)
    out = tmp_path / "out"
    with throttled(lab, RATE):
        first, code = await lab.send(src)
        receiver = lab.receive(code, out)
        await wait_progress(receiver, 0.2)
        await interrupt(first, receiver)
        again, same = await lab.send(src)
        assert same == code and again.first("code")["resumed"] is True  # type: ignore[index]
        assert await again.wait() == 0, again.err.read_text()
        assert await receiver.wait() == 0, receiver.err.read_text()
    assert sha256(out / "big.bin") == sha256(src)
    done = again.first("done")
    assert done is not None and done["chunksSent"] < done["chunks"]  # only what was missing
    assert "peer_left" not in everything_said(lab)


async def test_sigterm_stops_and_the_other_side_does_not_wait(lab: Lab, tmp_path: Path) -> None:
    """SIGTERM (a shutdown, not a person): an error event, exit 143, and the other side hears
    why at once instead of waiting out the grace period."""
    src = big_file(tmp_path / "big.bin", 32)
    with throttled(lab, RATE):
        sender, code = await lab.send(src)
        receiver = lab.receive(code, tmp_path / "out")
        await wait_progress(receiver, 0.2)
        sender.proc.send_signal(signal.SIGTERM)
        assert await sender.wait(30) == 143
        started = time.monotonic()
        assert await receiver.wait(30) == 1
        assert time.monotonic() - started < 10
    stopped = sender.first("error")
    assert stopped is not None and stopped["code"] == "interrupted"
    assert stopped["message"].startswith("the sender was terminated")
    error = receiver.first("error")
    assert error is not None and error["code"] == "peer_interrupted"
    assert "the sender was terminated" in error["message"]


async def test_a_closed_stdout_pipe_does_not_stop_the_transfer(lab: Lab, tmp_path: Path) -> None:
    """`fileshare receive --json … | head -c1`: output errors are not transfer errors."""
    src = big_file(tmp_path / "big.bin", 4)
    out = tmp_path / "out"
    sender, code = await lab.send(src)
    err = tmp_path / "piped-recv.err"
    command = (
        f"{sys.executable} -m fileshare receive --json --server {lab.server.url} "
        f"--out {out} 2>{err} | head -c1 >/dev/null; exit ${{PIPESTATUS[0]}}"
    )
    env = {
        **os.environ,
        "FILESHARE_CODE": code,
        "FILESHARE_STATE_DIR": str(lab.workdir / "state"),
    }
    proc = subprocess.Popen(
        [*netns.in_namespace(lab.namespace), "bash", "-c", command],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        status = await asyncio.to_thread(proc.wait, 120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert status == 0, err.read_text()
    assert await sender.wait() == 0, sender.err.read_text()
    assert sha256(out / "big.bin") == sha256(src)


# --- finding 6: the accept prompt ---------------------------------------------------------------


@dataclass
class Terminal:
    """A client whose stdin, stdout and stderr are one pseudo-terminal; what it shows is
    copied to `screen` (a *.err file: the suite's traceback guard reads it)."""

    proc: subprocess.Popen[bytes]
    master: int
    screen: Path

    def read(self) -> str:
        with contextlib.suppress(BlockingIOError, OSError):
            while data := os.read(self.master, 65536):
                with self.screen.open("ab") as copy:
                    copy.write(data)
        return self.screen.read_text(errors="replace") if self.screen.exists() else ""

    async def expect(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.read()
            if text in shown:
                return shown
            await asyncio.sleep(0.05)
        raise AssertionError(f"{text!r} never shown; the screen: {self.read()[-2000:]}")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def wait(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            self.read()
            assert time.monotonic() < deadline, self.read()[-2000:]
            await asyncio.sleep(0.05)
        self.read()
        return self.proc.returncode


@contextlib.contextmanager
def on_a_terminal(lab: Lab, name: str, *args: str, code: str) -> Iterator[Terminal]:
    master, slave = os.openpty()
    os.set_blocking(master, False)
    env = {
        **os.environ,
        "FILESHARE_STATE_DIR": str(lab.workdir / "state"),
        "FILESHARE_CODE": code,
        "TERM": "dumb",
        "NO_COLOR": "1",
    }
    argv = [sys.executable, "-m", "fileshare", args[0], "--server", lab.server.url, *args[1:]]
    proc = subprocess.Popen(
        [*netns.in_namespace(lab.namespace), *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    try:
        yield Terminal(proc, master, lab.workdir / f"{name}-tty.err")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)


def offered_tree(tmp_path: Path) -> Path:
    src = tmp_path / "photos"
    (src / "2024").mkdir(parents=True)
    (src / "2024" / "beach.jpg").write_bytes(os.urandom(5000))
    (src / "notes.txt").write_text("hello")
    return src


async def test_the_receiver_sees_the_offer_and_can_decline(lab: Lab, tmp_path: Path) -> None:
    src = offered_tree(tmp_path)
    single = tmp_path / "report.pdf"
    single.write_bytes(b"%PDF")
    sender, code = await lab.send(src, single)
    out = tmp_path / "out"
    with on_a_terminal(lab, "recv", "receive", "--out", str(out), code=code) as terminal:
        shown = await terminal.expect("[y/N]")
        offer = shown[shown.index("Offered") :]
        assert "3 files and 2 folders, 4.9 KiB" in offer  # photos, photos/2024; 3 files
        assert "photos" in offer and "report.pdf" in offer
        assert f"Receive 3 files and 2 folders, 4.9 KiB into {out}?" in offer
        assert not out.exists() or not any(out.iterdir())  # nothing written before the answer
        terminal.type("n\n")
        assert await terminal.wait() == 1
        assert "declined" in terminal.read()
    assert not any(out.iterdir())
    assert await sender.wait() == 1
    error = sender.first("error")
    assert error is not None and "the receiver declined the transfer" in error["message"]


async def test_the_receiver_accepts_or_says_yes_up_front(lab: Lab, tmp_path: Path) -> None:
    src = offered_tree(tmp_path)
    sender, code = await lab.send(src)
    out = tmp_path / "out"
    with on_a_terminal(lab, "recv", "receive", "--out", str(out), code=code) as terminal:
        await terminal.expect("[y/N]")
        terminal.type("y\n")
        assert await terminal.wait() == 0, terminal.read()
    assert await sender.wait() == 0
    assert (out / "photos" / "notes.txt").read_text() == "hello"

    sender, code = await lab.send(src)
    with on_a_terminal(lab, "yes", "receive", "--yes", "--out", str(out), code=code) as terminal:
        assert await terminal.wait() == 0, terminal.read()
        assert "[y/N]" not in terminal.read()
        assert "Offered 2 files and 2 folders" in terminal.read()
    assert await sender.wait() == 0


# --- finding 8: folders -------------------------------------------------------------------------


async def test_a_folder_keeps_modes_and_times_and_says_what_it_skips(
    lab: Lab, tmp_path: Path
) -> None:
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    files = {
        "tree/run.sh": 0o750,
        "tree/private.txt": 0o600,
        "tree/setuid": 0o4755,  # sent and kept as 0o755: never setuid
        "tree/sub/data.bin": 0o644,
    }
    when = 1_600_000_000.123
    for name, mode in files.items():
        path = tmp_path / name
        path.write_bytes(os.urandom(100))
        os.chmod(path, mode)
        os.utime(path, (when, when))
    os.chmod(src / "sub", 0o751)
    (src / "link-inside").symlink_to("run.sh")
    (src / "link-outside").symlink_to("/etc/passwd")
    os.mkfifo(src / "pipe")
    os.utime(src / "sub", (when, when))
    out = tmp_path / "out"
    sender, code = await lab.send(src)
    receiver = lab.receive(code, out)
    assert await receiver.wait() == 0, receiver.err.read_text()
    assert await sender.wait() == 0
    events = sender.events()
    skipped = {Path(e["path"]).name: e["reason"] for e in events if e["event"] == "skipped"}
    assert set(skipped) == {"link-inside", "link-outside", "pipe"}
    assert "symbolic link" in skipped["link-inside"]
    prepared, manifest = sender.first("prepared"), receiver.first("manifest")
    sent_done, received_done = sender.first("done"), receiver.first("done")
    assert prepared and manifest and sent_done and received_done
    counts = [(e["files"], e["dirs"]) for e in (prepared, manifest, sent_done, received_done)]
    assert counts == [(4, 2)] * 4, counts  # tree and tree/sub; the same on both sides
    assert prepared["skipped"] == 3
    umask = filemeta.current_umask()
    for name, mode in files.items():
        got = (out / name).stat()
        assert stat.S_IMODE(got.st_mode) == mode & 0o777 & ~umask, name
        assert abs(got.st_mtime - when) < 0.002, name
    sub = (out / "tree" / "sub").stat()
    assert stat.S_IMODE(sub.st_mode) == (0o751 & ~umask) | 0o700
    assert abs(sub.st_mtime - when) < 0.002
    assert not (out / "tree" / "link-inside").exists()
    assert not (out / "tree" / "pipe").exists()


# --- findings 3 and 7: where a resumed transfer goes, and `fileshare transfers` ------------------


async def test_resume_state_belongs_to_its_output_folder(lab: Lab, tmp_path: Path) -> None:
    src = big_file(tmp_path / "big.bin", 24)
    r_a, r_b = tmp_path / "rA", tmp_path / "rB"
    sender, code = await lab.send(src, extra=("--stall-timeout", "5"))
    first = lab.receive(code, Path(os.path.relpath(r_a)))  # a relative --out, made absolute
    await wait_progress(first, 0.3)
    first.kill()
    (part,) = r_a.glob("*.part")
    held = part.read_bytes()
    # The same code into rB: a transfer of its own, nothing of it in rA, rA's partial kept.
    into_b = lab.receive(code, r_b)
    assert await into_b.wait() == 0, into_b.err.read_text()
    assert await sender.wait() == 0
    assert sha256(r_b / "big.bin") == sha256(src)
    received = into_b.first("file")
    assert received is not None and received["resumed"] == 0
    assert sorted(p.name for p in r_a.iterdir()) == ["big.bin.part"]
    assert part.read_bytes() == held
    listing = lab.run("transfers", name="list", json_events=False)
    assert await listing.wait() == 0
    text = listing.out.read_text()
    assert text.startswith("Unfinished transfers")
    assert f"{r_a}/big.bin  (--out {r_a})" in text  # absolute, and the folder to resume into
    assert "fileshare receive CODE --out DIR" in text and "--remove ID" in text
    # Another sender run, another code; the same folder spelled absolutely resumes it.
    sender, code = await lab.send(src)
    again = lab.receive(code, r_a)
    assert await again.wait() == 0, again.err.read_text()
    assert await sender.wait() == 0
    resumed = again.first("file")
    assert resumed is not None and resumed["resumed"] > 0
    assert sha256(r_a / "big.bin") == sha256(src)


async def test_a_full_disk_under_the_resume_state_is_one_line(lab: Lab, tmp_path: Path) -> None:
    """The state database's disk fills mid-transfer (a real tmpfs, filled by us): the receiver
    stops with one line and exit 5, the sender hears why, the partial copy stays."""
    state = lab.workdir / "small-state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(state)], check=True)
    try:
        src = big_file(tmp_path / "big.bin", 32)
        out = tmp_path / "out"
        with throttled(lab, RATE):
            sender, code = await lab.send(src)
            receiver = lab.receive(code, out, state="small-state")
            await wait_progress(receiver, 0.1)
            with contextlib.suppress(OSError), (state / "filler").open("wb") as filler:
                while filler.write(b"\0" * 65536):
                    filler.flush()
            assert await receiver.wait(60) == 5
            assert await sender.wait(30) == 1
        error = receiver.first("error")
        assert error is not None and error["code"] == "disk_full"
        assert "is full: free some space, then receive" in error["message"]
        assert list(out.glob("*.part"))
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
