"""The Ansible deploy test's hosts: Debian containers that boot systemd and sshd, on an internal
Docker network of their own, that `ansible/site.yml` deploys onto over SSH as in production.

Nothing on that network routes anywhere: the network is internal, each container's default
route is removed, and the host (the controller) reaches them over the bridge. The targets are
fresh hosts: their packages come from a mirror container serving a flat apt repository of what
the roles install (built with the image, netsim.images), and the Python dependencies from a
wheelhouse the signaling role copies. Everything is named with a per-run prefix and removed
when the block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from docker.models.containers import Container
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from netsim import certs, docker_host, images, netns

REPO = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = REPO / "ansible"
WHEEL_CACHE = Path("/var/cache/fileshare-wheels")
WHEELHOUSES_KEPT = 2  # the cache keeps the wheelhouses of the last dependency lists used
TARGET_PYTHON = "3.11.2"  # Debian 12's python3, which the signaling role's venvs use
# A fresh Debian host as a provider hands it out: systemd, sshd, Python for Ansible, sudo.
BASE_PACKAGES = ("systemd", "systemd-sysv", "openssh-server", "python3", "python3-apt", "sudo")
# Host name -> inventory groups.
HOSTS: dict[str, tuple[str, ...]] = {
    "lb1": ("lb", "prometheus"),
    "signal1": ("signaling",),
    "signal2": ("signaling",),
    "turn1": ("turn",),
    "redis1": ("redis",),
    "redis2": ("redis",),
}
SIGNALING_PORTS = (8001, 8002)
RECAP = re.compile(r"^(\S+)\s*:\s*((?:\w+=\d+\s*)+)$")


def pool_packages() -> list[str]:
    """Every package a role installs (the `<role>_packages` defaults): what the mirror serves."""
    found: set[str] = set()
    for defaults in sorted(ANSIBLE_DIR.glob("roles/*/defaults/main.yml")):
        for name, value in (yaml.safe_load(defaults.read_text()) or {}).items():
            if name.endswith("_packages"):
                found.update(value)
    return sorted(found)


def _pip(*args: str, timeout: float = 900) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "-q", *args],
        check=True,
        capture_output=True,
        timeout=timeout,
        cwd=REPO,
    )


def wheelhouse() -> Path:
    """Wheels of the server role's dependencies (the client's and the `server` extra's) for the
    targets' Python, built once per dependency list and cached: the targets install from it
    without reaching PyPI."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps: list[str] = [*project["dependencies"], *project["optional-dependencies"]["server"]]
    key = images.hashed({"deps": deps, "python": sys.version_info[:2], "target": TARGET_PYTHON})
    target = WHEEL_CACHE / key
    if not target.exists():
        staging = WHEEL_CACHE / f"{key}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        wanted = deps
        while wanted:
            _pip("wheel", "--wheel-dir", str(staging), *wanted)
            wanted = _needed_by_target(staging)
        staging.rename(target)
    os.utime(target)  # last used now: pruning keeps the recently used ones
    others = [p for p in WHEEL_CACHE.iterdir() if p.is_dir() and p.suffix != ".partial"]
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in others[WHEELHOUSES_KEPT:]:
        shutil.rmtree(stale)
    return target


def _needed_by_target(wheels: Path) -> list[str]:
    """Requirements that the targets' Python needs and this one did not (pip evaluates markers
    such as `python_full_version < "3.11.3"` for the Python it runs on), with no wheel here."""
    have = {canonicalize_name(wheel.name.split("-")[0]) for wheel in wheels.glob("*.whl")}
    env = {"python_full_version": TARGET_PYTHON, "python_version": TARGET_PYTHON[:4], "extra": ""}
    needed: set[str] = set()
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            for line in archive.read(meta).decode(errors="replace").splitlines():
                if line.startswith("Requires-Dist:"):
                    req = Requirement(line.partition(":")[2].strip())
                    name = canonicalize_name(req.name)
                    if req.marker and req.marker.evaluate(env) and name not in have:
                        needed.add(f"{req.name}{req.specifier}")
    return sorted(needed)


def project_wheel(dest: Path) -> Path:
    """This working tree's wheel, built now from a copy of its sources: setuptools builds in
    the tree it is given, and a `build/` left there would carry files since removed."""
    source = dest / "source"
    skip = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "*results")
    shutil.copytree(REPO, source, ignore=skip)
    _pip("wheel", "--no-deps", "--wheel-dir", str(dest), str(source), timeout=300)
    shutil.rmtree(source)
    return next(dest.glob("fileshare-*.whl"))


