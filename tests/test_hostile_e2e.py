"""The client against hostile peers and servers, through the real CLI in a namespace: exact exit
codes on both sides, no wait for a timeout, and nothing a peer or server sent reaches the
terminal unneutralised (human output read from a pseudo-terminal)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import Client, Lab, start_mitm_relay

# What must never reach a terminal raw: ESC, the other C0 controls but \t \n \r, C1, bidi
# controls, zero-width characters.
RAW_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
)


def terminal_text(client: Client) -> str:
    return client.err.read_bytes().decode("utf-8", errors="replace")


def assert_clean(client: Client) -> str:
    text = terminal_text(client)
    found = RAW_CONTROL.search(text)
    assert found is None, f"raw {found.group()!r} on the terminal: {text[-1500:]!r}"
    return text


async def pair_through(lab: Lab, tmp_path: Path, mode: str) -> tuple[Client, Client, float]:
    src = tmp_path / "secret.txt"
    src.write_text("secret")
    relay = start_mitm_relay(lab, mode)
    sender = lab.run(
        "send", "--no-qr", str(src), name="send", server=relay, json_events=False, tty=True
    )
    deadline = time.monotonic() + 30
    while "Code:" not in terminal_text(sender):
        assert time.monotonic() < deadline and sender.proc.poll() is None, terminal_text(sender)
        time.sleep(0.05)
    code = terminal_text(sender).split("Code:")[1].split()[0]
    started = time.monotonic()
    receiver = lab.run(
        "receive",
        "--out",
        str(tmp_path / "out"),
        name="recv",
        server=relay,
        json_events=False,
        tty=True,
        env={"FILESHARE_CODE": code},
    )
    await receiver.wait()
    await sender.wait()
    return sender, receiver, time.monotonic() - started


@pytest.mark.parametrize(
    ("mode", "status", "receiver_status"),
    [
        ("garbage-pake", 3, 3),  # NotOnCurve on the sender
        ("reflect-hello", 3, 3),
        ("replay-confirm", 3, 3),
        ("drop-confirm", 3, 3),
        ("tamper-sdp", 3, 3),
        ("inject-abort", 1, 1),  # the "peer" stopped, said why in escapes
        ("inject-error", 4, 1),  # the server refused the sender, which tells the receiver
    ],
)
async def test_hostile_signaling_exits_and_terminal(
    lab: Lab, tmp_path: Path, mode: str, status: int, receiver_status: int
) -> None:
    sender, receiver, took = await pair_through(lab, tmp_path, mode)
    assert (receiver.proc.returncode, sender.proc.returncode) == (receiver_status, status), (
        terminal_text(sender)[-800:],
        terminal_text(receiver)[-800:],
    )
    assert took < 30, f"{mode}: {took:.1f} s (the --timeout is 60 s: nobody may wait it out)"
    for client in (sender, receiver):
        text = assert_clean(client)
        if status == 3:
            assert "authentication failed" in text
        if mode == "inject-abort" or (client is sender and mode == "inject-error"):
            assert "\\x1b]0;pwned\\x07" in text or "\\x1b[2J" in text  # shown, escaped
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


async def send_as(
    lab: Lab, names: list[str], paths: list[Path], out: Path
) -> tuple[Client, Client]:
    """tests.hostile_sender announces `paths` under `names`; the receiver prints to a tty."""
    sender = lab.run(
        "send",
        *map(str, paths),
        name="send",
        program=("tests.hostile_sender", "names"),
        env={"HOSTILE_NAMES": json.dumps(names)},
    )
    code = (await sender.wait_event("code"))["code"]
    receiver = lab.run(
        "receive",
        "--out",
        str(out),
        name="recv",
        json_events=False,
        tty=True,
        env={"FILESHARE_CODE": code},
    )
    return sender, receiver


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


async def test_hostile_names_are_received_and_shown_escaped(lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    paths = []
    for i in range(len(HOSTILE_BUT_SAFE)):
        paths.append(src / f"f{i}")
        paths[-1].write_text(f"file {i}")
    out = tmp_path / "out"
    sender, receiver = await send_as(lab, HOSTILE_BUT_SAFE, paths, out)
    assert await receiver.wait() == 0, terminal_text(receiver)
    assert await sender.wait() == 0
    text = assert_clean(receiver)
    assert "\\u202egnp.exe" in text and "[link=mailto:a@b]x[/link].txt" in text
    received = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert received == set(HOSTILE_BUT_SAFE)  # "[/].txt" is the file "].txt" in "["
    listing = lab.run("transfers", name="list", json_events=False, tty=True)
    assert await listing.wait() == 0
    assert_clean(listing)


@pytest.mark.parametrize(
    "name",
    [
        "\x1b]0;pwned\x07.txt",  # OSC title
        "\x1b[2J.txt",  # CSI clear screen
        "a\x9bb.txt",  # C1 CSI
        "nul\x00.txt",
        "../../escape.txt",
        "/etc/passwd",
        "C:evil.txt",
        "a\\b.txt",
        "x" * 256,  # a component over NAME_MAX
        "/".join(["d" * 250] * 16),  # fine alone, over PATH_MAX under --out
    ],
)
async def test_refused_names_exit_1_create_nothing_and_stay_off_the_terminal(
    lab: Lab, tmp_path: Path, name: str
) -> None:
    src = tmp_path / "payload"
    src.write_text("payload")
    out = tmp_path / "in" / "out"
    sender, receiver = await send_as(lab, [name], [src], out)
    assert await receiver.wait() == 1, terminal_text(receiver)
    await sender.wait()
    text = assert_clean(receiver)
    assert "unsafe name" in text
    assert [p.name for p in (tmp_path / "in").iterdir()] == ["out"]
    assert not any(out.iterdir())


async def test_a_file_that_fails_its_checksum_exits_1(lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(b"x" * 100_000)
    sender, code = await lab.send(src, program=("tests.hostile_sender", "checksum"))
    out = tmp_path / "out"
    receiver = lab.receive(code, out)
    assert await receiver.wait() == 1
    assert await sender.wait() == 1
    assert not (out / "data.bin").exists()


async def test_a_wrong_code_joiner_learns_no_address(lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("secret")
    sender, code = await lab.send(src)
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
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE transfers SET target = ?, part = ?",
            (str(outside / "big.bin"), str(outside / "big.bin.part")),
        )
        (outside / "big.bin.part").write_bytes(b"")
    sender, code = await lab.send(src)
    receiver = lab.receive(code, out)
    assert await receiver.wait() == 0, receiver.err.read_text()
    assert await sender.wait() == 0
    saved = receiver.first("saved")
    assert saved is not None and Path(saved["path"]).parent == out  # a fresh copy inside --out
    assert Path(saved["path"]).read_bytes() == src.read_bytes()
    assert sorted(p.name for p in outside.iterdir()) == ["big.bin.part"]
    assert (outside / "big.bin.part").read_bytes() == b""
