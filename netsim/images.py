"""Debian images for the project's containers, built here: no image can be pulled.

`debian_image(client, kind, packages)` runs `debootstrap --variant=minbase` with `packages`,
imports the tree with `docker import` and tags it by a hash of everything that went into it, so
a second call with the same arguments is instant. Each call then prunes the cache (`prune`):
images of the same kind that another recipe replaced, once unused for an hour, and any image
of the project unused for a week. With `pool`, it also keeps a flat apt
repository of those packages and of their dependencies missing from the image (resolved by apt
inside the new tree): containers without any route out install them from it as from a mirror,
which makes them "fresh hosts" that a deployment really installs packages on.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import docker
import docker.errors

from netsim.processes import find_program

CACHE: Final = Path("/var/cache/fileshare-images")
REPOSITORY: Final = "fileshare-debian"
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"
RECIPE: Final = 2  # bump when the build steps below change what an image holds
SOURCES: Final = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
KIND_LABEL: Final = "org.fileshare.image-kind"  # what an image is for: "netsim", "deploy"
# Pruned when unused this long (a use touches the recipe's lock file): an image of the same kind
# as the one in use (a checkout of another branch may still want it for a while), any other.
SAME_KIND_GRACE: Final = 3600.0
ANY_GRACE: Final = 7 * 86400.0


@dataclass(frozen=True)
class DebianImage:
    tag: str
    pool: Path | None  # flat apt repository (`deb [trusted=yes] URL ./`), if one was asked for


def apt_mirror(suite: str = "bookworm") -> str:
    """The Debian mirror this machine's apt uses for `suite` (deb822 or one-line sources)."""
    files = [SOURCES[0], *sorted(SOURCES[1].glob("*"))] if SOURCES[1].is_dir() else [SOURCES[0]]
    for path in files:
        with contextlib.suppress(OSError):
            for stanza in path.read_text().split("\n\n"):
                fields = dict(_deb822(stanza))
                if suite in fields.get("Suites", "").split() and "/debian" in fields.get(
                    "URIs", ""
                ):
                    return fields["URIs"].split()[0]
                for line in stanza.splitlines():
                    parts = [p for p in line.split() if not p.startswith("[")]
                    if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                        return parts[1]
    return DEFAULT_MIRROR


def _deb822(stanza: str) -> Iterator[tuple[str, str]]:
    for line in stanza.splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith((" ", "#")):
            yield name.strip(), value.strip()