@dataclass
class Recap:
    """The PLAY RECAP of one ansible-playbook run: host -> {ok, changed, failed, ...}."""

    returncode: int
    hosts: dict[str, dict[str, int]]
    log: Path

    def total(self, counter: str) -> int:
        return sum(counts.get(counter, 0) for counts in self.hosts.values())

    def changed_hosts(self) -> set[str]:
        return {host for host, counts in self.hosts.items() if counts.get("changed")}

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    hosts: dict[str, dict[str, int]] = {}
    _, _, recap = output.rpartition("PLAY RECAP")
    for line in recap.splitlines():
        match = RECAP.match(line.strip())
        if match:
            counts = dict(pair.split("=") for pair in match.group(2).split())
            hosts[match.group(1)] = {name: int(value) for name, value in counts.items()}
    return hosts


@dataclass
class Stack:
    workdir: Path
    containers: dict[str, Container]
    ips: dict[str, str]
    ca: Path  # the certificate of the TLS front and of coturn's TLS port (self-signed)
    turn_secret_file: Path
    inventory: Path
    mirror: Container  # serves the apt pool; the test's clients run in its network namespace
    mirror_ip: str

    def playbook(self, name: str, *args: str) -> Recap:
        """`ansible-playbook site.yml` against the containers, as an operator runs it."""
        log = self.workdir / f"ansible-{name}.log"
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.workdir / "cp"),
        }
        argv = [str(Path(sys.executable).with_name("ansible-playbook"))]
        argv += ["-i", str(self.inventory), str(ANSIBLE_DIR / "site.yml"), *args]
        with log.open("wb") as out:
            done = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=1200, check=False
            )
        return Recap(done.returncode, parse_recap(log.read_text(errors="replace")), log)

    def settings(self) -> dict[str, Any]:
        """The inventory's settings (group_vars/all.yml)."""
        settings: dict[str, Any] = json.loads(self._settings_file.read_text())
        return settings

    def configure(self, **changes: Any) -> None:
        """Changes settings in the inventory, as an operator edits the vault before a run."""
        self._settings_file.write_text(json.dumps({**self.settings(), **changes}, indent=1))

    @property
    def _settings_file(self) -> Path:
        return self.inventory / "group_vars" / "all.yml"

    def client_prefix(self) -> list[str]:
        """Runs a host program on the test network only (the mirror's network namespace)."""
        return docker_host.netns_prefix(self.mirror)

    def url(self, path: str) -> str:
        return f"https://{self.ips['lb1']}{path}"

    def exec(self, host: str, *argv: str) -> tuple[int, str]:
        code, output = self.containers[host].exec_run(list(argv))
        assert isinstance(output, bytes) and code is not None
        return code, output.decode(errors="replace")

    def close_ssh(self) -> None:
        """End the SSH control masters ansible left (ControlPersist), through ssh itself."""
        for sock in (self.workdir / "cp").glob("*"):
            subprocess.run(
                ["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "x"],
                capture_output=True,
                timeout=10,
                check=False,
            )


def _wait_ssh(ip: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((ip, 22), timeout=1) as sock:
            if sock.recv(4).startswith(b"SSH"):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd on {ip} did not answer")
        time.sleep(0.2)


def _inventory(
    where: Path, ips: dict[str, str], key: Path, wheels: tuple[Path, Path], tls: tuple[Path, Path]
) -> tuple[Path, str]:
    """The test's inventory (what an operator writes), in `where`; returns it and the secret."""
    groups: dict[str, dict[str, Any]] = {}
    for host, names in HOSTS.items():
        for name in names:
            hostvars = {"ansible_host": ips[host], "fileshare_private_ip": ips[host]}
            groups.setdefault(name, {"hosts": {}})["hosts"][host] = hostvars
    ssh = f"-o UserKnownHostsFile={where}/known_hosts -o StrictHostKeyChecking=accept-new"
    inventory = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": ssh,
            },
            "children": groups,
        }
    }
    turn = ips["turn1"]
    secret = secrets.token_hex(32)
    cert, pkey = (path.read_text() for path in tls)
    settings = {
        "fileshare_domain": "fileshare.test",
        "fileshare_turn_secret": secret,
        "fileshare_turn_previous_secrets": [],
        "fileshare_redis_password": secrets.token_hex(32),
        "fileshare_turn_urls": [
            f"turn:{turn}:3478?transport=udp",
            f"turn:{turn}:3478?transport=tcp",
            f"turns:{turn}:5349?transport=tcp",
        ],
        "fileshare_stun_urls": [f"stun:{turn}:3478"],
        "fileshare_signaling_ports": list(SIGNALING_PORTS),
        "fileshare_redis_port": 6379,
        # Sentinel calls a silent primary down after this; the test kills one.
        "redis_sentinel_down_after_ms": 1000,
        "fileshare_monitoring_sources": [ips["lb1"]],
        "fileshare_coturn_prometheus_port": 0,
        "signaling_wheel": str(wheels[0]),
        "signaling_wheelhouse": str(wheels[1]),
        "signaling_drain_seconds": 3,
        # haproxy needs two descriptors a connection and cannot raise its limit here (no
        # CAP_SYS_RESOURCE in the containers; the host's hard limit is what they get).
        "lb_maxconn": 4000,
        "lb_tls_certificate": cert,
        "lb_tls_key": pkey,
        "coturn_tls_certificate": cert,
        "coturn_tls_key": pkey,
        "coturn_max_bps": 0,
        # Every address of this lab is in a range the deny list refuses (198.18/15): let the
        # relay reach itself, as relay-to-relay transfers need.
        "coturn_test_allow_peers": [turn],
    }
    path = where / "inventory"
    (path / "group_vars").mkdir(parents=True)
    (path / "hosts.yml").write_text(json.dumps(inventory, indent=1))
    (path / "group_vars" / "all.yml").write_text(json.dumps(settings, indent=1))
    return path, secret


