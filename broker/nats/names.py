"""Every name the broker gives things in NATS, in one place: streams, subjects, headers, durable
consumers, key-value buckets and the services' identities (docs/nats-security.md).

Subjects carry the rank (ICD §2, 0..4) and the organisation as tokens NATS permissions can match:

    coord.msg.<rank>.<originator>.<kind 2 tokens>.<id>     COORD_ACCEPTED   gateway publishes
    coord.deliver.<org>.<rank>.<kind 2 tokens>              COORD_DELIVER    dispatcher publishes
    coord.audit.<instance>.log                              COORD_AUDIT      audit writer publishes
    coord.auditin.<service>                                 COORD_AUDIT_IN   parts apart from the writer
    coord.dead.<org>                                        COORD_DEAD       adapter of <org> publishes
"""

from __future__ import annotations

__all__ = [
    "ACCEPTED_STREAM",
    "ADMIN",
    "AUDIT",
    "AUDIT_IN_STREAM",
    "AUDIT_STREAM",
    "DEAD_STREAM",
    "DELIVERY_STREAM",
    "DISPATCHER",
    "DISPATCH_DURABLE",
    "FIXED_SERVICES",
    "GATEWAY",
    "HDR_DIGEST",
    "HDR_ORG",
    "HDR_REASON",
    "HDR_RECEIVED",
    "HDR_SENDER",
    "INBOX_DURABLE",
    "MSG_ID",
    "READER",
    "accepted_subject",
    "adapter_durable",
    "adapter_service",
    "audit_subject",
    "certificate_cn",
    "dead_subject",
    "delivered_bucket",
    "delivery_subject",
    "inbox_prefix",
    "inbox_subject",
    "kv_stream",
    "nats_user",
]

# -- streams ------------------------------------------------------------------------------------------

ACCEPTED_STREAM = "COORD_ACCEPTED"
DELIVERY_STREAM = "COORD_DELIVER"
AUDIT_STREAM = "COORD_AUDIT"
DEAD_STREAM = "COORD_DEAD"
AUDIT_IN_STREAM = "COORD_AUDIT_IN"

# -- headers ------------------------------------------------------------------------------------------

MSG_ID = "Nats-Msg-Id"
HDR_DIGEST = "Coord-Envelope-Sha256"
HDR_SENDER = "Coord-Sender"
HDR_RECEIVED = "Coord-Received"
HDR_ORG = "Coord-Organisation"
HDR_REASON = "Coord-Reason"

# -- durable consumers --------------------------------------------------------------------------------

DISPATCH_DURABLE = "dispatcher"  # the dispatcher's, on COORD_ACCEPTED
INBOX_DURABLE = "audit-inbox"  # the audit writer's, on COORD_AUDIT_IN


def adapter_durable(org: str) -> str:
    """`org`'s adapter consumer on COORD_DELIVER (made by the admin, bound by the adapter)."""
    return f"adapter-{org.lower()}"


# -- subjects -----------------------------------------------------------------------------------------


def accepted_subject(rank: int, originator: str, kind: str, msg_id: str) -> str:
    """`coord.msg.<rank>.<originator>.<kind>.<id>`: rank and originator are tokens NATS permissions
    can match; the id makes a stored message addressable by subject (the tail reads it back)."""
    return f"coord.msg.{rank}.{originator}.{kind}.{msg_id}"


def delivery_subject(org: str, rank: int, kind: str) -> str:
    return f"coord.deliver.{org}.{rank}.{kind}"


def audit_subject(instance: str) -> str:
    """One log (one Merkle tree) per broker instance: `coord.audit.<instance>.log`."""
    return f"coord.audit.{instance.replace('.', '_')}.log"


def inbox_subject(service: str) -> str:
    """Where a part apart from the audit writer publishes its audit events."""
    return f"coord.auditin.{service}"


def dead_subject(org: str) -> str:
    return f"coord.dead.{org}"


# -- key-value buckets --------------------------------------------------------------------------------


def delivered_bucket(org: str) -> str:
    """`org`'s delivered-ids bucket (the adapter's redelivery guard)."""
    return f"coord_delivered_{org.lower()}"


def kv_stream(org: str) -> str:
    return f"KV_{delivered_bucket(org)}"


# -- service identities -------------------------------------------------------------------------------

ADMIN = "admin"
GATEWAY = "gateway"
DISPATCHER = "dispatcher"
AUDIT = "audit"
READER = "reader"
FIXED_SERVICES: tuple[str, ...] = (ADMIN, GATEWAY, DISPATCHER, AUDIT, READER)


def adapter_service(org: str) -> str:
    return f"adapter-{org.lower()}"


def certificate_cn(service: str) -> str:
    """A NATS identity's certificate CN: always with a dot, which no sender or operator id may hold."""
    return f"nats.{service}"


def nats_user(service: str) -> str:
    """The NATS user name: the certificate subject as the server formats it (RFC 2253)."""
    return f"CN={certificate_cn(service)}"


def inbox_prefix(service: str) -> str:
    """Each identity's own reply subjects, so no service can subscribe to another's replies."""
    return f"_INBOX.{service}"
