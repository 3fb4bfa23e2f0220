"""The broker's one error tree, and its mapping to the ICD's problem types (ICD §6).

    BrokerError
     ├── Problem                 a request refused with an ICD problem type (name, status, detail)
     ├── PolicyError(ValueError) a policy file that is malformed or inconsistent (names the line)
     ├── PKIError                a certificate or key that cannot be made or read
     ├── BusUnavailable(ConnectionError)  NATS/JetStream cannot take or give a message now
     ├── SignatureError(ValueError)       a DSSE envelope whose signature does not verify
     └── MarkingError(ValueError)         a native marking that is unknown, ambiguous or mis-cased

Every problem name of ICD §6 has its status and title here and nowhere else; handlers raise
`Problem(name, detail)` and one middleware renders it as `application/problem+json`.
"""

from __future__ import annotations

from typing import Any

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
    """The message bus cannot take or give a message now; safe to retry."""


class SignatureError(BrokerError, ValueError):
    """A DSSE envelope whose signature is missing, malformed or does not verify."""


class MarkingError(BrokerError, ValueError):
    """A native classification marking that is unknown, ambiguous or mis-cased."""
