"""The NATS server config, rendered from data: the single node, a cluster node's `cluster {}` block,
and with a `NatsSecurity` the TLS-only client port (TLS first, before the server says anything), a
client certificate of the dev CA required, and the certificate's subject as the NATS user whose
publish/subscribe permissions come from the policy (broker/nats/permissions.py). There is no
anonymous user. Without a `NatsSecurity` the config is the plain loopback node of the tests that
bring their own. `deploy/nats.conf` is an example rendered here; a test keeps it equal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)


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
        "# One user per service, permissions generated from the policy (broker/nats/permissions.py).\n"
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
