"""Fixtures that start the real parts: signaling servers (in process or as processes), redis."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from netsim.processes import (
    MissingProgram,
    SignalEndpoint,
    SignalProcess,
    find_program,
    redis_server,
    start_signal,
    stop,
)
from signaling.config import Config
from signaling.server import SignalingServer, open_backend
from tests.e2e import Lab, make_lab

_SUITE_PROCESS = os.getpid()  # pytest, or one xdist worker (each imports this itself)


def _terminated(number: int, _frame: object) -> None:
    """A fork of the suite's process inherits this handler: pyroute2 forks a helper for each
    namespace it makes and stops it with SIGTERM. There it ends the fork at once; raising
    there unwound the fork through pytest's own frames, which told the xdist controller that
    the worker was interrupted (CI, ca5707b: reverted in 672a10c)."""
    if os.getpid() != _SUITE_PROCESS:
        os._exit(128 + number)
    raise KeyboardInterrupt


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI job's end or timeout, `kill`) unwinds the tests as Ctrl-C does, so that
    fixtures remove what they made (namespaces, processes); by default it ended the process
    where it stood and left them. In xdist's workers too (each configures itself)."""
    signal.signal(signal.SIGTERM, _terminated)


IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# The developer's own ~/.config/fileshare/config.toml must not steer the tests' clients.
os.environ["FILESHARE_CONFIG"] = "/nonexistent/fileshare-tests/config.toml"


# Tests that see every namespace on the machine (`netsim clean`, a check that no dead run left
# one) and the test whose run has a worker killed (its namespaces are a dead run's until the run
# removes them) run one at a time, in any xdist worker or pytest on the machine: side by side, a
# clean removed the namespaces the killed worker's run was to find and report. (A lock, not
# xdist_group: pytest 9.2 silently ignores that mark, pytest-xdist issue #1386.)
SEES_DEAD_RUNS = pytest.mark.usefixtures("one_sees_dead_runs_at_a_time")
DEAD_RUNS_LOCK = Path(tempfile.gettempdir()) / "fileshare-tests-dead-runs.lock"


@pytest.fixture
def one_sees_dead_runs_at_a_time() -> Iterator[None]:
    with DEAD_RUNS_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def require_binary(name: str) -> str:
    """A missing prerequisite fails in CI and skips, with the reason, elsewhere."""
    try:
        return find_program(name)
    except MissingProgram as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def require_webapp() -> None:
    """The web app must be built (`make web`, part of `make deps`) for tests that load it."""
    from signaling.pages import WEBAPP

    if not (WEBAPP / "index.html").is_file():
        message = f"the web app is not built in {WEBAPP}: run `make web`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def require_root() -> None:
    """Namespaces need root; CI runs as root, so there a missing privilege is a failure."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("this test needs root (network namespaces)")
        pytest.skip("this test needs root (network namespaces)")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A namespace lab (tests.e2e) with a signaling server, for end-to-end CLI tests."""
    require_root()
    require_binary("ip")
    with make_lab(tmp_path) as lab:
        yield lab


@pytest.fixture
def turn_lab(tmp_path: Path) -> Iterator[Lab]:
    """The same with coturn beside the server, which hands out its STUN and TURN URLs."""
    require_root()
    require_binary("ip")
    require_binary("turnserver")
    with make_lab(tmp_path, turn=True) as lab:
        yield lab


@dataclass(kw_only=True)
class RunningServer(SignalEndpoint):
    server: SignalingServer


TEST_DEFAULTS = Config(port=0, heartbeat_seconds=5.0)
# start_server overrides for a test about something else than the read byte budgets (which
# would make its 60 KB messages wait, by design):
UNBUDGETED: dict[str, int] = {
    "bytes_per_second": 10**9,
    "byte_burst": 10**9,
    "address_bytes_per_second": 10**9,
    "address_byte_burst": 10**9,
}
# The same, as fileshare-signal's flags, for tests that start the server as a process.
UNBUDGETED_ARGS: tuple[str, ...] = tuple(
    arg for key, value in UNBUDGETED.items() for arg in (f"--{key.replace('_', '-')}", str(value))
)

StartServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start in-process servers on free loopback ports; keyword arguments override Config."""
    running: list[RunningServer] = []

    async def start(**overrides: Any) -> RunningServer:
        cfg = replace(TEST_DEFAULTS, **overrides)
        store, bus = open_backend(cfg)
        server = SignalingServer(cfg, store, bus)
        started = RunningServer(await server.start("127.0.0.1", 0), server=server)
        running.append(started)
        return started

    yield start
    for item in running:
        await item.server.stop()


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    return await start_server()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private redis-server on a unix socket (no TCP port to collide with parallel workers)."""
    require_binary("redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="fs-redis-"))  # short: unix socket paths are limited
    with redis_server(workdir) as url:
        yield url
    shutil.rmtree(workdir, ignore_errors=True)


StartProcess = Callable[..., Awaitable[SignalProcess]]


@pytest.fixture
async def start_process(tmp_path: Path) -> AsyncIterator[StartProcess]:
    """Start `fileshare-signal` as a real process; returns once it logs the port it listens on."""
    procs: list[SignalProcess] = []

    async def start(*args: str, env: dict[str, str] | None = None) -> SignalProcess:
        started = await start_signal(tmp_path / f"signal-{len(procs)}.log", *args, env=env)
        procs.append(started)
        return started

    yield start
    for item in procs:
        stop(item.proc)


# Output of CLI subprocesses (the labs write it beside the test's tmp_path) that means a bug.
FORBIDDEN_OUTPUT = ("Traceback (most recent call last)", "Task exception was never retrieved")


@pytest.fixture(autouse=True)
def _no_traceback_in_cli_output(request: pytest.FixtureRequest) -> Iterator[None]:
    """Suite-wide: a client process that printed a traceback fails its test, whatever the test
    asserted (tests.e2e's labs keep each client's stdout and stderr as *.out / *.err files)."""
    uses_tmp = "tmp_path" in request.fixturenames
    root: Path | None = request.getfixturevalue("tmp_path") if uses_tmp else None
    yield
    if root is None:
        return
    for path in [*root.rglob("*.err"), *root.rglob("*.out")]:
        text = path.read_text(errors="replace")
        for marker in FORBIDDEN_OUTPUT:
            assert marker not in text, f"{path.name}: {text[text.index(marker) :][:2000]}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Figures a test measured (`record_property`) at the end of every run, so that a plain
    `pytest` in CI shows them (a test's prints appear only with -s or when it fails); the JUnit
    XML carries them too."""
    figures = [
        (report.nodeid, name, value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if isinstance(report, pytest.TestReport) and report.when == "call"
        for name, value in report.user_properties
    ]
    if figures:
        terminalreporter.section("figures measured")
        for nodeid, name, value in figures:
            terminalreporter.write_line(f"{nodeid}: {name} = {value}")


# Modules whose tests each take many minutes, and run first: xdist hands out tests in collection
# order, so one collected last would start when the other workers are nearly done and make the
# run as long as the module plus everything before it (the deploy test alone takes ~26 min).
LONGEST_FIRST = ("tests/test_deploy.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Puts the longest modules' tests first (a stable sort: the order within each is kept)."""
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))
