"""File names and paths from a peer are hostile: check them, show them safely, and place the
received file under the output directory without ever leaving it or writing through a symlink."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from fsproto.untrusted import shown

MAX_COMPONENT_BYTES = 255  # NAME_MAX on Linux and most file systems
MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
MAX_COMPONENTS = 64
PART_SUFFIX = ".part"
# How many "name (N).ext" candidates to try before giving up; bounds the work a peer can cause.
MAX_RENAME_TRIES = 10_000

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_DRIVE = re.compile("^[A-Za-z]:")
_NUMBERED = re.compile(r"^(.*) \((\d+)\)$", re.DOTALL)
_MESSAGE_CHARS = 200  # a 4 kB name would drown the message


class UnsafeName(ValueError):
    """A name or path refused for safety; the message shows it through untrusted.shown()."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"unsafe name '{shown(name, _MESSAGE_CHARS)}': {problem}")
        self.name = name
        self.problem = problem


def check_relative_path(name: str) -> PurePosixPath:
    """Accept a peer's relative path ("/"-separated) only if it stays inside the output
    directory on every platform and fits the file system's limits; UnsafeName otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"name must be str, not {type(name).__name__}")
    if not name:
        raise UnsafeName(name, "empty")
    if _CONTROL.search(name):
        raise UnsafeName(name, "contains a control character")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise UnsafeName(name, "not valid Unicode (lone surrogate)") from None
    if name.startswith("/"):
        raise UnsafeName(name, "absolute path")
    if "\\" in name:
        raise UnsafeName(name, "contains a backslash")
    if _DRIVE.match(name):
        raise UnsafeName(name, "starts with a drive letter")
    if size > MAX_PATH_BYTES:
        raise UnsafeName(name, f"path longer than {MAX_PATH_BYTES} bytes")
    parts = name.split("/")
    if len(parts) > MAX_COMPONENTS:
        raise UnsafeName(name, f"more than {MAX_COMPONENTS} components")
    for part in parts:
        if not part:
            raise UnsafeName(name, "empty component")
        if part in (".", ".."):
            raise UnsafeName(name, f"'{part}' component")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise UnsafeName(name, f"component longer than {MAX_COMPONENT_BYTES} bytes")
    return PurePosixPath(name)


# The most a received name can grow by on disk: " (10000)" before its extension, then ".part".
_GROWTH_BYTES = len(f" ({MAX_RENAME_TRIES})") + len(PART_SUFFIX)


def check_fits(out_dir: Path, rel: PurePosixPath) -> None:
    """Refuse, before anything is created, a name whose path under `out_dir` (with a rename
    number and the .part suffix) would exceed PATH_MAX: it could only fail half-way, leaving
    directories behind."""
    full = os.path.join(os.path.abspath(out_dir), rel.as_posix())
    if len(os.fsencode(full)) + _GROWTH_BYTES >= MAX_PATH_BYTES:
        raise UnsafeName(
            rel.as_posix(), f"path under the output directory over {MAX_PATH_BYTES} bytes"
        )


def is_own_state(out_dir: Path, rel: PurePosixPath, target: str, part: str) -> bool:
    """Paths from the state database are trusted no more than a peer's: a resume record is used
    only if its target is a plain name in the directory `rel` has under `out_dir`, and its .part
    lies beside it. Anything else (a tampered database, another --out) is ignored."""
    target_path = Path(target)
    if Path(part) != part_path(target_path) or target_path.name in ("", ".", ".."):
        return False
    try:
        check_relative_path(target_path.name)
    except UnsafeName:
        return False
    return os.path.abspath(target_path.parent) == os.path.abspath(out_dir / rel.parent)


def remove_part(out_dir: Path, part: Path) -> None:
    """Unlink the .part file `part` (absolute) only if it lies under `out_dir` with no symlink on
    the way (each directory opened with O_NOFOLLOW, relative to the last) and is a regular
    file; UnsafeName otherwise. `out_dir` itself may be a symlink: the user chose it."""
    rel = os.path.relpath(part, out_dir)
    if not os.path.isabs(part) or rel.startswith("..") or not rel.endswith(PART_SUFFIX):
        raise UnsafeName(str(part), "not a .part file under the output directory")
    components = check_relative_path(rel).parts
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    fd = os.open(out_dir, flags)
    try:
        for component in components[:-1]:
            try:
                inner = os.open(component, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeName(str(part), "a directory on the way is a symlink") from None
                raise
            os.close(fd)
            fd = inner
        st = os.stat(components[-1], dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeName(str(part), "is not a regular file")
        os.unlink(components[-1], dir_fd=fd)
    finally:
        os.close(fd)


def part_path(target: Path) -> Path:
    """Where a file is received before it is verified and renamed."""
    return target.with_name(target.name + PART_SUFFIX)


def _split_name(name: str) -> tuple[str, str]:
    """("archive", ".tar.gz") for "archive.tar.gz"; leading dots belong to the stem, so
    ".bashrc" has no extension and ".config.json" splits as (".config", ".json")."""
    body = name.lstrip(".")
    dot = body.find(".")
    if dot <= 0:
        return name, ""
    cut = len(name) - len(body) + dot
    return name[:cut], name[cut:]


def _fit(stem: str, ext: str, tag: str) -> str:
    """stem + tag + ext, shortening the stem (at a character boundary) so the name and its
    .part file stay within NAME_MAX; the peer may already have sent a 255-byte name."""
    budget = MAX_COMPONENT_BYTES - len(PART_SUFFIX) - len((tag + ext).encode("utf-8"))
    if budget < 1:  # an absurdly long extension: shorten the whole name instead
        stem, ext = stem + ext, ""
        budget = MAX_COMPONENT_BYTES - len(PART_SUFFIX) - len(tag.encode("utf-8"))
    encoded = stem.encode("utf-8")
    if len(encoded) > budget:
        stem = encoded[:budget].decode("utf-8", "ignore") or "_"
    name = stem + tag + ext
    return "_" + name if name in (".", "..") else name


def _candidates(name: str) -> Iterator[str]:
    """The name itself (shortened if its .part would not fit), then "stem (1).ext", …
    A name that is already numbered continues its own count: "a (1).txt" → "a (2).txt"."""
    stem, ext = _split_name(name)
    yield _fit(stem, ext, "")
    numbered = _NUMBERED.match(stem)
    if numbered:
        stem = numbered.group(1)
    for n in range(1, MAX_RENAME_TRIES + 1):
        yield _fit(stem, ext, f" ({n})")


def _taken(path: Path) -> bool:
    """A name is taken if it or its .part exists: another transfer may be resuming into it."""
    return os.path.lexists(path) or os.path.lexists(part_path(path))


def _free_name(directory: Path, name: str) -> Path:
    for candidate in _candidates(name):
        path = directory / candidate
        if not _taken(path):
            return path
    raise FileExistsError(
        errno.EEXIST, f"no free name for '{shown(name, _MESSAGE_CHARS)}'", directory
    )


def _ensure_directory(path: Path) -> None:
    """`path` is a real directory (not a symlink) afterwards, creating it if missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):  # made by someone else meanwhile: check it
            os.mkdir(path, 0o755)
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeName(str(path), "a directory on the way is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeName(str(path), "a component on the way is not a directory")


def _make_directories(out_dir: Path, components: tuple[str, ...]) -> Path:
    if not os.path.isdir(out_dir):
        raise NotADirectoryError(errno.ENOTDIR, "output directory does not exist", str(out_dir))
    directory = out_dir
    for component in components:
        directory = directory / component
        _ensure_directory(directory)
    return directory


def resolve_target(out_dir: Path, rel: PurePosixPath, overwrite: bool) -> Path:
    """The final path for `rel` under `out_dir` (which must exist; it may itself be a symlink,
    as the user chose it). Parent directories are created one at a time and none may be a
    symlink. Without `overwrite`, an existing name — or one whose .part exists — gives
    "name (1).ext" and so on. A symlink at the target is always refused."""
    rel = check_relative_path(rel.as_posix())  # a PurePosixPath may have been built unchecked
    directory = _make_directories(out_dir, rel.parts[:-1])
    name = next(_candidates(rel.name))  # shortened if the .part name would be too long
    target = directory / name
    for path in (target, part_path(target)):
        if os.path.islink(path):
            raise UnsafeName(str(path), "is a symlink")
    if not overwrite:
        return _free_name(directory, name) if _taken(target) else target
    if os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode):
        raise UnsafeName(str(target), "exists and is not a regular file")
    return target


