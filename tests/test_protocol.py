"""The transfer state machines, wired together in memory: no sockets, no disk."""

from __future__ import annotations

import hashlib
import os
import random

import msgspec
import pytest

from fileshare import chunks, protocol
from fileshare.bitmap import ChunkBitmap
from fileshare.protocol import (
    ChunkToSend,
    FileManifest,
    Receiver,
    Sender,
    TransferError,
)

KEY = bytes(range(32))
CS = chunks.CHUNK_SIZES[0]  # the smallest protocol chunk keeps these tests small


def key_for(file_id: bytes) -> bytes:
    return hashlib.sha256(KEY + file_id).digest()


def manifest(name: str, data: bytes, chunk_size: int = CS, kind: str = "file") -> FileManifest:
    checksum = hashlib.sha256(data).hexdigest()
    return FileManifest(
        fileId=protocol.stable_file_id(name, len(data), checksum),
        name=name,
        size=len(data),
        chunkSize=chunk_size,
        chunkCount=protocol.chunk_count(len(data), chunk_size),
        checksum=checksum,
        kind=kind,  # type: ignore[arg-type]
    )


class Wire:
    """Runs both machines; `disk` is what the receiver wrote, `held` what it had before."""

    def __init__(
        self,
        files: dict[str, bytes],
        held: dict[str, ChunkBitmap] | None = None,
        present: frozenset[str] = frozenset(),
    ) -> None:
        self.files = files
        self.present = present  # files the receiver has whole from an earlier round
        self.manifests = [manifest(n, d) for n, d in files.items()]
        self.sender = Sender(self.manifests, key_for)
        self.receiver = Receiver(key_for)
        self.held = held or {}
        self.disk: dict[str, bytearray] = {}
        self.chunks_sent = 0
        self.finished = False

    def data_of(self, chunk: ChunkToSend) -> bytes:
        m = self.sender.manifest(chunk.file_index)
        return self.files[m.name][chunk.offset : chunk.offset + chunk.length]

    def deliver_control(self, raw: bytes, to_receiver: bool) -> None:
        msg = protocol.decode(raw)
        if not to_receiver:
            self.sender.on_control(msg)
            return
        self.run(self.receiver.on_control(msg))

    def run(self, actions: list[protocol.Action]) -> None:
        for action in actions:
            match action:
                case protocol.Send(message=msg):
                    self.deliver_control(protocol.encode(msg), to_receiver=False)
                case protocol.Admit(manifests=manifests):
                    for m in manifests:
                        self.disk.setdefault(m.name, bytearray(m.size))
                        if m.name in self.present:
                            self.run(self.receiver.file_present(m.fileId))
                            continue
                        held = self.held.get(m.name, ChunkBitmap(m.chunkCount))
                        self.run(self.receiver.file_ready(m.fileId, held))
                case protocol.Write(file_id=fid, offset=offset, data=data):
                    name = self.receiver.file(fid).manifest.name
                    self.disk[name][offset : offset + len(data)] = data
                case protocol.Verify(file_id=fid):
                    m = self.receiver.file(fid).manifest
                    ok = hashlib.sha256(self.disk[m.name]).hexdigest() == m.checksum
                    self.run(self.receiver.on_verified(fid, "" if ok else "checksum mismatch"))
                case protocol.Finished():
                    self.finished = True

    def flush(self, batch: list[bytes], shuffle: random.Random | None, durable: bool) -> None:
        if shuffle:
            shuffle.shuffle(batch)
        for frame in batch:
            self.run([self.receiver.on_chunk(frame)])
        batch.clear()
        if durable:
            for fid in self.receiver.pending():
                self.run(self.receiver.on_durable(fid))

    def pump(self, limit: int | None = None, shuffle: random.Random | None = None) -> None:
        """Move items until nothing moves, or until `limit` chunks were sent (a dropped link)."""
        batch: list[bytes] = []
        while True:
            item = self.sender.next_item()
            if item is None:
                if not batch and not self.receiver.pending():
                    return
                self.flush(batch, shuffle, durable=True)
            elif isinstance(item, ChunkToSend):
                self.chunks_sent += 1
                batch.append(self.sender.seal(item, self.data_of(item)))
                if limit is not None and self.chunks_sent >= limit:
                    self.flush(batch, shuffle, durable=False)
                    return
            else:
                self.flush(batch, shuffle, durable=True)
                self.deliver_control(protocol.encode(item), to_receiver=True)


