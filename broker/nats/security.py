"""NATS identities and the secured server config, generated from the policy (docs/nats-security.md).

One NATS identity per service, each a TLS client certificate of the dev CA whose subject is the NATS
user (`verify_and_map`):

    service          certificate subject          files (under the state folder)
    admin            CN=nats.admin                pki/nats/admin.crt, admin.key (0600)
    gateway          CN=nats.gateway              pki/nats/gateway.crt, ...
    dispatcher       CN=nats.dispatcher
    audit            CN=nats.audit                the audit writer
    reader           CN=nats.reader               operators' read path (tail, audit export/verify)
    adapter-<org>    CN=nats.adapter-<org>        one per organisation of the policy (org lower case)

A subject CN always holds a dot, which no sender or operator id may (`^[a-z][a-z0-9-]{2,62}$`), so a
sender's certificate can never pass for a NATS service and a NATS certificate never for a sender.

The config the embedded server runs (`nats_security`, `render_nats_config`) is built from these identities
and the permissions of `broker.nats.permissions`; `deploy/` holds examples rendered here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import structlog

from broker.errors import PKIError
from broker.identity.pem import load_cert
from broker.identity.state import StatePaths
from broker.identity.x509 import (
    ROUTE_CN,
    ca_available,
    ensure_route_cert,
    issue_service_cert,
    route_cert_paths,
    service_cert_sound,
)
from broker.nats.config import NatsConfig, NatsSecurity, NatsUser, cluster_routes, node_name, render_config
from broker.nats.names import certificate_cn
from broker.nats.permissions import NatsView, permissions, services
from broker.policy.model import Policy

__all__ = [
    "ROUTE_USER",
    "credential_paths",
    "ensure_nats_identities",
    "example_cluster_config",
    "example_config",
    "example_view",
    "issue_nats_identity",
    "nats_security",
    "render_nats_cluster_config",
    "render_nats_config",
]

log = structlog.get_logger(__name__)

#: The only route user of a cluster: the subject of `pki/route.crt` (verify_and_map on the route port).
ROUTE_USER = f"CN={ROUTE_CN}"


def nats_security(
    paths: StatePaths, policy: Policy | NatsView, extra_users: Iterable[NatsUser] = ()
) -> NatsSecurity:
    """TLS with the state folder's CA and server certificate, and the users of the policy; for a cluster
    node also the route certificate (`pki/route.crt`, made by `ensure_nats_identities(..., route=True)`)."""
    view = policy if isinstance(policy, NatsView) else NatsView.of(policy)
    route_crt, route_key = route_cert_paths(paths)
    return NatsSecurity(
        ca_file=str(paths.ca_crt),
        cert_file=str(paths.server_crt),
        key_file=str(paths.server_key),
        users=(*permissions(view), *extra_users),
        route_cert_file=str(route_crt),
        route_key_file=str(route_key),
        route_user=ROUTE_USER,
    )


def render_nats_config(
    paths: StatePaths, policy: Policy | NatsView, *, host: str = "127.0.0.1", port: int = 4222
) -> str:
    """The config `broker nats-config` prints: this state folder's PKI, JetStream under nats/."""
    cfg = NatsConfig(
        store_dir=str(paths.nats_dir / "jetstream"),
        ports_dir=None,
        host=host,
        port=port,
        security=nats_security(paths, policy),
    )
    return render_config(cfg)


def render_nats_cluster_config(
    paths: StatePaths,
    policy: Policy | NatsView,
    *,
    index: int,
    ports: Sequence[tuple[int, int]],
    host: str = "127.0.0.1",
) -> str:
    """Node `index` (1-based) of a cluster of `len(ports)` nodes, `ports` = (client port, route port)
    per node: what `NatsCluster` runs (node folder `nats/node-<i>/`), the client port and the route
    port both mutual TLS (the route certificate `pki/route.crt`, whose subject is the only route user)."""
    node_dir = paths.nats_dir / f"node-{index}"
    cfg = NatsConfig(
        store_dir=str(node_dir / "jetstream"),
        ports_dir=None,
        host=host,
        port=ports[index - 1][0],
        server_name=node_name(index),
        security=nats_security(paths, policy),
        cluster=cluster_routes(index, [r for _, r in ports], host=host),
    )
    return render_config(cfg)


