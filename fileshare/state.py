"""The receiver's durable transfer state: which chunks of which file are safely on disk, so an
interrupted transfer resumes where it stopped. Only manifests are kept, never keys or secrets."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import platformdirs

from fileshare import names
from fileshare.bitmap import ChunkBitmap

STATE_FILE = "transfers.sqlite3"
TICKET_KEY_FILE = "ticket.key"
TICKET_KEY_BYTES = 32
SCHEMA_VERSION = 3
STATUSES = ("active", "done", "failed")

_FILE_ID = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

_SCHEMA = """
CREATE TABLE transfers (
    file_id     TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    chunk_size  INTEGER NOT NULL CHECK (chunk_size > 0),
    chunk_count INTEGER NOT NULL CHECK (chunk_count >= 0),
    checksum    TEXT NOT NULL,
    target      TEXT NOT NULL,
    part        TEXT NOT NULL,
    bitmap      BLOB NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'done', 'failed')),
    updated_at  REAL NOT NULL
) STRICT;
CREATE INDEX transfers_status_updated ON transfers (status, updated_at);
CREATE TABLE tickets (
    session_id  TEXT PRIMARY KEY NOT NULL,
    sealed      BLOB NOT NULL,
    created_at  REAL NOT NULL
) STRICT;
"""
# Version 2: the absolute output directory a transfer was received into ('' for older rows,
# whose files cleanup() therefore never touches).
_SCHEMA_2 = "ALTER TABLE transfers ADD COLUMN out_dir TEXT NOT NULL DEFAULT ''"
# Version 3: a transfer is one file into one output directory, so receiving the same file into
# another --out starts its own record and leaves the first one's partial copy (and record) alone.
_SCHEMA_3 = """
CREATE TABLE transfers_3 (
    file_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    chunk_size  INTEGER NOT NULL CHECK (chunk_size > 0),
    chunk_count INTEGER NOT NULL CHECK (chunk_count >= 0),
    checksum    TEXT NOT NULL,
    target      TEXT NOT NULL,
    part        TEXT NOT NULL,
    bitmap      BLOB NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'done', 'failed')),
    updated_at  REAL NOT NULL,
    out_dir     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (file_id, out_dir)
) STRICT;
INSERT INTO transfers_3 SELECT file_id, name, size, chunk_size, chunk_count, checksum, target,
    part, bitmap, status, updated_at, out_dir FROM transfers;
