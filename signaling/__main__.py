"""`fileshare-signal` and `python -m signaling` (the `server` extra)."""

import sys

from fsproto.extras import run_role


def main() -> int:
    return run_role("signaling.cli", "server", "fileshare-signal")


if __name__ == "__main__":
    sys.exit(main())
