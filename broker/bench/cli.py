"""`broker bench [--quick] [--json FILE] [--keep] [--gateway-workers N]`: the subcommand."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from broker.bench.report import render, to_json
from broker.bench.scale import FULL, QUICK
from broker.bench.scenarios import run


def add_bench_parser(subparsers: Any) -> None:
    b = subparsers.add_parser("bench", help="benchmark the system against raw baselines (one run)")
    b.add_argument("--quick", action="store_true", help="a small run (under a minute)")
    b.add_argument("--json", dest="json_file", help="also write the figures as JSON to this file")
    b.add_argument("--keep", action="store_true", help="keep the temp folder (logs, state)")
    b.add_argument(
        "--gateway-workers",
        type=int,
        default=0,
        metavar="N",
        help="the system's gateway in N processes, like `broker up --gateway-workers N` (0: in-process)",
    )
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from broker import logs

    logs.configure(console=True, level=logging.WARNING)
    sc = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    t0 = time.perf_counter()
    try:
        figures = asyncio.run(run(sc, work, args.gateway_workers))
    finally:
        if not getattr(args, "keep", False):
            shutil.rmtree(work, ignore_errors=True)
    print(render(figures))
    print(
        f"\n({'quick' if sc.quick else 'full'} run, {time.perf_counter() - t0:.0f} s, {os.cpu_count()} CPUs)"
    )
    if args.json_file:
        Path(args.json_file).write_text(to_json(figures))
    return 0


def main(argv: Sequence[str]) -> int:
    """`python -m broker.bench [--quick] ...`: the same as `broker bench ...`."""
    parser = argparse.ArgumentParser(prog="broker bench")
    add_bench_parser(parser.add_subparsers(dest="cmd", required=True))
    return cmd_bench(parser.parse_args(["bench", *argv]))
