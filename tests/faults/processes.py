"""The system as separate processes (`broker run core|dispatcher|adapter`) on a secured single
nats-server, for the fault suite: each part can be killed with SIGKILL by its pid and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from adapters.stub import StubNativeSystem
from broker.identity.state import StatePaths
from broker.nats.cluster import NatsCluster
from broker.nats.security import ensure_nats_identities, nats_security
from broker.nats.server import NatsServer
from broker.nats.settings import admin_access
from broker.policy.defaults import ensure_defaults
from broker.policy.loader import load_policy
from tests.faults.harness import stubs_for

ORGS = ("NSATU", "EUMAM", "UDCG")
ACK_WAIT = "5"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Part:
    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[str] | None = None
    _logf: IO[str] | None = None

    async def start(self, timeout: float = 60.0) -> dict[str, Any]:
        self._logf = self.log.open("a")
        self.proc = subprocess.Popen(args=self.args, stdout=subprocess.PIPE, stderr=self._logf, text=True)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line:
            raise AssertionError(f"{self.name} exited ({self.proc.wait()}); see {self.log}")
        return dict(json.loads(line))

    def kill(self) -> None:
        """SIGKILL, by the pid of the process we started."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._logf is not None:
            self._logf.close()
            self._logf = None


@dataclass
class Split:
    paths: StatePaths
    nats: NatsServer
    stubs: Mapping[str, StubNativeSystem]
    parts: dict[str, Part] = field(default_factory=dict)
    gateway_url: str = ""
    cluster: NatsCluster | None = None

    @property
    def nats_url(self) -> str:
        return ",".join(self.cluster.urls) if self.cluster is not None else self.nats.url

    async def restart_nats(self) -> None:
        port = self.nats.port
        self.nats = NatsServer(self.paths.nats_dir, port=port, security=self.nats.cfg.security)
        await self.nats.start()


def _cli(paths: StatePaths, *args: str) -> list[str]:
    """`broker --state <root> ARGS...` with this interpreter."""
    return [sys.executable, "-m", "broker", "--state", str(paths.root), *args]


def _broker(paths: StatePaths, *args: str) -> list[str]:
    return _cli(paths, "run", *args)


@contextlib.asynccontextmanager
async def split_system(tmp: Path, *, cluster: bool = False, gateway_workers: int = 0) -> AsyncIterator[Split]:
    """The parts as processes on one secured nats-server, or on a 3-node cluster (streams at R3);
    with `gateway_workers`, the core runs the gateway as that many `broker run gateway` children."""
    paths = StatePaths(tmp / "state")
    ensure_defaults(paths)
    ensure_nats_identities(paths, load_policy(paths.policy), route=cluster)
    security = nats_security(paths, load_policy(paths.policy))
    async with contextlib.AsyncExitStack() as st:
        if cluster:
            nodes = await st.enter_async_context(
                NatsCluster(paths.nats_dir, security, 3, admin=admin_access(paths))
            )
            srv = nodes.nodes[0].server
        else:
            nodes = None
            srv = await st.enter_async_context(NatsServer(paths.nats_dir, security=security))
        stubs = await st.enter_async_context(stubs_for(ORGS, idempotent=True))
        split = Split(paths, srv, stubs, cluster=nodes)
        if nodes is None:
            st.push_async_callback(_stop_nats, split)
        common = [
            "--nats-url",
            split.nats_url,
            "--adapter-ack-wait",
            ACK_WAIT,
            "--checkpoint-interval",
            "1",
            "--replicas",
            "3" if cluster else "1",
        ]
        port = free_port()
        core = ["core", "--port", str(port), "--gateway-workers", str(gateway_workers)]
        split.parts["core"] = Part("core", _broker(paths, *core, *common), tmp / "core.log")
        try:
            ready = await split.parts["core"].start()
            split.gateway_url = ready["gateway"]
            split.parts["dispatcher"] = Part(
                "dispatcher", _broker(paths, "dispatcher", *common), tmp / "disp.log"
            )
            await split.parts["dispatcher"].start()
            for org in ORGS:
                args = _broker(
                    paths,
                    "adapter",
                    "--org",
                    org,
                    "--native-url",
                    stubs[org].url,
                    "--gateway-url",
                    split.gateway_url,
                    *common,
                )
                split.parts[org] = Part(org, args, tmp / f"adapter-{org}.log")
                await split.parts[org].start()
            yield split
        finally:
            for part in reversed(list(split.parts.values())):
                part.stop()


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for whoever inherited it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gateway_worker_pids(core: Part) -> list[int]:
    """The `broker run gateway` children of the core process we started (Linux /proc)."""
    assert core.proc is not None
    pid = core.proc.pid
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    out = []
    for c in children:
        with contextlib.suppress(OSError):
            if b" run gateway " in Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" "):
                out.append(c)
    return out


async def _stop_nats(split: Split) -> None:
    await split.nats.stop()


async def audit_export(paths: StatePaths, nats_url: str, out: Path) -> list[bytes]:
    cmd = _cli(paths, "audit", "export", "--nats-url", nats_url, "--out", str(out))
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out.read_bytes().splitlines()


async def audit_verifies(paths: StatePaths, nats_url: str) -> subprocess.CompletedProcess[str]:
    cmd = _cli(paths, "audit", "verify", "--nats-url", nats_url)
    return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=120)


def wall() -> float:
    return time.monotonic()
