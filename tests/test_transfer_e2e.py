"""`fileshare send` and `fileshare receive` end to end: real processes, real aiortc, a real
signaling server, inside an isolated namespace."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fileshare.chunks import CHUNK_SIZE
from fileshare.protocol import SEND_WINDOW
from fileshare.wordlist import WORDS
from tests.conftest import require_binary, require_root
from tests.e2e import (
    Client,
    Lab,
    big_file,
    make_lab,
    sha256,
    start_mitm_relay,
    tree,
    wait_progress,
)


async def transfer(lab: Lab, out: Path, *paths: Path, code_in_argv: bool = False) -> None:
    sender, code = await lab.send(*paths)
    receiver = lab.receive(code, out, code_in_argv=code_in_argv)
    assert await receiver.wait() == 0, receiver.report()
    assert await sender.wait() == 0, sender.report()
    sas = {c.first("sas")["words"] for c in (sender, receiver)}  # type: ignore[index]
    assert len(sas) == 1
    path = receiver.first("connected")["path"]  # type: ignore[index]
    assert path["local"] == "host" and path["protocol"] == "udp"


async def test_edge_sizes_and_a_tree(lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "tree" / "sub" / "deeper").mkdir(parents=True)
    (src / "tree" / "empty-dir").mkdir()
    for size in (0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1):
        (src / "tree" / f"size-{size}.bin").write_bytes(os.urandom(size))
    (src / "tree" / "sub" / "deeper" / "notes.txt").write_text("résumé ✓\n")
    (src / "single.bin").write_bytes(os.urandom(3 * CHUNK_SIZE + 5))
    out = tmp_path / "out"
    await transfer(lab, out, src / "tree", src / "single.bin", code_in_argv=True)
    assert tree(out / "tree") == tree(src / "tree")
    assert sha256(out / "single.bin") == sha256(src / "single.bin")
    assert not list(out.rglob("*.part"))


async def test_one_hundred_mib(lab: Lab, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(100):
            f.write(os.urandom(1024 * 1024))
    out = tmp_path / "out"
    await transfer(lab, out, big)
    assert sha256(out / "big.bin") == sha256(big)


async def test_existing_file_is_kept_and_new_one_renamed(lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("new")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")
    await transfer(lab, out, src)
    assert (out / "a.txt").read_text() == "old"
    assert (out / "a (1).txt").read_text() == "new"


async def test_wrong_code_fails_authentication_on_both_sides(lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "secret.txt"
    src.write_text("secret")
    sender, code = await lab.send(src)
    number, *words = code.split("-")
    other = next(w for w in WORDS if w != words[-1])
    wrong = "-".join([number, *words[:-1], other])
    out = tmp_path / "out"
    receiver = lab.receive(wrong, out)
    assert await receiver.wait() == 3
    assert await sender.wait() == 3
    for client in (sender, receiver):
        error = client.first("error")
        assert error is not None and error["code"] == "authentication_failed"
    assert not out.exists() or not any(out.iterdir())


async def resumed_intact(sender: Client, receiver: Client, src: Path, out: Path) -> dict[str, Any]:
    """Both ends finish, the file is whole, the receiver resumed a partial copy; returns the
    sender's `done` event."""
    assert await receiver.wait() == 0, receiver.report()
    assert await sender.wait() == 0, sender.report()
    assert sha256(out / src.name) == sha256(src)
    resumed = receiver.first("file")
    assert resumed is not None and resumed["resumed"] > 0
    done = sender.first("done")
    assert done is not None
    return done


async def test_killed_receiver_resumes_with_the_same_command(lab: Lab, tmp_path: Path) -> None:
    src = big_file(tmp_path / "big.bin", 64)
    out = tmp_path / "out"
    sender, code = await lab.send(src, extra=("--stall-timeout", "5"))
    first = lab.receive(code, out)
    await wait_progress(first, 0.3)
    first.kill()  # kill -9: no goodbye, no flush
    assert list(out.glob("*.part")), "the partial file is kept for the resume"
    state = b"".join(p.read_bytes() for p in (lab.workdir / "state").iterdir() if p.is_file())
    secret_words = "-".join(code.split("-")[1:]).encode()
    assert secret_words not in state  # the state database holds no part of the code in clear
    done = await resumed_intact(sender, lab.receive(code, out), src, out)
    sent_twice = done["chunksSent"] - done["chunks"]
    # At most what the sender had out unacknowledged: its window bounds it (written since the
    # last durable flush, queued at the receiver, in SCTP's flight and buffers). An estimate
    # of those parts, (FLUSH_BYTES + 4 * HIGH_WATER) // CHUNK_SIZE = 192, was passed in CI
    # (204): SCTP's flight and what the receiver holds are not those bounds.
    bound = SEND_WINDOW // CHUNK_SIZE + 1
    print(f"chunks sent twice after kill -9: {sent_twice} of {done['chunks']} (bound {bound})")
    assert 0 <= sent_twice <= bound, (sent_twice, bound)


