"""The asyncio shell around the protocol machines: files, the DataChannel, durability.

Sending is paced by the channel's `bufferedamountlow` event, never by polling: the sender fills
the channel up to HIGH_WATER and sleeps until it drains below LOW_WATER. Receiving writes each
chunk where it belongs, and every FLUSH_BYTES or FLUSH_SECONDS makes what it wrote durable
(fsync, then the bitmap in SQLite) before acknowledging it: an ack is a promise that survives
kill -9. See docs in README.md for why the sizes are what they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal, Protocol

from aiortc import RTCDataChannel
from aiortc.exceptions import InvalidStateError

from fileshare import filemeta, names, protocol
from fileshare.bitmap import ChunkBitmap
from fileshare.chunks import CHUNK_SIZE
from fileshare.peer import Link, Pipe
from fileshare.prefixdigest import PrefixDigest
from fileshare.protocol import ChunkToSend, FileManifest, Receiver, Sender, TransferError
from fileshare.state import TransferRecord, TransferStore

HIGH_WATER: Final = 1024 * 1024
LOW_WATER: Final = 256 * 1024
FLUSH_BYTES: Final = 8 * 1024 * 1024
FLUSH_SECONDS: Final = 1.0
LINGER_SECONDS: Final = 10.0
PROGRESS_FILES: Final = 4  # files named in a progress event: those moving now, at most this many


class Events(Protocol):
    """What the transfer tells its user interface."""

    def emit(self, event: str, **fields: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Source:
    path: Path | None  # None for a directory entry
    manifest: FileManifest


# Told (name, bytes hashed, size) as a file is hashed, so a large one is not a blank screen.
Hashed = Callable[[str, int, int], None]


def _sha256_file(path: Path, hashed: Hashed | None = None, name: str = "") -> str:
    if hashed is None:
        return PrefixDigest().finish(path)
    size = path.stat().st_size
    return PrefixDigest().finish(path, lambda done: hashed(name, done, size))


def _entry(
    name: str, path: Path | None, st: os.stat_result, checksum: str, chunk_size: int
) -> Source:
    kind: Literal["file", "dir"] = "file" if path is not None else "dir"
    size = st.st_size if path is not None else 0
    count = protocol.chunk_count(size, chunk_size)
    manifest = FileManifest(
        fileId=protocol.stable_file_id(name, size, checksum),
        name=name,
        size=size,
        chunkSize=chunk_size,
        chunkCount=count,
        checksum=checksum,
        kind=kind,
        mode=stat.S_IMODE(st.st_mode) & 0o777,  # never setuid, setgid or sticky
        mtimeMs=max(0, st.st_mtime_ns // 1_000_000),
    )
    return Source(path, manifest)


EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
Skipped = Callable[[Path, str], None]  # told of each entry of a tree that is not sent, and why


def _not_sent(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link (links are not sent)"
    return "not a regular file or folder"


def collect_sources(
    paths: list[Path],
    chunk_size: int = CHUNK_SIZE,
    hashed: Hashed | None = None,
    skipped: Skipped | None = None,
) -> list[Source]:
    """Files as named, directories as trees (empty ones too). A path named on the command line
    is followed if it is a symlink; inside a tree, symlinks, sockets, FIFOs and devices are
    never followed or sent, and each is told to `skipped`."""
    sources: list[Source] = []
    for top in paths:
        st = top.stat()
        if stat.S_ISREG(st.st_mode):
            checksum = _sha256_file(top, hashed, top.name)
            sources.append(_entry(top.name, top, st, checksum, chunk_size))
        elif stat.S_ISDIR(st.st_mode):
            base = top.resolve().name or "root"
            sources.append(_entry(base, None, st, EMPTY_SHA256, chunk_size))
            for root, dirs, files in os.walk(top):
                rel_root = Path(root).relative_to(top)
                for entry in sorted([*dirs, *files]):
                    path = Path(root) / entry
                    est = path.lstat()
                    name = (Path(base) / rel_root / entry).as_posix()
                    if stat.S_ISDIR(est.st_mode):
                        sources.append(_entry(name, None, est, EMPTY_SHA256, chunk_size))
                    elif stat.S_ISREG(est.st_mode):
                        digest = _sha256_file(path, hashed, name)
                        sources.append(_entry(name, path, est, digest, chunk_size))
                    elif skipped is not None:
                        skipped(path, _not_sent(est))
                dirs[:] = sorted(d for d in dirs if stat.S_ISDIR((Path(root) / d).lstat().st_mode))
        else:
            raise ValueError(f"{top}: not a regular file or directory")
    return sources


KEEPALIVE: Final = protocol.encode(protocol.Keepalive()).decode()


class Liveness:
    """Keepalives out every second; a ConnectionError once the peer is silent too long."""

    def __init__(self, pipe: Pipe, stall_seconds: float) -> None:
        self.pipe = pipe
        self.stall_seconds = stall_seconds
        self.last_sent = time.monotonic()
        pipe.last_heard = max(pipe.last_heard, self.last_sent)

    def tick(self) -> None:
        now = time.monotonic()
        if self.pipe.channel.readyState != "open":
            raise ConnectionError("the data channel closed")
        if now - self.pipe.last_heard > self.stall_seconds:
            raise ConnectionError(f"no word from the peer for {self.stall_seconds:.0f} s")
        if now - self.last_sent >= 1.0:
            self.last_sent = now
            self.pipe.channel.send(KEEPALIVE)

    async def meanwhile(self, work: Awaitable[None]) -> None:
        """Await `work` (a question to the user: it may take minutes) with keepalives going
        out and the peer's silence watched as in the transfer loop; else the peer's stall
        timeout would drop the link after `stall_seconds`, and the question come again."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                self.tick()
                await asyncio.wait({task}, timeout=0.5)
            task.result()
        finally:
            task.cancel()


