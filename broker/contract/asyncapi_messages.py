"""The AsyncAPI document's messages: what each subject carries, with its headers (asyncapi.py)."""

from __future__ import annotations

from typing import Any

from broker.nats.names import (
    HDR_DIGEST,
    HDR_ORG,
    HDR_REASON,
    HDR_RECEIVED,
    HDR_SENDER,
    MSG_ID,
)

SCHEMA_REF = "#/components/schemas/{name}"


def _headers(*names: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [n for n, _ in names],
        "properties": {n: {"type": "string", "description": d} for n, d in names},
    }


def messages() -> dict[str, Any]:
    env = {"$ref": SCHEMA_REF.format(name="Envelope")}
    return {
        "acceptedEnvelope": {
            "name": "acceptedEnvelope",
            "title": "An accepted envelope",
            "contentType": "application/json",
            "headers": _headers(
                (MSG_ID, "the message id: JetStream's duplicate window makes a resend a duplicate"),
                (HDR_DIGEST, "SHA-256 (hex) of the envelope bytes"),
                (HDR_SENDER, "the sender (the TLS client certificate's CN)"),
                (HDR_RECEIVED, "the gateway's receipt time, RFC 3339 UTC"),
            ),
            "payload": env,
        },
        "deliveredEnvelope": {
            "name": "deliveredEnvelope",
            "title": "A countersigned release",
            "contentType": "application/json",
            "headers": _headers(
                (MSG_ID, "`<message id>:<organisation>`"),
                (HDR_ORG, "the receiving organisation"),
                (HDR_DIGEST, "SHA-256 (hex) of the envelope as accepted"),
            ),
            "payload": env,
        },
        "auditLines": {
            "name": "auditLines",
            "title": "Audit export lines",
            "contentType": "application/x-ndjson",
            "headers": _headers((MSG_ID, "`audit-<instance>-<first index>-<tree size>`")),
            "payload": {
                "type": "string",
                "description": "ICD §7 export lines: records, then a checkpoint line",
            },
        },
        "auditEvent": {
            "name": "auditEvent",
            "title": "An audit event",
            "contentType": "application/json",
            "headers": _headers((MSG_ID, "a fresh random id per event (32 hex digits)")),
            "payload": {"$ref": SCHEMA_REF.format(name="AuditEvent")},
        },
        "deadLetter": {
            "name": "deadLetter",
            "title": "A dead letter",
            "contentType": "application/json",
            "headers": _headers(
                (MSG_ID, "`dead-<delivery stream sequence>-<organisation>`"),
                (HDR_REASON, "why it was refused"),
                (HDR_ORG, "the organisation"),
            ),
            "payload": env,
        },
        "deliveredMark": {
            "name": "deliveredMark",
            "title": "Delivered",
            "contentType": "application/octet-stream",
            "payload": {"type": "string", "const": "1"},
        },
    }