async def test_a_hello_relayed_before_the_receiver_restarted_is_not_taken_by_its_new_run(
    lab: Lab, tmp_path: Path
) -> None:
    """tests.mitm_relay hold-hello keeps the sender's first hello from the receiver until the
    receiver, killed, is run again with the same code, and delivers it to the new run first.
    That hello is addressed to the run that is over: it is dropped, not taken for the PAKE
    (authentication used to fail), and the new round's hellos authenticate the pair."""
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(300_000))
    relay = f"{start_mitm_relay(lab)}/hold-hello"
    sender, code = await lab.send(src, server=relay)
    out = tmp_path / "out"
    first = lab.receive(code, out, server=relay)
    await sender.wait_event("sas")  # the receiver's hello came; its own is held
    await asyncio.sleep(1)  # (and has reached the relay)
    first.kill()
    again = lab.receive(code, out, server=relay)
    assert await again.wait() == 0, again.report()
    assert await sender.wait() == 0, sender.report()
    assert sha256(out / src.name) == sha256(src)
    assert first.first("sas") is None  # the first run never authenticated
    words = [e["words"] for e in sender.events() if e["event"] == "sas"]
    assert len(words) == 2  # one round with the first run, one with the second
    assert again.first("sas")["words"] == words[-1]  # type: ignore[index]


async def test_dropped_link_is_rebuilt_on_its_own(lab: Lab, tmp_path: Path) -> None:
    require_binary("nft")
    src = big_file(tmp_path / "big.bin", 48)
    out = tmp_path / "out"
    sender, code = await lab.send(src, extra=("--stall-timeout", "2"))
    receiver = lab.receive(code, out, "--stall-timeout", "2")
    await wait_progress(receiver, 0.2)
    with lab.blocked("meta l4proto udp"):  # the ICE path is gone, signaling is not
        await asyncio.sleep(4)
    assert await receiver.wait() == 0, receiver.report()
    assert await sender.wait() == 0, sender.report()
    assert sha256(out / "big.bin") == sha256(src)
    assert sender.first("reconnecting") is not None and receiver.first("reconnecting") is not None
    epochs = {e["epoch"] for e in receiver.events() if e["event"] == "connected"}
    assert len(epochs) >= 2


@pytest.mark.parametrize("mode", ["swap-key", "tamper-sdp"])
async def test_tampering_relay_fails_both_sides(lab: Lab, tmp_path: Path, mode: str) -> None:
    src = tmp_path / "secret.txt"
    src.write_text("secret")
    relay = f"{start_mitm_relay(lab)}/{mode}"
    sender, code = await lab.send(src, server=relay)
    out = tmp_path / "out"
    receiver = lab.receive(code, out, server=relay)
    assert await receiver.wait() == 3
    assert await sender.wait() == 3
    for client in (sender, receiver):
        error = client.first("error")
        assert error is not None and error["code"] == "authentication_failed"
        assert "authentication failed" in error["message"]
    assert not out.exists() or not any(out.iterdir())


async def test_tampered_chunk_is_refused_and_nothing_is_lost(lab: Lab, tmp_path: Path) -> None:
    src = big_file(tmp_path / "data.bin", 1)
    sender, code = await lab.send(src, program=("tests.hostile_sender", "tamper"))
    out = tmp_path / "out"
    receiver = lab.receive(code, out)
    assert await receiver.wait() == 1
    assert await sender.wait() == 1
    error = receiver.first("error")
    assert error is not None and error["code"] == "tampered"
    sender_error = sender.first("error")
    assert sender_error is not None and "altered" in sender_error["message"]
    assert not (out / "data.bin").exists()  # never given its final name
    assert (out / "data.bin.part").exists()  # chunks that did verify are kept for a resume


