"""`netsim`: the test-bed's command. `netsim run [SCENARIO...]` runs the scenario matrix (what
`make lab` runs) and reports (`--shard K/N`: a balanced slice of it, for one of N machines);
`netsim merge DIR...` joins the slices' results into one run's reports; `netsim list` shows it;
`netsim clean` removes what runs that died left behind (their namespaces, and with them their
links and nft tables; and their containers if our Docker engine is up). Only names of this
project's pattern are ever touched."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from netsim import cpuquota, docker_host, matrix, shards
from netsim.netns import delete, leftovers, namespaces


def clean(dry_run: bool) -> int:
    found = leftovers(namespaces())
    for name in found:
        print(f"{'would remove' if dry_run else 'removing'} namespace {name}")
        if not dry_run:
            delete(name)
    for group in cpuquota.leftovers():  # CPU quota groups of benchmarks that died
        print(f"{'would remove' if dry_run else 'removing'} cgroup {group}")
        if not dry_run:
            cpuquota.remove(group)
        found.append(str(group))
    if docker_host.running():  # not started just for this: the next run's start cleans anyway
        with docker_host.engine() as client:
            dead = docker_host.remove_dead_runs(client, dry_run)
        for prefix in dead:
            print(f"{'would remove' if dry_run else 'removed'} Docker containers {prefix}*")
        found += dead
    if not found:
        print("nothing left behind")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netsim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run", help="run scenarios (default: the default matrix) and report")
    lister = sub.add_parser("list", help="list the scenarios")
    for command in (runner, lister):
        command.add_argument("scenarios", nargs="*", help="names or name prefixes")
        command.add_argument("--full", action="store_true", help="the full matrix")
        command.add_argument(
            "--file", type=Path, default=None, help="a scenario file (TOML; default: built in)"
        )
    runner.add_argument(
        "--out", type=Path, default=Path("netsim-results"), help="where reports and logs go"
    )
    runner.add_argument(
        "--backend", choices=["netns", "docker"], default="netns", help="where hosts live"
    )
    runner.add_argument(
        "--shard",
        type=shards.parse_shard,
        default=None,
        metavar="K/N",
        help="run only slice K of N of the matrix (balanced by netsim/durations.json)",
    )
    runner.add_argument(
        "--jobs",
        type=int,
        default=2,
        choices=range(1, 9),
        metavar="N",
        help="scenarios that only judge outcomes run N at a time (throughput and calibration "
        "always alone; default 2; 1: one after another)",
    )
    runner.add_argument(
        "--file-mib",
        type=float,
        default=None,
        metavar="MIB",
        help="move this many MiB in each chosen scenario instead of its own size (a short "
        "run of a long one; faults still strike at their share)",
    )
    merger = sub.add_parser("merge", help="join the results of `run --shard` into one report")
    merger.add_argument("dirs", nargs="+", type=Path, help="the shards' --out folders")
    merger.add_argument("--out", type=Path, default=Path("netsim-results"), help="reports go here")
    merger.add_argument(
        "--durations",
        type=Path,
        default=None,
        help="refresh this durations file (e.g. netsim/durations.json) from the results",
    )
    cleaner = sub.add_parser("clean", help="remove namespaces of runs that died")
    cleaner.add_argument("--dry-run", action="store_true", help="only say what would go")
    args = parser.parse_args(argv)
    if args.command == "list":
        return matrix.list_scenarios(args.file, args.scenarios, args.full)
    if args.command == "merge":  # reads and writes files only: no root needed
        return matrix.merge(args.dirs, args.out, args.durations)
    if os.geteuid() != 0:
        print(f"netsim {args.command}: needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.command == "clean":
        return clean(args.dry_run)
    return matrix.main(
        args.file,
        args.scenarios,
        args.full,
        args.out,
        args.backend,
        args.shard,
        args.jobs,
        args.file_mib,
    )


if __name__ == "__main__":
    sys.exit(main())