def ensure_directory(out_dir: Path, rel: PurePosixPath) -> Path:
    """Create the directory `rel` under `out_dir` (a directory entry of a transfer) with the same
    rules as resolve_target's parents: one component at a time, none of them a symlink."""
    return _make_directories(out_dir, check_relative_path(rel.as_posix()).parts)


def open_part(part: Path) -> int:
    """Open (creating, never truncating, so a resume keeps what is there) the .part file for
    writing, refusing a symlink or anything but a regular file. Returns the file descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        # O_NONBLOCK: a FIFO planted at this name would otherwise block the open forever.
        fd = os.open(part, flags | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeName(str(part), "is a symlink") from None
        if exc.errno == errno.ENXIO:
            raise UnsafeName(str(part), "is not a regular file") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeName(str(part), "is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def finalize(part: Path, target: Path, overwrite: bool) -> Path:
    """Give the verified .part file its final name atomically, and return that name. With
    `overwrite` it replaces the target (never a symlink or a non-file); without, it never
    replaces anything: if the target appeared meanwhile, the next free name is taken."""
    part_st = os.lstat(part)
    if not stat.S_ISREG(part_st.st_mode):
        raise UnsafeName(str(part), "is not a regular file")
    if overwrite:
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISREG(os.lstat(target).st_mode):
                raise UnsafeName(str(target), "exists and is not a regular file")
        os.replace(part, target)
        _fsync_directory(target.parent)
        return target
    candidate = target
    for _ in range(MAX_RENAME_TRIES):
        try:
            _claim(part, candidate)
        except FileExistsError:
            candidate = _free_name(candidate.parent, candidate.name)
        else:
            _fsync_directory(candidate.parent)
            return candidate
    raise FileExistsError(errno.EEXIST, "no free name", str(target))


def _fsync_directory(directory: Path) -> None:
    """Make the new name durable, so it cannot vanish in a crash after the state says "done"."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # a file system that cannot sync directories
            raise
    finally:
        os.close(fd)