async def test_traversal_name_is_refused(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    src = tmp_path / "src" / "innocent.txt"
    src.write_text("payload")
    sender, code = await lab.send(src, program=("tests.hostile_sender", "traversal"))
    out = tmp_path / "in" / "out"
    receiver = lab.receive(code, out)
    assert await receiver.wait() == 1
    await sender.wait()
    error = receiver.first("error")
    assert error is not None and error["code"] == "unsafe_name"
    assert not (tmp_path / "in" / "escape.txt").exists()
    assert not any(out.iterdir())


async def test_full_disk_is_refused_before_writing(lab: Lab, tmp_path: Path) -> None:
    src = big_file(tmp_path / "big.bin", 8)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        sender, code = await lab.send(src)
        receiver = lab.receive(code, small / "out")
        assert await receiver.wait() == 5
        assert await sender.wait() == 1
        error = receiver.first("error")
        assert error is not None and error["code"] == "disk_full"
        assert "not enough space" in error["message"]
        assert not (small / "out" / "big.bin").exists()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


async def test_relay_only_goes_through_coturn(turn_lab: Lab, tmp_path: Path) -> None:
    src = big_file(tmp_path / "data.bin", 4)
    sender, code = await turn_lab.send(src, extra=("--relay-only",))
    out = tmp_path / "out"
    receiver = turn_lab.receive(code, out, "--relay-only")
    assert await receiver.wait() == 0, receiver.report()
    assert await sender.wait() == 0, sender.report()
    assert sha256(out / "data.bin") == sha256(src)
    for client in (sender, receiver):
        path = client.first("connected")["path"]  # type: ignore[index]
        assert (path["local"], path["remote"]) == ("relay", "relay"), path
    assert "session" in (tmp_path / "turnserver.log").read_text().lower()


@pytest.mark.parametrize(("answer", "status"), [("y\n", 0), ("n\n", 3)])
async def test_verify_asks_before_anything_moves(
    lab: Lab, tmp_path: Path, answer: str, status: int
) -> None:
    src = tmp_path / "a.txt"
    src.write_text("hello")
    sender = lab.run("send", "--verify", str(src), name="send", answer="y\n")
    code = (await sender.wait_event("code"))["code"]
    out = tmp_path / "out"
    receiver = lab.run(
        "receive",
        "--verify",
        "--out",
        str(out),
        name="recv",
        answer=answer,
        env={"FILESHARE_CODE": code},
    )
    assert await receiver.wait() == status
    if status == 0:
        assert await sender.wait() == 0
        assert (out / "a.txt").read_text() == "hello"
    else:
        error = receiver.first("error")
        assert error is not None and error["code"] == "not_confirmed"
        assert not out.exists() or not any(out.iterdir())
        assert await sender.wait() != 0


async def test_a_slow_answer_keeps_the_link(lab: Lab, tmp_path: Path) -> None:
    """The receiver's user answers --verify's question after twice the stall timeout: the
    keepalives go on meanwhile, so the same link carries the transfer and the question is
    asked once (it was dropped by the sender's stall timeout, and the question came again)."""
    src = tmp_path / "a.txt"
    src.write_text("hello")
    stall = ("--stall-timeout", "2")
    sender = lab.run("send", *stall, str(src), name="send")
    code = (await sender.wait_event("code"))["code"]
    out = tmp_path / "out"
    receiver = lab.run(
        "receive", "--verify", *stall, "--out", str(out), name="recv", asked=True,
        env={"FILESHARE_CODE": code},
    )  # fmt: skip
    await receiver.wait_event("manifest")
    await asyncio.sleep(4)
    receiver.answer("y\n")
    assert await receiver.wait() == 0, receiver.report()
    assert await sender.wait() == 0, sender.report()
    assert (out / "a.txt").read_text() == "hello"
    for client in (sender, receiver):
        assert [e["event"] for e in client.events()].count("connected") == 1, client.events()
    assert receiver.err.read_text().count("[y/N]") == 1


async def test_human_output(lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("hello")
    sender = lab.run("send", str(src), name="send", json_events=False)
    deadline = asyncio.get_running_loop().time() + 30
    while "Code:" not in sender.err.read_text():
        assert asyncio.get_running_loop().time() < deadline, sender.err.read_text()
        await asyncio.sleep(0.05)
    code = sender.err.read_text().split("Code:")[1].split()[0]
    out = tmp_path / "out"
    receiver = lab.run("receive", "--out", str(out), code, name="recv", json_events=False)
    assert await receiver.wait() == 0, receiver.report()
    assert await sender.wait() == 0, sender.report()
    shown = sender.err.read_text() + receiver.err.read_text()
    for text in ("Authentication words:", "Connected (host -> host over udp)", "Saved", "Done"):
        assert text in shown
    assert "▀" in sender.err.read_text() or "█" in sender.err.read_text()  # the QR code


async def test_restarted_sender_with_a_new_code_resumes(lab: Lab, tmp_path: Path) -> None:
    src = big_file(tmp_path / "big.bin", 32)
    out = tmp_path / "out"
    first_sender, code = await lab.send(src)
    first_receiver = lab.receive(code, out)
    await wait_progress(first_receiver, 0.3)
    first_sender.kill()
    first_receiver.kill()
    listing = lab.run("transfers", name="list")
    assert await listing.wait() == 0
    assert [e["name"] for e in listing.events()] == ["big.bin"]  # resumable, and says so
    # Another installation (no send ticket): a new session and code. (The same one within the
    # grace period would take its place back with the same code: tests/test_cli_flow.py.)
    sender = lab.run("send", str(src), name="send", state="other-sender")
    new_code = (await sender.wait_event("code"))["code"]
    assert new_code != code
    done = await resumed_intact(sender, lab.receive(new_code, out), src, out)
    assert done["chunksSent"] < done["chunks"]
    listing = lab.run("transfers", name="list", json_events=False)
    assert await listing.wait() == 0
    assert "No unfinished transfers" in listing.out.read_text()


@pytest.fixture
def tls_turn_lab(tmp_path: Path) -> Iterator[Lab]:
    require_root()
    require_binary("ip")
    require_binary("turnserver")
    with make_lab(tmp_path, turn=True, tls=True) as lab:
        yield lab


@pytest.mark.parametrize(
    ("rule", "transport"),
    [
        ("udp dport 3478", "tcp"),  # UDP to the TURN server blocked: TURN over TCP
        ("th dport 3478", "tls"),  # port 3478 blocked altogether: TURN over TLS on 5349
    ],
)
async def test_relay_falls_back_to_tcp_then_tls(
    tls_turn_lab: Lab, tmp_path: Path, rule: str, transport: str
) -> None:
    require_binary("nft")
    src = big_file(tmp_path / "data.bin", 2)
    out = tmp_path / "out"
    with tls_turn_lab.blocked(rule):
        sender, code = await tls_turn_lab.send(src, extra=("--relay-only",))
        receiver = tls_turn_lab.receive(code, out, "--relay-only")
        assert await receiver.wait() == 0, receiver.report()
        assert await sender.wait() == 0, sender.report()
    assert sha256(out / "data.bin") == sha256(src)
    for client in (sender, receiver):
        path = client.first("connected")["path"]  # type: ignore[index]
        assert (path["local"], path["turn"]) == ("relay", transport), path


@pytest.fixture
def wrong_secret_lab(tmp_path: Path) -> Iterator[Lab]:
    """The signaling server signs TURN credentials with a secret coturn does not know."""
    require_root()
    require_binary("turnserver")
    with make_lab(tmp_path, turn=True, signal_secret="not-the-turn-secret") as lab:
        yield lab


async def test_refused_turn_credentials_are_one_clear_line(
    wrong_secret_lab: Lab, tmp_path: Path
) -> None:
    src = tmp_path / "a.txt"
    src.write_text("x")
    sender, code = await wrong_secret_lab.send(src, extra=("--relay-only",))
    receiver = wrong_secret_lab.receive(code, tmp_path / "out", "--relay-only")
    assert await sender.wait() == 4
    assert await receiver.wait() == 1  # it hears why the sender stopped
    for client, kind in ((sender, "relay_unavailable"), (receiver, "peer_relay_unavailable")):
        error = client.first("error")
        assert error is not None and error["code"] == kind
        assert "refused the credentials (401)" in error["message"]
    assert receiver.err.read_text().strip() == ""  # one line on --json's stdout, no traceback
