"""The client against hostile peers and servers, through the real CLI in a namespace: exact exit
codes on both sides, no wait for a timeout, and nothing a peer or server sent reaches the
terminal unneutralised (human output read from a pseudo-terminal)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fileshare import protocol
from fileshare.sctp import streams
from tests import ptyrun
from tests.e2e import Client, Lab, start_mitm_relay

# What must never reach a terminal raw: ESC, the other C0 controls but \t \n \r, C1, bidi
# controls, zero-width characters.
RAW_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
)


def assert_clean(client: Client) -> str:
    text = ptyrun.text(client)
    found = RAW_CONTROL.search(text)
    assert found is None, f"raw {found.group()!r} on the terminal: {text[-1500:]!r}"
    return text


def terminal_lines(client: Client) -> list[str]:
    return [line for line in ptyrun.text(client).splitlines() if line.strip()]


# Cases run side by side, a dozen CLIs at once: on a loaded 2-core machine that is slow to start.
SIDE_BY_SIDE_SECONDS = 240
PAIRS_AT_ONCE = 4
side_by_side = pytest.mark.timeout(SIDE_BY_SIDE_SECONDS + 60)


async def wait_all(clients: list[Client], timeout: float = SIDE_BY_SIDE_SECONDS) -> list[int]:
    """Exit codes of clients running side by side (a loaded machine starts them slowly)."""
    return list(await asyncio.gather(*(c.wait(timeout) for c in clients)))


SIGNALING_CASES = {  # mode: (sender's exit, receiver's exit)
    "garbage-pake": (3, 3),  # NotOnCurve on the sender
    "reflect-hello": (3, 3),
    "replay-confirm": (3, 3),
    "drop-confirm": (3, 3),
    "tamper-sdp": (3, 3),
    "inject-abort": (1, 1),  # the "peer" stopped, said why in escapes
    "inject-error": (4, 1),  # the server refused the sender, which tells the receiver
}
# Every step of connecting may wait this long, far past wait_all's budget: a case that waited
# out a --timeout (instead of ending at the abort or failure) fails the test.
STEP_TIMEOUT = "600"


@side_by_side
async def test_hostile_signaling_exits_and_terminal(lab: Lab, tmp_path: Path) -> None:
    """Every mode of tests.mitm_relay at once, one pair of real CLIs each, on a pty."""
    src = tmp_path / "secret.txt"
    src.write_text("secret")
    relay = start_mitm_relay(lab)
    senders = {
        mode: ptyrun.on_tty(
            lab,
            "send",
            "--no-qr",
            "--timeout",
            STEP_TIMEOUT,
            str(src),
            name=f"send-{mode}",
            state=f"state-send-{mode}",
            server=f"{relay}/{mode}",
        )
        for mode in SIGNALING_CASES
    }
    receivers = {
        mode: ptyrun.on_tty(
            lab,
            "receive",
            "--timeout",
            STEP_TIMEOUT,
            "--out",
            str(tmp_path / f"out-{mode}"),
            name=f"recv-{mode}",
            state=f"state-recv-{mode}",
            server=f"{relay}/{mode}",
            code=await ptyrun.code_on(sender, SIDE_BY_SIDE_SECONDS),
        )
        for mode, sender in senders.items()
    }
    await wait_all([*senders.values(), *receivers.values()])
    for mode, (status, receiver_status) in SIGNALING_CASES.items():
        sender, receiver = senders[mode], receivers[mode]
        assert (receiver.proc.returncode, sender.proc.returncode) == (receiver_status, status), (
            mode,
            ptyrun.text(sender)[-800:],
            ptyrun.text(receiver)[-800:],
        )
        for client in (sender, receiver):
            text = assert_clean(client)
            if status == 3:
                assert "authentication failed" in text, (mode, text)
            if mode == "inject-abort" or (client is sender and mode == "inject-error"):
                assert "\\x1b]0;pwned\\x07" in text or "\\x1b[2J" in text  # shown, escaped
        out = tmp_path / f"out-{mode}"
        assert not out.exists() or not any(out.iterdir()), mode


# mode: what the one error line says
SERVER_FRAME_CASES = {
    "frame-garbage": "invalid message",
    "frame-wrong-type": "invalid message",
    "frame-wrong-reply": "answered CreateSession with Pong",
    "frame-oversized": "broke the protocol",
    "huge-text": "pwned",
}
# Bytes on the terminal: a 100,000-character message is cut (cli.MESSAGE_CHARS).
ERROR_LINE_LIMIT = 4000
# A 32 MiB frame read whole would add at least 32 MiB to the peak RSS (and a deflate bomb more).
OVERSIZED_RSS_MARGIN_KIB = 16 * 1024


@side_by_side
async def test_a_hostile_signaling_server_gets_one_line_and_bounded_memory(
    lab: Lab, tmp_path: Path
) -> None:
    """Malformed, wrongly typed, unexpected and oversized frames and a huge error text from the
    server: exit 4 with one clear line, nothing raw on the terminal, and the frame limit holds
    the peak RSS (measured against the garbage-frame case, side by side)."""
    src = tmp_path / "a.txt"
    src.write_text("a")
    relay = start_mitm_relay(lab)
    rss = {mode: tmp_path / f"{mode}.rss" for mode in SERVER_FRAME_CASES}
    senders = {
        mode: ptyrun.on_tty(
            lab,
            "send",
            "--no-qr",
            str(src),
            name=f"send-{mode}",
            state=f"state-{mode}",
            server=f"{relay}/{mode}",
            program=("tests.max_rss", "fileshare"),
            env={"MAX_RSS_FILE": str(rss[mode])},
        )
        for mode in SERVER_FRAME_CASES
    }
    await wait_all(list(senders.values()))
    for mode, says in SERVER_FRAME_CASES.items():
        sender = senders[mode]
        text = assert_clean(sender)
        assert sender.proc.returncode == 4, (mode, text)
        lines = terminal_lines(sender)  # "Sending 1 file, 1 B", then the error
        assert len(lines) == 2 and lines[1].startswith("fileshare: "), (mode, text[:2000])
        assert says in lines[1], (mode, lines[1][:500])
        assert len(text.encode()) < ERROR_LINE_LIMIT, (mode, len(text.encode()))
    peak = {mode: int(path.read_text()) for mode, path in rss.items()}
    print(f"peak RSS KiB: {peak}")
    assert peak["frame-oversized"] < peak["frame-garbage"] + OVERSIZED_RSS_MARGIN_KIB, peak


def hostile_sender(lab: Lab, names: list[str], paths: list[Path], case: str) -> Client:
    """tests.hostile_sender announces `paths` under `names`."""
    return lab.run(
        "send",
        *map(str, paths),
        name=f"send-{case}",
        state=f"state-send-{case}",
        program=("tests.hostile_sender", "names"),
        env={"HOSTILE_NAMES": json.dumps(names)},
    )


async def receiver_on_tty(lab: Lab, sender: Client, out: Path, case: str) -> Client:
    code = (await sender.wait_event("code", timeout=SIDE_BY_SIDE_SECONDS))["code"]
    return ptyrun.on_tty(
        lab,
        "receive",
        "--out",
        str(out),
        name=f"recv-{case}",
        state=f"state-recv-{case}",
        code=code,
    )


HOSTILE_BUT_SAFE = [
    "[/].txt",  # crashed Rich's markup parser
    "[link=mailto:a@b]x[/link].txt",  # an OSC 8 hyperlink through markup
    "[blink red]alarm[/].txt",
    "\u202egnp.exe",  # right-to-left override
    "a\u2067b.txt",
    "zero\u200bwidth\ufeff.txt",
    ":smile: emoji.txt",
    "CON",  # Windows reserved: an ordinary name here
    "caf\u00e9.txt",
]
REFUSED = [
    "\x1b]0;pwned\x07.txt",  # OSC title
    "\x1b[2J.txt",  # CSI clear screen
    "a\x9bb.txt",  # C1 CSI
    "nul\x00.txt",
    "../../escape.txt",
    "/etc/passwd",
    "C:evil.txt",
    "a\\b.txt",
    "x" * 256,  # a component over NAME_MAX
    "/".join(["d" * 254] * 16),  # 4079 bytes: fine alone, over PATH_MAX under --out
]


@side_by_side
async def test_hostile_name_corpus(lab: Lab, tmp_path: Path) -> None:
    """One transfer of every name that is safe once shown escaped, and one transfer per refused
    name (the first refusal ends a transfer), all side by side: the safe ones arrive under their
    own names and print escaped; each refused one exits 1, creates nothing, stays off the
    terminal."""
    src = tmp_path / "src"
    src.mkdir()
    paths = []
    for i in range(len(HOSTILE_BUT_SAFE)):
        paths.append(src / f"f{i}")
        paths[-1].write_text(f"file {i}")
    safe_out = tmp_path / "safe"
    cases = [("safe", HOSTILE_BUT_SAFE, paths, safe_out)]
    for i, name in enumerate(REFUSED):
        (tmp_path / f"in-{i}" / "out").mkdir(parents=True)
        cases.append((f"r{i}", [name], paths[:1], tmp_path / f"in-{i}" / "out"))
    pairs: list[tuple[Client, Client]] = []
    for start in range(0, len(cases), PAIRS_AT_ONCE):  # 22 CLIs at once starve 2 cores
        batch = cases[start : start + PAIRS_AT_ONCE]
        senders = [hostile_sender(lab, names, files, case) for case, names, files, _ in batch]
        receivers = [
            await receiver_on_tty(lab, sender, out, case)
            for sender, (case, _, _, out) in zip(senders, batch, strict=True)
        ]
        pairs += zip(senders, receivers, strict=True)
        await wait_all([*senders, *receivers])

    sender, receiver = pairs[0]
    assert receiver.proc.returncode == 0, ptyrun.text(receiver)
    assert sender.proc.returncode == 0
    text = assert_clean(receiver)
    assert "\\u202egnp.exe" in text and "[link=mailto:a@b]x[/link].txt" in text
    received = {p.relative_to(safe_out).as_posix() for p in safe_out.rglob("*") if p.is_file()}
    assert received == set(HOSTILE_BUT_SAFE)  # "[/].txt" is the file "].txt" in "["
    listing = ptyrun.on_tty(lab, "transfers", name="list", state="state-recv-safe")
    assert await listing.wait() == 0
    assert_clean(listing)

    for i, (name, (_sender, receiver)) in enumerate(zip(REFUSED, pairs[1:], strict=True)):
        assert receiver.proc.returncode == 1, (name, ptyrun.text(receiver))
        text = assert_clean(receiver)
        assert "unsafe name" in text, (name, text)
        assert [p.name for p in (tmp_path / f"in-{i}").iterdir()] == ["out"], name
        assert not any((tmp_path / f"in-{i}" / "out").iterdir()), name


async def test_a_file_that_fails_its_checksum_exits_1(lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(b"x" * 100_000)
    sender, code = await lab.send(src, program=("tests.hostile_sender", "checksum"))
    out = tmp_path / "out"
    receiver = lab.receive(code, out)
    assert await receiver.wait() == 1
    assert await sender.wait() == 1
    assert not (out / "data.bin").exists()


FLOOD_MIB = 200
# The flooded receiver may hold, beyond what an honest receiver of the same file holds side by
# side: its queue's bound, SCTP's receive window, and datagrams waiting below it.
FLOOD_MARGIN_MIB = protocol.QUEUED_FRAME_BYTES // 2**20 + 8 + 16


def measured_receiver(lab: Lab, code: str, out: Path, case: str, rss: Path, *extra: str) -> Client:
    """A receiver of `code` into `out` whose peak RSS (KiB) lands in `rss`; with `--verify` in
    `extra`, one that is asked."""
    return lab.run(
        "receive", *extra, "--out", str(out), name=case, asked="--verify" in extra, state=case,
        program=("tests.max_rss", "fileshare"),
        env={"FILESHARE_CODE": code, "MAX_RSS_FILE": str(rss)},
    )  # fmt: skip


def peaks_mib(rss: dict[str, Path]) -> dict[str, float]:
    return {case: int(path.read_text()) / 1024 for case, path in rss.items()}


async def test_a_sender_that_ignores_the_window_is_stopped_and_held_to_the_bound(
    lab: Lab, tmp_path: Path
) -> None:
    """The sender streams a 200 MiB file at once while the receiver's user is still asked
    (the receiver's loop busy, its channel read meanwhile): the receiver queues at most what
    an honest sender can have out, then ends the transfer with flow_control (exit 1 on both
    sides). Peak RSS against an honest receiver of the same file, side by side; without the
    bound the flooded one held all 200 MiB (285 MiB against 101)."""
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        f.truncate(FLOOD_MIB * 2**20)
    rss = {case: tmp_path / f"{case}.rss" for case in ("flooded", "honest")}
    sender, code = await lab.send(src, program=("tests.hostile_sender", "eager"))
    honest_sender = lab.run("send", str(src), name="honest-send", state="honest-send")
    honest_code = (await honest_sender.wait_event("code"))["code"]
    flooded = measured_receiver(lab, code, tmp_path / "out", "flooded", rss["flooded"], "--verify")
    honest = measured_receiver(lab, honest_code, tmp_path / "honest", "honest", rss["honest"])
    await flooded.wait_event("manifest")
    await asyncio.sleep(8)  # the flood arrives while the question waits
    flooded.answer("y\n")
    exits = await wait_all([flooded, sender, honest, honest_sender])
    peak = peaks_mib(rss)
    print(f"receivers' peak RSS, MiB: {peak} (margin {FLOOD_MARGIN_MIB})")
    assert exits == [1, 1, 0, 0], (flooded.report(), sender.report(), honest.report())
    assert "without waiting for answers" in flooded.out.read_text()
    assert peak["flooded"] < peak["honest"] + FLOOD_MARGIN_MIB, peak
    assert not (tmp_path / "out" / "big.bin").exists()


# What a receiver may keep for the streams and channels a peer opens (`sctp.streams`: at most
# MOST_STREAMS, a few KB each) and the DCEP and ERROR traffic they cost, beyond an honest
# receiver of the same file.
CHANNELS_MARGIN_MIB = 16


async def test_a_sender_that_opens_every_stream_gets_no_more_than_it_offered(
    lab: Lab, tmp_path: Path
) -> None:
    """Once connected, the sender opens a data channel on each of the 65,534 other stream ids
    and sends a message on each, then its file. The receiver keeps at most the streams it
    offered, closes the channels it did not ask for (the rest were refused), and the file
    arrives whole. Peak RSS
    against an honest receiver of the same file, side by side; stock aiortc kept a channel
    per stream (about 110 MB)."""
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(4 * 2**20))
    rss = {case: tmp_path / f"{case}.rss" for case in ("flooded", "honest")}
    sender, code = await lab.send(src, program=("tests.hostile_sender", "channels"))
    honest_sender = lab.run("send", str(src), name="honest-send", state="honest-send")
    honest_code = (await honest_sender.wait_event("code"))["code"]
    flooded = measured_receiver(lab, code, tmp_path / "out", "flooded", rss["flooded"])
    honest = measured_receiver(lab, honest_code, tmp_path / "honest", "honest", rss["honest"])
    exits = await wait_all([flooded, sender, honest, honest_sender])
    peak = peaks_mib(rss)
    print(f"receivers' peak RSS, MiB: {peak} (margin {CHANNELS_MARGIN_MIB})")
    assert exits == [0, 0, 0, 0], (flooded.report(), sender.report(), honest.report())
    said = sender.err.read_text()
    assert "hostile: 65534 channels opened" in said
    assert f"hostile: {streams.MOST_STREAMS - 1} reset by the receiver" in said
    assert (tmp_path / "out" / "file.bin").read_bytes() == src.read_bytes()
    assert peak["flooded"] < peak["honest"] + CHANNELS_MARGIN_MIB, peak


async def test_a_wrong_code_joiner_learns_no_address(lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("secret")
    sender, code = await lab.send(src, extra=("--timeout", "15"))
    session = code.split("-")[0]
    joiner = lab.spawn(sys.executable, "-m", "tests.wrong_joiner", lab.server.url, session, "4")
    assert joiner.stdout is not None
    captured = joiner.stdout.read().decode()
    joiner.wait(30)
    assert await sender.wait() == 4  # the joiner could not answer and went away
    assert '"kind":"hello"' in captured  # it did hear the sender's PAKE message
    for leak in ("sdp", "candidate", "a=fingerprint", "198.51.100", "127.0.0.1", "c=IN"):
        assert leak not in captured, (leak, captured)
    assert re.search(r"\b\d{1,3}(\.\d{1,3}){3}\b", captured) is None, captured


async def test_space_for_the_whole_transfer_is_claimed_up_front(lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        with (src / f"f{i}.bin").open("wb") as f:
            f.truncate(40 * 2**20)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)], check=True)
    try:
        sender, code = await lab.send(*sorted(src.iterdir()))
        receiver = lab.receive(code, small / "out")
        assert await receiver.wait() == 5
        assert await sender.wait() == 1
        assert not list((small / "out").iterdir())  # not one .part left behind
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


async def test_a_state_database_pointing_outside_out_is_not_followed(
    lab: Lab, tmp_path: Path
) -> None:
    import sqlite3

    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        f.write(b"y" * (8 * 2**20))
    out = tmp_path / "out"
    sender, code = await lab.send(src, extra=("--stall-timeout", "5"))
    first = lab.receive(code, out)
    await first.wait_event("file")
    first.kill()
    sender.kill()
    db = lab.workdir / "state" / "transfers.sqlite3"
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = {"big.bin.part": b"", "a.part": b"precious a", "b.part": b"precious b"}
    for name, data in precious.items():
        (outside / name).write_bytes(data)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE transfers SET target = ?, part = ?",
            (str(outside / "big.bin"), str(outside / "big.bin.part")),
        )
        # Finished records for cleanup() to remove: one with its .part outside --out, one that
        # claims another output directory (outside) for a .part there.
        for file_id, recorded_out in (("a" * 32, out), ("b" * 32, outside)):
            name = "a.part" if recorded_out == out else "b.part"
            conn.execute(
                "INSERT INTO transfers SELECT ?, name, size, chunk_size, chunk_count, checksum, "
                "?, ?, bitmap, 'failed', updated_at, ? FROM transfers LIMIT 1",
                (file_id, str(outside / name[:-5]), str(outside / name), str(recorded_out)),
            )
    sender, code = await lab.send(src)
    receiver = lab.receive(code, out)
    assert await receiver.wait() == 0, receiver.report()
    assert await sender.wait() == 0
    saved = receiver.first("saved")
    assert saved is not None and Path(saved["path"]).parent == out  # a fresh copy inside --out
    assert Path(saved["path"]).read_bytes() == src.read_bytes()
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == precious


async def test_a_copy_of_the_state_and_the_code_cannot_rejoin_as_the_receiver(
    lab: Lab, tmp_path: Path
) -> None:
    """The rejoin ticket is sealed under a per-install key (a 0600 file) and the code: another
    installation with a copy of the state database and the code is not let back in as the
    receiver (the session has its two peers), while the owner resumes."""
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(8 * 2**20))
    out = tmp_path / "out"
    sender, code = await lab.send(src)
    first = lab.receive(code, out)
    await first.wait_event("file")
    first.kill()
    state = lab.workdir / "state"
    assert stat.S_IMODE((state / "ticket.key").stat().st_mode) == 0o600
    thief_state = lab.workdir / "thief"
    thief_state.mkdir(mode=0o700)
    for path in state.iterdir():
        if path.name.startswith("transfers.sqlite3"):
            shutil.copy2(path, thief_state / path.name)
    thief_out = tmp_path / "thief-out"
    thief = lab.receive(code, thief_out, state="thief")
    assert await thief.wait() == 2, thief.report()  # the server: no such session
    error = thief.first("error")
    assert error is not None and error["code"] == "session_not_found", thief.events()
    assert thief.first("sas") is None, thief.events()
    assert not thief_out.exists() or not any(thief_out.rglob("*.bin*"))
    owner = lab.receive(code, out)
    assert await owner.wait() == 0, owner.report()
    assert await sender.wait() == 0
    assert (out / "big.bin").read_bytes() == src.read_bytes()
