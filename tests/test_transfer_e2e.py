"""`fileshare send` and `fileshare receive` end to end: real processes, real aiortc, a real
signaling server, inside an isolated namespace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fileshare.transfer import CHUNK_SIZE
from fileshare.wordlist import WORDS
from tests.conftest import require_binary, require_root
from tests.e2e import Lab, make_lab, sha256, tree


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_root()
    require_binary("ip")
    yield from make_lab(tmp_path)


async def transfer(lab: Lab, out: Path, *paths: Path) -> None:
    sender, code = await lab.send(*paths)
    receiver = lab.receive(code, out)
    assert await receiver.wait() == 0, receiver.err.read_text()
    assert await sender.wait() == 0, sender.err.read_text()
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
    await transfer(lab, out, src / "tree", src / "single.bin")
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