@contextlib.asynccontextmanager
async def _telling_the_peer(pipe: Pipe) -> AsyncIterator[None]:
    """A transfer that fails here says why on the channel, so the peer stops with the reason.
    A send on a channel that closed under us (e.g. after the process was suspended, its
    timers fire late and the transport is gone) is a dropped link, not a crash."""
    try:
        yield
    except InvalidStateError as exc:
        raise ConnectionError("the data channel closed") from exc
    except TransferError as exc:
        if exc.code.startswith("peer_"):  # the peer told us; it needs no answer
            raise
        with contextlib.suppress(Exception):
            error = protocol.Error(code=exc.code, message=exc.message)
            pipe.channel.send(protocol.encode(error).decode())
            await asyncio.sleep(0.2)  # let it leave before the connection closes
        raise


@dataclass
class SendSide:
    sender: Sender
    sources: list[Source]
    events: Events
    stall_seconds: float = 15.0
    _fds: dict[int, int] = field(default_factory=dict)

    def _read(self, chunk: ChunkToSend) -> bytes:
        fd = self._fds.get(chunk.file_index)
        if fd is None:
            path = self.sources[chunk.file_index].path
            assert path is not None
            fd = self._fds[chunk.file_index] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return os.pread(fd, chunk.length, chunk.offset)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    async def run(self, pipe: Pipe) -> None:
        """Drive one connection until every file is confirmed, or the channel fails."""
        async with _telling_the_peer(pipe):
            await self._run(pipe)

    async def _run(self, pipe: Pipe) -> None:
        channel = pipe.channel
        channel.bufferedAmountLowThreshold = LOW_WATER
        alive = Liveness(pipe, self.stall_seconds)
        self.sender.start()
        reported = 0.0
        while True:
            while (message := pipe.take()) is not None:
                if isinstance(message, bytes):
                    raise TransferError("unexpected", "the receiver sent binary data")
                self.sender.on_control(protocol.decode(message))
            # Here, not at the loop's head: with nothing left to send, the wait below would
            # hold a finished transfer for its whole timeout (every transfer ended 1 s late).
            if self.sender.done:
                break
            alive.tick()
            if channel.bufferedAmount > HIGH_WATER:
                await pipe.wait()
                continue
            item = self.sender.next_item()
            if item is None:
                await pipe.wait()
            elif isinstance(item, ChunkToSend):
                channel.send(self.sender.seal(item, self._read(item)))
            else:
                channel.send(protocol.encode(item).decode())
            now = time.monotonic()
            if now - reported > 0.2:
                reported = now
                self._report()
                await asyncio.sleep(0)
        self._report()

    def _report(self) -> None:
        moving = self.sender.moving(PROGRESS_FILES)
        done, total = self.sender.bytes_acked, self.sender.total_bytes
        self.events.emit("progress", done=done, total=total, files=_file_fields(moving))


SHOWN_NAMES: Final = 10  # top-level names in a transfer's summary; the rest are counted


