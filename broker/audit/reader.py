"""Reading the audit log back from JetStream: the whole log (the writer's recovery, `broker audit
export|verify`), and its records one by one, optionally following new ones (the operators' tail).

Each JetStream message on `coord.audit.<instance>.log` is a run of export lines (records, then
possibly a checkpoint line); the concatenation of all of them, in stream order, is the export.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import msgspec

from broker.audit.records import RECORD_DECODER, AuditRecord
from broker.nats.bus import Bus
from broker.nats.consume import SubjectReader
from broker.nats.names import AUDIT_STREAM, audit_subject

__all__ = ["DEFAULT_INSTANCE", "follow_records", "read_log", "split_lines"]

DEFAULT_INSTANCE = "local"


class _Line(msgspec.Struct):
    type: str


_LINE = msgspec.json.Decoder(_Line)


def split_lines(data: bytes) -> list[bytes]:
    """The export lines of one stored run."""
    return [line for line in data.split(b"\n") if line]


async def read_log(
    bus: Bus, *, start_seq: int = 1, instance: str = DEFAULT_INSTANCE
) -> list[tuple[int, bytes]]:
    """Every JetStream message of one instance's audit log from `start_seq`, as (seq, data), in order."""
    subject = audit_subject(instance)
    last = await bus.last_seq_of(AUDIT_STREAM, subject)
    out: list[tuple[int, bytes]] = []
    if last < start_seq:
        return out
    async with SubjectReader(bus, AUDIT_STREAM, subject, start_seq) as reader:
        seq = start_seq - 1
        while seq < last:
            for r in await reader.fetch(1000, timeout=2.0):
                seq = r.seq
                out.append((r.seq, r.data))
    return out


async def follow_records(
    bus: Bus, subject: str, *, follow: bool, gone: Callable[[], bool] = lambda: False
) -> AsyncIterator[AuditRecord]:
    """The log's records from the first, in order; with `follow`, then every new one as it is stored
    (until the caller stops iterating, or `gone()` says the reader left: it is asked whenever a
    second passes with nothing new); without, up to the last one stored when it started."""
    last = await bus.last_seq_of(AUDIT_STREAM, subject)
    if last == 0 and not follow:
        return
    async with SubjectReader(bus, AUDIT_STREAM, subject) as reader:
        seq = 0
        while follow or seq < last:
            got = await reader.fetch(100, timeout=1.0)
            if not got and gone():
                return
            for r in got:
                seq = r.seq
                for line in split_lines(r.data):
                    if _LINE.decode(line).type == "record":
                        yield RECORD_DECODER.decode(line)
