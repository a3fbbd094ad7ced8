"""The transfer protocol as two state machines, Sender and Receiver: messages and events in,
actions out. No sockets, files or clocks: the asyncio/aiortc shell (fileshare.transfer) reads
and writes the bytes and tells the machines what happened.

Wire format on the DataChannel: control messages are JSON text; data chunks are binary,
`fileId (16 B) + chunkIndex (4 B, big-endian) + ChaCha20-Poly1305(chunk)`.

The whole transfer is announced up front: `transfer_start` (how many entries, how many bytes),
every `file_manifest`, `transfer_end`. The receiver checks the announcement as a whole (counts and
sums match, no two names alike, nothing over the bounds below) before it allocates anything in
proportion to it, admits it once (space claimed for all of it, the user asked once), and refuses
any entry outside it. Then per file: receiver `manifest_ack` (nothing held) or `resume_request`
(the chunks it already holds) -> sender streams the missing chunks without waiting -> receiver
sends batched `chunk_ack`s once chunks are durable -> receiver verifies the SHA-256 and answers
`transfer_complete`. The sender keeps at most SEND_WINDOW of chunks unacknowledged: a receiver
that lags (a slow disk, a busy browser tab) holds no more than that in memory, and loses no
more than that if it crashes or reloads. After a reconnect the sender announces every
unfinished file again, and the receiver accepts only entries it admitted before.
"""

from __future__ import annotations

import hashlib
import itertools
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal

import msgspec
import nacl.exceptions

from fileshare import crypto
from fileshare.bitmap import ChunkBitmap
from fileshare.chunks import CHUNK_SIZES, HEADER
from fileshare.names import UnsafeName, check_relative_path

VERSION: Final = 2
# Bytes of file data per chunk: fileshare.chunks; the bounds below then cap what an announcement
# can make the receiver hold in memory.
MAX_CHUNK: Final = CHUNK_SIZES[-1]
# Chunk bytes the sender has out without a `chunk_ack`. Receivers ack what they made durable,
# every 8 MiB (or second): twice that keeps data moving while a flush and its ack are under way.
# The transport's windows do not bound this: they count a message as taken once it is handed to
# the application, however far behind that is.
SEND_WINDOW: Final = 16 * 1024 * 1024
MAX_FILE_SIZE: Final = 2**50
MAX_CHUNKS: Final = 2**26  # per transfer: at most 8 MiB of chunk bitmaps (4 TiB at 64 KiB)
MAX_FILES: Final = 100_000  # entries (files and directories) per transfer
MAX_NAME_BYTES: Final = 32 * 2**20  # all names of a transfer together
MAX_MTIME_MS: Final = 2**53 - 1  # a JSON number both sides read exactly
# What may wait unread at a side that is busy (hashing a finished file, asking its user): an
# honest sender has at most SEND_WINDOW of chunk data out, as frames (each with its header and
# tag), and an honest peer's control messages come to less than every entry's manifest. A peer
# that sends more ignores the window: the transfer ends (`flow_control`) rather than hold it.
FRAME_OVERHEAD: Final = HEADER.size + crypto.TAG_BYTES
QUEUED_FRAME_BYTES: Final = SEND_WINDOW + SEND_WINDOW // 256 + 2 * (MAX_CHUNK + FRAME_OVERHEAD)
QUEUED_CONTROL_CHARS: Final = MAX_NAME_BYTES + MAX_FILES * 1024 + 2**20

Hex32 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
Hex64 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Ranges = list[tuple[int, int]]