FILES = {
    "a.bin": os.urandom(CS * 10 + 7),
    "dir/b.bin": os.urandom(CS * 3),
    "dir/sub/empty": b"",
    "c.bin": os.urandom(1),
}


def assert_received(wire: Wire) -> None:
    assert wire.finished and wire.sender.done and wire.receiver.done
    for name, data in wire.files.items():
        assert bytes(wire.disk[name]) == data
    assert wire.sender.bytes_acked == sum(len(d) for d in wire.files.values())


def test_several_files_arrive_whole() -> None:
    wire = Wire(FILES)
    wire.sender.start()
    wire.pump()
    assert_received(wire)
    assert wire.chunks_sent == 11 + 3 + 0 + 1


def test_reordered_chunks_are_fine() -> None:
    wire = Wire(FILES)
    wire.sender.start()
    wire.pump(shuffle=random.Random(7))
    assert_received(wire)


def test_reconnect_sends_only_what_is_missing() -> None:
    wire = Wire(FILES)
    wire.sender.start()
    wire.pump(limit=6)  # the link drops after 6 chunks of a.bin
    wire.sender.start()  # new peer connection: the sender announces unfinished files again
    wire.pump()
    assert_received(wire)
    assert wire.chunks_sent == 15  # nothing sent twice


def _drain(sender: Sender) -> list[ChunkToSend]:
    """What the sender hands out before it waits for the receiver."""
    out: list[ChunkToSend] = []
    while (item := sender.next_item()) is not None:
        assert isinstance(item, ChunkToSend)
        out.append(item)
    return out


def test_the_sender_has_at_most_a_window_unacknowledged() -> None:
    """A receiver that lags (it acks once its writes are durable) holds, and a crashed or
    reloaded one loses, at most SEND_WINDOW (plus the chunk that crossed it)."""
    m = manifest("big.bin", bytes(3 * protocol.SEND_WINDOW), chunks.CHUNK_SIZE)
    sender = Sender([m], key_for)
    sender.start()
    while sender.next_item() is not None:  # the announcement
        pass
    sender.on_control(protocol.ManifestAck(fileId=m.fileId))
    first = _drain(sender)
    assert sender.unacked_bytes == sum(c.length for c in first)
    assert protocol.SEND_WINDOW <= sender.unacked_bytes < protocol.SEND_WINDOW + m.chunkSize
    sender.on_control(protocol.ChunkAck(fileId=m.fileId, ranges=[(0, 8)]))
    assert [c.index for c in _drain(sender)] == list(range(len(first), len(first) + 8))
    sender.on_control(protocol.ChunkAck(fileId=m.fileId, ranges=[(0, 8)]))  # again: nothing
    assert _drain(sender) == []
    sender.start()  # a new connection: what was out is sent again, counted afresh
    assert sender.unacked_bytes == 0


def test_restarted_receiver_resumes_from_its_durable_state() -> None:
    first = Wire(FILES)
    first.sender.start()
    first.pump(limit=9)
    m = first.manifests[0]
    held = ChunkBitmap.from_ranges(m.chunkCount, [(0, 4)])  # only 4 chunks were made durable
    second = Wire(FILES, held={"a.bin": held})
    second.disk["a.bin"] = bytearray(first.disk["a.bin"])
    second.sender.start()
    second.pump()
    assert_received(second)
    assert second.chunks_sent == 15 - 4


def test_a_file_present_from_an_earlier_round_is_not_sent() -> None:
    """Both sides restarted; a.bin was received whole before: it is complete at once, and only
    the other files' chunks move."""
    wire = Wire(FILES, present=frozenset({"a.bin"}))
    wire.sender.start()
    wire.pump()
    wire.disk["a.bin"][:] = FILES["a.bin"]  # what the earlier round saved
    assert_received(wire)
    assert wire.chunks_sent == 15 - 11
    assert wire.receiver.bytes_received == sum(len(d) for d in FILES.values())


