"""schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

- NDJSON bodies: the document describes a batch as an array of envelopes sent one a line; this
  serializer writes what schemathesis generates that way (anything not a list as one line).
- The tail: `follow=true` keeps the stream open for good (by design), which no request timeout can
  tell from a hang, so the fuzzer asks for the stream so far (`broker tail` is the follow path's
  client; its parameter checks are in tests/test_audit_live.py).
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> dict[str, Any]:
    if isinstance(value, bytes):
        return {"data": value}
    items = value if isinstance(value, list) else [value]
    return {"data": b"".join(json.dumps(v, separators=(",", ":")).encode() + b"\n" for v in items)}


@schemathesis.hook
def map_query(ctx: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    if ctx.operation is not None and ctx.operation.path == "/v1/tail" and query is not None:
        query = dict(query)
        query["follow"] = "false"
    return query
