"""Reading one instance's audit log by record index, for the console (a record's bytes, a trail).

The log is a run of JetStream messages on `coord.audit.<instance>.log`, each holding a run of export
lines (records, then maybe a checkpoint line), in index order. Record indexes only grow with the stream
sequence, so the message that holds record N is found by a binary search over sequences: each probe is
one `get_msg(next_by_subject)` (the first message of this log at or after a sequence), about 20 probes
for a million messages, instead of reading the log from its start as the tail does.

NATS is reached through `broker.nats` (errors as `BusUnavailable`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

import msgspec

from broker.audit.reader import split_lines
from broker.audit.records import RECORD_DECODER, AuditRecord
from broker.nats.bus import Bus
from broker.nats.consume import SubjectReader
from broker.nats.names import AUDIT_STREAM


class _Line(msgspec.Struct):
    type: str
    index: int | None = None


_LINE = msgspec.json.Decoder(_Line)


@dataclass(frozen=True, slots=True)
class RecordLine:
    """One record as stored: its exact bytes (what the Merkle tree hashed) and their reading."""

    raw: bytes
    record: AuditRecord


def _first_index(data: bytes) -> int | None:
    for line in split_lines(data):
        head = _LINE.decode(line)
        if head.type == "record":
            return head.index
    return None


def record_lines(data: bytes) -> list[RecordLine]:
    out = []
    for line in split_lines(data):
        if _LINE.decode(line).type == "record":
            out.append(RecordLine(line, RECORD_DECODER.decode(line)))
    return out


class AuditLogReader:
    """Random access to one audit log by record index, through the reader's NATS identity."""

    def __init__(self, bus: Bus, subject: str) -> None:
        self.bus = bus
        self.subject = subject

    async def _at_or_after(self, seq: int) -> tuple[int, bytes] | None:
        """The first message of this log at sequence `seq` or later, as (sequence, data)."""
        got = await self.bus.get_next(AUDIT_STREAM, self.subject, seq)
        return (got.seq, got.data) if got is not None else None

    async def _probe(self, seq: int, last: int) -> tuple[int, int | None]:
        """(sequence, index of its first record) of the first message at or after `seq` that holds a
        record; index None when no message from `seq` on holds one."""
        while seq <= last:
            got = await self._at_or_after(seq)
            if got is None:
                break
            found, data = got
            first = _first_index(data)
            if first is not None:
                return found, first
            seq = found + 1
        return seq, None

    async def seq_holding(self, index: int) -> int | None:
        """Stream sequence of the message whose records run over `index` (the last message whose first
        record is at most `index`), or None if the log is empty."""
        last = await self._last()
        if last == 0:
            return None
        lo, first = await self._probe(1, last)
        if first is None or first > index:
            return None if first is None else lo
        hi = last
        while lo < hi:
            mid = (lo + hi + 1) // 2
            found, first = await self._probe(mid, hi)
            if first is not None and first <= index:
                lo = found
            else:
                hi = mid - 1
        return lo

    async def _last(self) -> int:
        return await self.bus.last_seq_of(AUDIT_STREAM, self.subject)

    async def record(self, index: int) -> RecordLine | None:
        """Record `index` with its exact bytes, or None if there is none (yet)."""
        seq = await self.seq_holding(index)
        if seq is None:
            return None
        got = await self._at_or_after(seq)
        if got is None:
            return None
        for line in record_lines(got[1]):
            if line.record.index == index:
                return line
        return None

    async def records_from(self, index: int) -> AsyncGenerator[RecordLine, None]:
        """Every record from `index` to the end of the log as it is now, in order."""
        start = await self.seq_holding(index)
        last = await self._last()
        if start is None or last < start:
            return
        async with SubjectReader(self.bus, AUDIT_STREAM, self.subject, start) as reader:
            seq = start - 1
            while seq < last:
                for r in await reader.fetch(100, timeout=2.0):
                    seq = r.seq
                    for line in record_lines(r.data):
                        if line.record.index >= index:
                            yield line
