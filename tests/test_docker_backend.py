"""netsim's Docker backend for real: our own dockerd, the locally built image, each namespace
of a world a container; scenarios of the default matrix pass in it and leave nothing behind.
Where Docker cannot run, `netsim run --backend docker` says so in one line."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netsim import docker_backend, docker_host, images, netns, runner, scenario
from netsim.results import Status
from tests.conftest import IN_CI, require_binary, require_root

pytestmark = pytest.mark.timeout(900)  # the first run builds the image (about a minute)

SCENARIOS = scenario.load(scenario.DEFAULT_FILE).select(
    ["same-lan", "cone-x-cone", "symmetric-x-symmetric"]
)


def _no_docker(reason: str) -> None:
    """No Docker here: one line, a failure in CI and a skip elsewhere."""
    message = f"docker backend: {reason}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def workroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where scenarios write (bind-mounted into every container)."""
    return tmp_path_factory.mktemp("docker")


@pytest.fixture(scope="module")
def backend(workroot: Path) -> Iterator[docker_backend.DockerNamespaces]:
    require_root()
    for program in ("dockerd", "debootstrap", "nsenter", "nft", "turnserver", "conntrack", "tc"):
        require_binary(program)
    try:
        with docker_backend.active([workroot]) as active:
            yield active
    except docker_host.EngineUnavailable as exc:
        _no_docker(str(exc))


def _left(active: docker_backend.DockerNamespaces) -> list[str]:
    """This run's namespace names and containers still there."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in listing.stdout.splitlines() if line.strip()]
    mine = [n for n in names if n.startswith(f"{netns.RUN_PREFIX}-")]
    return mine + [f"container {name}" for name in active.containers()]


def test_programs_run_in_the_container(backend: docker_backend.DockerNamespaces) -> None:
    """Its network (only `lo`), its host name and files; this Python and project inside."""
    with netns.isolated_loopback("dk") as name:
        container = backend.client.containers.get(name)
        assert container.status == "running"

        def inside(*argv: str) -> str:
            done = subprocess.run(
                [*netns.in_namespace(name), *argv], capture_output=True, text=True, timeout=30
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        assert inside("cat", "/etc/hostname").strip() == name
        assert [line.split()[1] for line in inside("ip", "-o", "link").splitlines()] == ["lo:"]
        script = "import os, socket, netsim; print(socket.gethostname(), os.getcwd())"
        assert inside(sys.executable, "-c", script).split() == [name, os.getcwd()]
    assert _left(backend) == []


@pytest.mark.parametrize("item", SCENARIOS, ids=lambda s: s.name)
def test_scenario_passes_in_containers(
    item: scenario.Scenario, backend: docker_backend.DockerNamespaces, workroot: Path
) -> None:
    result = runner.run_one(item, workroot)
    failed = [f"{c.name}: expected {c.expected}, observed {c.observed}" for c in result.checks]
    detail = f"{result.status.value}: {result.error or ''}\n" + "\n".join(
        line for line, check in zip(failed, result.checks, strict=True) if not check.ok
    )
    assert result.status is Status.PASSED, f"{detail}\nlogs: {result.logs_dir}\n{result.metrics}"
    assert _left(backend) == []


def test_no_docker_is_one_line(tmp_path: Path) -> None:
    """Without the programs the backend needs (here: no PATH at all, so no nsenter)."""
    require_root()
    done = subprocess.run(
        [sys.executable, "-m", "netsim", "run", "same-lan", "--backend", "docker"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PATH": str(tmp_path / "nothing")},
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith("netsim: no Docker backend here: nsenter is not installed")
    assert done.stdout.count("\n") == 1 and not done.stderr


def test_prune_keeps_the_current_image_and_the_recently_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real engine, tiny images under a repository of this run: of six, the one in use, a same-
    kind one used 10 minutes ago, another kind's used 2 hours ago and one whose recipe is being
    built stay; a same-kind one unused for 2 hours and another kind's unused for 8 days go, with
    their cached pools."""
    require_root()
    require_binary("dockerd")
    monkeypatch.setattr(images, "CACHE", tmp_path)
    monkeypatch.setattr(images, "REPOSITORY", f"{netns.RUN_PREFIX}-images")
    ages = {  # key: (kind, hours since last use)
        "current": ("netsim", 1000.0),
        "recent": ("netsim", 10 / 60),
        "replaced": ("netsim", 2.0),
        "building": ("netsim", 2.0),
        "other": ("deploy", 2.0),
        "forgotten": ("deploy", 8 * 24.0),
    }
    tags = {key: f"{images.REPOSITORY}:bookworm-{key}" for key in ages}
    try:
        with docker_host.engine() as client:
            (tmp_path / "tree").mkdir()
            for key, (kind, hours) in ages.items():
                images.import_tree(client, tmp_path / "tree", tags[key], kind)
                lock = tmp_path / f"{key}.lock"
                lock.touch()
                os.utime(lock, (time.time() - hours * 3600,) * 2)
                (tmp_path / key / "pool").mkdir(parents=True)
            with (tmp_path / "building.lock").open("a") as held:
                fcntl.flock(held, fcntl.LOCK_EX)
                removed = images.prune(client, "netsim", keep=tags["current"])
            assert sorted(removed) == sorted([tags["replaced"], tags["forgotten"]])
            left = {t for image in client.images.list(name=images.REPOSITORY) for t in image.tags}
            assert left == {tags[k] for k in ("current", "recent", "building", "other")}
            assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(
                ["current", "recent", "building", "other", "tree"]
            )
            for tag in left:
                client.images.remove(tag)
    except docker_host.EngineUnavailable as exc:
        _no_docker(str(exc))
