"""The broker's one error tree, and its mapping to the ICD's problem types (ICD §6).

    BrokerError
     ├── Problem                       a request refused with an ICD problem type (name, status, detail)
     │    └── Refused                  refused by intake; carries the envelope digest and what was read
     ├── PolicyError(ValueError)       a policy file that is malformed or inconsistent (path, line, reason)
     ├── PKIError                      a certificate or key that cannot be made or read
     ├── BusUnavailable(ConnectionError)  NATS/JetStream cannot take or give a message now (operation,
     │                                 leaderless: a stream without a leader for now, worth a retry)
     ├── IntegrityError                bytes at rest or in transit that are not what was signed
     │    ├── UnreadableEnvelope(ValueError)   not a DSSE envelope of a valid message
     │    ├── DeliveryRefused(ValueError)      a delivery that must not reach the native system (reason)
     │    └── AuditIntegrityError      the stored audit log contradicts its own signed checkpoint
     ├── StrictJSONError(ValueError)   JSON with more than one reading
     │    ├── DuplicateKey             an object repeats a key (key)
     │    └── NonFiniteNumber          NaN or Infinity
     ├── FormatError(ValueError)       a native document or marking its format does not allow
     │    ├── MarkingError             a classification marking that is unknown, ambiguous or mis-cased
     │    └── NativeFormatError        any other fault of a native document
     ├── AuditFilesError               the writer's leaf and checkpoint files are not usable now
     ├── NoteError(ValueError)         a signed checkpoint note that is refused
     │    ├── MalformedNote, UnknownNoteKey, BadNoteSignature, WrongOrigin
     ├── ProofError(ValueError)        an inclusion or consistency proof that does not verify
     ├── VerifyError                   `broker audit verify`: the first break (exit_code, name, line, index)
     │    ├── MalformedExport (2), RecordEdited (10), RecordRemoved (11), RecordReordered (12),
     │    │   RecordInserted (13), LogTruncated (14), BadCheckpointSignature (15),
     │    │   UnknownCheckpointKey (16), Equivocation (17)
     ├── RateTableError(ValueError)    a shared rate-limit file that is not a rate-limit table
     └── WorkerStartError              a gateway worker process did not come up

Every problem name of ICD §6 has its status and title here and nowhere else; handlers raise
`Problem(name, detail)` and one middleware renders it as `application/problem+json`. Errors carry their
data as attributes; a library's errors are translated at its boundary (`broker.nats.bus.translate_errors`
for nats-py) and never travel further.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "urn:coord:problem:"

#: name -> (HTTP status, title). ICD §6.
PROBLEMS: dict[str, tuple[int, str]] = {
    "malformed": (400, "Request is not a well-formed DSSE envelope"),
    "unknown-key": (401, "Signing key is not registered for this sender"),
    "bad-signature": (401, "Signature does not verify"),
    "revoked-key": (401, "Signing key is revoked"),
    "expired-key": (401, "Signing key is not valid now"),
    "forbidden": (403, "This identity may not use this endpoint"),
    "sender-mismatch": (403, "Message sender does not match the client certificate"),
    "originator-mismatch": (403, "Originator is not the sender's organisation"),
    "not-permitted": (403, "Sender may not publish this kind"),
    "above-clearance": (403, "Label is above the originating organisation's clearance"),
    "above-system-high": (403, "Label is above the system's accreditation ceiling"),
    "not-found": (404, "No such resource"),
    "method-not-allowed": (405, "Method not allowed on this resource"),
    "id-conflict": (409, "Message id already used for different bytes"),
    "too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "invalid": (422, "Message does not match its schema"),
    "stale": (422, "Message is outside the freshness window"),
    "rate-limited": (429, "Too many messages from this sender"),
    "internal": (500, "Internal error; nothing was stored, retry with the same id"),
    "unavailable": (503, "Message bus unavailable; nothing was stored, retry with the same id"),
}


class BrokerError(Exception):
    """Root of every error the broker raises on purpose."""


#: at most this many entries in a problem's `errors`: a hostile message can make one per element
#: (25,000 unknown organisations in `releasable_to` gave a 2 MB answer to a 256 KiB request)
MAX_ERRORS = 20


def _capped(errors: list[dict[str, str]]) -> list[dict[str, str]]:
    if len(errors) <= MAX_ERRORS:
        return errors
    more = len(errors) - MAX_ERRORS
    return [*errors[:MAX_ERRORS], {"path": "$", "message": f"and {more} more errors, not listed"}]


class Problem(BrokerError):
    """A refusal with an ICD problem type. `detail` says what to fix and never echoes content."""

    def __init__(
        self,
        name: str,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        if name not in PROBLEMS:
            raise ValueError(f"unknown problem name {name!r}")
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail
        self.errors = errors
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return PROBLEMS[self.name][0]

    @property
    def title(self) -> str:
        return PROBLEMS[self.name][1]

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": PROBLEM_BASE + self.name,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            doc["errors"] = _capped(self.errors)
        return doc


class PolicyError(BrokerError, ValueError):
    """A policy that cannot be used; `line` is the 1-based line in the file, when known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)
        self.path = path
        self.line = line
        self.reason = message


