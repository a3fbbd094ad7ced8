"""What a received entry keeps of the sender's file besides its bytes: permission bits and
modification time.

The rules (README, "Receiving safely"):
- permission bits only (0o777): setuid, setgid and sticky are never sent nor set;
- masked by the receiver's umask, as tar and unzip do for a user who is not root;
- a folder keeps rwx for its owner whatever was sent, so a resume or a later transfer can write
  into it; a mode of 0 (not given: a browser knows none) gives 0o666 / 0o777 masked by the umask;
- the modification time (to the millisecond) when given, else the time of receipt.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from fileshare import names
from fileshare.protocol import FileManifest

_UMASK_LINE = re.compile(rb"^Umask:\s+([0-7]+)$", re.MULTILINE)


def current_umask() -> int:
    """The process umask, read without changing it (Linux /proc; os.umask() would, for a moment,
    for every thread). Elsewhere the conservative 0o077."""
    try:
        with open("/proc/self/status", "rb") as status:
            found = _UMASK_LINE.search(status.read())
    except OSError:
        found = None
    return int(found.group(1), 8) if found else 0o077


def mode_for(manifest: FileManifest, umask: int) -> int:
    default = 0o777 if manifest.kind == "dir" else 0o666
    mode = (manifest.mode & 0o777 or default) & ~umask
    return mode | 0o700 if manifest.kind == "dir" else mode


def apply(fd: int, manifest: FileManifest, umask: int) -> None:
    """Give the open file or folder `fd` the entry's mode and (if sent) modification time."""
    os.fchmod(fd, mode_for(manifest, umask))
    if manifest.mtimeMs:
        ns = manifest.mtimeMs * 1_000_000
        os.utime(fd, ns=(ns, ns))


def apply_to_directory(
    out_dir: Path, rel: PurePosixPath, manifest: FileManifest, umask: int
) -> None:
    """After the last file of a transfer (files made inside a folder change its time): the
    folder is found again with no symlink on the way and opened without following one."""
    path = names.ensure_directory(out_dir, rel)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        apply(fd, manifest, umask)
    finally:
        os.close(fd)
