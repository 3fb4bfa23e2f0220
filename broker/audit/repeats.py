"""Repeated decisions: a crash or failover can make a service report a decision about a message twice
(it redoes the step after losing its ack); the audit writer keeps one record per decision. `Repeats`
remembers the last `RECENT_MAX` decisions' record indices, rebuilt from the log at every start.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import msgspec

__all__ = ["RECENT_MAX", "REPEATABLE", "Repeats", "repeat_key"]

#: decisions about one message that a crash or failover can make a service report twice (it redoes
#: the step after losing its ack); the writer records each once per (event, message, actor)
REPEATABLE = frozenset({"accepted", "released", "withheld", "delivered", "dead-lettered"})
RECENT_MAX = 200_000


class RecordKey(msgspec.Struct):
    event: str
    message_id: str | None = None
    actor: str | None = None
    reason: str | None = None


_KEY = msgspec.json.Decoder(RecordKey)


def repeat_key(event: str, message_id: str | None, actor: str | None, reason: str | None) -> bytes | None:
    """What makes two records the same decision, as a 16-byte digest: the writer remembers up to
    RECENT_MAX of them, and a digest costs a third of the memory of the four strings."""
    if event not in REPEATABLE or message_id is None:
        return None
    fields = (event, message_id, actor or "", reason or "")
    return hashlib.blake2b("\x00".join(fields).encode(), digest_size=16).digest()


class Repeats:
    """Repeat key -> index of the record that first made the decision (bounded, oldest dropped)."""

    def __init__(self) -> None:
        self._recent: OrderedDict[bytes, int] = OrderedDict()

    def remember(self, key: bytes | None, index: int) -> None:
        if key is None:
            return
        self._recent[key] = index
        self._recent.move_to_end(key)
        if len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)

    def remember_line(self, line: bytes, index: int) -> None:
        """Remember a stored record line (recovery)."""
        k = _KEY.decode(line)
        self.remember(repeat_key(k.event, k.message_id, k.actor, k.reason), index)

    def index_of(self, key: bytes | None) -> int | None:
        return self._recent.get(key) if key is not None else None
