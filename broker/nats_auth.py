"""NATS identities and permissions, generated from the policy (docs/nats-security.md).

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

Subjects carry the rank (ICD §2, 0..4) and the organisation as tokens:

    coord.msg.<rank>.<originator>.<kind 2 tokens>.<id>     COORD_ACCEPTED   gateway publishes
    coord.deliver.<org>.<rank>.<kind 2 tokens>              COORD_DELIVER    dispatcher publishes
    coord.audit.<instance>.log                              COORD_AUDIT      audit writer publishes
    coord.dead.<org>                                        COORD_DEAD       adapter of <org> publishes

`permissions(view)` turns the policy into allow lists (ranks up to min(clearance, system high)); every
service also gets `COMMON_DENY` (no stream delete/purge/message delete, no `$SYS`). `provision` (run with
the admin identity by `broker up`) creates the streams, each organisation's delivered-ids bucket and each
adapter's durable consumer, whose filter lists only its own organisation's delivery subjects up to its
clearance (`delivery_filter_subjects`): adapters may not create consumers themselves, because a consumer
with several filter subjects is created on an API subject that does not name them.
`NatsPolicyFollower` re-renders the config (and reloads an embedded server with SIGHUP) and re-provisions
the consumers when the policy changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType

from broker.aio import stop_task
from broker.audit.remote import INBOX_DURABLE, inbox_subject
from broker.audit.writer import audit_subject
from broker.bus import (
    ACCEPTED_STREAM,
    AUDIT_IN_STREAM,
    AUDIT_STREAM,
    DEAD_STREAM,
    DELIVERY_STREAM,
    DISPATCH_DURABLE,
    Bus,
    BusSettings,
    translate_errors,
)
from broker.clock import utcnow
from broker.cluster import AdminAccess
from broker.errors import BusUnavailable, PKIError
from broker.natsd import (
    NatsConfig,
    NatsPermissions,
    NatsSecurity,
    NatsUser,
    cluster_routes,
    node_name,
    render_config,
)
from broker.pki import ROUTE_CN, ca_available, ensure_route_cert, load_ca, route_cert_paths
from broker.policy import Policy, PolicyHolder
from broker.state import StatePaths, write_private, write_public
from broker.tls import client_context

log = structlog.get_logger(__name__)

ADMIN = "admin"
GATEWAY = "gateway"
DISPATCHER = "dispatcher"
AUDIT = "audit"
READER = "reader"
FIXED_SERVICES: tuple[str, ...] = (ADMIN, GATEWAY, DISPATCHER, AUDIT, READER)

#: The only route user of a cluster: the subject of `pki/route.crt` (verify_and_map on the route port).
ROUTE_USER = f"CN={ROUTE_CN}"

CERT_DAYS = 365
_BACKDATE = timedelta(minutes=5)

#: Denied to every service, whatever its allow list says (deny wins in NATS).
COMMON_PUBLISH_DENY: tuple[str, ...] = (
    "$SYS.>",
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.SNAPSHOT.>",
    "$JS.API.STREAM.RESTORE.>",
    "$JS.API.STREAM.PEER.>",
    "$JS.API.STREAM.LEADER.>",
    "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.ACCOUNT.>",
    "$JS.API.META.>",
    "$JS.API.SERVER.>",
)
COMMON_SUBSCRIBE_DENY: tuple[str, ...] = ("$SYS.>",)
#: The admin's deny list: the common one without `$JS.API.STREAM.LEADER.>`, because the admin may ask the
#: broker's streams' leaders to step down (`STREAM.LEADER.STEPDOWN.<stream>` in its allow list: moving a
#: leader off a node, and the cluster fault tests); every other service keeps it denied.
ADMIN_PUBLISH_DENY: tuple[str, ...] = tuple(s for s in COMMON_PUBLISH_DENY if s != "$JS.API.STREAM.LEADER.>")


# --------------------------------------------------------------------------------------------------
# Names


def adapter_service(org: str) -> str:
    return f"adapter-{org.lower()}"


def adapter_durable(org: str) -> str:
    """The adapter's durable consumer on COORD_DELIVER (= adapters.runtime.Adapter.durable)."""
    return f"adapter-{org.lower()}"


