"""Time in one place: the broker's clock, and RFC 3339 text as the ICD writes it."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(t: datetime) -> str:
    """`2026-11-26T10:00:00.123456Z` (UTC, microseconds, Z)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