EXAMPLE_STATE = Path("/var/lib/coord-broker")
#: deploy/nats-cluster-node-1.conf: three nodes on one host, client ports 4222.., route ports 6222..
EXAMPLE_CLUSTER_PORTS: tuple[tuple[int, int], ...] = ((4222, 6222), (4223, 6223), (4224, 6224))


def example_view() -> NatsView:
    """ICD §9's default policy, as NATS sees it."""
    from broker.policy.defaults import DEFAULT_BROKER_NAME, DEFAULT_ORGANISATIONS, DEFAULT_SYSTEM_HIGH
    from schemas.clearance import Clearance

    return NatsView(
        instance=DEFAULT_BROKER_NAME,
        system_high=Clearance.parse(DEFAULT_SYSTEM_HIGH).rank,
        clearances=tuple(sorted((o, Clearance.parse(c).rank) for o, c in DEFAULT_ORGANISATIONS.items())),
    )


def example_config() -> str:
    """deploy/nats.conf: the default policy's config for a state folder at /var/lib/coord-broker."""
    return (
        "# Example, generated by `broker --state /var/lib/coord-broker nats-config` (a test keeps\n"
        "# it equal). Regenerate when the policy changes, then `nats-server --signal reload`.\n"
        + render_nats_config(StatePaths(EXAMPLE_STATE), example_view())
    )


def example_cluster_config(index: int = 1) -> str:
    """deploy/nats-cluster-node-<index>.conf: node `index` of the 3-node loopback cluster, same policy
    and state folder as `example_config`."""
    return (
        f"# Example: node {index} of the 3-node cluster `broker up --cluster 3` runs, for ICD §9's default\n"
        "# policy and a state folder at /var/lib/coord-broker (generated by broker/nats/permissions.py\n"
        "# `example_cluster_config`; a test keeps it equal). The other nodes differ in server_name,\n"
        "# listen, cluster.listen, routes and store_dir only.\n"
        + render_nats_cluster_config(
            StatePaths(EXAMPLE_STATE), example_view(), index=index, ports=EXAMPLE_CLUSTER_PORTS
        )
    )


def credential_paths(paths: StatePaths, service: str) -> tuple[Path, Path]:
    """(certificate, private key) of a service's NATS identity: pki/nats/<service>.crt, .key (0600)."""
    folder = paths.pki_dir / "nats"
    return folder / f"{service}.crt", folder / f"{service}.key"


def issue_nats_identity(
    paths: StatePaths, service: str, *, ca_crt_path: Path | None = None, ca_key_path: Path | None = None
) -> None:
    """Issue the service's client certificate (CN nats.<service>, EKU clientAuth), keeping an existing
    key. `ca_crt_path`/`ca_key_path` sign with another CA (tests)."""
    crt, key = credential_paths(paths, service)
    cert = issue_service_cert(
        paths, crt, key, certificate_cn(service), ca_crt_path=ca_crt_path, ca_key_path=ca_key_path
    )
    log.info("nats.identity_issued", service=service, not_after=cert.not_valid_after_utc.isoformat())


def ensure_nats_identities(paths: StatePaths, policy: Policy | NatsView, *, route: bool = False) -> list[str]:
    """Issue every missing, expired or foreign NATS service certificate; return what was made (paths
    relative to the state folder). Without the CA key (an outside CA) the files must be in place.
    `route`: also the cluster route certificate `pki/route.crt` (what a cluster needs)."""
    view = policy if isinstance(policy, NatsView) else NatsView.of(policy)
    made: list[str] = []
    if route:
        crt, key = route_cert_paths(paths)
        had_key = key.exists()
        if ensure_route_cert(paths):
            made.append(paths.relative(crt))
            if not had_key:
                made.append(paths.relative(key))
    can_issue = ca_available(paths)
    try:
        ca = load_cert(paths.ca_crt)
    except PKIError:
        ca = None
    for svc in services(view):
        crt, key = credential_paths(paths, svc)
        if ca is not None and service_cert_sound(crt, key, ca, certificate_cn(svc)):
            continue
        if not can_issue:
            if crt.exists() and key.exists():
                continue  # an outside CA's certificate: honoured as it is
            raise PKIError(f"{crt} is missing and this state folder has no CA key to issue it")
        had_key = key.exists()
        issue_nats_identity(paths, svc)
        made.append(paths.relative(crt))
        if not had_key:
            made.append(paths.relative(key))
    return made
