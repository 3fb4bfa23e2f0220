"""JSON with one reading only (ICD §3: "the bytes that were signed must have one reading"): no object
repeats a key (msgspec, like most parsers, would keep the last one silently) and no NaN or Infinity.
Used by intake on every payload and by the native JSON formats.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from broker.errors import DuplicateKey, NonFiniteNumber

__all__ = ["has_duplicate_keys", "loads_strict"]


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise DuplicateKey(k)
        seen[k] = v
    return seen


def _no_constant(_: str) -> Any:
    raise NonFiniteNumber("NaN and Infinity are not JSON; numbers must be finite")


def loads_strict(text: str, *, parse_int: Callable[[str], Any] | None = None) -> Any:
    """`json.loads` refusing repeated keys (`DuplicateKey`) and NaN/Infinity (`NonFiniteNumber`);
    `ValueError` for what is not JSON; `RecursionError` for nesting beyond the parser's depth."""
    return json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant, parse_int=parse_int)


def has_duplicate_keys(text: str) -> bool:
    """True if any JSON object in `text` repeats a key; False also for what is not JSON (the strict
    decoder that runs next says so)."""
    try:
        loads_strict(text)
    except DuplicateKey:
        return True
    except ValueError:
        return False
    return False