def delivered_bucket(org: str) -> str:
    """The adapter's delivered-ids key-value bucket (as adapters/runtime.py names it)."""
    return f"coord_delivered_{org.lower()}"


def kv_stream(org: str) -> str:
    return f"KV_{delivered_bucket(org)}"


def nats_user(service: str) -> str:
    """The NATS user name: the certificate subject as the server formats it (RFC 2253)."""
    return f"CN={certificate_cn(service)}"


def certificate_cn(service: str) -> str:
    return f"nats.{service}"


def inbox_prefix(service: str) -> str:
    return f"_INBOX.{service}"


def service_for_bus(name: str) -> str:
    """The NATS identity of a Bus by its connection name (`System.bus_settings`): `coord-gateway`,
    `coord-dispatcher`, `coord-audit`, `coord-admin`, `coord-reader` / `coord-audit-export`, and
    `coord-adapter-<org lower>[-anything]`."""
    fixed = {
        "coord-admin": ADMIN,
        "coord-gateway": GATEWAY,
        "coord-dispatcher": DISPATCHER,
        "coord-audit": AUDIT,
        "coord-reader": READER,
        "coord-audit-export": READER,
    }
    if name in fixed:
        return fixed[name]
    prefix = "coord-adapter-"
    if name.startswith(prefix) and name[len(prefix) :]:
        return adapter_service(name[len(prefix) :].split("-", 1)[0])
    raise ValueError(f"no NATS identity for the connection {name!r}")


# --------------------------------------------------------------------------------------------------
# What of the policy the permissions depend on


@dataclass(frozen=True, slots=True)
class NatsView:
    """The projection of the policy that NATS permissions and consumers follow; equal views, equal config."""

    instance: str
    system_high: int
    clearances: tuple[tuple[str, int], ...]  # (organisation, clearance rank), sorted

    @classmethod
    def of(cls, policy: Policy) -> NatsView:
        return cls(
            instance=policy.name,
            system_high=policy.system_high.rank,
            clearances=tuple(sorted((code, o.clearance.rank) for code, o in policy.organisations.items())),
        )

    @property
    def organisations(self) -> tuple[str, ...]:
        return tuple(org for org, _ in self.clearances)

    def ceiling(self, org: str) -> int:
        """The highest rank `org` may receive (and originate): min(clearance, system high)."""
        return min(dict(self.clearances)[org], self.system_high)


def services(view: NatsView) -> tuple[str, ...]:
    return (*FIXED_SERVICES, *(adapter_service(org) for org in view.organisations))


def delivery_filter_subjects(org: str, clearance_rank: int) -> list[str]:
    """The filter subjects of `org`'s adapter consumer: its own deliveries, ranks 0..clearance_rank."""
    return [f"coord.deliver.{org}.{r}.>" for r in range(clearance_rank + 1)]


def accepted_publish_subjects(view: NatsView) -> tuple[str, ...]:
    return tuple(f"coord.msg.{r}.{org}.>" for org in view.organisations for r in range(view.ceiling(org) + 1))


def delivery_publish_subjects(view: NatsView) -> tuple[str, ...]:
    return tuple(
        f"coord.deliver.{org}.{r}.>" for org in view.organisations for r in range(view.ceiling(org) + 1)
    )


# --------------------------------------------------------------------------------------------------
# Permissions

_API = "$JS.API"


