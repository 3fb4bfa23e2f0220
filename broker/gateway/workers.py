"""The gateway as N worker processes sharing one port (`broker up --gateway-workers N`).

The core process (audit writer, NATS provisioning, dispatcher, adapters) does not listen itself: it
reserves the port with a bound, non-listening `SO_REUSEPORT` socket, starts N processes of
`broker run gateway --port P`, each binding P with `SO_REUSEPORT`, and the kernel spreads incoming
connections over them. Each worker is a whole gateway (every ICD §6 route, the operators' API
included) with its own NATS connection; what must be one across workers is shared outside them:

- duplicates and id conflicts are decided by JetStream (`Nats-Msg-Id`, then the stored digest);
- a sender's rate limit is one token bucket in a file all workers map (`broker.gateway.limiter`);
- audit events go to the one writer through `COORD_AUDIT_IN` (`RemoteAuditSink`), and checkpoints
  and proofs are read from the files the writer keeps (`broker.audit.snapshot`).

`GatewayWorkers` starts them, waits until each says it is ready, restarts one that dies (after a
back-off that doubles, up to 30 s, while it keeps dying), and on exit stops them with SIGTERM, then
SIGKILL after a grace period. It only ever signals the processes it started, by their handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from broker.aio import AsyncResource, Backoff, stop_task
from broker.errors import WorkerStartError

log = structlog.get_logger(__name__)

#: a worker up this long before it exited was not crash-looping: its restart back-off starts again
STABLE_AFTER_S = 30.0



@dataclass(frozen=True, slots=True)
class WorkerSettings:
    count: int
    state: Path
    nats_url: str
    host: str = "127.0.0.1"
    port: int = 8443  # 0: any free port, reserved here and shared by the workers
    start_timeout_s: float = 60.0
    stop_grace_s: float = 10.0
    restart: bool = True


@dataclass(slots=True)
class _Worker:
    index: int
    proc: asyncio.subprocess.Process
    drain: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: it holds the port number (also when `port` is 0) and
    takes no connections, so only the workers' listening sockets do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, port))
    except OSError as exc:
        s.close()
        raise WorkerStartError(f"cannot bind {host}:{port} for the gateway workers: {exc}") from exc
    return s


class GatewayWorkers(AsyncResource):
    """`async with GatewayWorkers(settings) as w:` runs `settings.count` gateway processes on `w.url`."""

    def __init__(self, settings: WorkerSettings) -> None:
        if settings.count < 1:
            raise ValueError("at least one gateway worker")
        self.s = settings
        self._reservation: socket.socket | None = None
        self.port = 0
        self.workers: list[_Worker] = []
        self.restarts = 0

    @property
    def url(self) -> str:
        host = f"[{self.s.host}]" if ":" in self.s.host else self.s.host
        return f"https://{host}:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    async def _open(self) -> None:
        self._reservation = reserve_port(self.s.host, self.s.port)
        self.port = self._reservation.getsockname()[1]
        for i in range(self.s.count):
            self.workers.append(await self._start_worker(i))
        await asyncio.gather(*(self._ready(w) for w in self.workers))
        if self.s.restart:
            self._spawn(self._supervise(), "gateway-workers")
        log.info("workers.started", count=self.s.count, url=self.url, pids=self.pids)

    async def _close(self) -> None:
        await self._stop_all()

    # -- processes ------------------------------------------------------------------------------

    def _argv(self, index: int) -> list[str]:
        s = self.s
        return [
            sys.executable,
            "-m",
            "broker",
            "--state",
            str(s.state),
            "run",
            "gateway",
            "--nats-url",
            s.nats_url,
            "--host",
            s.host,
            "--port",
            str(self.port),
            "--worker-index",
            str(index),
            "--worker-of-parent",
        ]

    async def _start_worker(self, index: int) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            # stdin: a pipe the worker reads to its end, which comes when this process dies (any way)
            *self._argv(index),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return _Worker(index, proc)

    async def _ready(self, w: _Worker) -> None:
        """The worker prints one JSON line once it listens; then its stdout is drained for ever."""
        assert w.proc.stdout is not None  # noqa: S101 - PIPE above
        try:
            async with asyncio.timeout(self.s.start_timeout_s):
                line = await w.proc.stdout.readline()
        except TimeoutError:
            raise WorkerStartError(
                f"gateway worker {w.index} not ready within {self.s.start_timeout_s:.0f} s"
            ) from None
        try:
            info = json.loads(line)
        except ValueError:
            info = None
        if not isinstance(info, dict) or "ready" not in info:
            rc = await _wait_exit(w.proc, 5.0)
            raise WorkerStartError(f"gateway worker {w.index} failed to start (exit code {rc}); see its log")
        w.drain = asyncio.create_task(_drain(w.proc.stdout), name=f"gateway-worker-{w.index}-stdout")

    async def _supervise(self) -> None:
        """Restart a worker that exits while the system runs; back off up to 30 s between tries."""
        backoffs: dict[int, Backoff] = {}
        while True:
            waits = {asyncio.ensure_future(w.proc.wait()): w for w in self.workers}
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for f in pending:
                f.cancel()
            for f in done:
                w = waits[f]
                # the back-off starts again only for a worker that had stayed up: a crash loop backs off
                up_s = time.monotonic() - w.started
                backoff = backoffs.setdefault(w.index, Backoff(0.5, 30.0))
                if up_s > STABLE_AFTER_S:
                    backoff.reset()
                delay = backoff.next()
                log.error(
                    "workers.exited",
                    index=w.index,
                    pid=w.proc.pid,
                    code=w.proc.returncode,
                    up_s=round(up_s, 1),
                    restart_in_s=delay,
                )
                await asyncio.sleep(delay)
                fresh = await self._start_worker(w.index)
                self.workers[self.workers.index(w)] = fresh
                self.restarts += 1
                try:
                    await self._ready(fresh)
                except WorkerStartError as exc:
                    log.error("workers.restart_failed", index=w.index, error=str(exc))
                    with contextlib.suppress(ProcessLookupError):
                        fresh.proc.kill()  # hung or dead: the next round of the loop restarts it
                    continue
                log.info("workers.restarted", index=w.index, pid=fresh.proc.pid)

    async def _stop_all(self) -> None:
        for w in self.workers:
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            if await _wait_exit(w.proc, self.s.stop_grace_s) is None:
                log.warning("workers.kill", index=w.index, pid=w.proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()
            if w.drain is not None:
                await stop_task(w.drain)
        self.workers = []
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None


async def _wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> int | None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            return await proc.wait()
    return None


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass
