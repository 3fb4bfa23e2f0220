"""A JetStream cluster of `size` nodes on loopback, secured like the single node (docs/nats-security.md).

Each node is a `NatsServer` (broker/natsd.py) with its own folder `<state_dir>/node-<i>/` (config, log,
JetStream store), its own server name (`coord-1`..`coord-<size>`) and fixed loopback ports chosen once
when the cluster object is made (a client port and a route port per node): a node restarts on the same
ports with the same store, and the client URLs (`urls`) are the seed list of every connection.

With a `NatsSecurity` the client port is TLS first with certificate-mapped users (as the single node) and
the route port is mutual TLS with the route certificate, whose subject is the only route user. The
cluster checks itself through an admin connection (`AdminAccess`: the admin identity's TLS context and
inbox prefix): `$JS.API.INFO` answers only when a JetStream meta leader exists, and
`$JS.API.STREAM.INFO.<stream>` names a stream's leader and replicas. No monitoring port is opened.

Processes are started and stopped by their pid only; leaving the context manager stops every node, and
an `atexit` hook kills (by pid) whatever is still running if the interpreter exits without leaving it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
import structlog
from nats.aio.client import Client

from broker.aio import AsyncResource
from broker.errors import BusUnavailable
from broker.nats.config import CLUSTER_NAME, NatsSecurity, cluster_routes, node_name
from broker.nats.server import NatsServer

log = structlog.get_logger(__name__)

_API = "$JS.API"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Wait:
    """What a probe returns while the awaited state is not there yet, and why."""

    reason: str


@dataclass(frozen=True, slots=True)
class AdminAccess:
    """How the cluster talks to itself: the admin identity's client TLS context (TLS first) and its inbox
    prefix. `tls=None` for a plain test cluster. Built by `broker.nats.settings.admin_access(paths)`."""

    tls: ssl.SSLContext | None = None
    inbox_prefix: str = "_INBOX"


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free TCP ports on `host` (all bound at once, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ClusterNode:
    """One node: a `NatsServer` on fixed ports. `kill()` is SIGKILL, `terminate()` SIGTERM (both by pid,
    returning at once), `await stop()` SIGTERM and waits, `await start()` (re)starts it on the same ports
    with the same store."""

    def __init__(self, index: int, server: NatsServer, client_port: int, route_port: int) -> None:
        self.index = index
        self.server = server
        self.client_port = client_port
        self.route_port = route_port

    @property
    def name(self) -> str:
        return self.server.cfg.server_name

    @property
    def url(self) -> str:
        scheme = "tls" if self.server.secure else "nats"
        return f"{scheme}://{self.server.cfg.host}:{self.client_port}"

    @property
    def pid(self) -> int | None:
        return self.server.pid

    @property
    def running(self) -> bool:
        return self.server.pid is not None

    @property
    def dir(self) -> Path:
        return self.server.dir

    @property
    def log_path(self) -> Path:
        return self.server.dir / "nats-server.log"

    def kill(self) -> None:
        """SIGKILL by pid (no flush, no goodbye to the other nodes), and reap it."""
        self.server.kill()

    async def stop(self, timeout: float = 10.0) -> None:
        await self.server.stop(timeout)

    async def start(self, timeout: float = 20.0) -> None:
        await self.server.start(timeout)

    def __repr__(self) -> str:
        return f"ClusterNode({self.name}, {self.url}, pid={self.pid})"


class NatsCluster(AsyncResource):
    """`async with NatsCluster(dir, security, 3, admin=...) as cluster:` starts the nodes and returns once
    the cluster has formed (every node reaches a JetStream meta leader); leaving stops every node."""

    def __init__(
        self,
        state_dir: Path,
        security: NatsSecurity | None,
        size: int = 3,
        *,
        admin: AdminAccess | None = None,
        host: str = "127.0.0.1",
        ports: Sequence[tuple[int, int]] | None = None,
        sync_always: bool = True,
        name: str = CLUSTER_NAME,
    ) -> None:
        """`ports`: (client port, route port) per node; free loopback ports are chosen when omitted.
        `admin` is required with `security` (the only way into a secured cluster)."""
        if size < 1:
            raise ValueError("a cluster has at least one node")
        if security is not None and admin is None:
            raise ValueError("a secured cluster needs the admin identity's access (AdminAccess)")
        if security is not None and admin is not None and admin.tls is None:
            raise ValueError("a secured cluster is reached over TLS only: AdminAccess.tls is required")
        if ports is None:
            chosen = free_ports(2 * size, host)
            ports = [(chosen[2 * i], chosen[2 * i + 1]) for i in range(size)]
        if len(ports) != size:
            raise ValueError(f"{size} nodes need {size} port pairs, got {len(ports)}")
        self.dir = state_dir
        self.security = security
        self.admin = admin or AdminAccess()
        self.size = size
        self.nodes: list[ClusterNode] = []
        route_ports = [r for _, r in ports]
        for i, (client_port, rport) in enumerate(ports, start=1):
            server = NatsServer(
                state_dir / f"node-{i}",
                port=client_port,
                sync_always=sync_always,
                security=security,
                server_name=node_name(i),
                cluster=cluster_routes(i, route_ports, host=host, name=name),
                host=host,
            )
            self.nodes.append(ClusterNode(i, server, client_port, rport))
        self._nc: Client | None = None
        atexit.register(self._kill_leftovers)

    # ---------------------------------------------------------------------------------------------
    # Life cycle

    @property
    def urls(self) -> tuple[str, ...]:
        """The client URLs of all nodes: the seed list of every connection."""
        return tuple(n.url for n in self.nodes)

    @property
    def secure(self) -> bool:
        return self.security is not None

    def node(self, name: str) -> ClusterNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    async def _open(self) -> None:
        await self.start_all()

    async def _close(self) -> None:
        await self._close_admin()
        await self.stop_all()
        atexit.unregister(self._kill_leftovers)

    async def start_all(self, timeout: float = 60.0) -> None:
        """Start every node that is not running (all at once: each waits for the others' routes), then
        wait until the cluster is healthy."""
        await asyncio.gather(*(n.start() for n in self.nodes if not n.running))
        log.info("nats.cluster_started", nodes=[(n.name, n.pid, n.url) for n in self.nodes])
        await self.wait_healthy(timeout)

    async def stop_all(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes))

    async def kill_all(self) -> None:
        """SIGKILL every node (a power cut)."""
        for n in self.nodes:
            n.kill()

    async def restart(self, index: int, *, kill: bool = False, timeout: float = 60.0) -> None:
        """Stop node `index` (1-based; SIGTERM, or SIGKILL with `kill`), start it again on the same ports
        and store, and wait until the cluster is healthy again."""
        node = self.nodes[index - 1]
        if kill:
            node.kill()
        else:
            await node.stop()
        await node.start()
        await self.wait_healthy(timeout)

    def reload(self, security: NatsSecurity) -> bool:
        """New users/permissions on every node (rewrite the config, SIGHUP): `NatsPolicyFollower` calls
        this as it calls `NatsServer.reload`. True if anything was signalled."""
        self.security = security
        done = [n.server.reload(security) for n in self.nodes]
        return any(done)

    def _kill_leftovers(self) -> None:
        for n in self.nodes:
            with contextlib.suppress(OSError):
                n.kill()

    # ---------------------------------------------------------------------------------------------
    # The admin connection and the JetStream API

    async def _connect(self, servers: Sequence[str], *, reconnect: bool) -> Client:
        return await nats.connect(
            servers=list(servers),
            name="coord-admin",
            tls=self.admin.tls,
            tls_handshake_first=self.admin.tls is not None,
            inbox_prefix=self.admin.inbox_prefix,
            allow_reconnect=reconnect,
            max_reconnect_attempts=-1 if reconnect else 0,
            reconnect_time_wait=0.2,
            connect_timeout=2,
            ping_interval=5,
            max_outstanding_pings=2,
            pending_size=0,
            error_cb=_quiet,
            disconnected_cb=_quiet_cb,
            reconnected_cb=_quiet_cb,
            closed_cb=_quiet_cb,
        )

    async def _admin(self) -> Client:
        if self._nc is None or self._nc.is_closed:
            self._nc = await self._connect(self.urls, reconnect=True)
        return self._nc

    async def _close_admin(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _request(self, subject: str, payload: bytes = b"", *, timeout: float = 2.0) -> dict[str, Any]:
        """One JetStream API request as the admin; the decoded answer (which may carry `error`)."""
        nc = await self._admin()
        msg = await nc.request(subject, payload, timeout=timeout)
        answer: dict[str, Any] = json.loads(msg.data or b"{}")
        return answer

    async def _until(self, what: str, timeout: float, probe: Callable[[], Awaitable[_T | Wait]]) -> _T:
        """Call `probe()` until it returns a value rather than a `Wait`; BusUnavailable after `timeout`."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                got = await probe()
            except (nats.errors.Error, OSError, TimeoutError, ValueError, BusUnavailable) as exc:
                got = Wait(f"{type(exc).__name__}: {exc}")
            if not isinstance(got, Wait):
                return got
            last = got.reason
            if time.monotonic() >= deadline:
                raise BusUnavailable(f"{what}: not within {timeout:.0f} s ({last})")
            await asyncio.sleep(0.1)

    async def stream_info(self, stream: str, timeout: float = 10.0) -> dict[str, Any]:
        """`$JS.API.STREAM.INFO.<stream>` (answered by the stream's leader), retried until answered."""

        async def probe() -> dict[str, Any] | Wait:
            got = await self._request(f"{_API}.STREAM.INFO.{stream}")
            return Wait(str(got["error"])) if "error" in got else got

        return await self._until(f"stream info {stream}", timeout, probe)

    async def stream_leader(self, stream: str, timeout: float = 20.0) -> str:
        """The server name of `stream`'s leader, waiting (bounded) while it has none."""

        async def probe() -> str | Wait:
            info = await self.stream_info(stream, timeout=2.0)
            leader = (info.get("cluster") or {}).get("leader")
            return str(leader) if leader else Wait("no leader")

        return await self._until(f"leader of {stream}", timeout, probe)

    async def step_down(self, stream: str, timeout: float = 20.0) -> str:
        """Ask `stream`'s leader to step down (`$JS.API.STREAM.LEADER.STEPDOWN.<stream>`, the admin's
        permission only); return the new leader once another node has taken over."""
        before = await self.stream_leader(stream, timeout)
        got = await self._request(f"{_API}.STREAM.LEADER.STEPDOWN.{stream}", timeout=timeout)
        if "error" in got or not got.get("success"):
            raise BusUnavailable(f"step down {stream}: {got.get('error', got)}")

        async def probe() -> str | Wait:
            now = await self.stream_leader(stream, timeout=2.0)
            return now if now != before else Wait(f"still {now}")

        after = await self._until(f"new leader of {stream}", timeout, probe)
        log.info("nats.stream_stepped_down", stream=stream, before=before, after=after)
        return after

    async def _node_reaches_meta_leader(self, node: ClusterNode) -> bool:
        """Connected to this node alone, `$JS.API.INFO` answers without error: the node is up, routed,
        and a meta leader exists (an isolated or leaderless node answers `cluster not available`)."""
        nc = await self._connect([node.url], reconnect=False)
        try:
            msg = await nc.request(f"{_API}.INFO", b"", timeout=2.0)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
        return "error" not in json.loads(msg.data or b"{}")

    async def wait_healthy(self, timeout: float = 30.0, streams: Sequence[str] = ()) -> None:
        """Until every node runs and reaches a JetStream meta leader, and each of `streams` has a leader
        and every replica current. BusUnavailable after `timeout`."""

        async def probe() -> bool | Wait:
            down = [n.name for n in self.nodes if not n.running]
            if down:
                return Wait(f"not running: {', '.join(down)}")
            for n in self.nodes:
                if not await self._node_reaches_meta_leader(n):
                    return Wait(f"{n.name}: no JetStream meta leader")
            for s in streams:
                lagging = lagging_replicas(await self.stream_info(s, timeout=2.0))
                if lagging:
                    return Wait(f"{s}: {', '.join(lagging)} not current")
            return True

        started = time.monotonic()
        await self._until("cluster healthy", timeout, probe)
        log.info("nats.cluster_healthy", seconds=round(time.monotonic() - started, 2), streams=list(streams))


def lagging_replicas(info: dict[str, Any]) -> list[str]:
    """Replicas of a stream info answer that are not current (or a missing leader), by server name."""
    cl = info.get("cluster") or {}
    out = [] if cl.get("leader") else ["(no leader)"]
    out += [str(r.get("name")) for r in cl.get("replicas") or [] if not r.get("current")]
    return out


async def _quiet(exc: Exception) -> None:
    log.debug("nats.cluster_admin_error", error=f"{type(exc).__name__}: {exc}")


async def _quiet_cb() -> None:
    return None
