"""How each service connects: its bus settings (TLS first with its own certificate, its own inbox), the
identity behind a connection name, the admin's access for a cluster, and the accepted stream's
duplicate window for a policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.nats.bus import BusSettings
from broker.nats.cluster import AdminAccess
from broker.nats.names import (
    ACCEPTED_STREAM,
    ADMIN,
    AUDIT,
    AUDIT_STREAM,
    DELIVERY_STREAM,
    DISPATCHER,
    GATEWAY,
    READER,
    adapter_service,
    inbox_prefix,
)
from broker.nats.security import credential_paths
from broker.policy.model import Policy

__all__ = ["admin_access", "bus_settings", "duplicate_window_s", "service_for_bus"]


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


def duplicate_window_s(policy: Policy) -> float:
    """COORD_ACCEPTED's duplicate window for `policy`: every resend fresh enough to be admitted is
    within it (at least 15 minutes)."""
    return max(900.0, policy.max_age_s + policy.max_skew_s + 60.0)
