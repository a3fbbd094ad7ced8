"""A Docker engine of the project's own, for test-beds made of containers (the Ansible deploy
test, netsim's Docker backend).

The host has no systemd, so nothing starts dockerd for us: `engine()` starts one by hand with
its own data root, exec root, pidfile and socket, so it never meets a system Docker, and with
`--iptables=false --ip-forward=false --ip-masq=false` so it never touches the host's firewall or
forwards anything anywhere. It makes no default bridge (`--bridge=none`): a container is only
ever on a network its test-bed created, and those should be `internal=True`. Networks created
without a subnet take one from 198.18.0.0/15 (RFC 2544, for benchmark labs), never from the
private ranges a real network may use.

Containers: `start_container` puts one on a network and removes the default route Docker gives
it even on an internal network; `systemd_options()` boots systemd in it; `put_files` writes
files before it starts; `netns_prefix` runs a host program (this venv's clients) inside its
network namespace; `remove_prefixed` / `remove_dead_runs` clean up by the `fs<pid>-` names.

Several users may share the engine at once (pytest-xdist workers): each holds a shared lock for
as long as it uses it, and the last one out stops the daemon, by the PID in our pidfile, and only
if that process is the dockerd serving our socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import docker
import docker.errors
from docker.models.containers import Container

from netsim.processes import MissingProgram, find_program

DATA_ROOT: Final = Path("/var/lib/fileshare-docker")
EXEC_ROOT: Final = Path("/run/fileshare-docker")
PIDFILE: Final = Path("/run/fileshare-docker.pid")
SOCKET: Final = Path("/run/fileshare-docker.sock")
LOCKFILE: Final = Path("/run/fileshare-docker.lock")
LOG: Final = Path("/var/log/fileshare-docker.log")
ADDRESS_POOL: Final = "base=198.18.0.0/15,size=24"
START_TIMEOUT: Final = 30.0


class EngineUnavailable(RuntimeError):
    """No Docker engine can run here; the message is one line saying why."""


def dockerd_argv() -> list[str]:
    """How our daemon is started (also what identifies it among processes)."""
    try:
        dockerd = find_program("dockerd")
    except MissingProgram as exc:
        raise EngineUnavailable(str(exc)) from None
    return [
        dockerd,
        f"--host=unix://{SOCKET}",
        f"--data-root={DATA_ROOT}",
        f"--exec-root={EXEC_ROOT}",
        f"--pidfile={PIDFILE}",
        "--bridge=none",
        f"--default-address-pool={ADDRESS_POOL}",
        "--iptables=false",
        "--ip-forward=false",
        "--ip-masq=false",
        "--userland-proxy=false",
    ]


def _client() -> docker.DockerClient:
    return docker.DockerClient(base_url=f"unix://{SOCKET}", timeout=300)


def _answers() -> bool:
    if not SOCKET.exists():
        return False
    try:
        with contextlib.closing(_client()) as client:
            return bool(client.ping())
    except docker.errors.DockerException:
        return False


def _our_pid() -> int | None:
    """The PID in our pidfile, if that process is a dockerd serving our socket."""
    try:
        pid = int(PIDFILE.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    ours = Path(cmdline[0].decode()).name == "dockerd" and f"--host=unix://{SOCKET}".encode()
    return pid if ours and ours in cmdline else None


def _start() -> None:
    if os.geteuid() != 0:
        raise EngineUnavailable("starting dockerd needs root")
    argv = dockerd_argv()
    for path in (DATA_ROOT, EXEC_ROOT, LOG.parent):
        path.mkdir(parents=True, exist_ok=True)
    with LOG.open("ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise EngineUnavailable(f"dockerd did not start: {_last_line(LOG)}")
        time.sleep(0.1)


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "(no output)"


def _stop(pid: int, timeout: float = 60.0) -> None:
    """SIGTERM (dockerd stops its containerd too), then SIGKILL."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def engine() -> Iterator[docker.DockerClient]:
    """A client of our engine, started if it is not running; stopped after the last user.

    Raises EngineUnavailable (one line) where no engine can run: dockerd missing, not root,
    or a daemon that does not come up (its log is LOG)."""
    LOCKFILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCKFILE.open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # joins a running engine at once, whoever holds it
        if not _answers():
            fcntl.flock(lock, fcntl.LOCK_EX)  # one starts it (an upgrade waits for users)
            if not _answers():
                _start()
            fcntl.flock(lock, fcntl.LOCK_SH)  # a downgrade: other users may join now
        client = _client()
        try:
            yield client
        finally:
            client.close()
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another user still holds it: the last one stops the daemon
            else:
                pid = _our_pid()
                if pid is not None:
                    _stop(pid)


