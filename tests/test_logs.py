"""Secrets and message bodies never reach a log line: the scrub processor enforces it."""

from __future__ import annotations

import io
import json

import structlog

from broker import logs

PEM_HEAD = "-----BEGIN " + "PRIVATE KEY-----"  # built, so no PEM header stands in the repository


def test_scrub_replaces_bodies_keys_and_pem() -> None:
    buf = io.StringIO()
    structlog.configure(
        processors=[logs.scrub, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=buf),
        cache_logger_on_first_use=False,
    )
    try:
        log = structlog.get_logger("t")
        log.info(
            "evt",
            body={"topic": "SECRET-TOPIC"},
            payload="eyJzZWNyZXQi",
            key=b"\x01\x02",
            note=PEM_HEAD + "\nMC4CAQ",
            raw=b"xx",
            message_id="m-1",
        )
    finally:
        structlog.reset_defaults()
    out = buf.getvalue()
    assert "SECRET-TOPIC" not in out and "eyJzZWNyZXQi" not in out and "BEGIN PRIVATE" not in out
    doc = json.loads(out)
    assert doc["message_id"] == "m-1"
    assert doc["body"] == doc["payload"] == doc["key"] == doc["note"] == logs.REDACTED
