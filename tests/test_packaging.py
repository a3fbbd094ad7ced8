"""The built wheel, installed per role into clean venvs (what `pipx install` does): the bare
install is a working client with nothing of the server or the test-bed; `[server]` runs the
signaling server and has nothing of the lab. Built once, both venvs installed side by side
(pip's cache makes later runs quick); prints how long `fileshare --help` takes to start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy_stack import project_wheel

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

PROBE = """
import importlib, json, sys
result = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        result[name] = "ok"
    except ImportError as exc:
        result[name] = exc.name or "?"
print(json.dumps(result))
"""
# Only the installed code counts: not the repository (PYTHONPATH, the working directory).
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
TEST_BED = ("docker", "pyroute2", "matplotlib", "netfilterqueue", "locust", "netsim.netns")


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("roles")
    wheel = project_wheel(root / "dist")
    roles = {"client": str(wheel), "server": f"{wheel}[server]"}
    installs = []
    for role, spec in roles.items():
        subprocess.run([sys.executable, "-m", "venv", str(root / role)], check=True, timeout=120)
        pip = [str(root / role / "bin" / "python"), "-m", "pip", "-q", "install"]
        installs.append(
            subprocess.Popen([*pip, "--disable-pip-version-check", spec], env=CLEAN_ENV)
        )
    assert [p.wait(timeout=600) for p in installs] == [0, 0]
    return {role: root / role / "bin" for role in roles}


def _run(bin_dir: Path, program: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A program of that venv, away from the repository."""
    return subprocess.run(
        [str(bin_dir / program), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=bin_dir,
        env=CLEAN_ENV,
    )


def _imports(bin_dir: Path, *modules: str) -> dict[str, str]:
    """'ok', or the name of the missing module, for each module imported in that venv."""
    return dict(json.loads(_run(bin_dir, "python", "-c", PROBE, *modules).stdout))


def test_the_bare_install_is_the_client(venvs: dict[str, Path]) -> None:
    client = venvs["client"]
    product = ("fileshare.cli", "fileshare.app", "fileshare.doctor", "fsproto.stun")
    found = _imports(client, *product, *TEST_BED)
    assert all(found[name] == "ok" for name in product), found
    assert all(found[name] != "ok" for name in TEST_BED), found
    server = _imports(client, "signaling.server", "turn.config")
    assert server == {"signaling.server": "redis", "turn.config": "jinja2"}
    started = time.perf_counter()
    help_text = _run(client, "fileshare", "--help")
    seconds = time.perf_counter() - started
    assert help_text.returncode == 0 and "send" in help_text.stdout
    print(f"\n`fileshare --help` in the client venv: {seconds * 1000:.0f} ms")
    # The server's script is there too (one wheel), and says which extra it lacks.
    signal = _run(client, "fileshare-signal", "--help")
    assert signal.returncode == 2 and "Traceback" not in signal.stderr
    assert "fileshare[server]" in signal.stderr and len(signal.stderr.splitlines()) == 1


def test_the_server_extra_runs_signaling_without_the_lab(venvs: dict[str, Path]) -> None:
    server = venvs["server"]
    found = _imports(server, "signaling.server", "signaling.redis_store", "turn.config", *TEST_BED)
    assert found["signaling.server"] == found["signaling.redis_store"] == "ok"
    assert found["turn.config"] == "ok"
    assert all(found[name] != "ok" for name in TEST_BED), found
    started = _run(server, "fileshare-signal", "--help")
    assert started.returncode == 0 and "--redis-url" in started.stdout
