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
from pathlib import Path

import pytest

from fileshare import filemeta
from netsim import netns
from tests import ptyrun
from tests.e2e import Client, Lab, big_file, sha256, tree, wait_progress
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
    assert await again.wait() == 0, again.report()
    assert await sender.wait() == 0, sender.report()
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
        assert await again.wait() == 0, again.report()
        assert await receiver.wait() == 0, receiver.report()
    assert sha256(out / "big.bin") == sha256(src)
    done = again.first("done")
    assert done is not None and done["chunksSent"] < done["chunks"]  # only what was missing
    assert "peer_left" not in everything_said(lab)


async def restarted_album(lab: Lab, tmp_path: Path, side: str) -> tuple[Client, Client]:
    """A folder of four 8 MiB files: Ctrl-C on `side` at 35 % (at RATE: one file whole, one
    part-way, two not started), then its same command again. Both must finish, the folder
    arrive as it is (no `a (1).bin` beside `a.bin`); returns the last sender and receiver."""
    src, out = tmp_path / "album", tmp_path / "out"
    src.mkdir()
    for name in ("a.bin", "b.bin", "c.bin", "d.bin"):
        big_file(src / name, 8)
    with throttled(lab, RATE):
        sender, code = await lab.send(src)
        receiver = lab.receive(code, out)
        await wait_progress(receiver, 0.35, timeout=120)
        if side == "sender":
            await interrupt(sender, receiver)
            sender, same = await lab.send(src)
            assert same == code
        else:
            await interrupt(receiver, sender)
            receiver = lab.receive(code, out)
        assert await receiver.wait() == 0, receiver.report()
        assert await sender.wait() == 0, sender.report()
    assert tree(out / "album") == tree(src)
    return sender, receiver


# Two runs of a 32 MiB folder at RATE, with hashing and two authentications, on a busy 2-core
# machine: more than the suite's 120 s.
slow_resume = pytest.mark.timeout(300)


@slow_resume
async def test_a_restarted_folder_sender_resends_only_what_each_file_misses(
    lab: Lab, tmp_path: Path
) -> None:
    """The sender restarted: for each file only the chunks the receiver lacks move. The
    rejoined round's `file` events say what each file held, and the new sender's count of sent
    chunks is exactly the sum of the missing (a chunk received twice fails a transfer, so each
    file got exactly its own). The whole file is not received again (it was, as `a (1).bin`,
    before the receiver kept its finished records)."""
    sender, receiver = await restarted_album(lab, tmp_path, "sender")
    files = [e for e in receiver.events() if e["event"] == "file"]
    assert [e["resumed"] for e in files[:4]] == [0] * 4 and len(files) == 8
    rejoined = {e["name"]: (e["resumed"], e["chunks"]) for e in files[4:]}
    missing = {name: chunks - held for name, (held, chunks) in rejoined.items()}
    assert missing["album/a.bin"] == 0 and 0 < missing["album/b.bin"] < 129, rejoined
    assert missing["album/c.bin"] == missing["album/d.bin"] == 129, rejoined
    done = sender.first("done")
    assert done is not None and done["chunksSent"] == sum(missing.values()), (done, rejoined)
    finished = receiver.first("done")
    assert finished is not None and (finished["files"], finished["bytes"]) == (4, 32 * 2**20)


@slow_resume
async def test_a_restarted_folder_receiver_keeps_the_files_it_finished(
    lab: Lab, tmp_path: Path
) -> None:
    """The receiver restarted: the new run is offered what the sender has not heard is
    complete; a file it had whole (when the sender had not heard so yet) is taken as it is,
    not received again as `a (1).bin` (restarted_album checks the folder); the others resume."""
    _, receiver = await restarted_album(lab, tmp_path, "receiver")
    held = {e["name"]: e["resumed"] for e in receiver.events() if e["event"] == "file"}
    assert held.get("album/a.bin", 129) == 129 and held["album/d.bin"] == 0, held
    finished = receiver.first("done")
    assert finished is not None and finished["files"] == len(held), (finished, held)


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
    assert await sender.wait() == 0, sender.report()
    assert sha256(out / "big.bin") == sha256(src)


