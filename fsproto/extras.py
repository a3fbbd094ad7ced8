"""Console scripts of the optional roles: a client-only install (`pipx install fileshare`) has
`fileshare-signal` and `netsim` on its PATH too, and they must say which extra is missing instead
of failing with an ImportError."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import cast


def run_role(module: str, extra: str, prog: str) -> int:
    """Import `module` and run its `main()`, or say in one line what to install."""
    try:
        main = cast(Callable[[], int], importlib.import_module(module).main)
    except ModuleNotFoundError as exc:
        print(
            f"{prog}: {exc.name} is not installed: install the {extra} role with "
            f"pipx install 'fileshare[{extra}]' (or pip install 'fileshare[{extra}]')",
            file=sys.stderr,
        )
        return 2
    return main()
