"""netsim's Docker backend: every namespace of a world is a container's (`netsim run --backend
docker`), for users whose CI already runs Docker.

Each namespace `netsim.netns` would create becomes a container of our own engine
(`netsim.docker_host`) with no network at all (`network_mode="none"`): the world's veths,
made exactly as with plain namespaces, are its only links. Its network namespace gets the name
the world expects (`ip netns attach`), so pyroute2 and the world builder run unchanged; programs
enter the container's network, mount, UTS and IPC namespaces with `nsenter` (its files, its
network, its host name), so the coturn, tcpdump, nft and tc that run are the image's. They stay
in the host's PID namespace (as does the container, `pid_mode="host"`, so that /proc/self is
theirs): nsenter does not fork, the PID we hold is the program's and we stop it by that PID.
The Python installation, the project and the current directory are bind-mounted read-only at
their own paths, the run's work directories read-write, so `sys.executable -m fileshare` works
inside. Entering as the host's root, they need no capability added to the container; sysctls
(forwarding) are written by the host's `sysctl` on the container's network
(netns.net_only), since /proc/sys is read-only in a container. Containers carry
netns.RUN_PREFIX in their names and are removed with their namespace; the whole run's are removed
again when the backend ends, however it ends.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

import docker
import docker.errors
import pyroute2

import netsim
from netsim import docker_host, images, netns
from netsim.processes import MissingProgram, find_program

# What programs run in the namespaces need: the network tools, coturn and tcpdump, and the
# shared libraries the bind-mounted Python and the venv's extensions (netfilterqueue) load.
PACKAGES: Final = (
    "iproute2",
    "nftables",
    "iptables",
    "conntrack",
    "tcpdump",
    "coturn",
    "procps",
    "libnetfilter-queue1",
    "libssl3",
    "libffi8",
    "libsqlite3-0",
    "libuuid1",
    "libncursesw6",
    "libstdc++6",
)
LABEL: Final = "fileshare.netsim.run"
PROJECT: Final = Path(netsim.__file__).resolve().parents[1]


def shared_paths(writable: Iterable[Path]) -> dict[str, dict[str, str]]:
    """Docker `volumes`: what programs started with sys.executable read (read-only) and the
    work directories they write, each at its own path; nested read-only ones are left out."""
    found = [Path(sys.prefix), Path(sys.base_prefix), PROJECT, Path.cwd()]
    found += [Path(entry) for entry in sys.path if entry and Path(entry).is_dir()]
    read_only = {path.resolve() for path in found} - {Path("/")}
    kept = {path for path in read_only if not any(p in path.parents for p in read_only)}
    volumes = {str(path): {"bind": str(path), "mode": "ro"} for path in kept}
    for path in writable:
        path.mkdir(parents=True, exist_ok=True)
        volumes[str(path.resolve())] = {"bind": str(path.resolve()), "mode": "rw"}
    return volumes


class DockerNamespaces:
    """netns.Backend: the namespace NAME is container NAME's."""

    def __init__(
        self,
        client: docker.DockerClient,
        image: str,
        nsenter: str,
        volumes: dict[str, dict[str, str]],
    ) -> None:
        self.client = client
        self.image = image
        self.nsenter = nsenter
        self.volumes = volumes
        self.pids: dict[str, int] = {}

    def create(self, name: str) -> None:
        container = self.client.containers.run(
            self.image,
            ["sleep", "infinity"],
            name=name,
            hostname=name,
            labels={LABEL: netns.RUN_PREFIX},
            detach=True,
            network_mode="none",
            pid_mode="host",
            volumes=self.volumes,
        )
        try:
            container.reload()
            pid = int(container.attrs["State"]["Pid"])
            pyroute2.netns.attach(name, pid)
        except BaseException:
            container.remove(force=True)
            raise
        self.pids[name] = pid

    def remove(self, name: str) -> None:
        self.pids.pop(name, None)
        try:
            pyroute2.netns.remove(name)
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.containers.get(name).remove(force=True)

    def containers(self) -> list[str]:
        """The names of this run's containers, running or not."""
        mine: dict[str, str | list[str] | bool] = {"label": f"{LABEL}={netns.RUN_PREFIX}"}
        return [c.name for c in self.client.containers.list(all=True, filters=mine) if c.name]

    def remove_all(self) -> None:
        """Every container of this run and its namespace's name, whatever was left."""
        for name in self.containers():
            with contextlib.suppress(OSError):
                self.remove(name)

    def prefix(self, name: str) -> list[str]:
        targets = (f"--target={self.pids[name]}", "--net", "--mount", "--uts", "--ipc")
        # nsenter's --wd=DIR would keep the host's directory (opened before it enters): env
        # changes to ours inside the container (bind-mounted) and execs, keeping the PID.
        return [self.nsenter, *targets, "env", f"--chdir={Path.cwd()}"]


@contextlib.contextmanager
def active(writable: Sequence[Path]) -> Iterator[DockerNamespaces]:
    """Namespaces are containers while the block runs (engine started, image built or taken
    from the cache); every container of this run removed when it ends. Raises
    docker_host.EngineUnavailable, one line, where that cannot be."""
    try:
        nsenter = find_program("nsenter")
    except MissingProgram as exc:
        raise docker_host.EngineUnavailable(str(exc)) from None
    with docker_host.engine() as client:
        docker_host.remove_dead_runs(client)
        try:
            image = images.debian_image(client, "netsim", PACKAGES).tag
        except RuntimeError as exc:
            raise docker_host.EngineUnavailable(f"no image: {exc}") from None
        backend = DockerNamespaces(client, image, nsenter, shared_paths(writable))
        try:
            with netns.using(backend):
                yield backend
        finally:
            backend.remove_all()
