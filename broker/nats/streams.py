"""The streams the broker owns, as one table: five streams, one shape (docs/architecture.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from broker.nats.names import ACCEPTED_STREAM, AUDIT_IN_STREAM, AUDIT_STREAM, DEAD_STREAM, DELIVERY_STREAM

if TYPE_CHECKING:
    from broker.nats.bus import BusSettings

__all__ = ["stream_configs"]


def stream_configs(settings: BusSettings) -> list[StreamConfig]:
    """The streams the broker owns: file storage, `replicas` copies, delete and purge denied."""
    common: dict[str, Any] = {
        "storage": StorageType.FILE,
        "retention": RetentionPolicy.LIMITS,
        "discard": DiscardPolicy.NEW,  # a full stream refuses new messages; it never drops old ones
        "num_replicas": settings.replicas,
        "duplicate_window": settings.duplicate_window_s,
    }
    streams = (
        (ACCEPTED_STREAM, "coord.msg.>", "accepted, signed envelopes as received"),
        (DELIVERY_STREAM, "coord.deliver.>", "countersigned envelopes released to each organisation"),
        (AUDIT_STREAM, "coord.audit.>", "audit records and checkpoints (ICD §7)"),
        (
            AUDIT_IN_STREAM,
            "coord.auditin.>",
            "audit events of parts run in other processes, for the one writer",
        ),
        (DEAD_STREAM, "coord.dead.>", "deliveries a native system refused permanently"),
    )
    # nothing the broker stores may be deleted or purged through the API
    return [
        StreamConfig(
            name=name, subjects=[subject], deny_delete=True, deny_purge=True, description=text, **common
        )
        for name, subject, text in streams
    ]