DROP TABLE transfers;
ALTER TABLE transfers_3 RENAME TO transfers;
CREATE INDEX transfers_status_updated ON transfers (status, updated_at)
"""

_COLUMNS = (
    "file_id, name, size, chunk_size, chunk_count, checksum, target, part, bitmap, status, "
    "updated_at, out_dir"
)


class StateError(Exception):
    """The state database (or the ticket key) is unusable; the file is left as it is."""


class StateDiskFull(StateError):
    """The disk holding the state database is full: nothing more can be recorded."""

    code = "disk_full"


def install_key(directory: Path) -> bytes:
    """This installation's random ticket key: 32 bytes in a 0600 file beside the database, made
    on first use (written aside, then linked into place, so a racing process reads a whole key).
    Rejoin tickets are sealed under it and the code, never under the code alone."""
    path = directory / TICKET_KEY_FILE
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not os.path.lexists(path):
        temp = directory / f".{TICKET_KEY_FILE}.{os.getpid()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, os.urandom(TICKET_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
        os.unlink(temp)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StateError(f"cannot read the ticket key {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        key = os.read(fd, TICKET_KEY_BYTES + 1)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or len(key) != TICKET_KEY_BYTES:
        raise StateError(f"the ticket key {path} is not a private {TICKET_KEY_BYTES}-byte file")
    return key


def default_state_path() -> Path:
    """Where the store lives: $FILESHARE_STATE_DIR (tests, portable installs) or the user's
    data directory."""
    override = os.environ.get("FILESHARE_STATE_DIR")
    base = Path(override) if override else platformdirs.user_data_path("fileshare")
    return base / STATE_FILE


@dataclass
class TransferRecord:
    """One file being (or having been) received."""

    file_id: str
    name: str
    size: int
    chunk_size: int
    chunk_count: int
    checksum: str
    target: str
    part: str
    bitmap: ChunkBitmap
    status: str
    updated_at: float
    out_dir: str

    @property
    def ref(self) -> str:
        """A short ID for `fileshare transfers`: one file received into one directory."""
        return hashlib.sha256(f"{self.file_id}\0{self.out_dir}".encode()).hexdigest()[:8]


def _record(row: tuple[Any, ...]) -> TransferRecord:
    """A row in _COLUMNS order; the STRICT table guarantees the column types, and a bitmap that
    does not fit its chunk count is a damaged database, said in one line."""
    file_id, name, size, chunk_size, chunk_count, checksum, target, part, bits, status, at, out = (
        row
    )
    try:
        bitmap = ChunkBitmap.from_bytes(chunk_count, bits)
    except ValueError as exc:
        raise StateError(f"the state database has a damaged record: {exc}") from None
    return TransferRecord(
        file_id=file_id,
        name=name,
        size=size,
        chunk_size=chunk_size,
        chunk_count=chunk_count,
        checksum=checksum,
        target=target,
        part=part,
        bitmap=bitmap,
        status=status,
        updated_at=at,
        out_dir=out,
    )


def _check_file_id(file_id: str) -> None:
    if not _FILE_ID.fullmatch(file_id):
        raise ValueError(f"file_id must be 32 lowercase hex characters: {file_id!r}")


class TransferStore:
    """SQLite in WAL mode with synchronous=FULL: once a write returns, it survives a crash of
    the process and (as far as the disk honours fsync) of the machine. One connection, shared
    by threads under a lock, so callers may use it from asyncio.to_thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Create the file ourselves so it is 0600 from its first byte; SQLite gives its -wal
        # and -shm files the database file's mode.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA busy_timeout = 10000")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL mode for {path}: {mode}")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._migrate()
            problems = self._conn.execute("PRAGMA quick_check").fetchone()[0]
            if problems != "ok":
                raise sqlite3.DatabaseError(problems)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StateError(
                f"the state database {path} is damaged ({exc}); it was left as it is: "
                "move it away to start afresh"
            ) from None
        except BaseException:
            self._conn.close()
            raise

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION; each later version adds a step here."""
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{self.path} has schema version {version}; this fileshare knows up to "
                    f"{SCHEMA_VERSION}: upgrade fileshare"
                )
            if version < 1:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
            if version < 2:
                db.execute(_SCHEMA_2)
            if version < 3:
                for statement in _SCHEMA_3.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction that takes the write lock up front, so two processes sharing
        the file wait for each other instead of failing half-way."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
                    raise StateDiskFull(
                        f"the disk holding {self.path} is full: free some space, then receive "
                        "into the same folder again to resume"
                    ) from None
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> TransferStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def save_ticket(self, session_id: str, sealed: bytes, now: float) -> None:
        """A receiver's way back into its session after a restart; sealed under a key from the
        share code (crypto.seal_ticket), so the file holds nothing usable without the code."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO tickets (session_id, sealed, created_at) VALUES (?, ?, ?)",
                (session_id, sealed, now),
            )

    def ticket(self, session_id: str) -> bytes | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT sealed FROM tickets WHERE session_id = ?", (session_id,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def drop_ticket(self, session_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM tickets WHERE session_id = ?", (session_id,))

    def get(self, file_id: str, out_dir: str) -> TransferRecord | None:
        """The record of `file_id` received into the absolute directory `out_dir`."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM transfers WHERE file_id = ? AND out_dir = ?",  # noqa: S608
                (file_id, out_dir),
            ).fetchone()
        return None if row is None else _record(row)

    def begin(
        self,
        file_id: str,
        name: str,
        size: int,
        chunk_size: int,
        chunk_count: int,
        checksum: str,
        target: str,
        part: str,
        out_dir: str,
    ) -> TransferRecord:
        """Start receiving a file into the absolute directory `out_dir`, or resume it: an active
        row for the same file_id with the same size, chunk size, chunk count and checksum is
        returned unchanged (with its own target and part, which the caller must check and then
        use). Anything else starts afresh."""
        _check_file_id(file_id)
        if not os.path.isabs(out_dir):
            raise ValueError(f"out_dir must be absolute: {out_dir!r}")
        if not _SHA256.fullmatch(checksum):
            raise ValueError(f"checksum must be 64 lowercase hex characters: {checksum!r}")
        if size < 0 or chunk_size <= 0 or chunk_count < 0:
            raise ValueError(
                f"bad manifest: size={size} chunk_size={chunk_size} count={chunk_count}"
            )
        with self._write() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM transfers WHERE file_id = ? AND out_dir = ?",  # noqa: S608
                (file_id, out_dir),
            ).fetchone()
            if row is not None:
                old = _record(row)
                manifest = (size, chunk_size, chunk_count, checksum)
                same = (old.size, old.chunk_size, old.chunk_count, old.checksum) == manifest
                if same and old.status == "active":
                    return old
            record = TransferRecord(
                file_id=file_id,
                name=name,
                size=size,
                chunk_size=chunk_size,
                chunk_count=chunk_count,
                checksum=checksum,
                target=target,
                part=part,
                bitmap=ChunkBitmap(chunk_count),
                status="active",
                updated_at=time.time(),
                out_dir=out_dir,
            )
            db.execute(
                f"INSERT OR REPLACE INTO transfers ({_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.file_id,
                    record.name,
                    record.size,
                    record.chunk_size,
                    record.chunk_count,
                    record.checksum,
                    record.target,
                    record.part,
                    record.bitmap.to_bytes(),
                    record.status,
                    record.updated_at,
                    record.out_dir,
                ),
            )
        return record

    def record_chunks(self, file_id: str, out_dir: str, bitmap: ChunkBitmap) -> None:
        """Store which chunks are on disk. Call it only after fsync of the .part file, so the
        state never claims more than the disk holds; batch many chunks per call, as each call
        is one durable commit (an fsync of the WAL)."""
        with self._write() as db:
            row = db.execute(
                "SELECT chunk_count FROM transfers WHERE file_id = ? AND out_dir = ?",
                (file_id, out_dir),
            ).fetchone()
            if row is None:
                raise KeyError(file_id)
            if row[0] != bitmap.count:
                raise ValueError(f"bitmap has {bitmap.count} chunks, the transfer {row[0]}")
            db.execute(
                "UPDATE transfers SET bitmap = ?, updated_at = ? WHERE file_id = ? AND out_dir = ?",
                (bitmap.to_bytes(), time.time(), file_id, out_dir),
            )

    def finish(self, file_id: str, out_dir: str, status: str) -> None:
        """Mark a transfer done or failed; cleanup() removes it later."""
        if status not in ("done", "failed"):
            raise ValueError(f"a transfer finishes as 'done' or 'failed', not {status!r}")
        with self._write() as db:
            cursor = db.execute(
                "UPDATE transfers SET status = ?, updated_at = ? WHERE file_id = ? AND out_dir = ?",
                (status, time.time(), file_id, out_dir),
            )
            if cursor.rowcount == 0:
                raise KeyError(file_id)

    def delete(self, file_id: str, out_dir: str) -> None:
        """Forget a transfer (no error if unknown); its files are left alone."""
        with self._write() as db:
            db.execute(
                "DELETE FROM transfers WHERE file_id = ? AND out_dir = ?", (file_id, out_dir)
            )

    def resumable(self) -> list[TransferRecord]:
        """Active transfers, most recently updated first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM transfers WHERE status = 'active' "  # noqa: S608
                "ORDER BY updated_at DESC, rowid DESC"
            ).fetchall()
        return [_record(row) for row in rows]

    def cleanup(
        self, max_age_seconds: float, now: float, out_dir: Path, keep_done: bool = False
    ) -> list[TransferRecord]:
        """Remove finished transfers and active ones idle for `max_age_seconds` that were
        received into `out_dir` (the --out of this run), deleting their .part files. Every path
        in the database is hostile: a .part file is only unlinked if the record is its own
        (names.is_own_state: beside its target, where its name puts it under `out_dir`), no
        directory on the way is a symlink, it is a regular file, and no transfer that stays
        refers to it; a record that fails the checks (or from schema 1, with no directory) is
        dropped and its paths left alone. Records of other output directories wait for a run
        into theirs. `keep_done`: a run that rejoins its session keeps the records of files
        already received in it, so they are not received again. Returns the removed records."""
        cutoff = now - max_age_seconds
        here = os.path.abspath(out_dir)
        finished = "status = 'failed'" if keep_done else "status != 'active'"
        with self._write() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM transfers "  # noqa: S608
                f"WHERE ({finished} OR (status = 'active' AND updated_at < ?)) "
                "AND out_dir IN (?, '') ORDER BY updated_at",
                (cutoff, here),
            ).fetchall()
            removed = [_record(row) for row in rows]
            kept_parts = {
                part
                for (part,) in db.execute(
                    "SELECT part FROM transfers WHERE status = 'active' AND updated_at >= ?",
                    (cutoff,),
                )
            }
            # Files first: if we die in between, the rows remain and the next cleanup retries.
            done = [r for r in removed if r.part in kept_parts or _remove_part(r)]
            db.executemany(
                "DELETE FROM transfers WHERE file_id = ? AND out_dir = ?",
                [(r.file_id, r.out_dir) for r in done],
            )
        return done

    def forget(self, ref: str) -> TransferRecord:
        """`fileshare transfers --remove REF`: the unfinished transfer whose TransferRecord.ref
        starts with `ref` goes, with its .part file if that is its own (see cleanup())."""
        matches = [r for r in self.resumable() if ref and r.ref.startswith(ref.lower())]
        if len(matches) != 1:
            found = "no" if not matches else "more than one"
            raise KeyError(f"{found} unfinished transfer has the ID {ref!r}")
        record = matches[0]
        with self._write() as db:
            if not _remove_part(record):
                raise StateError(f"cannot remove {record.part} now: the record is kept")
            db.execute(
                "DELETE FROM transfers WHERE file_id = ? AND out_dir = ?",
                (record.file_id, record.out_dir),
            )
        return record

    def drop_orphans(self) -> list[TransferRecord]:
        """Forget unfinished transfers whose .part file is gone (deleted or moved by the user):
        nothing is left to resume. Returns the rest."""
        kept: list[TransferRecord] = []
        orphans: list[tuple[str, str]] = []
        for record in self.resumable():
            if os.path.isfile(record.part):
                kept.append(record)
            else:
                orphans.append((record.file_id, record.out_dir))
        with self._write() as db:
            db.executemany("DELETE FROM transfers WHERE file_id = ? AND out_dir = ?", orphans)
        return kept


def _remove_part(record: TransferRecord) -> bool:
    """Unlink the record's .part if it is its own (else leave the path alone); False only if
    it cannot be removed now (the record must stay, to try again)."""
    if not record.out_dir or not _own_part(record.out_dir, record):
        return True
    try:
        names.remove_part(Path(record.out_dir), Path(record.part))
    except (FileNotFoundError, names.UnsafeName):
        pass  # gone already, or not a file of ours: leave it
    except OSError:
        return False
    return True


def _own_part(out_dir: str, record: TransferRecord) -> bool:
    """The record's .part is where a transfer of its name into `out_dir` would have put it."""
    try:
        rel = names.check_relative_path(record.name)
    except names.UnsafeName:
        return False
    return names.is_own_state(Path(out_dir), rel, record.target, record.part)