@dataclass(frozen=True)
class Summary:
    """What a transfer holds, as both sides announce it and the receiver is asked about."""

    files: int
    dirs: int
    bytes: int
    names: list[str]  # the first SHOWN_NAMES top-level names (hostile: a peer's names)
    more: int  # top-level entries not in `names`

    @classmethod
    def of(cls, manifests: list[FileManifest] | tuple[FileManifest, ...]) -> Summary:
        files = sum(m.kind == "file" for m in manifests)
        tops = list(dict.fromkeys(m.name.split("/", 1)[0] for m in manifests))
        return cls(
            files=files,
            dirs=len(manifests) - files,
            bytes=sum(m.size for m in manifests),
            names=tops[:SHOWN_NAMES],
            more=max(0, len(tops) - SHOWN_NAMES),
        )

    def counts(self) -> str:
        return names.counts_text(self.files, self.dirs, self.bytes)


# Asked once, with the transfer's summary, before anything of it is created.
Approve = Callable[[Summary], Awaitable[None]]


@dataclass
class _Plan:
    """One admitted entry: where it goes, and the resume record it may continue."""

    manifest: FileManifest
    rel: PurePosixPath
    record: TransferRecord | None = None
    present: bool = False  # received whole in an earlier round of this session: `record.target`

    @property
    def needed(self) -> int:
        if self.present:
            return 0
        held = self.record.bitmap.ranges() if self.record is not None else []
        m = self.manifest
        return m.size - sum(protocol.chunk_length(m, i) for s, e in held for i in range(s, e))


@dataclass
class _Open:
    manifest: FileManifest
    target: Path
    part: Path
    fd: int
    written_since_flush: int = 0
    digest: PrefixDigest = field(default_factory=PrefixDigest)


