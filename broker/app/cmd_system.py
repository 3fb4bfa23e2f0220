"""`broker up` (the whole system) and `broker run PART` (one part per process)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from broker.errors import BrokerError

# -- up -----------------------------------------------------------------------------------------------


def _workers(n: int) -> int:
    if not 0 <= n <= 64:
        raise BrokerError(f"--gateway-workers must be between 0 and 64, not {n}")
    return n


def cmd_up(args: argparse.Namespace) -> int:
    from broker import logs
    from broker.app.options import GatewayOptions, NatsOptions, SystemOptions

    logs.configure(console=True)
    opts = SystemOptions(
        state=Path(args.state).resolve(),
        nats=NatsOptions(cluster=args.cluster),
        gateway=GatewayOptions(port=args.port, workers=_workers(args.gateway_workers)),
    )
    (opts.state / "run").mkdir(parents=True, exist_ok=True)
    return asyncio.run(_up(args, opts))


async def _up(args: argparse.Namespace, opts: Any) -> int:
    from broker.app.examples import example_curl
    from broker.app.system import System

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with System(opts) as system:
        run = Path(opts.state) / "run"
        (run / "gateway.url").write_text(system.gateway_url + "\n")
        (run / "nats.url").write_text(system.nats_url + "\n")
        out = sys.stdout
        print("coordination broker is up", file=out)
        width = max(len(c) for c, _ in system.status.lines)
        for component, where in system.status.lines:
            print(f"  {component.ljust(width)}  {where}", file=out)
        if system.created:
            made = sorted({c.split("/")[1] for c in system.created if c.startswith("identities/")})
            print(
                f"  made ({len(system.created)} items): dev PKI and policy where missing; identities: "
                f"{', '.join(made) or 'none'}",
                file=out,
            )
        print(f"\ngateway: {system.gateway_url}\nnats:    {system.nats_url}\n", file=out)
        print("post a signed message (valid for 10 minutes; a second post answers 200 duplicate):", file=out)
        print(example_curl(system.paths, system.gateway_url), file=out)
        if args.demo:
            from broker.app.demo import run_demo

            await run_demo(system, out)
        if args.exit_after_demo:
            return 0
        print("\nCtrl-C stops everything.", file=out, flush=True)
        await stop.wait()
        print("stopping ...", file=out, flush=True)
    print("stopped.", file=sys.stdout, flush=True)
    return 0


# -- run (one part per process) ----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """One part of the system in this process, against external NATS: what the fault suite kills."""
    from broker import logs
    from broker.app.options import (
        ORGANISATIONS,
        AdapterOptions,
        GatewayOptions,
        NatsOptions,
        Part,
        SystemOptions,
    )

    logs.configure(console=False)
    part = args.part
    if part == "adapter" and (args.org not in ORGANISATIONS or not args.native_url or not args.gateway_url):
        raise BrokerError(
            f"an adapter needs --org ({', '.join(ORGANISATIONS)}), --native-url and --gateway-url"
        )
    parts: dict[str, Part] = {
        "core": "core",
        "gateway": "gateway-worker",
        "dispatcher": "dispatcher",
        "adapter": "adapter",
    }
    opts = SystemOptions(
        state=Path(args.state).resolve(),
        parts=frozenset({parts[part]}),
        nats=NatsOptions(url=args.nats_url, replicas=args.replicas),
        gateway=GatewayOptions(
            host=args.host,
            port=args.port,
            workers=_workers(args.gateway_workers) if part == "core" else 0,
            worker_index=args.worker_index,
        ),
        adapters=AdapterOptions(
            orgs=(args.org,) if part == "adapter" else None,
            native_urls={args.org: args.native_url} if part == "adapter" else None,
            gateway_url=args.gateway_url,
            ack_wait_s=args.adapter_ack_wait,
        ),
        checkpoint_interval_s=args.checkpoint_interval,
    )
    return asyncio.run(_run_part(opts, stop_on_stdin_eof=args.worker_of_parent))


def _on_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """A worker started by `GatewayWorkers` holds a pipe from its parent on stdin: EOF means the parent
    is gone (even by SIGKILL), so the worker stops instead of serving on as an orphan."""

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            fd = sys.stdin.fileno()
            while os.read(fd, 4096):  # the raw fd: no buffer lock held at interpreter exit
                pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


async def _run_part(opts: Any, *, stop_on_stdin_eof: bool = False) -> int:
    from broker.app.system import System

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if stop_on_stdin_eof:
        _on_stdin_eof(loop, stop)
    async with System(opts) as system:
        ready = {"ready": [c for c, _ in system.status.lines], "gateway": system.gateway_url}
        print(json.dumps(ready), flush=True)
        await stop.wait()
    return 0