def _audit_read(view: NatsView) -> tuple[str, ...]:
    """Read the instance's audit log: last message by subject, an ephemeral consumer filtered on it."""
    subject = audit_subject(view.instance)
    return (
        f"{_API}.STREAM.INFO.{AUDIT_STREAM}",
        f"{_API}.STREAM.MSG.GET.{AUDIT_STREAM}",
        f"{_API}.CONSUMER.CREATE.{AUDIT_STREAM}.*.{subject}",
        f"{_API}.CONSUMER.MSG.NEXT.{AUDIT_STREAM}.*",
    )


def _perms(service: str, publish: Iterable[str]) -> NatsPermissions:
    """Every service subscribes to its own inbox only: replies, publish acks, pull deliveries."""
    return NatsPermissions(
        publish_allow=tuple(publish),
        publish_deny=ADMIN_PUBLISH_DENY if service == ADMIN else COMMON_PUBLISH_DENY,
        subscribe_allow=(f"{inbox_prefix(service)}.>",),
        subscribe_deny=COMMON_SUBSCRIBE_DENY,
    )


def service_permissions(view: NatsView, service: str) -> NatsPermissions:
    """The minimum each service needs for what it does through nats-py (see docs/nats-security.md)."""
    if service == ADMIN:
        streams = (ACCEPTED_STREAM, DELIVERY_STREAM, AUDIT_STREAM, DEAD_STREAM, AUDIT_IN_STREAM)
        kvs = tuple(kv_stream(org) for org in view.organisations)
        durables = (
            (ACCEPTED_STREAM, DISPATCH_DURABLE),
            (AUDIT_IN_STREAM, INBOX_DURABLE),
            *((DELIVERY_STREAM, adapter_durable(org)) for org in view.organisations),
        )
        return _perms(
            service,
            (
                f"{_API}.INFO",
                *(f"{_API}.STREAM.{op}.{s}" for s in (*streams, *kvs) for op in ("CREATE", "UPDATE", "INFO")),
                *(f"{_API}.STREAM.LEADER.STEPDOWN.{s}" for s in (*streams, *kvs)),
                *(
                    f"{_API}.CONSUMER.CREATE.{DELIVERY_STREAM}.{adapter_durable(o)}"
                    for o in view.organisations
                ),
                f"{_API}.CONSUMER.DURABLE.CREATE.{AUDIT_IN_STREAM}.{INBOX_DURABLE}",
                *(f"{_API}.CONSUMER.{op}.{s}.{d}" for s, d in durables for op in ("INFO", "PAUSE")),
                *_audit_read(view),
            ),
        )
    if service == GATEWAY:
        return _perms(
            service,
            (
                *accepted_publish_subjects(view),
                f"{_API}.STREAM.INFO.{ACCEPTED_STREAM}",
                f"{_API}.STREAM.MSG.GET.{ACCEPTED_STREAM}",  # read back by sequence on a duplicate
                inbox_subject(GATEWAY),  # audit events, when it runs as worker processes
            ),
        )
    if service == DISPATCHER:
        s, d = ACCEPTED_STREAM, DISPATCH_DURABLE
        return _perms(
            service,
            (
                *delivery_publish_subjects(view),
                f"{_API}.STREAM.INFO.{ACCEPTED_STREAM}",
                f"{_API}.STREAM.INFO.{DELIVERY_STREAM}",
                f"{_API}.CONSUMER.INFO.{s}.{d}",
                f"{_API}.CONSUMER.CREATE.{s}.{d}.coord.msg.>",  # its own durable, this filter only
                f"{_API}.CONSUMER.MSG.NEXT.{s}.{d}",
                f"$JS.ACK.{s}.{d}.>",
                inbox_subject(DISPATCHER),  # audit events, when it runs apart from the writer
            ),
        )
    if service == AUDIT:
        i, n = AUDIT_IN_STREAM, INBOX_DURABLE
        return _perms(
            service,
            (
                audit_subject(view.instance),
                *_audit_read(view),
                # the other processes' audit events: bind, pull and ack the admin-made durable only
                f"{_API}.STREAM.INFO.{i}",
                f"{_API}.CONSUMER.INFO.{i}.{n}",
                f"{_API}.CONSUMER.MSG.NEXT.{i}.{n}",
                f"$JS.ACK.{i}.{n}.>",
            ),
        )
    if service == READER:
        # the tail shows message content to operators cleared for it: the gateway process decides per
        # operator, so this identity reads any accepted message (never a delivery, never a consumer)
        return _perms(
            service,
            (
                *_audit_read(view),
                f"{_API}.STREAM.INFO.{ACCEPTED_STREAM}",
                f"{_API}.STREAM.MSG.GET.{ACCEPTED_STREAM}",
                # /readyz's details (broker/console/health.py): counts only, never a message
                *(f"{_API}.STREAM.INFO.{s}" for s in (DELIVERY_STREAM, DEAD_STREAM, AUDIT_IN_STREAM)),
                *(
                    f"{_API}.CONSUMER.INFO.{s}.{d}"
                    for s, d in (
                        (ACCEPTED_STREAM, DISPATCH_DURABLE),
                        (AUDIT_IN_STREAM, INBOX_DURABLE),
                        *((DELIVERY_STREAM, adapter_durable(org)) for org in view.organisations),
                    )
                ),
            ),
        )
    for org in view.organisations:
        if service == adapter_service(org):
            s, d, kv = DELIVERY_STREAM, adapter_durable(org), kv_stream(org)
            return _perms(
                service,
                (
                    f"{_API}.CONSUMER.INFO.{s}.{d}",
                    f"{_API}.CONSUMER.MSG.NEXT.{s}.{d}",
                    f"$JS.ACK.{s}.{d}.>",
                    f"coord.dead.{org}",
                    f"{_API}.STREAM.INFO.{kv}",
                    f"{_API}.STREAM.MSG.GET.{kv}",
                    f"{_API}.DIRECT.GET.{kv}.>",
                    f"$KV.{delivered_bucket(org)}.>",
                    inbox_subject(adapter_service(org)),  # audit events, apart from the writer
                ),
                # no core subscription to any stream's subjects, its own deliveries included: it reads
                # them through its consumer only (and no service's interest can make a push consumer
                # copy messages into a stream)
            )
    raise ValueError(f"unknown NATS service {service!r}")


