"""The receiver's durable transfer state: round trips through a reopened store, resume and
reset, durability across a killed process, cleanup of stale transfers and their .part files."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import platformdirs
import pytest

from fileshare import state
from fileshare.bitmap import ChunkBitmap
from fileshare.state import (
    StateError,
    TransferRecord,
    TransferStore,
    default_state_path,
    install_key,
)

ROOT = Path(__file__).resolve().parent.parent
SHA = "ab" * 32
FID = "0123456789abcdef0123456789abcdef"
NOWHERE = "/nonexistent"  # begin()'s default output directory


def fid(n: int) -> str:
    return f"{n:032x}"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "transfers.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[TransferStore]:
    with TransferStore(db) as opened:
        yield opened


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """time.time() returns 1000, 1001, 1002, …: orderings and ages become exact."""
    ticks = itertools.count(1000)
    monkeypatch.setattr(time, "time", lambda: float(next(ticks)))
    return ticks


def begin(
    store: TransferStore, file_id: str = FID, tmp: Path | None = None, **kw: object
) -> TransferRecord:
    base = tmp or Path(NOWHERE)
    args: dict[str, Any] = {
        "name": "dir/file.bin",
        "size": 10_000,
        "chunk_size": 1000,
        "chunk_count": 10,
        "checksum": SHA,
        "target": str(base / f"{file_id}.bin"),
        "part": str(base / f"{file_id}.bin.part"),
        "out_dir": str(base),
    }
    args.update(kw)
    return store.begin(file_id, **args)


def bitmap(count: int, held: list[int]) -> ChunkBitmap:
    result = ChunkBitmap(count)
    for i in held:
        result.add(i)
    return result


# --- location and permissions -------------------------------------------------------------------


def test_default_state_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FILESHARE_STATE_DIR", str(tmp_path))
    assert default_state_path() == tmp_path / "transfers.sqlite3"
    monkeypatch.delenv("FILESHARE_STATE_DIR")
    expected = platformdirs.user_data_path("fileshare") / "transfers.sqlite3"
    assert default_state_path() == expected
    monkeypatch.setenv("FILESHARE_STATE_DIR", "")
    assert default_state_path() == expected


def test_files_are_private(db: Path) -> None:
    old = os.umask(0o022)
    try:
        with TransferStore(db) as store:
            begin(store)
            store.record_chunks(FID, NOWHERE, bitmap(10, [1]))
            assert stat.S_IMODE(os.stat(db.parent).st_mode) == 0o700
            for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                assert path.exists(), path
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    finally:
        os.umask(old)


def test_existing_file_is_made_private(db: Path) -> None:
    db.parent.mkdir()
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    TransferStore(db).close()
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_wal_and_full_sync_and_schema_version(store: TransferStore, db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        columns = [row[1] for row in conn.execute("PRAGMA table_info(transfers)")]
    finally:
        conn.close()
    # Manifests only: nothing here could hold a key or a code.
    assert columns == [
        "file_id",
        "name",
        "size",
        "chunk_size",
        "chunk_count",
        "checksum",
        "target",
        "part",
        "bitmap",
        "status",
        "updated_at",
        "out_dir",
    ]
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_newer_schema_is_refused(db: Path) -> None:
    TransferStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 4")
    conn.close()
    with pytest.raises(StateError, match="schema version 4"):
        TransferStore(db)


def test_a_version_1_database_gains_out_dir_and_its_files_are_never_cleaned(
    db: Path, tmp_path: Path
) -> None:
    """Rows from before the output directory was recorded have none: dropped when stale, their
    .part files left alone (no directory to check them against)."""
    part = make_part(tmp_path, "old.part")
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.executescript(state._SCHEMA)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO transfers VALUES (?, 'old', 1, 1, 1, ?, ?, ?, x'00', 'failed', 0)",
            (FID, SHA, str(tmp_path / "old"), str(part)),
        )
    conn.close()
    with TransferStore(db) as store:
        record = store.get(FID, "")
        assert record is not None and record.out_dir == ""
        removed = store.cleanup(max_age_seconds=1, now=time.time(), out_dir=tmp_path)
        assert [r.file_id for r in removed] == [FID] and store.get(FID, "") is None
    assert part.exists()


# --- round trips --------------------------------------------------------------------------------


def test_round_trip_through_a_reopened_store(db: Path, tmp_path: Path) -> None:
    with TransferStore(db) as store:
        assert store.get(FID, NOWHERE) is None
        record = begin(store, tmp=tmp_path)
        assert record.status == "active"
        assert record.bitmap == ChunkBitmap(10)
        store.record_chunks(FID, str(tmp_path), bitmap(10, [0, 1, 2, 7]))
    with TransferStore(db) as store:
        got = store.get(FID, str(tmp_path))
        assert got is not None
        assert got.bitmap == bitmap(10, [0, 1, 2, 7])
        assert got.bitmap.held == 4
        assert (got.file_id, got.name, got.size, got.chunk_size, got.chunk_count) == (
            FID,
            "dir/file.bin",
            10_000,
            1000,
            10,
        )
        assert (got.checksum, got.target, got.part) == (SHA, record.target, record.part)
        assert got.updated_at >= record.updated_at
        store.finish(FID, str(tmp_path), "done")
    with TransferStore(db) as store:
        done = store.get(FID, str(tmp_path))
        assert done is not None
        assert done.status == "done"
        assert done.bitmap == got.bitmap
        store.delete(FID, str(tmp_path))
        assert store.get(FID, str(tmp_path)) is None
        store.delete(FID, str(tmp_path))  # unknown: no error


def test_resume_returns_the_same_record(store: TransferStore) -> None:
    first = begin(store)
    store.record_chunks(FID, NOWHERE, bitmap(10, [3, 4, 9]))
    again = begin(store, target="/elsewhere/x", part="/elsewhere/x.part", name="other")
    assert again.bitmap == bitmap(10, [3, 4, 9])
    # The resumed transfer keeps writing into its own .part, whatever the new call proposed.
    assert (again.target, again.part, again.name) == (first.target, first.part, first.name)


@pytest.mark.parametrize(
    "change",
    [
        {"size": 10_001},
        {"chunk_size": 2000, "chunk_count": 5},
        {"chunk_count": 11},
        {"checksum": "cd" * 32},
    ],
)
def test_changed_manifest_resets(store: TransferStore, change: dict[str, Any]) -> None:
    begin(store)
    store.record_chunks(FID, NOWHERE, bitmap(10, [0, 1]))
    fresh = begin(store, target="/new/t", part="/new/t.part", **change)
    assert fresh.bitmap.held == 0
    assert (fresh.target, fresh.part) == ("/new/t", "/new/t.part")
    stored = store.get(FID, NOWHERE)
    assert stored == fresh


@pytest.mark.parametrize("status", ["done", "failed"])
def test_begin_after_finish_starts_afresh(store: TransferStore, status: str) -> None:
    begin(store)
    store.record_chunks(FID, NOWHERE, bitmap(10, list(range(10))))
    store.finish(FID, NOWHERE, status)
    again = begin(store)
    assert again.status == "active"
    assert again.bitmap.held == 0


def test_invalid_calls(store: TransferStore) -> None:
    with pytest.raises(ValueError, match="file_id"):
        begin(store, file_id="ABCDEF0123456789ABCDEF0123456789")
    with pytest.raises(ValueError, match="file_id"):
        begin(store, file_id="abc")
    with pytest.raises(ValueError, match="checksum"):
        begin(store, checksum="00")
    with pytest.raises(ValueError, match="bad manifest"):
        begin(store, size=-1)
    with pytest.raises(ValueError, match="bad manifest"):
        begin(store, chunk_size=0)
    with pytest.raises(KeyError):
        store.record_chunks(FID, NOWHERE, ChunkBitmap(10))
    with pytest.raises(KeyError):
        store.finish(FID, NOWHERE, "done")
    begin(store)
    with pytest.raises(ValueError, match="11 chunks"):
        store.record_chunks(FID, NOWHERE, ChunkBitmap(11))
    with pytest.raises(ValueError, match="'done' or 'failed'"):
        store.finish(FID, NOWHERE, "active")
    record = store.get(FID, NOWHERE)
    assert record is not None
    assert record.status == "active"


def test_threads_share_one_store(store: TransferStore) -> None:
    for n in range(8):
        begin(store, file_id=fid(n))

    def work(n: int) -> None:
        for i in range(10):
            store.record_chunks(fid(n), NOWHERE, bitmap(10, list(range(i + 1))))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(8)))
    assert all(r.bitmap.complete for r in store.resumable())


def test_a_million_chunk_bitmap_is_stored_compactly(store: TransferStore, db: Path) -> None:
    begin(store, size=10**6, chunk_size=1, chunk_count=10**6)
    held = ChunkBitmap.from_ranges(10**6, [(0, 600_000)])
    store.record_chunks(FID, NOWHERE, held)
    got = store.get(FID, NOWHERE)
    assert got is not None
    assert got.bitmap == held


# --- durability ---------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from fileshare.bitmap import ChunkBitmap
    from fileshare.state import TransferStore

    store = TransferStore(Path(sys.argv[1]))
    store.begin(sys.argv[2], "f", 3_000_000, 3, 1_000_000, "ab" * 32, "/t", "/t.part", "/")
    held = ChunkBitmap(1_000_000)
    for i in range(0, 1_000_000, 3):
        held.add(i)
    store.record_chunks(sys.argv[2], "/", held)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_record_survives_sigkill_right_after_return(db: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(db), FID],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    # Killed before closing: the commit sits in the WAL, never checkpointed into the database.
    assert os.path.getsize(f"{db}-wal") > 0
    with TransferStore(db) as store:
        record = store.get(FID, "/")
    assert record is not None
    assert record.status == "active"
    assert record.bitmap.held == 333_334
    assert list(itertools.islice(record.bitmap.missing(), 4)) == [1, 2, 4, 5]
    assert record.bitmap == ChunkBitmap.from_ranges(
        1_000_000, [(i, i + 1) for i in range(0, 1_000_000, 3)]
    )


# --- resumable and cleanup ----------------------------------------------------------------------


def test_resumable_is_active_newest_first(store: TransferStore, clock: Iterator[int]) -> None:
    for n in range(4):
        begin(store, file_id=fid(n))
    store.record_chunks(fid(1), NOWHERE, bitmap(10, [5]))
    store.finish(fid(2), NOWHERE, "done")
    assert [r.file_id for r in store.resumable()] == [fid(1), fid(3), fid(0)]
    store.finish(fid(0), NOWHERE, "failed")
    assert [r.file_id for r in store.resumable()] == [fid(1), fid(3)]


def make_part(directory: Path, name: str, data: bytes = b"partial") -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def test_cleanup_removes_finished_and_stale(
    store: TransferStore, tmp_path: Path, clock: Iterator[int]
) -> None:
    out = tmp_path / "out"
    (out / "dir").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = make_part(outside, "victim", b"precious")
    shared_part = make_part(out / "dir", "shared.part")
    (out / "dir" / "adir.part").mkdir()

    cases = {
        "done": make_part(out / "dir", "done.part"),
        "failed": make_part(out / "dir", "failed.part"),
        "stale": make_part(out / "dir", "stale.part"),
        "link": out / "dir" / "link.part",
        "gone": out / "dir" / "gone.part",
        "adir": out / "dir" / "adir.part",
        "oldshared": shared_part,
    }
    (out / "dir" / "link.part").symlink_to(victim)
    ids = {key: fid(n) for n, key in enumerate([*cases, "fresh", "newshared"])}

    def start(key: str, part: Path) -> None:
        target = str(part)[: -len(".part")]
        begin(store, file_id=ids[key], target=target, part=str(part), out_dir=str(out))

    for key, part in cases.items():  # updated_at 1000 … 1006
        start(key, part)
    fresh_part = make_part(out / "dir", "fresh.part")
    start("fresh", fresh_part)  # 1007
    start("newshared", shared_part)  # 1008
    store.finish(ids["done"], str(out), "done")  # 1009
    store.finish(ids["failed"], str(out), "failed")  # 1010

    removed = store.cleanup(max_age_seconds=100, now=1107, out_dir=out)  # cutoff 1007
    assert {r.file_id for r in removed} == {ids[k] for k in cases}
    assert [r.file_id for r in store.resumable()] == [ids["newshared"], ids["fresh"]]
    assert not cases["done"].exists()
    assert not cases["failed"].exists()
    assert not cases["stale"].exists()
    assert os.path.islink(cases["link"])  # not a regular file: neither it …
    assert victim.read_bytes() == b"precious"  # … nor what it points at is touched
    assert cases["adir"].is_dir()  # not a file of ours
    assert shared_part.exists()  # still the .part of a transfer that stays
    assert fresh_part.exists()

    assert store.cleanup(max_age_seconds=100, now=1107, out_dir=out) == []
    later = store.cleanup(max_age_seconds=100, now=10_000, out_dir=out)
    assert {r.file_id for r in later} == {ids["newshared"], ids["fresh"]}
    assert not shared_part.exists()
    assert not fresh_part.exists()
    assert store.resumable() == []


def test_cleanup_keeps_recent_active(store: TransferStore, tmp_path: Path) -> None:
    part = make_part(tmp_path, "x.part")
    begin(store, target=str(tmp_path / "x"), part=str(part), name="x", out_dir=str(tmp_path))
    assert store.cleanup(max_age_seconds=3600, now=time.time(), out_dir=tmp_path) == []
    assert part.exists()
    assert len(store.resumable()) == 1


def test_cleanup_of_a_rejoining_run_keeps_what_its_session_received(
    store: TransferStore, tmp_path: Path
) -> None:
    """A receive that rejoins its session (it holds its ticket) keeps the records of files it
    finished, so the rejoined transfer does not receive them again; failed ones still go, and
    the next run that does not rejoin removes them."""
    done, failed = fid(1), fid(2)
    for file_id in (done, failed):
        begin(store, file_id=file_id, out_dir=str(tmp_path))
    store.finish(done, str(tmp_path), "done")
    store.finish(failed, str(tmp_path), "failed")
    now = time.time()
    kept = store.cleanup(max_age_seconds=3600, now=now, out_dir=tmp_path, keep_done=True)
    assert [r.file_id for r in kept] == [failed]
    record = store.get(done, str(tmp_path))
    assert record is not None and record.status == "done"
    assert [r.file_id for r in store.cleanup(3600, now, tmp_path)] == [done]


def test_cleanup_treats_every_database_path_as_hostile(tmp_path: Path) -> None:
    """A modified database: stale records whose .part paths point outside the output directory,
    through a symlinked directory, at a non-.part name, or that claim another output directory,
    lose their rows (or wait for their own directory) and never a byte outside `out`."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)
    precious = {
        "escape": make_part(outside, "escape.part"),
        "linked": make_part(outside, "linked.part"),
        "elsewhere": make_part(outside, "elsewhere.part"),
        "notpart": make_part(out / "sub", "notpart.bin"),
    }
    db = tmp_path / "state" / "transfers.sqlite3"
    with TransferStore(db) as store:
        begin(store, file_id=fid(0), name="escape", out_dir=str(out))
        begin(store, file_id=fid(1), name="link/linked", out_dir=str(out))
        begin(store, file_id=fid(2), name="elsewhere", out_dir=str(outside))
        begin(store, file_id=fid(3), name="sub/notpart", out_dir=str(out))
        begin(store, file_id=fid(4), name="../x", out_dir=str(out))
    rows = {
        fid(0): (str(out / "escape"), str(precious["escape"])),  # part not beside target
        fid(1): (str(out / "link" / "linked"), str(out / "link" / "linked.part")),
        fid(2): (str(outside / "elsewhere"), str(precious["elsewhere"])),
        fid(3): (str(out / "sub" / "notpart"), str(precious["notpart"])),
        fid(4): (str(out / "escape"), str(out / "escape.part")),
    }
    with sqlite3.connect(db) as conn:
        for file_id, (target, part) in rows.items():
            conn.execute(
                "UPDATE transfers SET target = ?, part = ?, status = 'failed' WHERE file_id = ?",
                (target, part, file_id),
            )
    with TransferStore(db) as store:
        removed = store.cleanup(max_age_seconds=100, now=time.time(), out_dir=out)
        assert {r.file_id for r in removed} == {fid(0), fid(1), fid(3), fid(4)}
        assert store.get(fid(2), str(outside)) is not None  # left for a run into its directory
    for path in precious.values():
        assert path.read_bytes() == b"partial"


