"""The audit records a test wrote, read back from JetStream as the writer stored them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from broker.audit.reader import DEFAULT_INSTANCE, read_log, split_lines
from broker.nats.bus import Bus
from tests.support.waiting import wait_for

Record = dict[str, Any]


async def audit_records(bus: Bus, start_seq: int = 1, *, instance: str = DEFAULT_INSTANCE) -> list[Record]:
    """Every record of `instance`'s log stored from stream sequence `start_seq` on, in order."""
    out: list[Record] = []
    for _seq, data in await read_log(bus, start_seq=start_seq, instance=instance):
        for line in split_lines(data):
            rec = json.loads(line)
            if rec.get("type") == "record":
                out.append(rec)
    return out


async def wait_records(
    bus: Bus,
    start_seq: int,
    pred: Callable[[list[Record]], bool],
    timeout: float = 20.0,
    *,
    instance: str = DEFAULT_INSTANCE,
) -> list[Record]:
    """The records from `start_seq` once `pred` holds for them."""

    async def probe() -> list[Record] | None:
        recs = await audit_records(bus, start_seq, instance=instance)
        return recs if pred(recs) else None

    got = await wait_for(probe, timeout=timeout)
    return got
