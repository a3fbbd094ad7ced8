"""The check every layer over aioice's internals gets: its pin holds for the installed aioice
and refuses another release, or a function whose source changed underneath."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aioice
import pytest

from fileshare import turnrefresh


def assert_aioice_pin(
    functions: Mapping[str, Callable[..., Any]], sources: Mapping[str, str], changed: str
) -> None:
    """`functions` (a layer's originals) against `sources` (its pinned digests); `changed` is
    the one swapped for another function to play a source that moved."""
    turnrefresh.check(aioice.__version__, dict(functions), dict(sources), "layer")
    written = r"layer was written for aioice 0\.13\.0, found 0\.14\.0"
    with pytest.raises(turnrefresh.IncompatibleAioice, match=written):
        turnrefresh.check("0.14.0", dict(functions), dict(sources), "layer")
    moved = {**functions, changed: assert_aioice_pin}
    with pytest.raises(turnrefresh.IncompatibleAioice, match=f"changed underneath: {changed}"):
        turnrefresh.check(turnrefresh.AIOICE_VERSION, moved, dict(sources), "layer")