_COMMENTS = {
    ADMIN: "admin: bootstrap (`broker up`): creates/updates streams, buckets, adapter consumers",
    GATEWAY: "gateway: the only publisher of accepted messages, up to each originator's ceiling",
    DISPATCHER: "dispatcher: its durable on COORD_ACCEPTED; the only publisher of deliveries",
    AUDIT: "audit writer: the only publisher of the audit log",
    READER: "operators' read path: audit log and accepted messages by subject (tail, export)",
}


def permissions(view: NatsView) -> tuple[NatsUser, ...]:
    users = []
    for svc in services(view):
        comment = _COMMENTS.get(svc) or (
            f"{svc}: its own consumer only (filtered by `broker up` to {svc.split('-', 1)[1].upper()}'s "
            f"deliveries, ranks 0..{view.ceiling(svc.split('-', 1)[1].upper())}), dead letters, its bucket"
        )
        users.append(NatsUser(nats_user(svc), service_permissions(view, svc), comment))
    return tuple(users)


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
    from broker.labels import Clearance
    from broker.pki import DEFAULT_BROKER_NAME, DEFAULT_ORGANISATIONS, DEFAULT_SYSTEM_HIGH

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
        "# policy and a state folder at /var/lib/coord-broker (generated by broker/nats_auth.py\n"
        "# `example_cluster_config`; a test keeps it equal). The other nodes differ in server_name,\n"
        "# listen, cluster.listen, routes and store_dir only.\n"
        + render_nats_cluster_config(
            StatePaths(EXAMPLE_STATE), example_view(), index=index, ports=EXAMPLE_CLUSTER_PORTS
        )
    )