def hashed(recipe: object) -> str:
    """A short, stable name for a cached build: the hash of its recipe (JSON)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def debian_image(
    client: docker.DockerClient,
    kind: str,
    packages: Sequence[str],
    pool: Sequence[str] = (),
    suite: str = "bookworm",
) -> DebianImage:
    """A Debian `suite` image with `packages` (minbase + these), built once and cached, labelled
    with its `kind`; with `pool`, the apt repository of those packages that goes with it."""
    key = hashed({"suite": suite, "packages": sorted(packages), "pool": sorted(pool), "r": RECIPE})
    tag = f"{REPOSITORY}:{suite}-{key}"
    pool_dir = CACHE / key / "pool" if pool else None
    CACHE.mkdir(parents=True, exist_ok=True)
    lock_path = CACHE / f"{key}.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per recipe, however many callers
        os.utime(lock_path)  # in use now: prune() measures how long an image was not
        if not _have(client, tag) or (pool_dir is not None and not pool_dir.exists()):
            _build(client, tag, kind, packages, pool, suite, pool_dir)
    prune(client, kind, keep=tag)
    return DebianImage(tag, pool_dir)


def prune(client: docker.DockerClient, kind: str, keep: str) -> list[str]:
    """Remove the project's images other than `keep`, with their cached pools: those of `kind`
    unused for SAME_KIND_GRACE, any other unused for ANY_GRACE. Never one whose recipe is
    being built (its lock held) nor one a container still uses (the engine refuses). Returns
    the tags removed."""
    removed = []
    now = time.time()
    for image in client.images.list(name=REPOSITORY):
        grace = SAME_KIND_GRACE if image.labels.get(KIND_LABEL) == kind else ANY_GRACE
        for tag in image.tags:
            if tag == keep or not tag.startswith(f"{REPOSITORY}:"):
                continue
            key = tag.rsplit("-", 1)[-1]
            lock_path = CACHE / f"{key}.lock"
            with contextlib.suppress(FileNotFoundError):
                if now - lock_path.stat().st_mtime < grace:
                    continue
            if _remove(client, tag, lock_path):
                removed.append(tag)
    return removed


def _remove(client: docker.DockerClient, tag: str, lock_path: Path) -> bool:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # being built or taken right now
        try:
            client.images.remove(tag)
        except docker.errors.APIError:
            return False  # a container uses it (409): next time
        shutil.rmtree(lock_path.with_suffix(""), ignore_errors=True)
        lock_path.unlink(missing_ok=True)
    return True


def _have(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _run(*argv: str, timeout: float = 900) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(argv[:3])} failed: " + " / ".join(tail))


def _build(
    client: docker.DockerClient,
    tag: str,
    kind: str,
    packages: Sequence[str],
    pool: Sequence[str],
    suite: str,
    pool_dir: Path | None,
) -> None:
    debootstrap = find_program("debootstrap")
    with tempfile.TemporaryDirectory(prefix="fs-image-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "root"
        include = ["--include=" + ",".join(packages)] if packages else []
        _run(debootstrap, "--variant=minbase", *include, suite, str(root), apt_mirror(suite))
        if pool_dir is not None:
            _download_pool(root, pool, pool_dir)
        # Every container gets its own machine id at boot. No package lists or caches are
        # shipped, and their folder looks old, so that apt (and Ansible's cache_valid_time)
        # fetches lists from whatever mirror the container is given.
        (root / "etc/machine-id").write_text("")
        _run("chroot", str(root), "apt-get", "clean")
        lists = root / "var/lib/apt/lists"
        for stale in [*lists.glob("*_*"), *(root / "var/cache/apt").glob("*.bin")]:
            stale.unlink()
        os.utime(lists, (0, 0))
        import_tree(client, root, tag, kind)


def import_tree(client: docker.DockerClient, root: Path, tag: str, kind: str) -> None:
    """The folder `root` as image `tag`, labelled with its kind (streamed from tar: the engine
    takes a pipe, not a file object, as the body of an import)."""
    tar = subprocess.Popen(
        ["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
    )
    assert tar.stdout is not None
    repository, _, version = tag.partition(":")
    client.api.import_image_from_stream(
        tar.stdout, repository=repository, tag=version, changes=[f"LABEL {KIND_LABEL}={kind}"]
    )
    if tar.wait() != 0:
        raise RuntimeError("tar of the image tree failed")


def _download_pool(root: Path, packages: Sequence[str], pool_dir: Path) -> None:
    """apt in the new tree downloads `packages` with what they need beyond it; indexed with
    dpkg-scanpackages as a flat repository."""
    resolv = root / "etc/resolv.conf"
    shutil.copy("/etc/resolv.conf", resolv)
    inside = "/var/cache/fileshare-pool"
    (root / inside.lstrip("/") / "partial").mkdir(parents=True)
    apt = ("chroot", str(root), "apt-get", "-q", "-y", "-o", f"Dir::Cache::archives={inside}")
    _run(*apt, "update")
    _run(*apt, "install", "--download-only", "--no-install-recommends", *packages)
    resolv.unlink()
    staging = pool_dir.with_name("pool.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for deb in (root / inside.lstrip("/")).glob("*.deb"):
        shutil.move(deb, staging / deb.name)
    index = subprocess.run(
        ["dpkg-scanpackages", "-m", "."], cwd=staging, capture_output=True, check=True, timeout=300
    )
    (staging / "Packages").write_bytes(index.stdout)
    shutil.rmtree(pool_dir, ignore_errors=True)
    staging.rename(pool_dir)