class _Control(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    pass


class TransferStart(_Control, tag="transfer_start"):
    """Announces the entries that follow (directories included) and the sum of their sizes."""

    fileCount: Annotated[int, msgspec.Meta(ge=0, le=MAX_FILES)]
    totalBytes: Annotated[int, msgspec.Meta(ge=0, le=MAX_FILE_SIZE)]
    version: int = VERSION


class FileManifest(_Control, tag="file_manifest"):
    fileId: Hex32
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    size: Annotated[int, msgspec.Meta(ge=0, le=MAX_FILE_SIZE)]
    chunkSize: Annotated[int, msgspec.Meta(ge=CHUNK_SIZES[0], le=MAX_CHUNK)]
    chunkCount: Annotated[int, msgspec.Meta(ge=0, le=MAX_CHUNKS)]
    checksum: Hex64
    kind: Literal["file", "dir"] = "file"
    # Permission bits only (never setuid, setgid or sticky) and the modification time in ms
    # since the epoch, as the sender's file has them; 0: not given (a browser knows no mode).
    mode: Annotated[int, msgspec.Meta(ge=0, le=0o777)] = 0
    mtimeMs: Annotated[int, msgspec.Meta(ge=0, le=MAX_MTIME_MS)] = 0


class ManifestAck(_Control, tag="manifest_ack"):
    fileId: Hex32


class ResumeRequest(_Control, tag="resume_request"):
    fileId: Hex32
    receivedChunks: Ranges


class ChunkAck(_Control, tag="chunk_ack"):
    fileId: Hex32
    ranges: Ranges


class TransferComplete(_Control, tag="transfer_complete"):
    fileId: Hex32
    status: Literal["success", "failed"]
    error: str = ""


class TransferEnd(_Control, tag="transfer_end"):
    pass


class Error(_Control, tag="error"):
    code: str
    message: str


class Keepalive(_Control, tag="keepalive"):
    """Sent by both sides every second: silence longer than the stall timeout means the link
    is dead, found long before ICE consent freshness would notice (about 30 s)."""


Control = (
    TransferStart
    | FileManifest
    | ManifestAck
    | ResumeRequest
    | ChunkAck
    | TransferComplete
    | TransferEnd
    | Error
    | Keepalive
)
_decoder = msgspec.json.Decoder(Control)
_encoder = msgspec.json.Encoder()


class TransferError(Exception):
    """Ends the transfer; `code` is stable, `message` is for a person (names already escaped)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(msg: _Control) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes | str) -> Control:
    try:
        msg: Control = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise TransferError("bad_message", f"malformed control message: {exc}"[:200]) from None
    return msg


def manifest_digest(manifest: FileManifest) -> bytes:
    """Bound into every chunk's associated data: a chunk is only valid for this exact manifest."""
    return hashlib.sha256(encode(manifest)).digest()


def chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def chunk_length(manifest: FileManifest, index: int) -> int:
    if index < manifest.chunkCount - 1:
        return manifest.chunkSize
    return manifest.size - manifest.chunkSize * (manifest.chunkCount - 1)


def stable_file_id(name: str, size: int, checksum: str) -> str:
    """The same file under the same name gets the same id in every session, so a receiver
    holding part of it resumes even when the sender restarts with a new code."""
    digest = hashlib.sha256(
        b"fileshare file\0" + name.encode() + b"\0" + str(size).encode() + b"\0" + checksum.encode()
    )
    return digest.hexdigest()[:32]


# --- sender --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChunkToSend:
    """The shell reads `length` bytes at `offset` of the file and passes them to `seal`."""

    file_index: int
    index: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class FileProgress:
    name: str
    done: int  # bytes
    size: int


@dataclass
class _Outgoing:
    manifest: FileManifest
    digest: bytes
    key: bytes
    acked: ChunkBitmap
    queue: Iterator[int] = field(default_factory=lambda: iter(()))
    acked_bytes: int = 0
    unacked: dict[int, int] = field(default_factory=dict)  # sent on this connection: lengths
    announced: bool = False
    started: bool = False  # the receiver answered the manifest
    complete: bool = False


class Sender:
    def __init__(self, manifests: list[FileManifest], key_for: Callable[[bytes], bytes]) -> None:
        self._files = [
            _Outgoing(
                m, manifest_digest(m), key_for(bytes.fromhex(m.fileId)), ChunkBitmap(m.chunkCount)
            )
            for m in manifests
        ]
        self._by_id = {f.manifest.fileId: i for i, f in enumerate(self._files)}
        self._controls: deque[_Control] = deque()
        self._streaming: deque[int] = deque()  # files whose chunks are being sent, in order
        self.bytes_acked = 0
        self.chunks_sent = 0
        self.unacked_bytes = 0  # chunk bytes sent on this connection and not yet acknowledged
        self.total_bytes = sum(m.size for m in manifests)

    @property
    def done(self) -> bool:
        return all(f.complete for f in self._files)

    def rekey(self, key_for: Callable[[bytes], bytes]) -> None:
        """A new authentication round (the receiver restarted): new keys for every file."""
        for f in self._files:
            f.key = key_for(bytes.fromhex(f.manifest.fileId))

    def manifest(self, file_index: int) -> FileManifest:
        return self._files[file_index].manifest

    def moving(self, limit: int) -> list[FileProgress]:
        """Files being sent and not yet confirmed, at most `limit`, for a progress display."""
        files = (f for f in self._files if f.started and not f.complete)
        return [
            FileProgress(f.manifest.name, f.acked_bytes, f.manifest.size)
            for f in itertools.islice(files, limit)
        ]

    def start(self) -> None:
        """(Re)start on a fresh connection: announce every unfinished file, all up front."""
        self._controls.clear()
        self._streaming.clear()
        unfinished = [f for f in self._files if not f.complete]
        for f in self._files:
            f.announced, f.started = not f.complete, False
            f.queue = iter(())
            f.unacked.clear()
        self.unacked_bytes = 0
        self._controls.append(
            TransferStart(
                fileCount=len(unfinished), totalBytes=sum(f.manifest.size for f in unfinished)
            )
        )
        self._controls.extend(f.manifest for f in unfinished)
        self._controls.append(TransferEnd())

    def seal(self, chunk: ChunkToSend, data: bytes) -> bytes:
        f = self._files[chunk.file_index]
        if len(data) != chunk.length:
            raise TransferError("source_changed", f"{f.manifest.name} changed while being sent")
        self.chunks_sent += 1
        header = HEADER.pack(bytes.fromhex(f.manifest.fileId), chunk.index)
        return header + crypto.seal_chunk(f.key, header[:16], chunk.index, f.digest, data)

    def next_item(self) -> _Control | ChunkToSend | None:
        """What to put on the channel next; None when nothing can be sent until the peer answers."""
        if self._controls:
            return self._controls.popleft()
        if self.unacked_bytes >= SEND_WINDOW:
            return None
        while self._streaming:
            file_index = self._streaming[0]
            f = self._files[file_index]
            index = next(f.queue, None)
            if index is not None:
                m = f.manifest
                length = f.unacked[index] = chunk_length(m, index)
                self.unacked_bytes += length
                return ChunkToSend(file_index, index, index * m.chunkSize, length)
            self._streaming.popleft()
        return None

    def on_control(self, msg: Control) -> None:
        match msg:
            case ManifestAck(fileId=file_id):
                self._begin_streaming(file_id, [])
            case ResumeRequest(fileId=file_id, receivedChunks=held):
                self._begin_streaming(file_id, held)
            case ChunkAck(fileId=file_id, ranges=ranges):
                f = self._file(file_id)
                self._ack(f, _checked_ranges(ranges, f.manifest.chunkCount))
            case TransferComplete(fileId=file_id, status=status, error=error):
                f = self._file(file_id)
                if status != "success":
                    raise TransferError(
                        "verify_failed", f"receiver rejected {f.manifest.name}: {error[:200]}"
                    )
                self.bytes_acked += f.manifest.size - f.acked_bytes
                f.acked_bytes = f.manifest.size
                f.complete = True
                self.unacked_bytes -= sum(f.unacked.values())
                f.unacked.clear()
            case Error(code=code, message=message):
                raise TransferError(f"peer_{code}"[:64], f"receiver stopped: {message[:300]}")
            case Keepalive():
                pass
            case _:
                raise TransferError("unexpected", f"unexpected {type(msg).__name__} from receiver")

    def _ack(self, f: _Outgoing, ranges: Ranges) -> None:
        for start, end in ranges:
            for index in range(start, end):
                self.unacked_bytes -= f.unacked.pop(index, 0)
                if f.acked.add(index):
                    length = chunk_length(f.manifest, index)
                    f.acked_bytes += length
                    self.bytes_acked += length

    def _file(self, file_id: str) -> _Outgoing:
        index = self._by_id.get(file_id)
        if index is None:
            raise TransferError("unknown_file", "receiver named a file that is not being sent")
        return self._files[index]

    def _begin_streaming(self, file_id: str, held: Ranges) -> None:
        f = self._file(file_id)
        if not f.announced or f.started:
            raise TransferError("unexpected", "receiver answered a manifest twice")
        f.started = True
        have = ChunkBitmap.from_ranges(
            f.manifest.chunkCount, _checked_ranges(held, f.manifest.chunkCount)
        )
        self._ack(f, have.ranges())
        f.queue = have.missing()
        self._streaming.append(self._by_id[file_id])


def _checked_ranges(ranges: Ranges, count: int) -> Ranges:
    for start, end in ranges:
        if not 0 <= start < end <= count:
            raise TransferError("bad_range", f"chunk range {start}-{end} outside 0-{count}")
    return ranges


# --- receiver ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    message: _Control


@dataclass(frozen=True, slots=True)
class Admit:
    """The whole announcement is checked: resolve every target, check and claim space for all of
    it, ask the user once, open the .part files and load what is held; then file_ready() each."""

    manifests: tuple[FileManifest, ...]
    total_bytes: int


@dataclass(frozen=True, slots=True)
class Write:
    file_id: str
    index: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Verify:
    """All chunks are durable: check the whole-file SHA-256, then on_verified()."""

    file_id: str


@dataclass(frozen=True, slots=True)
class Finished:
    pass


Action = Send | Admit | Write | Verify | Finished


@dataclass
class _Incoming:
    manifest: FileManifest
    digest: bytes
    key: bytes
    received: ChunkBitmap
    unacked: list[int] = field(default_factory=list)
    received_bytes: int = 0
    ready: bool = False
    verifying: bool = False
    complete: bool = False


class Receiver:
    def __init__(self, key_for: Callable[[bytes], bytes]) -> None:
        self._key_for = key_for
        self._files: dict[str, _Incoming] = {}
        self._ended = False
        self._admitted = False
        self._expected: TransferStart | None = None  # between transfer_start and transfer_end
        self._announced: list[FileManifest] = []
        self._announced_bytes = self._announced_chunks = self._announced_name_bytes = 0
        self.file_count = 0
        self.total_bytes = 0
        self.bytes_received = 0
        self.failed: list[tuple[str, str]] = []

    def file(self, file_id: str) -> _Incoming:
        return self._files[file_id]

    @property
    def done(self) -> bool:
        return self._ended and all(f.complete for f in self._files.values())

    def on_control(self, msg: Control) -> list[Action]:
        match msg:
            case TransferStart(version=version):
                if version != VERSION:
                    raise TransferError("unsupported_version", f"peer speaks version {version}")
                if self._expected is not None:
                    raise TransferError("unexpected", "a second transfer_start before the end")
                self._expected, self._announced, self._ended = msg, [], False
                self._announced_bytes = self._announced_chunks = self._announced_name_bytes = 0
                return []
            case FileManifest():
                self._on_manifest(msg)
                return []
            case TransferEnd():
                return self._on_announced()
            case Error(code=code, message=message):
                raise TransferError(f"peer_{code}"[:64], f"sender stopped: {message[:300]}")
            case Keepalive():
                return []
            case _:
                raise TransferError("unexpected", f"unexpected {type(msg).__name__} from sender")

    def _on_manifest(self, m: FileManifest) -> None:
        """One entry of the announcement: checked on its own and against the running totals;
        nothing is allocated for it until the whole announcement is in."""
        expected = self._expected
        if expected is None:
            raise TransferError("bad_manifest", "a file manifest outside the announcement")
        try:
            check_relative_path(m.name)
        except UnsafeName as exc:
            raise TransferError("unsafe_name", str(exc)) from None
        if m.kind == "dir" and (m.size or m.chunkCount):
            raise TransferError("bad_manifest", "a directory entry carries data")
        if m.chunkSize not in CHUNK_SIZES:
            raise TransferError("bad_manifest", f"chunk size {m.chunkSize} is not a protocol size")
        if m.chunkCount != chunk_count(m.size, m.chunkSize):
            raise TransferError("bad_manifest", "chunk count does not match size and chunk size")
        if m.fileId != stable_file_id(m.name, m.size, m.checksum):
            raise TransferError("bad_manifest", "file id does not match the manifest")
        if self._admitted:
            known = self._files.get(m.fileId)
            if known is None or known.manifest != m:
                raise TransferError("outside_manifest", "an entry outside the admitted transfer")
        self._announced.append(m)
        self._announced_bytes += m.size
        self._announced_chunks += m.chunkCount
        self._announced_name_bytes += len(m.name.encode())
        if len(self._announced) > expected.fileCount:
            raise TransferError(
                "bad_manifest", f"more than the {expected.fileCount} announced entries"
            )
        if self._announced_bytes > expected.totalBytes:
            raise TransferError("bad_manifest", "entries larger than the announced total")
        if self._announced_chunks > MAX_CHUNKS:
            raise TransferError("too_large", f"more than {MAX_CHUNKS} chunks in one transfer")
        if self._announced_name_bytes > MAX_NAME_BYTES:
            raise TransferError("too_large", f"names longer than {MAX_NAME_BYTES} bytes together")

    def _on_announced(self) -> list[Action]:
        """transfer_end: the announcement is complete; check it as a whole."""
        expected, manifests = self._expected, self._announced
        if expected is None:
            raise TransferError("unexpected", "transfer_end without transfer_start")
        if len(manifests) != expected.fileCount or self._announced_bytes != expected.totalBytes:
            raise TransferError("bad_manifest", "the entries do not add up to the announcement")
        _check_names_apart(manifests)
        self._expected, self._announced, self._ended = None, [], True
        if self._admitted:  # a reconnect: say where each entry stands
            actions: list[Action] = []
            for m in manifests:
                f = self._files[m.fileId]
                if f.complete:
                    actions.append(Send(TransferComplete(fileId=m.fileId, status="success")))
                elif f.ready:
                    actions.append(self._held_reply(f))
            return [*actions, Finished()] if self.done else actions
        self._admitted = True
        self.file_count, self.total_bytes = len(manifests), expected.totalBytes
        for m in manifests:
            key = self._key_for(bytes.fromhex(m.fileId))
            self._files[m.fileId] = _Incoming(m, manifest_digest(m), key, ChunkBitmap(0))
        admit: list[Action] = [Admit(tuple(manifests), expected.totalBytes)]
        return [*admit, Finished()] if not manifests else admit

    def file_ready(self, file_id: str, held: ChunkBitmap) -> list[Action]:
        """The shell prepared the file; `held` is what it already has on disk, durably."""
        f = self._files[file_id]
        f.received, f.ready = held, True
        f.received_bytes = sum(
            chunk_length(f.manifest, i) for s, e in held.ranges() for i in range(s, e)
        )
        self.bytes_received += f.received_bytes
        actions: list[Action] = [self._held_reply(f)]
        if held.complete:
            f.verifying = True
            actions.append(Verify(file_id))
        return actions

    def file_present(self, file_id: str) -> list[Action]:
        """The shell found the file received whole already (an earlier round of this session):
        nothing of it moves; the sender hears it is complete."""
        f = self._files[file_id]
        f.ready = f.complete = True
        f.received_bytes = f.manifest.size
        self.bytes_received += f.manifest.size
        actions: list[Action] = [Send(TransferComplete(fileId=file_id, status="success"))]
        return [*actions, Finished()] if self.done else actions

    @staticmethod
    def _held_reply(f: _Incoming) -> Send:
        ranges = f.received.ranges()
        if not ranges:
            return Send(ManifestAck(fileId=f.manifest.fileId))
        return Send(ResumeRequest(fileId=f.manifest.fileId, receivedChunks=ranges))

    def on_chunk(self, frame: bytes) -> Write:
        if len(frame) < HEADER.size + crypto.TAG_BYTES:
            raise TransferError("bad_chunk", "a data chunk is too short")
        raw_id, index = HEADER.unpack_from(frame)
        f = self._files.get(raw_id.hex())
        if f is None or not f.ready or f.verifying or f.complete:
            raise TransferError(
                "bad_chunk", "a chunk arrived for a file that is not being received"
            )
        m = f.manifest
        if index >= m.chunkCount:
            raise TransferError("bad_chunk", f"chunk {index} is out of range for {m.chunkCount}")
        if index in f.received:
            raise TransferError("bad_chunk", f"chunk {index} arrived twice")
        expected = chunk_length(m, index) + crypto.TAG_BYTES
        if len(frame) - HEADER.size != expected:
            raise TransferError("bad_chunk", f"chunk {index} has the wrong size")
        try:
            data = crypto.open_chunk(f.key, raw_id, index, f.digest, frame[HEADER.size :])
        except nacl.exceptions.CryptoError:
            raise TransferError(
                "tampered", f"chunk {index} failed authentication: the data was altered"
            ) from None
        f.received.add(index)
        f.unacked.append(index)
        f.received_bytes += len(data)
        self.bytes_received += len(data)
        return Write(m.fileId, index, index * m.chunkSize, data)

    def on_durable(self, file_id: str, count: int | None = None) -> list[Action]:
        """The first `count` chunks written and not yet acknowledged (all, by default) are on
        disk and recorded: acknowledge them."""
        f = self._files[file_id]
        count = len(f.unacked) if count is None else count
        if not count:
            return []
        ranges = _to_ranges(f.unacked[:count])
        del f.unacked[:count]
        actions: list[Action] = [Send(ChunkAck(fileId=file_id, ranges=ranges))]
        if f.received.complete and not f.unacked and not f.verifying:
            f.verifying = True
            actions.append(Verify(file_id))
        return actions

    def on_verified(self, file_id: str, error: str = "") -> list[Action]:
        f = self._files[file_id]
        f.verifying, f.complete = False, True
        if error:
            self.failed.append((f.manifest.name, error))
            reply = TransferComplete(fileId=file_id, status="failed", error=error)
        else:
            reply = TransferComplete(fileId=file_id, status="success")
        actions: list[Action] = [Send(reply)]
        if self.done:
            actions.append(Finished())
        return actions

    def moving(self, limit: int) -> list[FileProgress]:
        """Files being received and not yet verified, at most `limit`, for a progress display."""
        files = (f for f in self._files.values() if f.ready and not f.complete)
        return [
            FileProgress(f.manifest.name, f.received_bytes, f.manifest.size)
            for f in itertools.islice(files, limit)
        ]

    def pending(self) -> list[str]:
        """Files with chunks written but not yet acknowledged (the shell flushes these)."""
        return [fid for fid, f in self._files.items() if f.unacked]


def _check_names_apart(manifests: list[FileManifest]) -> None:
    """No two entries may land on the same name (Unicode normalisation makes "é" and "e\u0301"
    look alike and, on some file systems, the same file), and no file may stand where another
    entry needs a directory."""
    seen: set[str] = set()
    files: set[str] = set()
    for m in manifests:
        key = unicodedata.normalize("NFC", m.name)
        if key in seen:
            raise TransferError("bad_manifest", "two entries with the same name")
        seen.add(key)
        if m.kind == "file":
            files.add(key)
    for key in seen:
        parts = key.split("/")
        if any("/".join(parts[:i]) in files for i in range(1, len(parts))):
            raise TransferError("bad_manifest", "an entry inside a file")


def _to_ranges(indexes: list[int]) -> Ranges:
    ranges: Ranges = []
    for index in sorted(indexes):
        if ranges and ranges[-1][1] == index:
            ranges[-1] = (ranges[-1][0], index + 1)
        else:
            ranges.append((index, index + 1))
    return ranges