# --------------------------------------------------------------------------------------------------
# Credentials


def credential_paths(paths: StatePaths, service: str) -> tuple[Path, Path]:
    """(certificate, private key) of a service's NATS identity: pki/nats/<service>.crt, .key (0600)."""
    folder = paths.pki_dir / "nats"
    return folder / f"{service}.crt", folder / f"{service}.key"


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _sound(service: str, crt: Path, key: Path, ca: x509.Certificate) -> bool:
    cert, k = _load_cert(crt), _load_key(key)
    if cert is None or k is None:
        return False
    pub = cert.public_key()
    if (
        not isinstance(pub, ec.EllipticCurvePublicKey)
        or pub.public_numbers() != k.public_key().public_numbers()
    ):
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return cns == [certificate_cn(service)] and cert.not_valid_after_utc > utcnow()


def issue_nats_identity(
    paths: StatePaths,
    service: str,
    *,
    days: int = CERT_DAYS,
    ca_crt_path: Path | None = None,
    ca_key_path: Path | None = None,
) -> x509.Certificate:
    """Issue the service's client certificate (CN nats.<service>, EKU clientAuth), keeping an existing
    key; the key is written 0600. `ca_crt_path`/`ca_key_path` sign with another CA (tests)."""
    ca_cert, ca_key = load_ca(paths, ca_crt_path=ca_crt_path, ca_key_path=ca_key_path)
    crt_path, key_path = credential_paths(paths, service)
    key = _load_key(key_path)
    fresh = key is None
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, certificate_cn(service))]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    if fresh:
        write_private(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
    write_public(crt_path, cert.public_bytes(serialization.Encoding.PEM))
    log.info("nats.identity_issued", service=service, not_after=cert.not_valid_after_utc.isoformat())
    return cert


def ensure_nats_identities(paths: StatePaths, policy: Policy | NatsView, *, route: bool = False) -> list[str]:
    """Issue every missing, expired or foreign NATS service certificate; return what was made (paths
    relative to the state folder). Without the CA key (an outside CA) the files must be in place.
    `route`: also the cluster route certificate `pki/route.crt` (what a cluster needs, `broker.pki`)."""
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
    ca = _load_cert(paths.ca_crt)
    for svc in services(view):
        crt, key = credential_paths(paths, svc)
        if ca is not None and _sound(svc, crt, key, ca):
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


def bus_settings(paths: StatePaths, service: str, url: str | Sequence[str], **kw: Any) -> BusSettings:
    """Settings of a connection as `service`. A `tls://` URL means TLS first with the service's
    certificate (never plaintext); a `nats://` URL is a plain development server (no credentials).
    Only the admin creates streams; every other service only checks the ones it uses. `url` may be a
    cluster's seed list (`NatsCluster.urls`, or those URLs joined with commas): all of one scheme."""
    urls = tuple(u.strip() for u in url.split(",")) if isinstance(url, str) else tuple(url)
    schemes = {urlsplit(u).scheme for u in urls}
    if len(schemes) != 1:
        raise ValueError(f"NATS URLs must all be tls:// or all nats://: {urls}")
    secure = schemes == {"tls"}
    tls = None
    if secure:
        crt, key = credential_paths(paths, service)
        tls = client_context(paths.ca_crt, crt, key)
    required = {
        GATEWAY: (ACCEPTED_STREAM,),
        DISPATCHER: (ACCEPTED_STREAM, DELIVERY_STREAM),
        AUDIT: (AUDIT_STREAM,),
        READER: (AUDIT_STREAM, ACCEPTED_STREAM),
    }
    defaults: dict[str, Any] = {
        "servers": urls,
        "name": f"coord-{service}",
        "tls": tls,
        "tls_handshake_first": secure,
        "inbox_prefix": inbox_prefix(service),
        "ensure_streams": service == ADMIN,
        "require_streams": required.get(service, ()),
    }
    return BusSettings(**{**defaults, **kw})


def admin_access(paths: StatePaths) -> AdminAccess:
    """How `NatsCluster` reaches a secured cluster: the admin identity's TLS context and inbox."""
    crt, key = credential_paths(paths, ADMIN)
    return AdminAccess(tls=client_context(paths.ca_crt, crt, key), inbox_prefix=inbox_prefix(ADMIN))


# --------------------------------------------------------------------------------------------------
# Provisioning (admin identity)


def adapter_consumer_config(org: str, clearance_rank: int, ack_wait_s: float) -> ConsumerConfig:
    """`org`'s adapter durable: as adapters/runtime.py asks for it, but with rank-limited filters."""
    durable = adapter_durable(org)
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        filter_subjects=delivery_filter_subjects(org, clearance_rank),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_ack_pending=1,
        max_deliver=-1,
    )


