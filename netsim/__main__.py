"""`netsim` and `python -m netsim` (the `lab` extra)."""

import sys

from fsproto.extras import run_role


def main() -> int:
    return run_role("netsim.cli", "lab", "netsim")


if __name__ == "__main__":
    sys.exit(main())
