"""Figure 5's input and measurement: an audit export like the writer's (a realistic record mix, a
signed checkpoint every 1000 records), verified with `verify_export` against bare SHA-256 of its lines."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from broker.bench.payloads import BENCH_ORGS, BENCH_SENDER


def generate_export(path: Path, root: Path, records: int) -> tuple[dict[str, Any], str]:
    """An export like the writer's: records of a realistic mix, a signed checkpoint every 1000."""
    from broker.audit.merkle import CompactRange, leaf_hash
    from broker.audit.note import Checkpoint, sign_checkpoint
    from broker.audit.records import RECORD_ENCODER, AuditEvent, make_record
    from broker.client import uuid7
    from broker.identity.keys import load_signing_key
    from broker.identity.state import StatePaths
    from broker.policy.loader import load_policy
    from schemas.label import Label

    paths = StatePaths(root)
    name = load_policy(paths.policy).name
    keyid, key = load_signing_key(paths, "broker")
    origin = f"coord-broker/{name}"
    label = Label(policy="NATO", classification="RESTRICTED", releasable_to=list(BENCH_ORGS), caveats=[])
    tree = CompactRange()
    events = ("accepted", "released", "released", "released", "delivered", "delivered", "delivered")
    digest = hashlib.sha256(b"bench").hexdigest()
    with path.open("wb") as f:
        buf: list[bytes] = []
        mid = uuid7()
        for i in range(records):
            ev = events[i % len(events)]
            if ev == "accepted":
                mid = uuid7()
            rec = make_record(
                i,
                name,
                AuditEvent(
                    event=ev,  # type: ignore[arg-type]
                    time="2026-05-14T09:30:00.123456Z",
                    message_id=mid,
                    kind="delivery.status",
                    originator="NSATU",
                    label=label,
                    actor=BENCH_SENDER if ev == "accepted" else BENCH_ORGS[i % 3],
                    envelope_sha256=digest,
                ),
            )
            line = RECORD_ENCODER.encode(rec)
            tree.append(leaf_hash(line))
            buf.append(line)
            if tree.size % 1000 == 0 or i == records - 1:
                note = sign_checkpoint(Checkpoint(origin, tree.size, tree.root()), keyid, key)
                buf.append(json.dumps({"type": "checkpoint", "note": note}, separators=(",", ":")).encode())
                f.write(b"\n".join(buf) + b"\n")
                buf = []
    return {keyid: key.public_key()}, origin


def audit_rates(work: Path, root: Path, records: int) -> tuple[float, float, int]:
    """(verify_export records/s, raw leaf-hashing records/s over the same lines, records)."""
    from broker.audit.verify import verify_export

    path = work / f"audit-export-{records}.jsonl"
    trusted, origin = generate_export(path, root, records)
    with path.open("rb") as f:
        t0 = time.perf_counter()
        n = 0
        for line in f:
            hashlib.sha256(b"\x00" + line[:-1]).digest()
            n += 1
        raw = n / (time.perf_counter() - t0)
    with path.open("rb") as f:
        report = verify_export(f, trusted, origin)
    return report.records_per_second, raw, report.records
