"""The AsyncAPI 3.0 document of the broker's NATS side, generated from the permission generator.

Every operation in it comes from one allow entry (or a few) of `broker.nats.permissions.service_permissions`:
what a service may publish on a stream's subjects is a `send`; a durable consumer it may pull from, or
a stream it may read by subject, is a `receive`. Each operation lists the permission subjects it comes
from (`x-nats-permissions`), so the document says exactly what NATS enforces for that policy, and a
permission this module cannot place raises instead of being left out: the document cannot drift from
the configuration NATS runs (tests/test_asyncapi.py checks both ways).

Subjects, their tokens and headers are the ones of broker/bus.py, broker/intake.py, broker/dispatcher.py,
broker/audit/ and adapters/runtime.py (docs/architecture.md, "What is stored where").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from broker.audit.records import AuditEvent
from broker.contract.asyncapi_messages import SCHEMA_REF as _SCHEMA_REF
from broker.contract.asyncapi_messages import messages
from broker.nats.names import (
    ACCEPTED_STREAM,
    AUDIT_IN_STREAM,
    AUDIT_STREAM,
    DEAD_STREAM,
    DELIVERY_STREAM,
    DISPATCH_DURABLE,
    INBOX_DURABLE,
    audit_subject,
    inbox_prefix,
    nats_user,
)
from broker.nats.permissions import NatsView, delivery_filter_subjects, service_permissions, services
from schemas.clearance import CLASSIFICATIONS
from schemas.kinds import KINDS
from schemas.message import Envelope

ASYNCAPI_VERSION = "3.0.0"

# What each permission subject is, by form. Anything else a service is allowed raises (`classify`).
_CONTROL = re.compile(
    r"^\$JS\.API\.(INFO|STREAM\.(CREATE|UPDATE|INFO|LEADER\.STEPDOWN)\.[^.]+"
    r"|CONSUMER\.(INFO|PAUSE)\.[^.]+\.[^.]+|CONSUMER\.DURABLE\.CREATE\.[^.]+\.[^.]+"
    r"|CONSUMER\.CREATE\.[^.]+\.[^.]+(\..+)?)$"
)
_PULL = re.compile(r"^\$JS\.API\.CONSUMER\.MSG\.NEXT\.(?P<stream>[^.]+)\.(?P<durable>[^.]+)$")
_ACK = re.compile(r"^\$JS\.ACK\.(?P<stream>[^.]+)\.(?P<durable>[^.]+)\.>$")
_GET = re.compile(r"^\$JS\.API\.(STREAM\.MSG\.GET|DIRECT\.GET)\.(?P<stream>[^.]+)(\.>)?$")
_KV = re.compile(r"^\$KV\.(?P<bucket>[^.]+)\.>$")


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    address: str
    stream: str
    title: str
    description: str
    parameters: dict[str, dict[str, Any]]
    message: str  # the component message's name


@dataclass(slots=True)
class Operation:
    service: str
    action: str  # "send" | "receive"
    channel: str
    summary: str
    permissions: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)  # the concrete subjects or filters it covers
    extra: dict[str, Any] = field(default_factory=dict)


def _channels(view: NatsView) -> dict[str, Channel]:
    orgs = list(view.organisations)
    ranks = [str(r) for r in range(len(CLASSIFICATIONS))]
    rank = {
        "enum": ranks,
        "description": "classification rank of the label, 0 (UNCLASSIFIED) .. 4 (TOP SECRET)",
    }
    kind = {"enum": list(KINDS), "description": "the message kind: two subject tokens (`status.update`)"}
    org = {"enum": orgs, "description": "an organisation code of the policy"}
    return {
        c.name: c
        for c in (
            Channel(
                "accepted",
                "coord.msg.{rank}.{originator}.{kind}.{id}",
                ACCEPTED_STREAM,
                "Accepted messages",
                "Every envelope the gateway admitted, byte for byte as received. The subject carries the "
                "rank and the originator as tokens NATS permissions match, and the id, so that a stored "
                "message is addressable by subject.",
                {
                    "rank": rank,
                    "originator": {**org, "description": "the message's originator"},
                    "kind": kind,
                    "id": {"description": "the message id (RFC 9562 UUID)"},
                },
                "acceptedEnvelope",
            ),
            Channel(
                "deliveries",
                "coord.deliver.{organisation}.{rank}.{kind}",
                DELIVERY_STREAM,
                "Released messages, one copy per organisation",
                "The envelope with the broker's countersignature appended (ICD §4), released to one "
                "organisation after the ICD §2 decision.",
                {
                    "organisation": {**org, "description": "the receiving organisation"},
                    "rank": rank,
                    "kind": kind,
                },
                "deliveredEnvelope",
            ),
            Channel(
                "auditLog",
                "coord.audit.{instance}.log",
                AUDIT_STREAM,
                "The audit log",
                "Runs of `broker audit export` lines (ICD §7): records, each as hashed, then a signed "
                "checkpoint line. One log, one Merkle tree, per broker instance.",
                {
                    "instance": {
                        "enum": [audit_subject(view.instance).split(".")[2]],
                        "description": "the broker instance (dots as `_`)",
                    }
                },
                "auditLines",
            ),
            Channel(
                "auditInbox",
                "coord.auditin.{service}",
                AUDIT_IN_STREAM,
                "Audit events of parts in other processes",
                "One audit event per message, for the one audit writer, which acks it once recorded.",
                {
                    "service": {
                        "description": "the NATS identity of the part that decided (gateway, "
                        "dispatcher, adapter-<org>)"
                    }
                },
                "auditEvent",
            ),
            Channel(
                "deadLetters",
                "coord.dead.{organisation}",
                DEAD_STREAM,
                "Dead letters",
                "Deliveries a native system refused for good, or the adapter refused, with the reason.",
                {"organisation": org},
                "deadLetter",
            ),
            Channel(
                "delivered",
                "$KV.coord_delivered_{bucket}.{messageId}",
                "KV_coord_delivered_{bucket}",
                "What each native system accepted",
                "The adapter's key-value bucket of delivered message ids (its redelivery guard).",
                {
                    "bucket": {
                        "enum": [o.lower() for o in orgs],
                        "description": "the organisation, lower case",
                    },
                    "messageId": {"description": "the message id"},
                },
                "deliveredMark",
            ),
        )
    }


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)


def classify(view: NatsView, service: str) -> list[Operation]:
    """The operations of one service, from its permissions; ValueError for a permission of no known form."""
    perms = service_permissions(view, service)
    ops: dict[tuple[str, str], Operation] = {}

    def op(action: str, channel: str, summary: str) -> Operation:
        return ops.setdefault((action, channel), Operation(service, action, channel, summary))

    acks: dict[tuple[str, str], str] = {}
    for subject in perms.publish_allow:
        if m := _ACK.match(subject):
            acks[(m["stream"], m["durable"])] = subject
    for subject in perms.publish_allow:
        if _ACK.match(subject) or _CONTROL.match(subject):
            continue  # acks go with their pull; control plane (stream/consumer info, create, step-down)
        if subject.startswith("coord.msg."):
            o = op("send", "accepted", "publish an admitted envelope (JetStream, Nats-Msg-Id = message id)")
        elif subject.startswith("coord.deliver."):
            o = op("send", "deliveries", "publish a countersigned release (Nats-Msg-Id = `<id>:<org>`)")
        elif subject == audit_subject(view.instance):
            o = op("send", "auditLog", "append runs of records and checkpoints (the only writer)")
        elif subject.startswith("coord.auditin."):
            o = op("send", "auditInbox", "publish an audit event for the writer")
        elif subject.startswith("coord.dead."):
            o = op("send", "deadLetters", "dead-letter a delivery its native system refused for good")
        elif _KV.match(subject):
            o = op("send", "delivered", "mark a message delivered (key-value put)")
        elif m := _PULL.match(subject):
            stream, durable = m["stream"], m["durable"]
            ack = acks.get((stream, durable))
            channel = {
                ACCEPTED_STREAM: "accepted",
                DELIVERY_STREAM: "deliveries",
                AUDIT_IN_STREAM: "auditInbox",
                AUDIT_STREAM: "auditLog",
            }.get(stream)
            if channel is None:
                raise ValueError(f"{service}: pull from an unknown stream in {subject!r}")
            if durable == "*":
                o = op(
                    "receive", channel, "read the log through an ephemeral consumer filtered on its subject"
                )
                _add(o.subjects, audit_subject(view.instance))
            else:
                o = op("receive", channel, f"pull from the durable consumer `{durable}`, ack each message")
                o.extra["x-nats-durable"] = durable
                if ack is not None:
                    o.permissions.append(ack)
                if stream == DELIVERY_STREAM:
                    org = next(org for org in view.organisations if durable == f"adapter-{org.lower()}")
                    o.subjects.extend(delivery_filter_subjects(org, view.ceiling(org)))
                elif stream == ACCEPTED_STREAM:
                    o.subjects.append("coord.msg.>")
                elif stream == AUDIT_IN_STREAM:
                    o.subjects.append("coord.auditin.>")
        elif m := _GET.match(subject):
            stream = m["stream"]
            if stream == ACCEPTED_STREAM:
                o = op("receive", "accepted", "read a stored message back by sequence or subject")
                _add(o.subjects, "coord.msg.>")
            elif stream == AUDIT_STREAM:
                o = op("receive", "auditLog", "read the last message of the log")
                _add(o.subjects, audit_subject(view.instance))
            elif stream.startswith("KV_coord_delivered_"):
                o = op("receive", "delivered", "look a message id up in the bucket")
                _add(o.subjects, f"$KV.{stream.removeprefix('KV_')}.>")
            else:
                raise ValueError(f"{service}: read of an unknown stream in {subject!r}")
        else:
            raise ValueError(f"{service}: permission {subject!r} has no place in the AsyncAPI document")
        o.permissions.append(subject)
        if not (_PULL.match(subject) or _GET.match(subject)):
            _add(o.subjects, subject)
    for subject in perms.subscribe_allow:  # replies only: every service's own inbox
        if subject != f"{inbox_prefix(service)}.>":
            raise ValueError(f"{service}: subscription {subject!r} has no place in the AsyncAPI document")
    return list(ops.values())


def _op_id(o: Operation) -> str:
    words = re.split(r"[-.]", o.service)
    service = words[0] + "".join(w.title() for w in words[1:])
    return f"{service}{'Send' if o.action == 'send' else 'Receive'}{o.channel[0].upper()}{o.channel[1:]}"


def asyncapi_document(view: NatsView, server: str = "127.0.0.1:4222") -> dict[str, Any]:
    """The document for the policy projected in `view` (deterministic)."""
    channels = _channels(view)
    operations: dict[str, Any] = {}
    for svc in services(view):
        for o in classify(view, svc):
            ch = channels[o.channel]
            operations[_op_id(o)] = {
                "action": o.action,
                "channel": {"$ref": f"#/channels/{ch.name}"},
                "summary": o.summary,
                "messages": [{"$ref": f"#/channels/{ch.name}/messages/{ch.message}"}],
                "x-nats-service": o.service,
                "x-nats-user": nats_user(o.service),
                "x-nats-subjects": o.subjects,
                "x-nats-permissions": o.permissions,
                **o.extra,
            }
    _, schemas = msgspec.json.schema_components([Envelope, AuditEvent], ref_template=_SCHEMA_REF)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "EU-NATO coordination broker: NATS JetStream",
            "version": "1",
            "description": (
                "The broker's streams and subjects, and which service publishes or reads where, generated "
                "from the NATS permissions the broker configures for this policy (docs/nats-security.md). "
                f"Streams: {ACCEPTED_STREAM}, {DELIVERY_STREAM}, {AUDIT_STREAM}, {AUDIT_IN_STREAM}, "
                f"{DEAD_STREAM}, and one key-value bucket per organisation. Every service has its own "
                "certificate-mapped NATS user; publishing is JetStream publish with Nats-Msg-Id. A "
                "`receive` from a durable consumer lists the consumer's filter subjects in "
                "`x-nats-subjects`; every operation lists in `x-nats-permissions` the allow entries it "
                f"comes from. Replies go to each service's own `_INBOX.<service>.>`. Durables: "
                f"`{DISPATCH_DURABLE}` ({ACCEPTED_STREAM}), `{INBOX_DURABLE}` ({AUDIT_IN_STREAM}), "
                f"`adapter-<org>` ({DELIVERY_STREAM})."
            ),
            "x-broker-instance": view.instance,
            "x-system-high-rank": view.system_high,
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": server,
                "protocol": "nats",
                "description": "TLS from the first byte (handshake first), a client certificate required",
                "security": [{"$ref": "#/components/securitySchemes/natsTls"}],
            }
        },
        "channels": {
            ch.name: {
                "address": ch.address,
                "title": ch.title,
                "description": ch.description,
                "parameters": {n: {"$ref": f"#/components/parameters/{ch.name}_{n}"} for n in ch.parameters},
                "messages": {ch.message: {"$ref": f"#/components/messages/{ch.message}"}},
                "x-nats-stream": ch.stream,
            }
            for ch in channels.values()
        },
        "operations": operations,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "messages": messages(),
            "parameters": {f"{ch.name}_{n}": p for ch in channels.values() for n, p in ch.parameters.items()},
            "securitySchemes": {
                "natsTls": {
                    "type": "X509",
                    "description": "A client certificate of the broker's CA; its subject (CN=nats.<service>) "
                    "is the NATS user (verify_and_map).",
                }
            },
        },
    }