@contextlib.contextmanager
def deploy_stack(workdir: Path) -> Iterator[Stack]:
    """The containers, booted and reachable over SSH, with the inventory to deploy them; all
    removed when the block ends. Raises docker_host.EngineUnavailable where Docker cannot run."""
    prefix = f"{netns.RUN_PREFIX}-deploy"
    with docker_host.engine() as client:
        docker_host.remove_dead_runs(client)
        image = images.debian_image(client, "deploy", BASE_PACKAGES, pool=pool_packages())
        assert image.pool is not None
        wheels = (project_wheel(workdir / "dist"), wheelhouse())
        key = workdir / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
            timeout=30,
        )
        stack: Stack | None = None
        try:
            network = client.networks.create(
                f"{prefix}-net",
                driver="bridge",
                internal=True,
                options={"com.docker.network.bridge.name": f"{prefix[:9]}br"},
            ).name
            assert network is not None
            mirror = docker_host.start_container(
                client,
                image.tag,
                f"{prefix}-mirror",
                network,
                ["python3", "-m", "http.server", "80", "--directory", "/pool"],
                volumes={str(image.pool): {"bind": "/pool", "mode": "ro"}},
            )
            mirror_ip = docker_host.address(mirror, network)
            sources = f"deb [trusted=yes] http://{mirror_ip}/ ./\n"
            files = {
                "root/.ssh/authorized_keys": (key.with_suffix(".pub").read_bytes(), 0o600),
                "etc/apt/sources.list": (sources.encode(), 0o644),
            }
            containers = {
                host: docker_host.start_container(
                    client,
                    image.tag,
                    f"{prefix}-{host}",
                    network,
                    ["/sbin/init"],
                    files,
                    hostname=host,
                    # NET_ADMIN: the firewall role's nftables.
                    **docker_host.systemd_options(extra_caps=("NET_ADMIN",)),
                )
                for host in HOSTS
            }
            ips = {host: docker_host.address(c, network) for host, c in containers.items()}
            for ip in ips.values():
                _wait_ssh(ip)
            (workdir / "tls").mkdir()
            tls = certs.self_signed(
                workdir / "tls", dns=("fileshare.test",), ips=(ips["lb1"], ips["turn1"])
            )
            inventory, secret = _inventory(workdir, ips, key, wheels, tls)
            secret_file = workdir / "turn-secret"
            secret_file.write_text(secret)
            secret_file.chmod(0o600)
            stack = Stack(
                workdir, containers, ips, tls[0], secret_file, inventory, mirror, mirror_ip
            )
            yield stack
        finally:
            if stack is not None:
                stack.close_ssh()
            docker_host.remove_prefixed(client, prefix)
