"""The golden label decisions (ICD §2) and audit vectors (records, leaf hashes, checkpoint, proofs)."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

import msgspec

from broker.audit.merkle import CompactRange, inclusion_proof, leaf_hash
from broker.audit.note import Checkpoint, sign_checkpoint
from broker.audit.records import RECORD_ENCODER, AuditEvent, make_record
from broker.clock import rfc3339
from broker.contract.vector_keys import _ENC, BROKER_NAME, NOW, _raw_public, seed_key
from broker.contract.vector_requests import _LABEL, _id, _message, _seal
from broker.rules.labels import decide
from schemas.clearance import CLASSIFICATIONS, Clearance
from schemas.kinds import KINDS
from schemas.label import Label

# -------------------------------------------------------------------------------------------- labels

_READERS: tuple[dict[str, Any], ...] = (
    {"name": "NSATU", "organisation": "NSATU", "clearance": "NATO:SECRET", "need_to_know": "all"},
    {"name": "EUMAM", "organisation": "EUMAM", "clearance": "EU:SECRET", "need_to_know": "all"},
    {
        "name": "UDCG",
        "organisation": "UDCG",
        "clearance": "NATO:CONFIDENTIAL",
        "need_to_know": [k for k in KINDS if k != "lesson.learned"],
    },
    {
        "name": "EUMAM-restricted-ukr",
        "organisation": "EUMAM",
        "clearance": "EU:RESTRICTED:UKR-EYES",
        "need_to_know": "all",
    },
    {
        "name": "operator low-officer",
        "organisation": "EUMAM",
        "clearance": "EU:RESTRICTED",
        "need_to_know": None,
    },
    {
        "name": "operator top",
        "organisation": "NSATU",
        "clearance": "NATO:TOP_SECRET:UKR-EYES",
        "need_to_know": None,
    },
)
_RELS = (["EUMAM", "NSATU", "UDCG"], ["NSATU", "UDCG"], ["EUMAM"])
_CAVS: tuple[list[str], ...] = ([], ["UKR-EYES"])


def _labels() -> list[Label]:
    return [
        msgspec.convert({"policy": p, "classification": c, "releasable_to": r, "caveats": cv}, Label)
        for p in ("NATO", "EU")
        for c in CLASSIFICATIONS
        for r in _RELS
        for cv in _CAVS
    ]


def label_decisions() -> dict[str, Any]:
    system_high = Clearance.parse("NATO:SECRET")
    labels = _labels()
    rows = []
    for reader in _READERS:
        clr = Clearance.parse(reader["clearance"])
        ntk = reader["need_to_know"]
        need = None if ntk is None else frozenset(KINDS if ntk == "all" else ntk)
        for i, label in enumerate(labels):
            for kind in ("status.update", "lesson.learned"):
                rule = decide(
                    label,
                    system_high=system_high,
                    clearance=clr,
                    organisation=reader["organisation"],
                    kind=kind,
                    need_to_know=need,
                )
                rows.append(
                    {
                        "reader": reader["name"],
                        "label": i,
                        "kind": kind,
                        "outcome": "released" if rule is None else "withheld",
                        "rule": rule,
                    }
                )
    return {
        "system_high": str(system_high),
        "rules": ["system-high", "clearance", "releasability", "caveats", "need-to-know"],
        "readers": list(_READERS),
        "labels": [msgspec.to_builtins(lb) for lb in labels],
        "decisions": rows,
    }


# -------------------------------------------------------------------------------------------- audit


def _audit_events() -> list[AuditEvent]:
    lab = msgspec.convert(_LABEL, Label)
    mid = _id("accepted")
    sha = hashlib.sha256(_seal(_ENC.encode(_message("accepted")))).hexdigest()

    def ev(event: str, s: int, **kw: Any) -> AuditEvent:
        return AuditEvent(event=event, time=rfc3339(NOW + timedelta(seconds=s)), **kw)  # type: ignore[arg-type]

    common: dict[str, Any] = {"message_id": mid, "kind": "status.update", "originator": "NSATU", "label": lab}
    return [
        ev("accepted", 0, actor="nsatu-liaison", envelope_sha256=sha, **common),
        ev("rejected", 1, actor="nsatu-liaison", reason="malformed"),
        ev("released", 2, actor="EUMAM", **common),
        ev("released", 2, actor="NSATU", **common),
        ev("withheld", 2, actor="UDCG", reason="releasability", **common),
        ev("delivered", 3, actor="EUMAM", **common),
        ev("tail-opened", 4, actor="duty-officer"),
    ]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def audit_vectors() -> tuple[dict[str, Any], bytes]:
    records = [RECORD_ENCODER.encode(make_record(i, BROKER_NAME, e)) for i, e in enumerate(_audit_events())]
    leaves = [leaf_hash(r) for r in records]
    tree = CompactRange.from_leaf_hashes(leaves)
    origin = f"coord-broker/{BROKER_NAME}"
    note = sign_checkpoint(
        Checkpoint(origin, tree.size, tree.root()), "broker:vectors", seed_key("broker:vectors")
    )
    doc = {
        "origin": origin,
        "key": {"name": "broker:vectors", "public_key": _b64(_raw_public(seed_key("broker:vectors")))},
        "records": [
            {
                "index": i,
                "bytes": r.decode(),
                "leaf_hash": _b64(h),
                "proof": [_b64(p) for p in inclusion_proof(leaves, i, len(leaves))],
            }
            for i, (r, h) in enumerate(zip(records, leaves, strict=True))
        ],
        "size": tree.size,
        "root": _b64(tree.root()),
        "checkpoint": note,
    }
    export = b"".join(r + b"\n" for r in records) + _ENC.encode({"type": "checkpoint", "note": note}) + b"\n"
    return doc, export


