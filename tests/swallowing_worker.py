"""`python -m tests.swallowing_worker JOB`: a netsim worker whose scenario swallows
KeyboardInterrupt (as a bare `except:` in pyroute2's message parsing can, or a finalizer), for
tests/test_netsim_stop.py. It holds a namespace and a process of its own, then says `ready`."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

from netsim import netns, runner, worker
from netsim.results import ScenarioResult
from netsim.scenario import Scenario


def _stubborn(scenario: Scenario, root: Path) -> ScenarioResult:
    with netns.isolated_loopback("sw"):
        subprocess.Popen(["sleep", "600"])
        ready = False
        while True:
            # The fault this stands for. The inner loop sits inside the `try`: CPython runs a
            # pending signal's handler at a loop's backward jump, so a `suppress` around the
            # sleep alone let an interrupt raised there escape (the worker then ended at once).
            # `ready` is said inside it too: said before it, an interrupt sent on reading it
            # could land before the `try` (seen once in CI: the worker ended in 0.2 s).
            with contextlib.suppress(BaseException):
                if not ready:
                    print("ready", flush=True)
                    ready = True
                while True:
                    time.sleep(0.05)


if __name__ == "__main__":
    runner.run_one = _stubborn
    sys.exit(worker.main(sys.argv[1:]))
