"""What each NATS service may publish and subscribe, generated from the policy (docs/nats-security.md).

`permissions(view)` turns the policy's projection (`NatsView`: instance, system high, organisations and
their clearance ranks) into allow lists, ranks up to min(clearance, system high); every service also
gets the common deny lists (no stream delete/purge/message delete, no `$SYS`). Each adapter's consumer
filter lists only its own organisation's delivery subjects up to its clearance
(`delivery_filter_subjects`): adapters may not create consumers themselves, because a consumer with
several filter subjects is created on an API subject that does not name them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from broker.nats.config import NatsPermissions, NatsUser
from broker.nats.names import (
    ACCEPTED_STREAM,
    ADMIN,
    AUDIT,
    AUDIT_IN_STREAM,
    AUDIT_STREAM,
    DEAD_STREAM,
    DELIVERY_STREAM,
    DISPATCH_DURABLE,
    DISPATCHER,
    FIXED_SERVICES,
    GATEWAY,
    INBOX_DURABLE,
    READER,
    adapter_durable,
    adapter_service,
    audit_subject,
    delivered_bucket,
    inbox_prefix,
    inbox_subject,
    kv_stream,
    nats_user,
)
from broker.policy.model import Policy

__all__ = [
    "ADMIN_PUBLISH_DENY",
    "COMMON_PUBLISH_DENY",
    "COMMON_SUBSCRIBE_DENY",
    "NatsView",
    "accepted_publish_subjects",
    "delivery_filter_subjects",
    "delivery_publish_subjects",
    "permissions",
    "service_permissions",
    "services",
]

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
