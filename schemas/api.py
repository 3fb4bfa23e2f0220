"""The gateway's answers (ICD §6, §7) as msgspec types, for the OpenAPI document and for clients.

The gateway encodes these shapes; `broker.gateway.openapi` turns them into the document's
components, and the schemathesis run checks every live answer against that document, so a shape
here that the gateway does not keep fails the suite. Outbound types: unknown fields are not
forbidden (a client decoding them should tolerate additions, which are not breaking changes).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from schemas.ids import MessageId
from schemas.label import Label

Base64 = Annotated[str, msgspec.Meta(description="base64, RFC 4648 section 4, with padding")]


class Stored(msgspec.Struct, frozen=True, omit_defaults=True):
    """A message stored durably: 202 the first time, 200 with `duplicate` for the same bytes again."""

    id: MessageId
    seq: Annotated[int, msgspec.Meta(ge=1, description="its sequence in COORD_ACCEPTED")]
    duplicate: Annotated[bool, msgspec.Meta(description="present (true) only on an identical resend")] = False


class ProblemError(msgspec.Struct, frozen=True):
    """One schema error: a JSON path (or a query parameter's name) and what is wrong there."""

    path: str
    message: str


class Problem(msgspec.Struct, frozen=True):
    """RFC 9457 problem details; never holds content of the rejected message."""

    type: Annotated[str, msgspec.Meta(pattern=r"^urn:coord:problem:[a-z-]+$")]
    title: str
    status: Annotated[int, msgspec.Meta(ge=400, le=599)]
    detail: str
    errors: (
        Annotated[
            list[ProblemError],
            msgspec.Meta(
                max_length=21,
                description="at most 20 entries, then one "
                "{path: $, message: 'and N more errors, not listed'}",
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class BatchProblem(msgspec.Struct, frozen=True):
    """A batch line that was refused: its problem, judged alone."""

    problem: Problem


class Health(msgspec.Struct, frozen=True):
    status: Literal["ok"]
    instance: str
    worker: (
        Annotated[int, msgspec.Meta(ge=0, description="which gateway process answered")] | msgspec.UnsetType
    ) = msgspec.UNSET


class Ready(msgspec.Struct, frozen=True):
    ready: bool
    bus: Literal["connected", "down"]


class Checkpoint(msgspec.Struct, frozen=True):
    """The latest signed checkpoint (ICD §7): its fields, and the C2SP signed note they come from."""

    origin: str
    size: Annotated[int, msgspec.Meta(ge=1)]
    root: Base64
    note: Annotated[str, msgspec.Meta(description="C2SP tlog-checkpoint signed note")]


class Proof(msgspec.Struct, frozen=True):
    """An RFC 9162 inclusion proof of record `index` against the checkpoint served with it."""

    index: Annotated[int, msgspec.Meta(ge=0)]
    size: Annotated[int, msgspec.Meta(ge=1)]
    leaf_hash: Base64
    proof: list[Base64]
    checkpoint: str


class TailEvent(msgspec.Struct, frozen=True):
    """The `data` of one `GET /v1/tail` event: the audit record's fields, its marking, and either
    `content` (the body, where the operator's clearance passes ICD §2) or `redacted: true`."""

    index: Annotated[int, msgspec.Meta(ge=0)]
    time: str
    event: Literal[
        "accepted",
        "rejected",
        "released",
        "withheld",
        "delivered",
        "dead-lettered",
        "tail-opened",
        "tail-closed",
    ]
    message_id: str | None
    kind: str | None
    originator: str | None
    actor: str | None
    reason: str | None
    label: Label | None
    marking: str
    content: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    redacted: Literal[True] | msgspec.UnsetType = msgspec.UNSET