# --- finding 6: the accept prompt ---------------------------------------------------------------


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
    with ptyrun.in_lab(lab, "recv", "receive", "--out", str(out), code=code) as terminal:
        await ptyrun.wait_screen(terminal, r"\[y/N\]")
        shown = ptyrun.screen(terminal)
        offer = shown[shown.index("Offered") :]
        assert "3 files and 2 folders, 4.9 KiB" in offer  # photos, photos/2024; 3 files
        assert "photos" in offer and "report.pdf" in offer
        assert f"Receive 3 files and 2 folders, 4.9 KiB into {out}?" in offer
        assert not out.exists() or not any(out.iterdir())  # nothing written before the answer
        terminal.type("n\n")
        assert await terminal.wait() == 1
        assert "declined" in ptyrun.text(terminal)
    assert not any(out.iterdir())
    assert await sender.wait() == 1
    error = sender.first("error")
    assert error is not None and "the receiver declined the transfer" in error["message"]


async def test_the_receiver_accepts_or_says_yes_up_front(lab: Lab, tmp_path: Path) -> None:
    src = offered_tree(tmp_path)
    sender, code = await lab.send(src)
    out = tmp_path / "out"
    with ptyrun.in_lab(lab, "recv", "receive", "--out", str(out), code=code) as terminal:
        await ptyrun.wait_screen(terminal, r"\[y/N\]")
        terminal.type("y\n")
        assert await terminal.wait() == 0, ptyrun.text(terminal)
    assert await sender.wait() == 0
    assert (out / "photos" / "notes.txt").read_text() == "hello"

    sender, code = await lab.send(src)
    with ptyrun.in_lab(lab, "yes", "receive", "--yes", "--out", str(out), code=code) as terminal:
        assert await terminal.wait() == 0, ptyrun.text(terminal)
        assert "[y/N]" not in ptyrun.text(terminal)
        assert "Offered 2 files and 2 folders" in ptyrun.text(terminal)
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
    assert await receiver.wait() == 0, receiver.report()
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
    assert await into_b.wait() == 0, into_b.report()
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
    assert await again.wait() == 0, again.report()
    assert await sender.wait() == 0
    resumed = again.first("file")
    assert resumed is not None and resumed["resumed"] > 0
    assert sha256(r_a / "big.bin") == sha256(src)


@slow_resume
async def test_a_receive_resumes_from_another_working_directory(lab: Lab, tmp_path: Path) -> None:
    """A receive interrupted in one working directory (`--out dl`) is run again from another,
    naming the same folder relative to the new one, then (a second transfer) absolutely: it
    resumes into that folder, and nothing is left behind: no `.part`, no `big (1).bin`, no
    unfinished transfer, nothing in the new working directory."""
    src = big_file(tmp_path / "big.bin", 16)
    home = tmp_path / "home"
    elsewhere = home / "deep" / "er"
    elsewhere.mkdir(parents=True)
    out = home / "dl"
    for spelled in (Path("../../dl"), out):
        with throttled(lab, RATE):
            sender, code = await lab.send(src)
            first = lab.receive(code, Path("dl"), cwd=home)
            await wait_progress(first, 0.3, timeout=120)
            await interrupt(first, sender)
        again = lab.receive(code, spelled, cwd=elsewhere)
        assert await again.wait() == 0, again.report()
        assert await sender.wait() == 0, sender.report()
        resumed = again.first("file")
        assert resumed is not None and resumed["resumed"] > 0, (spelled, resumed)
        assert sorted(p.name for p in out.iterdir()) == ["big.bin"], spelled
        assert sha256(out / "big.bin") == sha256(src)
        assert not any(elsewhere.iterdir())
        listing = lab.run("transfers", name="list")
        assert await listing.wait() == 0
        assert [e for e in listing.events() if e["event"] == "resumable"] == []
        (out / "big.bin").unlink()  # the next round starts afresh


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
