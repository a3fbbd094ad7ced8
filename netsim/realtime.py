"""Real-time scheduling for the parts of the emulated network that keep time.

The NFQUEUE delayer and the link probes timestamp and release packets in user space; under
the suite's parallel load an ordinary process waits for a core, and that wait shows up as
link delay nobody configured (a 50 ± 10 ms link measured a p99 of 71 ms in CI). SCHED_FIFO
lets them run as soon as their timer or packet is due. They sleep between packets, and the
kernel's RT throttling (`sched_rt_runtime_us`) keeps them from starving the machine.
"""

from __future__ import annotations

import os
from typing import Final

PRIORITY: Final = 10  # above every SCHED_OTHER process, far below the kernel's own threads


def keep_time() -> bool:
    """Run this process under SCHED_FIFO; False where that is not allowed (not root)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PRIORITY))
    except PermissionError:
        return False
    return True
