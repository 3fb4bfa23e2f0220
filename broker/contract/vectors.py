"""Golden vectors for other implementers of the contract (`broker vectors export DIR`, docs/vectors/).

Everything is deterministic: Ed25519 keys come from fixed seeds (Ed25519 signatures are deterministic,
RFC 8032), message ids and times are fixed, and the outcomes are stated against a fixed "now" and the
policy written beside them. Three sets:

* `envelopes.json` + `envelopes/<name>.body`: one request per row of ICD §6 (each problem type and each
  success), the exact bytes to send, the client certificate's CN to send them as, what must be sent
  before, and the status and problem type the broker must answer;
* `labels.json`: ICD §2 access decisions, reader clearance x label x kind -> released, or withheld with
  the first failing rule;
* `audit.json` + `audit.export.jsonl`: audit records as hashed, their RFC 9162 leaf hashes, the root, a
  signed C2SP checkpoint and an inclusion proof of every record.

`keys.json` publishes the seeds: these keys are for tests only and are in no real policy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from broker.clock import rfc3339
from broker.contract.vector_decisions import audit_vectors, label_decisions
from broker.contract.vector_keys import (
    _KEYS,
    _UNREGISTERED,
    BROKER_NAME,
    NOW,
    _raw_public,
    _seed,
    seed_key,
    vector_policy,
)
from broker.contract.vector_requests import Vector, _row
from broker.contract.vector_table import build_vectors
from broker.dsse import b64encode
from broker.errors import PROBLEM_BASE, PROBLEMS
from broker.policy.render import render_policy

__all__ = [
    "BROKER_NAME",
    "NOW",
    "Vector",
    "audit_vectors",
    "build_vectors",
    "label_decisions",
    "seed_key",
    "vector_files",
    "vector_policy",
    "write_vectors",
]

# -------------------------------------------------------------------------------------------- files


def _keys_doc() -> dict[str, Any]:
    out = {}
    for kid, (nb, na, rv) in _KEYS.items():
        out[kid] = {
            "seed_hex": _seed(kid).hex(),
            "public_key": b64encode(_raw_public(seed_key(kid))),
            "not_before": rfc3339(nb),
            "not_after": rfc3339(na),
            "revoked_at": rfc3339(rv) if rv else None,
        }
    out[_UNREGISTERED] = {
        "seed_hex": None,
        "public_key": None,
        "note": "not registered; signed with nsatu-liaison:v1",
    }
    return {"warning": "test keys with published seeds: never register them in a real policy", "keys": out}


def _dump(doc: Any) -> bytes:
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode()


def vector_files() -> dict[str, bytes]:
    """Every file of the vectors folder by relative path, as bytes."""
    vectors = build_vectors()
    files: dict[str, bytes] = {f"envelopes/{x.name}.body": x.body for x in vectors}
    problems = {PROBLEM_BASE + n for n, (s, _) in PROBLEMS.items()}
    assert all(x.problem is None or x.problem in problems for x in vectors)  # noqa: S101 - generator self-check
    files["envelopes.json"] = _dump(
        {
            "now": rfc3339(NOW),
            "policy": "policy.toml",
            "keys": "keys.json",
            "vectors": [_row(x) for x in vectors],
        }
    )
    files["policy.toml"] = render_policy(vector_policy()).encode()
    files["keys.json"] = _dump(_keys_doc())
    files["labels.json"] = _dump(label_decisions())
    audit, export = audit_vectors()
    files["audit.json"] = _dump(audit)
    files["audit.export.jsonl"] = export
    return dict(sorted(files.items()))


def write_vectors(directory: Path, files: Iterable[tuple[str, bytes]] | None = None) -> list[Path]:
    written = []
    for rel, data in files if files is not None else vector_files().items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written