class ReceiveSide:
    def __init__(
        self,
        receiver: Receiver,
        store: TransferStore,
        out_dir: Path,
        overwrite: bool,
        events: Events,
        stall_seconds: float = 15.0,
        approve: Approve | None = None,
    ) -> None:
        self.stall_seconds = stall_seconds
        self.approve = approve
        self.receiver = receiver
        self.store = store
        self.out_dir = Path(os.path.abspath(out_dir))  # state and targets hold absolute paths
        self.out_key = str(self.out_dir)  # the resume records of this directory
        self.overwrite = overwrite
        self.events = events
        self.saved: list[Path] = []  # files
        self.dirs = 0  # folders made
        self._folders: list[tuple[PurePosixPath, FileManifest]] = []  # their modes come last
        self.umask = filemeta.current_umask()
        self._open: dict[str, _Open] = {}
        self._finished = False
        self._alive: Liveness | None = None  # the current link's, while `run` runs

    def close(self) -> None:
        for item in self._open.values():
            with contextlib.suppress(OSError):
                os.close(item.fd)
        self._open.clear()

    async def run(self, pipe: Pipe) -> None:
        async with _telling_the_peer(pipe):
            await self._run(pipe)

    async def run_link(self, link: Link) -> None:
        await self.run(link.pipe)

    async def _run(self, pipe: Pipe) -> None:
        channel = pipe.channel
        alive = self._alive = Liveness(pipe, self.stall_seconds)
        last_flush = time.monotonic()
        while not self._finished:
            alive.tick()
            if not pipe.waiting:
                await pipe.wait(FLUSH_SECONDS)
            while not self._finished and (message := pipe.take()) is not None:
                await self._handle(channel, message)
            if time.monotonic() - last_flush >= FLUSH_SECONDS or self._flush_due():
                await self._flush_all(channel)
                last_flush = time.monotonic()
        # The sender hangs up once it has read every transfer_complete; closing first could
        # drop the last one in flight.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_SECONDS):
                while channel.readyState == "open":
                    await pipe.wait()

    def _flush_due(self) -> bool:
        """Every FLUSH_BYTES, and at once when a file is whole (its verification waits on it)."""
        return any(
            o.written_since_flush >= FLUSH_BYTES
            or (o.written_since_flush and self.receiver.file(file_id).received.complete)
            for file_id, o in self._open.items()
        )

    async def _handle(self, channel: RTCDataChannel, message: str | bytes) -> None:
        if isinstance(message, bytes):
            write = self.receiver.on_chunk(message)
            item = self._open[write.file_id]
            try:
                os.pwrite(item.fd, write.data, write.offset)
            except OSError as exc:
                raise TransferError("disk", f"cannot write {item.target}: {exc.strerror}") from exc
            item.written_since_flush += len(write.data)
            item.digest.wrote(write.offset, write.data)
            return
        await self._perform(channel, self.receiver.on_control(protocol.decode(message)))

    async def _perform(self, channel: RTCDataChannel, actions: list[protocol.Action]) -> None:
        for action in actions:
            match action:
                case protocol.Send(message=msg):
                    channel.send(protocol.encode(msg).decode())
                case protocol.Admit(manifests=manifests, total_bytes=total):
                    await self._perform(channel, await self._admit(manifests, total))
                case protocol.Verify(file_id=file_id):
                    await self._perform(channel, await self._verify(file_id))
                case protocol.Finished():
                    self._finished = True
                    for rel, folder in reversed(self._folders):
                        filemeta.apply_to_directory(self.out_dir, rel, folder, self.umask)
                case protocol.Write():
                    raise AssertionError("writes come from on_chunk")

    def _plan(self, m: FileManifest) -> _Plan:
        """Check an entry against the output directory and find what of it is held; creates
        nothing. A resume record counts only for the same manifest and if its paths are where
        this entry belongs (names.is_own_state); any other record is forgotten. A finished
        record (kept only while its session is rejoined: TransferStore.cleanup) whose file is
        still there, a regular file of the size, makes the entry present (its checksum is
        checked in `_admit`)."""
        rel = names.check_relative_path(m.name)
        names.check_fits(self.out_dir, rel)
        record = self.store.get(m.fileId, self.out_key) if m.kind == "file" else None
        if record is None:
            return _Plan(m, rel)
        same = (record.size, record.chunk_size, record.chunk_count, record.checksum) == (
            m.size,
            m.chunkSize,
            m.chunkCount,
            m.checksum,
        )
        own = same and names.is_own_state(self.out_dir, rel, record.target, record.part)
        if own and record.status == "active" and os.path.isfile(record.part):
            return _Plan(m, rel, record)
        if own and record.status == "done" and _regular_file_of(Path(record.target), m.size):
            return _Plan(m, rel, record, present=True)
        self.store.delete(m.fileId, self.out_key)
        return _Plan(m, rel)

    async def _still_present(self, plan: _Plan) -> _Plan:
        """A present entry whose file no longer has its checksum is received anew."""
        if not plan.present or plan.record is None:
            return plan
        target = Path(plan.record.target)
        if await asyncio.to_thread(_sha256_file, target) == plan.manifest.checksum:
            return plan
        self.store.delete(plan.manifest.fileId, self.out_key)
        return _Plan(plan.manifest, plan.rel)

    async def _admit(
        self, manifests: tuple[FileManifest, ...], total: int
    ) -> list[protocol.Action]:
        """The whole transfer at once: every name checked, the space for all of it checked, the
        user asked once, then each .part created with its space claimed (posix_fallocate, not a
        sparse file, so a full disk is found now and not half-way)."""
        try:
            plans = [self._plan(m) for m in manifests]
        except names.UnsafeName as exc:
            raise TransferError("unsafe_name", str(exc)) from None
        plans = [await self._still_present(p) for p in plans]
        try:
            names.ensure_space(self.out_dir, sum(p.needed for p in plans))
        except names.DiskFull as exc:
            raise TransferError("disk_full", str(exc)) from None
        summary = Summary.of(manifests)
        self.events.emit(
            "manifest",
            files=summary.files,
            dirs=summary.dirs,
            bytes=total,
            names=summary.names,
            more=summary.more,
            out=self.out_key,
        )
        if self.approve is not None:
            assert self._alive is not None  # admissions come from `run`'s loop
            await self._alive.meanwhile(self.approve(summary))
        created: list[_Open] = []
        try:
            return [a for plan in plans for a in self._create(plan, created)]
        except names.UnsafeName as exc:
            self._release(created)
            raise TransferError("unsafe_name", str(exc)) from None
        except BaseException:
            self._release(created)
            raise

    def _create(self, plan: _Plan, created: list[_Open]) -> list[protocol.Action]:
        m, rel = plan.manifest, plan.rel
        if m.kind == "dir":
            names.ensure_directory(self.out_dir, rel)
            self.dirs += 1
            self._folders.append((rel, m))
            return self.receiver.file_ready(m.fileId, ChunkBitmap(0))
        if plan.present and plan.record is not None:
            self.saved.append(Path(plan.record.target))
            self.events.emit(
                "file", name=m.name, size=m.size, resumed=m.chunkCount, chunks=m.chunkCount
            )
            return self.receiver.file_present(m.fileId)
        if plan.record is not None:
            if rel.parent.parts:
                names.ensure_directory(self.out_dir, rel.parent)  # no symlink on the way
            target, part = Path(plan.record.target), Path(plan.record.part)
        else:
            target = names.resolve_target(self.out_dir, rel, self.overwrite)
            part = names.part_path(target)
        record = self.store.begin(
            m.fileId,
            m.name,
            m.size,
            m.chunkSize,
            m.chunkCount,
            m.checksum,
            str(target),
            str(part),
            self.out_key,
        )
        fd = names.open_part(part)
        item = _Open(m, target, part, fd)
        self._open[m.fileId] = item
        if plan.record is None:
            created.append(item)
            os.ftruncate(fd, 0)  # a stale .part of another version must not linger
        _claim_space(item, self.out_dir)
        self.events.emit(
            "file", name=m.name, size=m.size, resumed=record.bitmap.held, chunks=m.chunkCount
        )
        return self.receiver.file_ready(m.fileId, record.bitmap)

    def _release(self, created: list[_Open]) -> None:
        """An admission that failed half-way gives back what it created (resumed files stay)."""
        for item in created:
            self._open.pop(item.manifest.fileId, None)
            with contextlib.suppress(OSError):
                os.close(item.fd)
            with contextlib.suppress(OSError):
                item.part.unlink()
            self.store.delete(item.manifest.fileId, self.out_key)

    async def _flush_all(self, channel: RTCDataChannel) -> None:
        for file_id in self.receiver.pending():
            item = self._open[file_id]
            count = len(self.receiver.file(file_id).unacked)
            snapshot = ChunkBitmap.from_bytes(
                item.manifest.chunkCount, self.receiver.file(file_id).received.to_bytes()
            )
            try:
                await asyncio.to_thread(os.fsync, item.fd)
            except OSError as exc:
                raise TransferError("disk", f"cannot write {item.target}: {exc.strerror}") from None
            await asyncio.to_thread(self.store.record_chunks, file_id, self.out_key, snapshot)
            item.written_since_flush = 0
            await self._perform(channel, self.receiver.on_durable(file_id, count))
        self.events.emit(
            "progress",
            done=self.receiver.bytes_received,
            total=self.receiver.total_bytes,
            files=_file_fields(self.receiver.moving(PROGRESS_FILES)),
        )

    async def _verify(self, file_id: str) -> list[protocol.Action]:
        m = self.receiver.file(file_id).manifest
        if m.kind == "dir":
            return self.receiver.on_verified(file_id)
        item = self._open.pop(file_id)
        await asyncio.to_thread(os.fsync, item.fd)
        digest = await asyncio.to_thread(item.digest.finish, item.part)
        if digest == m.checksum:
            filemeta.apply(item.fd, m, self.umask)  # the .part stays 0600 until it is whole
        os.close(item.fd)
        if digest != m.checksum:
            self.store.finish(file_id, self.out_key, "failed")
            with contextlib.suppress(OSError):
                item.part.unlink()
            self.events.emit("file_failed", name=m.name, reason="checksum mismatch")
            return self.receiver.on_verified(file_id, "checksum mismatch")
        final = names.finalize(item.part, item.target, self.overwrite)
        self.store.finish(file_id, self.out_key, "done")
        self.saved.append(final)
        self.events.emit("saved", name=m.name, path=str(final), size=m.size)
        return self.receiver.on_verified(file_id)


def _regular_file_of(path: Path, size: int) -> bool:
    """`path` is a regular file (not a link to one) of `size` bytes."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == size


def _file_fields(moving: list[protocol.FileProgress]) -> list[dict[str, Any]]:
    return [{"name": f.name, "done": f.done, "size": f.size} for f in moving]


def _claim_space(item: _Open, out_dir: Path) -> None:
    if not item.manifest.size:
        return
    try:
        os.posix_fallocate(item.fd, 0, item.manifest.size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            free = names.free_space(out_dir)
            raise TransferError(
                "disk_full", str(names.DiskFull(out_dir, item.manifest.size, free))
            ) from None
        raise TransferError(
            "disk", f"cannot claim space for {item.target}: {exc.strerror}"
        ) from None