# link() errors of file systems without hard links (vfat says EPERM).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})


def _claim(part: Path, target: Path) -> None:
    """Move `part` to `target`, raising FileExistsError instead of replacing anything there.
    File systems without hard links (FAT, exFAT, some network mounts) get an exclusive
    placeholder that the rename then replaces, so the name is still never taken from anyone."""
    try:
        os.link(part, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        os.replace(part, target)
    else:
        os.unlink(part)


class DiskFull(OSError):
    """Not enough free space for a transfer, found before any byte is written."""

    def __init__(self, directory: Path, needed: int, free: int) -> None:
        super().__init__(
            f"not enough space in {directory}: need {human_size(needed)}, have {human_size(free)}"
        )
        self.errno = errno.ENOSPC
        self.directory = directory
        self.needed = needed
        self.free = free


def free_space(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def ensure_space(directory: Path, needed: int, margin: int = 16 * 2**20) -> None:
    """Refuse early rather than fail with ENOSPC mid-transfer; the margin keeps the disk usable.
    DiskFull.needed includes the margin, so the message compares like with like."""
    free = free_space(directory)
    if free < needed + margin:
        raise DiskFull(directory, needed + margin, free)


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(n: int) -> str:
    """ "0 B", "1023 B", "1.0 KiB", "1.5 MiB": binary units, one decimal from KiB up."""
    if n < 0:
        return "-" + human_size(-n)
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _UNITS[1:]:
        value /= 1024
        # Move up a unit rather than print "1024.0 KiB" for 1048575 bytes.
        if round(value, 1) < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def counts_text(files: int, dirs: int, size: int) -> str:
    """'3 files and 1 folder, 1.2 MiB': the same words on both sides of a transfer."""
    text = _plural(files, "file")
    if dirs:
        text += f" and {_plural(dirs, 'folder')}"
    return f"{text}, {human_size(size)}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