async def _ensure_bucket(bus: Bus, org: str) -> None:
    """`org`'s delivered-ids bucket with `bus.settings.replicas` copies (an existing bucket with another
    replica count is scaled: a single node's R1 bucket becomes R3 when the broker runs a cluster)."""
    js = bus.js
    replicas = bus.settings.replicas
    try:
        info = await js.stream_info(kv_stream(org))
    except nats.js.errors.NotFoundError:
        pass
    else:
        if (info.config.num_replicas or 1) != replicas:
            await js.update_stream(replace(info.config, num_replicas=replicas))
            log.info("nats.bucket_scaled", bucket=delivered_bucket(org), replicas=replicas)
        return
    await js.create_key_value(
        KeyValueConfig(bucket=delivered_bucket(org), history=1, storage=StorageType.FILE, replicas=replicas)
    )
    log.info("nats.bucket_created", bucket=delivered_bucket(org), replicas=replicas)


async def _ensure_adapter_consumer(bus: Bus, view: NatsView, org: str, ack_wait_s: float) -> bool:
    """Create or update `org`'s adapter consumer; False while a narrowing waits for the backlog."""
    js = bus.js
    want = adapter_consumer_config(org, view.ceiling(org), ack_wait_s)
    try:
        info = await js.consumer_info(DELIVERY_STREAM, adapter_durable(org))
    except nats.js.errors.NotFoundError:
        await js.add_consumer(DELIVERY_STREAM, config=want)
        log.info("nats.consumer_created", consumer=adapter_durable(org), filters=want.filter_subjects)
        return True
    have = info.config
    have_filters = set(have.filter_subjects or ([have.filter_subject] if have.filter_subject else []))
    want_filters = set(want.filter_subjects or ())
    same_wait = abs((have.ack_wait or 0.0) - ack_wait_s) < 1e-3
    if have_filters == want_filters and same_wait:
        return True
    if not have_filters <= want_filters and (info.num_pending or info.num_ack_pending):
        # Narrowing (a clearance lowered): what was released under the old policy is still handed to
        # the adapter, which re-applies the decision and dead-letters it with the failing rule (audited).
        log.info("nats.consumer_narrowing_deferred", consumer=adapter_durable(org), pending=info.num_pending)
        return False
    await js.add_consumer(DELIVERY_STREAM, config=want)
    log.info("nats.consumer_updated", consumer=adapter_durable(org), filters=want.filter_subjects)
    return True


async def _ensure_inbox_consumer(bus: Bus) -> None:
    """The audit writer's durable on COORD_AUDIT_IN (events of parts run in other processes)."""
    try:
        await bus.js.consumer_info(AUDIT_IN_STREAM, INBOX_DURABLE)
    except nats.js.errors.NotFoundError:
        await bus.js.add_consumer(
            AUDIT_IN_STREAM,
            ConsumerConfig(
                durable_name=INBOX_DURABLE,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                # short: after a writer crash its unwritten events come back within seconds; a
                # redelivery of an event still queued is skipped by the writer (no double record)
                ack_wait=5.0,
                max_ack_pending=5000,
                max_deliver=-1,
            ),
        )


