"""The browser client's own checks, run from pytest so `make test` runs them: the shared protocol
vectors are up to date with the Python side, and the JavaScript type-checks and passes its
unit tests (Node's test runner) against them."""

from __future__ import annotations

import subprocess

from tests.conftest import require_binary
from tests.protocol_vectors import ROOT, render

WEB = ROOT / "web"


def test_vectors_are_up_to_date() -> None:
    for path, text in render().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: run `make vectors`"
        )


def _npm(*args: str) -> subprocess.CompletedProcess[str]:
    npm = require_binary("npm")
    require_binary("node")
    if not (WEB / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True)
    return subprocess.run(
        [npm, "run", "--silent", *args], cwd=WEB, capture_output=True, text=True, timeout=300
    )


def test_javascript_type_checks() -> None:
    result = _npm("check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_javascript_unit_tests_pass() -> None:
    result = _npm("test")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
