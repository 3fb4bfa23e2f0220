"""structlog, configured once: JSON lines in production, readable console for `broker up`.

`scrub` runs on every event before rendering: keys that could carry a secret or a message body are
replaced by a marker, and any value that looks like a PEM block or a private key is too. Message
bodies and keys never reach a log line, whatever a caller passes.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

FORBIDDEN_KEYS = frozenset(
    {
        "body",
        "content",
        "payload",
        "envelope",
        "data",
        "message_bytes",
        "raw",
        "key",
        "private_key",
        "signing_key",
        "seed",
        "password",
        "secret",
        "token",
        "cert",
        "certificate",
        "sig",
        "signature",
    }
)
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----")
REDACTED = "[redacted]"


def scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event):
        v = event[k]
        if k in FORBIDDEN_KEYS or isinstance(v, bytes | bytearray) or (isinstance(v, str) and _PEM.search(v)):
            event[k] = REDACTED
    return event


def configure(*, console: bool, level: int = logging.INFO) -> None:
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if console
        else (structlog.processors.JSONRenderer())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
