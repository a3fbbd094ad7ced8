"""Run a module as __main__ and, at exit, write this process's peak resident set size in KiB
to $MAX_RSS_FILE: a bound on what a hostile input made a real CLI process hold.

    python -m tests.max_rss fileshare send …
"""

from __future__ import annotations

import atexit
import os
import resource
import runpy
import sys
from pathlib import Path


def _write_peak() -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(os.environ["MAX_RSS_FILE"]).write_text(str(peak))


if __name__ == "__main__":
    atexit.register(_write_peak)
    module = sys.argv.pop(1)
    runpy.run_module(module, run_name="__main__", alter_sys=True)