def test_tampered_chunk_is_refused() -> None:
    wire = Wire({"a.bin": os.urandom(3 * CS + 8)})
    wire.sender.start()
    for _ in range(3):  # transfer_start, the manifest, transfer_end
        wire.deliver_control(protocol.encode(wire.sender.next_item()), True)  # type: ignore[arg-type]
    chunk = wire.sender.next_item()
    assert isinstance(chunk, ChunkToSend)
    frame = bytearray(wire.sender.seal(chunk, wire.data_of(chunk)))
    frame[-1] ^= 0x40
    with pytest.raises(TransferError) as err:
        wire.receiver.on_chunk(bytes(frame))
    assert err.value.code == "tampered"


def started_wire() -> tuple[Wire, bytes]:
    wire = Wire({"a.bin": os.urandom(3 * CS + 8)})
    wire.sender.start()
    for _ in range(3):  # transfer_start, the manifest, transfer_end
        wire.deliver_control(protocol.encode(wire.sender.next_item()), True)  # type: ignore[arg-type]
    chunk = wire.sender.next_item()
    assert isinstance(chunk, ChunkToSend)
    return wire, wire.sender.seal(chunk, wire.data_of(chunk))


def test_duplicate_chunk_is_refused() -> None:
    wire, frame = started_wire()
    wire.receiver.on_chunk(frame)
    with pytest.raises(TransferError, match="twice"):
        wire.receiver.on_chunk(frame)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda f: f[:16] + (99).to_bytes(4, "big") + f[20:], "out of range"),
        (lambda f: f[:-1], "wrong size"),
        (lambda f: f + b"x", "wrong size"),
        (lambda f: b"\0" * 16 + f[16:], "not being received"),
        (lambda f: f[:10], "too short"),
    ],
)
def test_bad_chunks_are_refused(mangle: object, reason: str) -> None:
    wire, frame = started_wire()
    with pytest.raises(TransferError, match=reason):
        wire.receiver.on_chunk(mangle(frame))  # type: ignore[operator]


@pytest.mark.parametrize(
    "name", ["../evil", "/etc/passwd", "a/../../b", "a\x00b", "x/./y", "C:\\x"]
)
def test_hostile_names_end_the_transfer(name: str) -> None:
    receiver = started_receiver(1, 4)
    with pytest.raises(TransferError) as err:
        receiver.on_control(manifest(name, b"data"))
    assert err.value.code == "unsafe_name"


def started_receiver(count: int, total: int) -> Receiver:
    receiver = Receiver(key_for)
    assert receiver.on_control(protocol.TransferStart(fileCount=count, totalBytes=total)) == []
    return receiver


def test_inconsistent_manifest_is_refused() -> None:
    good = manifest("a.bin", b"x" * 100)
    for bad in (
        msgspec.structs.replace(good, chunkCount=3),
        msgspec.structs.replace(good, fileId="0" * 32),
        msgspec.structs.replace(good, kind="dir"),
        msgspec.structs.replace(good, chunkSize=CS + 1, chunkCount=1),
    ):
        with pytest.raises(TransferError) as err:
            started_receiver(1, 100).on_control(bad)
        assert err.value.code == "bad_manifest"


def test_corrupt_file_is_reported_failed() -> None:
    wire = Wire({"a.bin": os.urandom(CS + 100)})
    wire.files = {"a.bin": os.urandom(CS + 100)}  # the sender's bytes differ from its manifest
    wire.sender.start()
    with pytest.raises(TransferError) as err:
        wire.pump()
    assert err.value.code == "verify_failed"


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        b'{"type":"nope"}',
        b'{"type":"file_manifest"}',
        b'{"type":"chunk_ack","fileId":"' + b"0" * 32 + b'","ranges":[[0,"x"]]}',
    ],
)
def test_malformed_control_messages(raw: bytes) -> None:
    with pytest.raises(TransferError) as err:
        protocol.decode(raw)
    assert err.value.code == "bad_message"


def test_ack_ranges_outside_the_file_are_refused() -> None:
    wire, _ = started_wire()
    fid = wire.manifests[0].fileId
    with pytest.raises(TransferError, match="outside"):
        wire.sender.on_control(protocol.ChunkAck(fileId=fid, ranges=[(0, 1000)]))


# --- the announcement: bounded, whole, and nothing outside it ----------------------------------