def test_remove_part_never_follows_a_symlinked_directory(tmp_path: Path) -> None:
    from fileshare import names

    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "d").symlink_to(outside, target_is_directory=True)
    victim = make_part(outside, "v.part")
    for part in (out / "d" / "v.part", victim, out / "v.bin", Path("v.part")):
        with pytest.raises(names.UnsafeName):
            names.remove_part(out, part)
    assert victim.exists()
    mine = make_part(out, "m.part")
    names.remove_part(out, mine)
    assert not mine.exists()


# --- hostile or damaged state -------------------------------------------------------------------


def test_a_garbage_database_is_one_clear_error_and_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "transfers.sqlite3"
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    with pytest.raises(StateError, match="damaged") as caught:
        TransferStore(path)
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == garbage  # nothing lost: the user decides what to do with it


def test_the_ticket_key_is_private_random_and_stable(tmp_path: Path) -> None:
    key = install_key(tmp_path / "state")
    assert len(key) == 32 and key == install_key(tmp_path / "state")
    assert install_key(tmp_path / "other") != key
    assert stat.S_IMODE((tmp_path / "state" / "ticket.key").stat().st_mode) == 0o600
    (tmp_path / "state" / "ticket.key").chmod(0o644)
    with pytest.raises(StateError, match="private"):
        install_key(tmp_path / "state")


def test_a_copied_database_and_the_code_do_not_open_a_ticket(tmp_path: Path) -> None:
    """The ticket is sealed under the install key and the code: a thief with a copy of the
    database and even the code itself (24 bits, searchable offline) cannot open it."""
    from fileshare import crypto

    code_secret = b"\x01\x02\x03"
    sealed = crypto.seal_ticket(install_key(tmp_path) + code_secret, "42", b"reconnect key")
    assert crypto.open_ticket(install_key(tmp_path) + code_secret, "42", sealed) == b"reconnect key"
    assert crypto.open_ticket(code_secret, "42", sealed) is None
    assert crypto.open_ticket(os.urandom(32) + code_secret, "42", sealed) is None