async def provision(bus: Bus, view: NatsView, *, adapter_ack_wait_s: float) -> bool:
    """With the admin identity: the streams (the Bus ensures them), each organisation's bucket and
    adapter consumer. True when everything is as the view wants it. Replicas: the buckets get
    `bus.settings.replicas` copies; consumers follow their stream's (num_replicas 0)."""
    await bus.wait_ready()
    done = True
    with translate_errors("provision audit inbox"):
        await _ensure_inbox_consumer(bus)
    for org in view.organisations:
        with translate_errors(f"provision {org}"):
            await _ensure_bucket(bus, org)
            done = await _ensure_adapter_consumer(bus, view, org, adapter_ack_wait_s) and done
    return done



class Reloadable(Protocol):
    """What the follower reloads: a `NatsServer`, or every node of a `NatsCluster`."""

    @property
    def secure(self) -> bool: ...

    def reload(self, security: NatsSecurity) -> bool: ...


def duplicate_window_s(policy: Policy) -> float:
    """COORD_ACCEPTED's duplicate window for `policy`: every resend fresh enough to be admitted is
    within it (at least 15 minutes)."""
    return max(900.0, policy.max_age_s + policy.max_skew_s + 60.0)


class NatsPolicyFollower:
    """Keeps NATS in step with the policy: on a change of what NATS sees (organisations, clearances,
    system high, instance), issue missing identities, reload an embedded server's config (SIGHUP) and
    re-provision the adapter consumers (a narrowing waits until the consumer's backlog is handed over).
    Use as `async with NatsPolicyFollower(...)`; entering provisions once and waits for it."""

    def __init__(
        self,
        holder: PolicyHolder,
        admin: Bus,
        paths: StatePaths,
        server: Reloadable | None,
        *,
        adapter_ack_wait_s: float,
        provision_timeout_s: float = 60.0,
    ) -> None:
        self.holder = holder
        self.admin = admin
        self.paths = paths
        self.server = server
        self.ack_wait_s = adapter_ack_wait_s
        self.timeout = provision_timeout_s
        self.view = NatsView.of(holder.current)
        self._changed = asyncio.Event()
        self._pending = False
        self._task: asyncio.Task[None] | None = None

    def _on_change(self, _policy: Policy) -> None:
        self._changed.set()

    async def __aenter__(self) -> NatsPolicyFollower:
        async with asyncio.timeout(self.timeout):
            while True:
                try:
                    self._pending = not await provision(
                        self.admin, self.view, adapter_ack_wait_s=self.ack_wait_s
                    )
                    break
                except BusUnavailable as exc:
                    log.warning("nats.provision_retry", error=str(exc))
                    await asyncio.sleep(0.5)
        self.holder.on_change.append(self._on_change)
        self._task = asyncio.create_task(self._run(), name="nats-policy-follower")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(ValueError):
            self.holder.on_change.remove(self._on_change)
        if self._task is not None:
            await stop_task(self._task)

    async def step(self) -> None:
        view = NatsView.of(self.holder.current)
        if view != self.view:
            ensure_nats_identities(self.paths, view)
            if self.server is not None and self.server.secure:
                self.server.reload(nats_security(self.paths, view))
            log.info("nats.policy_followed", organisations=len(view.clearances), system_high=view.system_high)
            self.view = view
        await self.admin.widen_duplicate_window(duplicate_window_s(self.holder.current))
        self._pending = not await provision(self.admin, view, adapter_ack_wait_s=self.ack_wait_s)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0 if self._pending else None):
                    await self._changed.wait()
            self._changed.clear()
            try:
                await self.step()
            except (BusUnavailable, PKIError) as exc:
                log.warning("nats.follow_failed", error=str(exc))
                self._pending = True
