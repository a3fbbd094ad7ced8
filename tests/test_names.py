"""Hostile names from a peer: rejection, safe display, placement under the output directory,
the .part file, the final rename, and the free-space check."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fileshare.names import (
    DiskFull,
    UnsafeName,
    check_relative_path,
    ensure_directory,
    ensure_space,
    finalize,
    human_size,
    open_part,
    part_path,
    resolve_target,
)
from fsproto.untrusted import shown

MiB = 2**20

# --- check_relative_path ------------------------------------------------------------------------

TRAVERSAL = [
    "../x",
    "a/../../x",
    "/etc/passwd",
    "..",
    "a/..",
    "C:\\x",
    "a\\..\\b",
    "a\x00b",
    "\x1b[2Jx",
]


@pytest.mark.parametrize("name", TRAVERSAL)
def test_traversal_attacks_are_refused(name: str) -> None:
    with pytest.raises(UnsafeName):
        check_relative_path(name)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("/x", "absolute"),
        ("//x", "absolute"),
        ("a\\b", "backslash"),
        ("C:x", "drive letter"),
        ("c:/x", "drive letter"),
        ("z:", "drive letter"),
        (".", "'.' component"),
        ("./a", "'.' component"),
        ("a/./b", "'.' component"),
        ("..", "'..' component"),
        ("a/../b", "'..' component"),
        ("a//b", "empty component"),
        ("a/", "empty component"),
        ("\x00", "control character"),
        ("a\x01b", "control character"),
        ("a\nb", "control character"),
        ("a\tb", "control character"),
        ("a\x1fb", "control character"),
        ("a\x7fb", "control character"),
        ("a\x80b", "control character"),
        ("a\x85b", "control character"),
        ("a\x9fb", "control character"),
        ("a" * 256, "component longer than 255 bytes"),
        ("d/" + "é" * 128, "component longer than 255 bytes"),  # 128 chars, 256 bytes
        ("/".join(["a" * 255] * 17), "path longer than 4096 bytes"),
        ("a/" * 64 + "a", "more than 64 components"),
        ("a\ud800b", "lone surrogate"),
    ],
)
def test_rejections_name_the_problem(name: str, problem: str) -> None:
    with pytest.raises(UnsafeName, match=problem) as caught:
        check_relative_path(name)
    assert isinstance(caught.value, ValueError)
    assert caught.value.problem in str(caught.value)


@pytest.mark.parametrize(
    "name",
    [
        "résumé/日本.txt",
        "a",
        " ",
        "   /x",
        "a.",
        "a ",
        "...",
        "..a",
        "a..",
        ".hidden",
        "a/C:x",  # only a leading drive letter means anything to Windows
        "ab:c",
        "a" * 255,
        "é" * 127 + "a",  # 255 bytes
        "/".join(["a"] * 64),
        "/".join(["a" * 255] * 16),  # 4095 bytes
        "emoji 🎉.png",
        "\u202egpj.exe",  # allowed on disk; shown() neutralises it
    ],
)
def test_acceptable_names_pass_unchanged(name: str) -> None:
    path = check_relative_path(name)
    assert isinstance(path, PurePosixPath)
    assert path.as_posix() == name


def test_path_of_exactly_4096_bytes_passes() -> None:
    name = "/".join(["a" * 240] * 17)
    assert len(name.encode()) == 4096
    assert check_relative_path(name).as_posix() == name
    with pytest.raises(UnsafeName, match="4096"):
        check_relative_path(name + "c")


def test_message_shows_name_escaped_and_short() -> None:
    with pytest.raises(UnsafeName) as caught:
        check_relative_path("\x1b[2Jx")
    message = str(caught.value)
    assert "\x1b" not in message
    assert "\\x1b[2Jx" in message
    assert caught.value.name == "\x1b[2Jx"
    with pytest.raises(UnsafeName) as caught:
        check_relative_path("a" * 5000)
    assert len(str(caught.value)) < 300


def test_non_str_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        check_relative_path(b"a")  # type: ignore[arg-type]


@given(st.text(max_size=40))
def test_accepted_names_never_escape(name: str) -> None:
    try:
        path = check_relative_path(name)
    except UnsafeName:
        return
    assert not path.is_absolute()
    assert all(part not in ("", ".", "..") for part in path.parts)
    assert path.as_posix() == name
    assert "\\" not in name and "\x00" not in name


# --- untrusted.shown ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\x1b[2Jx", "\\x1b[2Jx"),
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("a\nb\rc\td", "a\\x0ab\\x0dc\\x09d"),
        ("\x00\x7f\x85\x9b", "\\x00\\x7f\\x85\\x9b"),
        ("\u202egpj.exe", "\\u202egpj.exe"),
        ("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("bad\udcffname", "bad\\udcffname"),
        ("résumé/日本.txt", "résumé/日本.txt"),
        ("", ""),
    ],
)
def test_shown_neutralises_escapes(raw: str, expected: str) -> None:
    assert shown(raw) == expected


DANGEROUS = {
    *map(chr, range(0x20)),
    *map(chr, range(0x7F, 0xA0)),
    *"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c",
    *"\u200b\u200c\u200d\u2060\ufeff\u2028\u2029\u00ad",  # zero-width, separators
}


@given(st.text())
def test_shown_output_is_printable(raw: str) -> None:
    text = shown(raw)
    assert not DANGEROUS & set(text)
    text.encode("utf-8")  # no lone surrogates left: printing cannot raise


# --- resolve_target -----------------------------------------------------------------------------


@pytest.fixture
def out(tmp_path: Path) -> Path:
    directory = tmp_path / "out"
    directory.mkdir()
    return directory


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    return directory


def rel(name: str) -> PurePosixPath:
    return check_relative_path(name)


def test_resolve_creates_parents_as_real_directories(out: Path) -> None:
    target = resolve_target(out, rel("a/b/c.txt"), overwrite=False)
    assert target == out / "a" / "b" / "c.txt"
    for directory in (out / "a", out / "a" / "b"):
        st_mode = os.lstat(directory).st_mode
        assert stat.S_ISDIR(st_mode)
        assert stat.S_IMODE(st_mode) == 0o755 & ~_umask()
    assert not target.exists()  # nothing but directories is created
    assert resolve_target(out, rel("a/b/c.txt"), overwrite=False) == target  # idempotent


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    ("name", "existing", "expected"),
    [
        ("f.txt", ["f.txt"], "f (1).txt"),
        ("f.txt", ["f.txt", "f (1).txt"], "f (2).txt"),
        ("f.txt", ["f.txt", "f (1).txt.part"], "f (2).txt"),
        ("g.txt", ["g.txt.part"], "g (1).txt"),  # a transfer may be resuming into g.txt
        ("archive.tar.gz", ["archive.tar.gz"], "archive (1).tar.gz"),
        (".bashrc", [".bashrc"], ".bashrc (1)"),
        (".config.json", [".config.json"], ".config (1).json"),
        ("noext", ["noext"], "noext (1)"),
        ("trail.", ["trail."], "trail (1)."),
        ("a (1).txt", ["a (1).txt"], "a (2).txt"),
        ("日本.txt", ["日本.txt"], "日本 (1).txt"),
        ("dir", ["dir/"], "dir (1)"),
    ],
)
def test_resolve_picks_a_free_name(
    out: Path, name: str, existing: list[str], expected: str
) -> None:
    for entry in existing:
        if entry.endswith("/"):
            (out / entry).mkdir()
        else:
            (out / entry).write_text("keep")
    assert resolve_target(out, rel(name), overwrite=False) == out / expected
    for entry in existing:
        if not entry.endswith("/"):
            assert (out / entry).read_text() == "keep"


def test_resolve_with_overwrite_keeps_the_name(out: Path) -> None:
    (out / "f.txt").write_text("old")
    assert resolve_target(out, rel("f.txt"), overwrite=True) == out / "f.txt"
    assert (out / "f.txt").read_text() == "old"  # replaced only by finalize()


def test_resolve_with_overwrite_refuses_a_directory(out: Path) -> None:
    (out / "d").mkdir()
    with pytest.raises(UnsafeName, match="not a regular file"):
        resolve_target(out, rel("d"), overwrite=True)


def test_symlinked_parent_pointing_outside_is_refused(out: Path, outside: Path) -> None:
    (out / "link").symlink_to(outside, target_is_directory=True)
    for overwrite in (False, True):
        with pytest.raises(UnsafeName, match="symlink"):
            resolve_target(out, rel("link/sub/x.txt"), overwrite=overwrite)
        with pytest.raises(UnsafeName, match="symlink"):
            resolve_target(out, rel("link/x.txt"), overwrite=overwrite)
    assert list(outside.iterdir()) == []


def test_deeper_symlinked_parent_is_refused(out: Path, outside: Path) -> None:
    (out / "a").mkdir()
    (out / "a" / "b").symlink_to(outside)
    with pytest.raises(UnsafeName, match="symlink"):
        resolve_target(out, rel("a/b/c/d.txt"), overwrite=False)
    assert list(outside.iterdir()) == []


def test_symlink_to_a_directory_inside_is_refused_too(out: Path) -> None:
    (out / "real").mkdir()
    (out / "alias").symlink_to(out / "real")
    with pytest.raises(UnsafeName, match="symlink"):
        resolve_target(out, rel("alias/x.txt"), overwrite=False)


def test_file_as_parent_is_refused(out: Path) -> None:
    (out / "a").write_text("x")
    with pytest.raises(UnsafeName, match="not a directory"):
        resolve_target(out, rel("a/b.txt"), overwrite=False)


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("dangling", [False, True])
def test_symlink_as_target_is_refused(
    out: Path, outside: Path, overwrite: bool, dangling: bool
) -> None:
    secret = outside / "secret"
    if not dangling:
        secret.write_text("secret")
    (out / "t.txt").symlink_to(secret)
    with pytest.raises(UnsafeName, match="symlink"):
        resolve_target(out, rel("t.txt"), overwrite=overwrite)
    assert secret.exists() != dangling
    if not dangling:
        assert secret.read_text() == "secret"


@pytest.mark.parametrize("overwrite", [False, True])
def test_symlink_at_part_name_is_refused(out: Path, outside: Path, overwrite: bool) -> None:
    (out / "t.txt.part").symlink_to(outside / "x")
    with pytest.raises(UnsafeName, match="symlink"):
        resolve_target(out, rel("t.txt"), overwrite=overwrite)
    assert list(outside.iterdir()) == []


def test_resolve_rechecks_an_unchecked_path(out: Path) -> None:
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(UnsafeName):
            resolve_target(out, PurePosixPath(bad), overwrite=True)
    assert list(out.iterdir()) == []


def test_resolve_needs_an_existing_out_dir(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        resolve_target(tmp_path / "missing", rel("x"), overwrite=False)


def test_out_dir_itself_may_be_a_symlink(out: Path, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(out)
    target = resolve_target(tmp_path / "alias", rel("x/y"), overwrite=False)
    assert target == tmp_path / "alias" / "x" / "y"
    assert (out / "x").is_dir()


@pytest.mark.parametrize("name", ["a" * 255, "é" * 120 + ".txt", "b" * 240 + ".tar.gz"])
def test_long_names_leave_room_for_the_part_suffix(out: Path, name: str) -> None:
    target = resolve_target(out, rel(name), overwrite=False)
    assert len(part_path(target).name.encode()) <= 255
    assert target.suffix == PurePosixPath(name).suffix
    fd = open_part(part_path(target))  # the file system accepts it
    os.close(fd)
    target.write_text("x")
    second = resolve_target(out, rel(name), overwrite=False)
    assert second != target and " (1)" in second.name
    assert len(part_path(second).name.encode()) <= 255


def test_absurd_extension_is_shortened_too(out: Path) -> None:
    target = resolve_target(out, rel("a." + "x" * 253), overwrite=False)
    assert len(part_path(target).name.encode()) <= 255
    os.close(open_part(part_path(target)))


def test_part_path() -> None:
    assert part_path(Path("/d/x.tar.gz")) == Path("/d/x.tar.gz.part")


def test_ensure_directory_makes_real_directories(out: Path, outside: Path) -> None:
    deep = "/".join(["d"] * 64)
    assert ensure_directory(out, rel(deep)) == out.joinpath(*["d"] * 64)
    assert out.joinpath(*["d"] * 64).is_dir()
    assert ensure_directory(out, rel("x/_")) == out / "x" / "_"
    assert ensure_directory(out, rel("x/_")) == out / "x" / "_"  # exists: fine
    (out / "x" / "link").symlink_to(outside)
    with pytest.raises(UnsafeName, match="symlink"):
        ensure_directory(out, rel("x/link"))
    with pytest.raises(UnsafeName, match="symlink"):
        ensure_directory(out, rel("x/link/y"))
    (out / "file").write_text("x")
    with pytest.raises(UnsafeName, match="not a directory"):
        ensure_directory(out, rel("file"))
    with pytest.raises(UnsafeName):
        ensure_directory(out, PurePosixPath("../escape"))
    assert list(outside.iterdir()) == []
    assert not (out.parent / "escape").exists()


# --- open_part ----------------------------------------------------------------------------------


def test_open_part_creates_0600_and_never_truncates(out: Path) -> None:
    part = out / "x.part"
    fd = open_part(part)
    try:
        os.pwrite(fd, b"hello world", 0)
        assert os.get_inheritable(fd) is False
        assert os.get_blocking(fd) is True
    finally:
        os.close(fd)
    assert stat.S_IMODE(os.stat(part).st_mode) == 0o600
    fd = open_part(part)  # a resume
    try:
        os.pwrite(fd, b"W", 6)
    finally:
        os.close(fd)
    assert part.read_bytes() == b"hello World"


def test_open_part_refuses_a_symlink(out: Path, outside: Path) -> None:
    victim = outside / "victim"
    victim.write_text("precious")
    (out / "x.part").symlink_to(victim)
    with pytest.raises(UnsafeName, match="symlink"):
        open_part(out / "x.part")
    (out / "y.part").symlink_to(outside / "new")
    with pytest.raises(UnsafeName, match="symlink"):
        open_part(out / "y.part")
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


def test_open_part_refuses_a_fifo_without_blocking(out: Path) -> None:
    os.mkfifo(out / "x.part")
    with pytest.raises(UnsafeName, match="not a regular file"):
        open_part(out / "x.part")


def test_open_part_refuses_a_directory(out: Path) -> None:
    (out / "x.part").mkdir()
    with pytest.raises(IsADirectoryError):
        open_part(out / "x.part")


# --- finalize -----------------------------------------------------------------------------------


def _received(out: Path, name: str, data: bytes = b"payload") -> tuple[Path, Path]:
    target = resolve_target(out, rel(name), overwrite=False)
    part = part_path(target)
    fd = open_part(part)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return part, target


def test_finalize_without_overwrite(out: Path) -> None:
    part, target = _received(out, "f.bin")
    assert finalize(part, target, overwrite=False) == target
    assert target.read_bytes() == b"payload"
    assert not part.exists()
    assert os.stat(target).st_nlink == 1


def test_finalize_with_overwrite_replaces(out: Path) -> None:
    (out / "f.bin").write_bytes(b"old")
    part = out / "f.bin.part"
    part.write_bytes(b"new")
    assert finalize(part, out / "f.bin", overwrite=True) == out / "f.bin"
    assert (out / "f.bin").read_bytes() == b"new"
    assert not part.exists()


def test_finalize_race_takes_the_next_free_name(out: Path) -> None:
    part, target = _received(out, "r.bin")
    target.write_bytes(b"someone else")  # appeared between resolve_target and finalize
    (out / "r (1).bin.part").write_bytes(b"another transfer")
    final = finalize(part, target, overwrite=False)
    assert final == out / "r (2).bin"
    assert final.read_bytes() == b"payload"
    assert target.read_bytes() == b"someone else"
    assert not part.exists()


def test_finalize_race_with_a_numbered_target(out: Path) -> None:
    (out / "n.bin").write_bytes(b"1")
    part, target = _received(out, "n.bin")
    assert target == out / "n (1).bin"
    target.write_bytes(b"2")
    assert finalize(part, target, overwrite=False) == out / "n (2).bin"


def test_finalize_race_with_a_symlink_never_writes_through(out: Path, outside: Path) -> None:
    part, target = _received(out, "s.bin")
    target.symlink_to(outside / "victim")
    final = finalize(part, target, overwrite=False)
    assert final == out / "s (1).bin"
    assert target.is_symlink()
    assert list(outside.iterdir()) == []


def test_finalize_with_overwrite_refuses_a_symlink(out: Path, outside: Path) -> None:
    victim = outside / "victim"
    victim.write_text("precious")
    part, target = _received(out, "s.bin")
    target.symlink_to(victim)
    with pytest.raises(UnsafeName, match="not a regular file"):
        finalize(part, target, overwrite=True)
    assert victim.read_text() == "precious"
    assert part.read_bytes() == b"payload"  # kept: the transfer can be finished elsewhere


def test_finalize_refuses_a_symlinked_part(out: Path, outside: Path) -> None:
    (outside / "victim").write_text("x")
    (out / "p.part").symlink_to(outside / "victim")
    for overwrite in (False, True):
        with pytest.raises(UnsafeName, match="not a regular file"):
            finalize(out / "p.part", out / "p", overwrite=overwrite)
    assert not (out / "p").exists()


def test_finalize_without_hard_links(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No FAT driver in this kernel: simulate link() failing as vfat does.
    def no_link(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    part, target = _received(out, "v.bin")
    target.write_bytes(b"someone else")
    final = finalize(part, target, overwrite=False)
    assert final == out / "v (1).bin"
    assert final.read_bytes() == b"payload"
    assert target.read_bytes() == b"someone else"
    assert not part.exists()


# --- ensure_space and human_size ----------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, bool]]:
    """A real 1 MiB tmpfs when we may mount one; otherwise disk_usage reports 1 MiB free (a
    full disk cannot be produced any other way). Yields (directory, is_real)."""
    directory = tmp_path / "small"
    directory.mkdir()
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount") and shutil.which("umount"):
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(directory)],
            capture_output=True,
            check=False,
        )
        mounted = result.returncode == 0
    if not mounted:
        usage = shutil.disk_usage(tmp_path)
        monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage._replace(total=MiB, free=MiB))
    try:
        yield directory, mounted
    finally:
        if mounted and subprocess.run(["umount", str(directory)], check=False).returncode:
            subprocess.run(["umount", "-l", str(directory)], check=True)


def test_ensure_space_raises_disk_full(small_fs: tuple[Path, bool]) -> None:
    directory, _real = small_fs
    with pytest.raises(DiskFull) as caught:
        ensure_space(directory, 2 * MiB)
    error = caught.value
    assert isinstance(error, OSError)
    assert error.errno == errno.ENOSPC
    assert error.needed == 18 * MiB  # the margin is part of what is needed
    assert error.free == MiB
    assert str(error) == f"not enough space in {directory}: need 18.0 MiB, have 1.0 MiB"
    with pytest.raises(DiskFull, match=r"need 1\.0 MiB, have 1\.0 MiB"):
        ensure_space(directory, MiB, margin=1)
    ensure_space(directory, MiB // 2, margin=0)
    ensure_space(directory, MiB, margin=0)


def test_ensure_space_sees_real_usage(small_fs: tuple[Path, bool]) -> None:
    directory, real = small_fs
    if not real:
        pytest.skip("no tmpfs could be mounted here")
    (directory / "filler").write_bytes(b"\xff" * (MiB * 3 // 4))
    with pytest.raises(DiskFull, match=r"have 256\.0 KiB"):
        ensure_space(directory, MiB // 2, margin=0)
    ensure_space(directory, MiB // 4, margin=0)
    # And the fault itself is real: writing past the check fails with ENOSPC.
    with pytest.raises(OSError, match="No space left") as caught:
        (directory / "more").write_bytes(b"\0" * MiB)
    assert caught.value.errno == errno.ENOSPC


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (MiB - 1, "1.0 MiB"),
        (MiB * 3 // 2, "1.5 MiB"),
        (5 * 2**30, "5.0 GiB"),
        (2**40, "1.0 TiB"),
        (2**70, "1024.0 EiB"),
        (-2048, "-2.0 KiB"),
    ],
)
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


# --- paths under the output directory, and paths from the state database -------------------------


def test_a_path_over_path_max_under_out_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    from fileshare.names import check_fits

    rel = PurePosixPath("/".join(["d" * 254] * 16))  # 4079 bytes: fine alone, not under tmp_path
    with pytest.raises(UnsafeName, match="over 4096 bytes"):
        check_fits(tmp_path, rel)
    assert not any(tmp_path.iterdir())
    check_fits(tmp_path, PurePosixPath("a/b.txt"))


@pytest.mark.parametrize(
    ("target", "part", "own"),
    [
        ("{out}/sub/a.txt", "{out}/sub/a.txt.part", True),
        ("{out}/sub/a (3).txt", "{out}/sub/a (3).txt.part", True),
        ("/etc/a.txt", "/etc/a.txt.part", False),
        ("{out}/a.txt", "{out}/a.txt.part", False),  # not where sub/a.txt belongs
        ("{out}/sub/../../x", "{out}/sub/../../x.part", False),
        ("{out}/sub/a.txt", "/tmp/elsewhere.part", False),
        ("{out}/sub/", "{out}/sub/.part", False),
    ],
)
def test_state_paths_are_trusted_only_where_the_entry_belongs(
    tmp_path: Path, target: str, part: str, own: bool
) -> None:
    from fileshare.names import is_own_state

    out = tmp_path / "out"
    rel = PurePosixPath("sub/a.txt")
    fill = {"out": str(out)}
    assert is_own_state(out, rel, target.format(**fill), part.format(**fill)) is own