class PKIError(BrokerError):
    """A certificate or key that cannot be made or read."""


class BusUnavailable(BrokerError, ConnectionError):
    """The message bus cannot take or give a message now; safe to retry. `operation` names what failed;
    `leaderless` is True when the cause was a stream without a leader for now (no responders, a
    timeout while connected): the same publish, with the same message id, is likely to succeed soon."""

    def __init__(self, message: str, *, operation: str = "", leaderless: bool = False) -> None:
        super().__init__(message)
        self.operation = operation
        self.leaderless = leaderless


class Refused(Problem):
    """A Problem raised by intake, carrying what is known of the message for the audit record:
    `digest` (SHA-256 hex of the request bytes) and `partial` (what was read before the refusal)."""

    def __init__(self, problem: Problem, digest: str, partial: Any) -> None:
        super().__init__(problem.name, problem.detail, errors=problem.errors, retry_after=problem.retry_after)
        self.digest = digest
        self.partial = partial


class IntegrityError(BrokerError):
    """Bytes at rest or in transit that are not what was signed, or a log that contradicts itself."""


class UnreadableEnvelope(IntegrityError, ValueError):
    """Stored or delivered bytes that are not a DSSE envelope of a valid message."""


class DeliveryRefused(IntegrityError, ValueError):
    """A delivery that must not reach the native system; `reason` is a short code for the audit.
    `message` is the delivery's message when both signatures verified (so the audit can name it)."""

    def __init__(self, reason: str, detail: str, message: Any = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.message = message


class AuditIntegrityError(IntegrityError):
    """The stored audit log does not match its own signed checkpoint: the writer will not go on."""


class StrictJSONError(BrokerError, ValueError):
    """JSON that does not have exactly one reading."""


class DuplicateKey(StrictJSONError):
    """An object repeats `key`: the bytes would read differently to different parsers."""

    def __init__(self, key: str) -> None:
        super().__init__("an object repeats a key")
        self.key = key


class NonFiniteNumber(StrictJSONError):
    """NaN or Infinity, which JSON does not have."""


class FormatError(BrokerError, ValueError):
    """A native document, or a marking in one, that its format does not allow."""


class MarkingError(FormatError):
    """A native classification marking that is unknown, ambiguous or mis-cased."""


class NativeFormatError(FormatError):
    """A native document (or a message to render as one) that its format does not allow."""


class AuditFilesError(BrokerError):
    """The audit files are missing, short, unreadable or inconsistent with the signed checkpoint.

    Nothing is served from them then; the writer rebuilds them at its next start."""


class NoteError(BrokerError, ValueError):
    """A signed checkpoint is refused."""


class MalformedNote(NoteError):
    """The text is not a well-formed signed checkpoint."""


class UnknownNoteKey(NoteError):
    """No signature is by a trusted key (matching both key name and key ID)."""


class BadNoteSignature(NoteError):
    """A signature by a trusted key does not verify."""


class WrongOrigin(NoteError):
    """The checkpoint verifies but belongs to another log (origin line differs from the expected one)."""


class ProofError(BrokerError, ValueError):
    """An inclusion or consistency proof does not verify."""


class VerifyError(BrokerError):
    """The export does not verify; ``line`` (1-based) and ``index`` locate the first break when known."""

    exit_code: ClassVar[int]
    name: ClassVar[str]

    def __init__(self, message: str, *, line: int | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.index = index

class MalformedExport(VerifyError):
    """A line is not a record or checkpoint line, or a checkpoint is malformed or for another log."""

    exit_code = 2
    name = "malformed-export"


class RecordEdited(VerifyError):
    """A signed checkpoint's root differs from the root recomputed from the records."""

    exit_code = 10
    name = "record-edited"


class RecordRemoved(VerifyError):
    """Record indices skip: records are missing."""

    exit_code = 11
    name = "record-removed"


class RecordReordered(VerifyError):
    """Records are out of order, or a line reuses a consumed index without repeating that record."""

    exit_code = 12
    name = "record-reordered"


class RecordInserted(VerifyError):
    """A line repeats an earlier record verbatim."""

    exit_code = 13
    name = "record-inserted"


class LogTruncated(VerifyError):
    """A signed checkpoint covers more records than the export holds."""

    exit_code = 14
    name = "log-truncated"


class BadCheckpointSignature(VerifyError):
    """A checkpoint signature by a trusted key does not verify."""

    exit_code = 15
    name = "bad-checkpoint-signature"


class UnknownCheckpointKey(VerifyError):
    """A checkpoint carries no signature by a trusted key."""

    exit_code = 16
    name = "unknown-checkpoint-key"


class Equivocation(VerifyError):
    """The log signed two inconsistent checkpoints."""

    exit_code = 17
    name = "equivocation"


class RateTableError(BrokerError, ValueError):
    """A shared rate-limit file that is not (or not this version or size of) a rate-limit table."""


class WorkerStartError(BrokerError):
    """A gateway worker did not come up."""
