"""`netsim.browser_client`, the web app as a netsim client: what it takes from the client
adapter's argument list, and where it refuses to write (its end-to-end runs are the netsim
scenarios with a browser side: `python -m netsim run browser-`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim import browser_client


def test_the_page_is_the_signaling_servers_own_origin() -> None:
    assert browser_client.page_origin("ws://203.0.113.10:4567/ws") == "http://203.0.113.10:4567"
    assert browser_client.page_origin("wss://share.example/ws") == "https://share.example"
    with pytest.raises(browser_client.Failed, match="not a signaling URL"):
        browser_client.page_origin("fileshare://203.0.113.10:1/x")
    flags = browser_client.chromium_flags("http://203.0.113.10:4567")
    assert flags == ["--unsafely-treat-insecure-origin-as-secure=http://203.0.113.10:4567"]


def test_saved_files_stay_under_out(tmp_path: Path) -> None:
    assert browser_client.target(tmp_path, "dir/a.bin") == tmp_path / "dir" / "a.bin"
    for name in ("../escape", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(browser_client.Failed, match="refused name"):
            browser_client.target(tmp_path, name)


def test_the_cli_arguments_it_does_not_know_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Usage errors exit 2 as the CLI's do (e.g. --relay-only: the page has no such switch)."""
    argv = ["send", "--json", "--server", "ws://127.0.0.1:1/ws", "--relay-only", "f"]
    assert browser_client.main(argv) == browser_client.EXIT_USAGE
    assert "--relay-only" in capsys.readouterr().err
    args = browser_client.parser().parse_args(
        ["receive", "--json", "--server", "ws://h:1/ws", "--out", "d"]
    )
    assert (args.command, args.out, args.code) == ("receive", "d", None)