def systemd_options(extra_caps: Sequence[str] = ()) -> dict[str, Any]:
    """Options under which systemd boots as a container's PID 1 here, `--privileged` being
    refused: SYS_ADMIN (its mounts and its units' sandboxing) without a seccomp filter, its
    own /run, the host's cgroup tree, and the signal that makes it shut down cleanly.
    No CAP_SYS_RESOURCE is to be had: a service cannot raise its file limit past the host's."""
    return {
        "cap_add": ["SYS_ADMIN", *extra_caps],
        "security_opt": ["seccomp=unconfined"],
        "tmpfs": {"/run": "", "/run/lock": ""},
        "volumes": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
        "cgroupns": "host",
        "stop_signal": "SIGRTMIN+3",
    }


def put_files(container: Container, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Write `path -> (content, mode)` (owned by root) into a container, running or not;
    missing folders are made 0755."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, (content, mode) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    container.put_archive("/", buffer.getvalue())


def remove_default_route(container: Container) -> None:
    """Docker gives containers of an internal network a default route to the bridge anyway:
    without it, nothing past the container's own network is even tried."""
    subprocess.run(
        [*netns_prefix(container), "ip", "route", "del", "default"],
        capture_output=True,
        timeout=10,
        check=False,
    )


def start_container(
    client: docker.DockerClient,
    image: str,
    name: str,
    network: str,
    command: list[str],
    files: Mapping[str, tuple[bytes, int]] | None = None,
    **options: Any,
) -> Container:
    """A container on `network` only, with `files` written before it starts, and no default
    route once it runs. `options` go to docker's containers.create (e.g. systemd_options())."""
    container = client.containers.create(
        image, command, name=name, network=network, detach=True, **options
    )
    if files:
        put_files(container, files)
    container.start()
    remove_default_route(container)
    return container


def netns_prefix(container: Container) -> list[str]:
    """The command prefix that runs a host program inside the container's network namespace
    (with the host's files: e.g. this venv's clients on the container's network only)."""
    container.reload()
    pid = int(container.attrs["State"]["Pid"])
    if pid <= 0:
        raise RuntimeError(f"container {container.name} is not running")
    return ["nsenter", f"--target={pid}", "--net"]


def address(container: Container, network: str) -> str:
    """The container's IPv4 address on `network`."""
    container.reload()
    found: str = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    return found


def remove_dead_runs(client: docker.DockerClient, dry_run: bool = False) -> list[str]:
    """Remove what runs that died left behind: names are `fs<pid>-...` (netsim.netns.RUN_PREFIX),
    so anything whose process is gone is no one's any more. Returns those runs' prefixes."""
    names = [c.name for c in client.containers.list(all=True)]
    names += [n.name for n in client.networks.list()]
    names += [v.name for v in client.volumes.list()]
    dead: set[str] = set()
    for name in {n for n in names if n}:
        match = re.match(r"fs(\d+)-", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            dead.add(match.group(0))
    if not dry_run:
        for prefix in dead:
            remove_prefixed(client, prefix)
    return sorted(dead)


def running() -> bool:
    """Whether our engine answers now (`engine()` would start one)."""
    return _answers()


def remove_prefixed(client: docker.DockerClient, prefix: str) -> None:
    """Remove every container, network and volume whose name starts with `prefix` (what one
    run created; also what a run that died left behind)."""
    for container in client.containers.list(all=True, filters={"name": prefix}):
        if container.name and container.name.startswith(prefix):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
    for network in client.networks.list(names=[prefix]):
        if network.name and network.name.startswith(prefix):
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()
    for volume in client.volumes.list(filters={"name": prefix}):
        if volume.name and volume.name.startswith(prefix):
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)
