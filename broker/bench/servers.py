"""The servers a run measures, each in its own child process (`python -m broker.bench --serve KIND`),
so that the load generator (the parent) never shares their event loop:

* `broker`: the system as `broker up` assembles it (`System`), with instrumented stubs and a small
  control API on loopback (`/stats`: progress and memory; `/record`: delivery arrival times);
* `gateway1`, `gateway2`: ingest only (gateway in 1 or 2 processes, audit writer, NATS);
* `bare`: aiohttp over the same mutual TLS, a handler that reads the body and answers 202.

A child reports its URLs and pids in a ready file (written whole, then renamed) and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from broker.bench.payloads import MESSAGE_ID
from broker.bench.procfs import rss_kb

KINDS = ("broker", "bare", "gateway1", "gateway2")


def write_ready(path: Path, info: dict[str, Any]) -> None:
    """Written whole, then renamed: the parent never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def _timed_stub_class() -> type[Any]:
    """The stub native system, instrumented: arrival times of delivered message ids, bodies not kept
    (the stub stands for a system on another machine: its memory and validation are not the broker's)."""
    from adapters.stub import StubNativeSystem

    class TimedStub(StubNativeSystem):
        def __init__(
            self, name: str, media_type: str, *, validate: bool = True, idempotent: bool = False
        ) -> None:
            super().__init__(name, media_type, validate=False, idempotent=idempotent)
            self.count = 0
            self.recording = False
            self.arrivals: list[tuple[str, float]] = []

        async def _inbox(self, request: web.Request) -> web.Response:
            resp = await super()._inbox(request)
            if resp.status == 202:
                t = time.monotonic()
                doc = self.received.pop()
                self.count += 1
                if self.recording:
                    m = MESSAGE_ID.search(doc.body)
                    if m is not None:
                        self.arrivals.append((m.group(0).decode(), t))
            return resp

    return TimedStub


async def serve_broker(state: Path, ready: Path, workers: int = 0) -> None:
    import broker.app.system as service
    from broker import logs
    from broker.app.options import GatewayOptions, SystemOptions

    logs.configure(console=False, level=logging.WARNING)
    setattr(service, "StubNativeSystem", _timed_stub_class())  # noqa: B010 - bench instrumentation only
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    opts = SystemOptions(state=state, gateway=GatewayOptions(port=0, workers=workers))
    async with service.System(opts) as system:
        nats_pid = system.nats.proc.pid if system.nats is not None and system.nats.proc else 0

        async def stats(request: web.Request) -> web.Response:
            rss, hwm = rss_kb()
            for pid in system.workers.pids if system.workers is not None else []:
                w_rss, w_hwm = rss_kb(pid)  # the gateway processes are broker processes too
                rss, hwm = rss + w_rss, hwm + w_hwm
            nrss, nhwm = rss_kb(nats_pid)
            return web.json_response(
                {
                    "processed": system.dispatcher.processed,
                    "delivered": {org: getattr(s, "count", 0) for org, s in system.stubs.items()},
                    "audit_size": system.writer.tree.size,
                    "audit_depth": system.writer.depth,
                    "rss_kb": rss,
                    "hwm_kb": hwm,
                    "nats_rss_kb": nrss,
                    "nats_hwm_kb": nhwm,
                }
            )

        async def record(request: web.Request) -> web.Response:
            on = request.query.get("on", "1") == "1"
            out: list[tuple[str, str, float]] = []
            for org, s in system.stubs.items():
                out += [(org, i, t) for i, t in getattr(s, "arrivals", [])]
                s.arrivals = []  # type: ignore[attr-defined]
                s.recording = on  # type: ignore[attr-defined]
            return web.json_response({"arrivals": out})

        ctl = web.Application()
        ctl.router.add_get("/stats", stats)
        ctl.router.add_post("/record", record)
        runner = web.AppRunner(ctl, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        info = {
            "gateway_url": system.gateway_url,
            "nats_url": system.nats_url,
            "control_url": f"http://127.0.0.1:{port}",
            "pid": os.getpid(),
            "nats_pid": nats_pid,
        }
        write_ready(ready, info)
        await stop.wait()
        await runner.cleanup()


async def serve_gateway(state: Path, ready: Path, workers: int) -> None:
    """Ingest only, for the scaling figure: the gateway in `workers` processes, the audit writer and
    NATS; no dispatcher, no adapters (their work does not grow with gateway processes)."""
    import broker.app.system as service
    from broker import logs
    from broker.app.options import GatewayOptions, SystemOptions

    logs.configure(console=False, level=logging.WARNING)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    opts = SystemOptions(
        state=state, parts=frozenset({"core"}), gateway=GatewayOptions(port=0, workers=workers)
    )
    async with service.System(opts) as system:
        pids = system.workers.pids if system.workers is not None else []
        write_ready(ready, {"gateway_url": system.gateway_url, "pid": os.getpid(), "workers": pids})
        await stop.wait()


async def serve_bare(state: Path, ready: Path) -> None:
    """The baseline: aiohttp over the same mutual TLS, a handler that reads the body and answers 202."""
    from broker.identity.state import StatePaths
    from broker.identity.tls import server_context

    paths = StatePaths(state)

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202, body=b'{"ok":true}', content_type="application/json")

    app = web.Application(client_max_size=5 * 1024 * 1024)
    app.router.add_post("/v1/messages", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, "127.0.0.1", 0, ssl_context=server_context(paths.ca_crt, paths.server_crt, paths.server_key)
    )
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    write_ready(ready, {"gateway_url": f"https://127.0.0.1:{port}", "pid": os.getpid()})
    await stop.wait()
    await runner.cleanup()


@contextlib.asynccontextmanager
async def child(
    kind: str, state: Path, work: Path, timeout: float = 90.0, *, workers: int = 0
) -> AsyncIterator[dict[str, Any]]:
    """Start `python -m broker.bench --serve KIND` and yield what it reports once ready."""
    ready = work / f"{kind}.ready.json"
    ready.unlink(missing_ok=True)
    logf = (work / f"{kind}.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own interpreter and module
        [
            *(sys.executable, "-m", "broker.bench", "--serve", kind),
            *("--state", str(state), "--ready", str(ready), "--gateway-workers", str(workers)),
        ],
        stdout=logf,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    logf.close()
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bench {kind} server did not start; see {work / (kind + '.log')}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        yield json.loads(ready.read_text())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            for _ in range(300):
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def serve_main(argv: Sequence[str]) -> int:
    """The child's entry: `--serve KIND --state DIR --ready FILE [--gateway-workers N]`."""
    p = argparse.ArgumentParser(prog="broker.bench")
    p.add_argument("--serve", choices=KINDS, required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--gateway-workers", type=int, default=0)
    a = p.parse_args(argv)
    state, ready = Path(a.state), Path(a.ready)
    if a.serve.startswith("gateway"):
        asyncio.run(serve_gateway(state, ready, int(a.serve[-1])))
    elif a.serve == "broker":
        asyncio.run(serve_broker(state, ready, a.gateway_workers))
    else:
        asyncio.run(serve_bare(state, ready))
    return 0