def wire_manifest(**fields: object) -> bytes:
    base = {
        "type": "file_manifest",
        "fileId": "0" * 32,
        "name": "a",
        "size": 1,
        "chunkSize": CS,
        "chunkCount": 1,
        "checksum": "0" * 64,
    }
    return msgspec.json.encode({**base, **fields})


@pytest.mark.parametrize(
    "raw",
    [
        wire_manifest(size=2**50, chunkSize=1, chunkCount=2**50),  # a bit per byte
        wire_manifest(size=2**50, chunkCount=protocol.chunk_count(2**50, CS)),  # 2^36 chunks
        wire_manifest(chunkSize=protocol.MAX_CHUNK + 1),
        wire_manifest(size=2**51),
        b'{"type":"transfer_start","fileCount":100001,"totalBytes":0}',
        b'{"type":"transfer_start","fileCount":1,"totalBytes":1125899906842625}',
    ],
)
def test_claims_over_the_bounds_are_refused_when_decoded(raw: bytes) -> None:
    with pytest.raises(TransferError) as err:
        protocol.decode(raw)
    assert err.value.code == "bad_message"


def test_nothing_is_allocated_for_a_claim_before_the_announcement_is_whole() -> None:
    """The issue's 245-byte manifest for 2^50 bytes cost 2 GiB of bitmaps; now the per-transfer
    chunk bound refuses it, and an admissible claim allocates no bitmap until it is admitted."""
    import tracemalloc

    size = protocol.MAX_CHUNKS * CS // 2
    data_claim = FileManifest(
        fileId=protocol.stable_file_id("big", size, "0" * 64),
        name="big",
        size=size,
        chunkSize=CS,
        chunkCount=protocol.chunk_count(size, CS),
        checksum="0" * 64,
    )
    receiver = started_receiver(2, 2 * size)
    tracemalloc.start()
    receiver.on_control(data_claim)
    grown = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert grown < 64 * 1024, grown  # a manifest, not a bitmap of 2^25 bits (4 MiB)
    second = msgspec.structs.replace(
        data_claim, name="big2", fileId=protocol.stable_file_id("big2", size, "0" * 64)
    )
    receiver.on_control(second)
    third = msgspec.structs.replace(
        data_claim, name="big3", fileId=protocol.stable_file_id("big3", size, "0" * 64)
    )
    with pytest.raises(TransferError, match="more than the 2"):
        receiver.on_control(third)


def test_announcement_must_add_up() -> None:
    a, b = manifest("a", b"1" * 10), manifest("b", b"2" * 5)
    receiver = started_receiver(2, 15)
    receiver.on_control(a)
    with pytest.raises(TransferError, match="add up"):
        receiver.on_control(protocol.TransferEnd())
    receiver = started_receiver(1, 10)
    receiver.on_control(a)
    with pytest.raises(TransferError, match="more than the 1"):
        receiver.on_control(b)
    receiver = started_receiver(2, 12)
    receiver.on_control(a)
    with pytest.raises(TransferError, match="larger than the announced"):
        receiver.on_control(b)
    with pytest.raises(TransferError, match="outside the announcement"):
        Receiver(key_for).on_control(a)


@pytest.mark.parametrize(
    "names",
    [
        ("caf\u00e9", "cafe\u0301"),  # NFC and NFD of the same name
        ("a", "a/b"),  # an entry inside a file
    ],
)
def test_entries_that_collide_are_refused(names: tuple[str, str]) -> None:
    entries = [manifest(n, n.encode()) for n in names]
    receiver = started_receiver(2, sum(m.size for m in entries))
    for m in entries:
        receiver.on_control(m)
    with pytest.raises(TransferError) as err:
        receiver.on_control(protocol.TransferEnd())
    assert err.value.code == "bad_manifest"


def test_admitted_once_and_nothing_outside_it_later() -> None:
    wire = Wire(FILES)
    wire.sender.start()
    wire.pump(limit=2)
    evil = manifest("evil.bin", b"evil")
    wire.receiver.on_control(protocol.TransferStart(fileCount=1, totalBytes=4))
    with pytest.raises(TransferError) as err:
        wire.receiver.on_control(evil)
    assert err.value.code == "outside_manifest"
