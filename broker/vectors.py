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

import base64
import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit.merkle import CompactRange, inclusion_proof, leaf_hash
from broker.audit.note import Checkpoint, sign_checkpoint
from broker.audit.records import RECORD_ENCODER, AuditEvent, make_record
from broker.clock import rfc3339
from broker.errors import PROBLEM_BASE, PROBLEMS
from broker.labels import CLASSIFICATIONS, Clearance, decide
from broker.pki import DEFAULT_ORGANISATIONS, DEFAULT_SENDERS
from broker.policy import Operator, Organisation, Policy, Sender, SigningKey, render_policy
from broker.signing import b64encode, pae, sign
from schemas.kinds import KINDS
from schemas.label import Label
from schemas.message import PAYLOAD_TYPE

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

NOW = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
BROKER_NAME = "vectors"
_ENC = msgspec.json.Encoder()
_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_T_END = datetime(2030, 1, 1, tzinfo=UTC)
#: keyid -> (not_before, not_after, revoked_at)
_KEYS: dict[str, tuple[datetime, datetime, datetime | None]] = {
    "broker:vectors": (_T0, _T_END, None),
    "nsatu-liaison:v1": (_T0, _T_END, None),
    "nsatu-liaison:revoked": (_T0, _T_END, datetime(2026, 6, 1, tzinfo=UTC)),
    "nsatu-liaison:expired": (datetime(2025, 1, 1, tzinfo=UTC), _T0, None),
    "eumam-liaison:v1": (_T0, _T_END, None),
    "udcg-liaison:v1": (_T0, _T_END, None),
}
_UNREGISTERED = "nsatu-liaison:unregistered"
MAX_BODY_BYTES = 4096
RATE_BURST = 10


def seed_key(keyid: str) -> Ed25519PrivateKey:
    """The test key of `keyid`: its 32-byte seed is SHA-256("coord-vectors/" + keyid)."""
    return Ed25519PrivateKey.from_private_bytes(_seed(keyid))


def _seed(keyid: str) -> bytes:
    return hashlib.sha256(b"coord-vectors/" + keyid.encode()).digest()


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def vector_policy() -> Policy:
    """The policy the envelope vectors are judged by: ICD §9's defaults, the liaison senders with the
    test keys above, a 4096-byte body limit and a burst of 10 (so 413 and 429 are small to show)."""

    def keys(owner: str) -> MappingProxyType[str, SigningKey]:
        return MappingProxyType(
            {
                kid: SigningKey(kid, _raw_public(seed_key(kid)), nb, na, rv)
                for kid, (nb, na, rv) in _KEYS.items()
                if kid.split(":")[0] == owner
            }
        )

    orgs = {
        c: Organisation(c, Clearance.parse(cl), frozenset(KINDS)) for c, cl in DEFAULT_ORGANISATIONS.items()
    }
    senders = {
        ident: Sender(ident, org, frozenset(rights), keys(ident))
        for ident, (org, rights) in DEFAULT_SENDERS.items()
        if ident.endswith("-liaison")
    }
    return Policy(
        name=BROKER_NAME,
        system_high=Clearance.parse("NATO:SECRET"),
        max_age_s=600.0,
        max_skew_s=120.0,
        organisations=MappingProxyType(orgs),
        senders=MappingProxyType(senders),
        operators=MappingProxyType(
            {"duty-officer": Operator("duty-officer", "NSATU", Clearance.parse("NATO:SECRET"))}
        ),
        broker_keys=keys("broker"),
        rate_burst=RATE_BURST,
        max_body_bytes=MAX_BODY_BYTES,
    )


# -------------------------------------------------------------------------------------------- envelopes


def _id(name: str) -> str:
    """A UUIDv7-shaped id: NOW's milliseconds, then bits from the name."""
    ms = int(NOW.timestamp() * 1000)
    rand = int.from_bytes(hashlib.sha256(b"coord-vectors/id/" + name.encode()).digest()[:10], "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 68) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def _time(delta_s: int) -> str:
    return rfc3339(NOW + timedelta(seconds=delta_s)).replace(".000000Z", "Z")


_LABEL = {
    "policy": "NATO",
    "classification": "RESTRICTED",
    "releasable_to": ["EUMAM", "NSATU"],
    "caveats": [],
}
_STATUS = {
    "topic": "Hub Rzeszow",
    "state": "GREEN",
    "summary": "Two convoys cleared; one held for inspection.",
}


def _message(name: str, **over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "id": _id(name),
        "kind": "status.update",
        "version": 1,
        "originator": "NSATU",
        "sender": "nsatu-liaison",
        "created": _time(-60),
        "label": _LABEL,
        "body": _STATUS,
    }
    msg.update(over)
    return msg


def _seal(
    payload: bytes,
    keyid: str = "nsatu-liaison:v1",
    *,
    key: str | None = None,
    ptype: str = PAYLOAD_TYPE,
    sigs: int = 1,
) -> bytes:
    signer = seed_key(key or keyid)
    sig = b64encode(sign(signer, ptype, payload))
    env = {
        "payloadType": ptype,
        "payload": b64encode(payload),
        "signatures": [{"keyid": keyid, "sig": sig} for _ in range(sigs)],
    }
    return _ENC.encode(env)


@dataclass(frozen=True)
class Vector:
    name: str
    icd: str  # the ICD §6 row
    body: bytes
    status: int
    problem: str | None = None
    client: str = "nsatu-liaison"
    path: str = "/v1/messages"
    content_type: str = "application/json"
    before: tuple[str, ...] = ()
    note: str = ""
    keyid: str | None = None
    payload: bytes | None = None
    expect: dict[str, Any] = field(default_factory=dict)  # more: duplicate, Retry-After, batch results
    live: bool = True  # reproducible against a live gateway as it runs


def build_vectors() -> list[Vector]:
    v: list[Vector] = []

    def add(name: str, icd: str, body: bytes, status: int, problem: str | None = None, **kw: Any) -> None:
        v.append(Vector(name, icd, body, status, PROBLEM_BASE + problem if problem else None, **kw))

    def signed(
        name: str, msg: dict[str, Any] | bytes, keyid: str = "nsatu-liaison:v1", **kw: Any
    ) -> dict[str, Any]:
        payload = msg if isinstance(msg, bytes) else _ENC.encode(msg)
        return {"body": _seal(payload, keyid, **kw), "payload": payload, "keyid": keyid}

    ok = signed("accepted", _message("accepted"))
    add(
        "accepted",
        "202 stored durably",
        ok["body"],
        202,
        payload=ok["payload"],
        keyid=ok["keyid"],
        note="a status.update from nsatu-liaison, NATO RESTRICTED, releasable to EUMAM and NSATU",
    )
    add(
        "duplicate",
        "200 identical bytes again",
        ok["body"],
        200,
        before=("accepted",),
        payload=ok["payload"],
        keyid=ok["keyid"],
        expect={"duplicate": True},
        note="the bytes of `accepted` again: nothing stored twice",
    )
    conflict = signed("id-conflict", _message("accepted", body={**_STATUS, "state": "AMBER"}))
    add(
        "id-conflict",
        "409 id-conflict",
        conflict["body"],
        409,
        "id-conflict",
        before=("accepted",),
        payload=conflict["payload"],
        keyid=conflict["keyid"],
        note="the id of `accepted`, other bytes",
    )

    fresh = signed("batch-line", _message("batch-line"))
    batch = fresh["body"] + b"\n" + b"not an envelope" + b"\n" + ok["body"] + b"\n"
    add(
        "batch",
        "200 batch, one result a line",
        batch,
        200,
        path="/v1/messages/batch",
        content_type="application/x-ndjson",
        before=("accepted",),
        expect={"results": [{"stored": True}, {"problem": PROBLEM_BASE + "malformed"}, {"duplicate": True}]},
        note="a new envelope, a line that is not an envelope, the bytes of `accepted` again",
    )

    add("malformed-not-json", "400 malformed", b"this is not JSON", 400, "malformed")
    two = signed("malformed-two-signatures", _message("malformed-two-signatures"), sigs=2)
    add(
        "malformed-two-signatures",
        "400 malformed",
        two["body"],
        400,
        "malformed",
        note="an inbound envelope carries exactly one signature (docs/decisions.md)",
    )
    bad64 = _ENC.encode(
        {
            "payloadType": PAYLOAD_TYPE,
            "payload": "not base64!",
            "signatures": [{"keyid": "nsatu-liaison:v1", "sig": "AAAA"}],
        }
    )
    add("malformed-base64", "400 malformed", bad64, 400, "malformed")
    not_utf8 = signed("malformed-not-utf8", b'{"id": "\xff\xfe"}')
    add(
        "malformed-not-utf8",
        "400 malformed",
        not_utf8["body"],
        400,
        "malformed",
        payload=not_utf8["payload"],
        keyid=not_utf8["keyid"],
        note="signed correctly; the payload is not UTF-8",
    )
    dup_payload = b'{"version":1,' + _ENC.encode(_message("malformed-duplicate-key"))[1:]
    dup = signed("malformed-duplicate-key", dup_payload)
    add(
        "malformed-duplicate-key",
        "400 malformed",
        dup["body"],
        400,
        "malformed",
        payload=dup["payload"],
        keyid=dup["keyid"],
        note="`version` twice: signed bytes must have one reading",
    )
    ptype = signed("unsupported-payload-type", _message("unsupported-payload-type"), ptype="application/json")
    add(
        "unsupported-payload-type",
        "415 unsupported-media-type (payloadType)",
        ptype["body"],
        415,
        "unsupported-media-type",
        payload=ptype["payload"],
        keyid=ptype["keyid"],
    )
    add(
        "unsupported-content-type",
        "415 unsupported-media-type (Content-Type)",
        ok["body"],
        415,
        "unsupported-media-type",
        content_type="text/plain",
    )

    unknown = signed("unknown-key", _message("unknown-key"), _UNREGISTERED, key="nsatu-liaison:v1")
    add(
        "unknown-key",
        "401 unknown-key",
        unknown["body"],
        401,
        "unknown-key",
        payload=unknown["payload"],
        keyid=unknown["keyid"],
        note="a key id the policy does not register for nsatu-liaison",
    )
    other = signed("unknown-key-other-sender", _message("unknown-key-other-sender"), "eumam-liaison:v1")
    add(
        "unknown-key-other-sender",
        "401 unknown-key",
        other["body"],
        401,
        "unknown-key",
        payload=other["payload"],
        keyid=other["keyid"],
        note="eumam-liaison's key, sent with nsatu-liaison's certificate: keys are looked up among the "
        "certificate's sender's only",
    )
    badsig = signed("bad-signature", _message("bad-signature"), key="udcg-liaison:v1")
    add(
        "bad-signature",
        "401 bad-signature",
        badsig["body"],
        401,
        "bad-signature",
        payload=badsig["payload"],
        keyid=badsig["keyid"],
        note="signed by another key than nsatu-liaison:v1",
    )
    revoked = signed("revoked-key", _message("revoked-key"), "nsatu-liaison:revoked")
    add(
        "revoked-key",
        "401 revoked-key",
        revoked["body"],
        401,
        "revoked-key",
        payload=revoked["payload"],
        keyid=revoked["keyid"],
        note="revoked 2026-06-01",
    )
    expired = signed("expired-key", _message("expired-key"), "nsatu-liaison:expired")
    add(
        "expired-key",
        "401 expired-key",
        expired["body"],
        401,
        "expired-key",
        payload=expired["payload"],
        keyid=expired["keyid"],
        note="valid 2025-01-01 to 2026-01-01",
    )

    def authz(
        name: str,
        icd: str,
        status: int,
        problem: str,
        msg: dict[str, Any],
        keyid: str = "nsatu-liaison:v1",
        client: str = "nsatu-liaison",
        note: str = "",
    ) -> None:
        s = signed(name, msg, keyid)
        add(
            name, icd, s["body"], status, problem, payload=s["payload"], keyid=keyid, client=client, note=note
        )

    authz(
        "invalid-schema",
        "422 invalid (schema)",
        422,
        "invalid",
        _message("invalid-schema", body={**_STATUS, "state": "BLUE"}),
        note="state is not GREEN/AMBER/RED",
    )
    authz(
        "invalid-label",
        "422 invalid (label rules)",
        422,
        "invalid",
        _message("invalid-label", label={**_LABEL, "releasable_to": ["NSATU", "EUMAM"]}),
        note="releasable_to must be sorted",
    )
    authz(
        "sender-mismatch",
        "403 sender-mismatch",
        403,
        "sender-mismatch",
        _message("sender-mismatch", sender="eumam-liaison"),
        note="sender eumam-liaison, certificate nsatu-liaison",
    )
    authz(
        "originator-mismatch",
        "403 originator-mismatch",
        403,
        "originator-mismatch",
        _message("originator-mismatch", originator="EUMAM"),
    )
    authz(
        "not-permitted",
        "403 not-permitted",
        403,
        "not-permitted",
        _message(
            "not-permitted",
            kind="capability.pledge",
            body={
                "pledge_ref": "UDCG-ADC-2026-0117",
                "nation": "DEU",
                "coalition": "IAMD coalition",
                "items": [{"designation": "IRIS-T SLM launcher", "category": "air-defence", "quantity": 2}],
                "delivery_window": {"from": "2026-04-01", "to": "2026-09-30"},
            },
        ),
        note="nsatu-liaison may not publish capability.pledge",
    )
    authz(
        "above-system-high",
        "403 above-system-high",
        403,
        "above-system-high",
        _message("above-system-high", label={**_LABEL, "classification": "TOP SECRET"}),
        note="system high is NATO SECRET",
    )
    authz(
        "above-clearance",
        "403 above-clearance",
        403,
        "above-clearance",
        _message(
            "above-clearance",
            originator="UDCG",
            sender="udcg-liaison",
            label={**_LABEL, "classification": "SECRET", "releasable_to": ["NSATU", "UDCG"]},
        ),
        keyid="udcg-liaison:v1",
        client="udcg-liaison",
        note="UDCG is cleared to NATO CONFIDENTIAL",
    )
    authz(
        "stale-old",
        "422 stale",
        422,
        "stale",
        _message("stale-old", created=_time(-601)),
        note="created 601 s before now (max_age 600 s)",
    )
    authz(
        "stale-future",
        "422 stale",
        422,
        "stale",
        _message("stale-future", created=_time(121)),
        note="created 121 s after now (max_skew 120 s)",
    )

    big = signed(
        "too-large",
        _message(
            "too-large",
            kind="lesson.learned",
            body={
                "title": "Convoy timing",
                "domain": "logistics",
                "observation": "x" * 2000,
                "recommendation": "y" * 2000,
            },
        ),
    )
    add(
        "too-large",
        "413 too-large",
        big["body"],
        413,
        "too-large",
        payload=big["payload"],
        keyid=big["keyid"],
        note=f"a valid envelope of {len(big['body'])} bytes; the policy's max_body_bytes is {MAX_BODY_BYTES}",
    )
    add(
        "rate-limited",
        "429 rate-limited",
        b"\n".join([ok["body"]] * (RATE_BURST + 1)) + b"\n",
        429,
        "rate-limited",
        path="/v1/messages/batch",
        content_type="application/x-ndjson",
        expect={"Retry-After": "60"},
        note=f"{RATE_BURST + 1} lines, more than the burst of {RATE_BURST}: it can never pass, "
        "so Retry-After 60",
    )
    down = signed("unavailable", _message("unavailable"))
    add(
        "unavailable",
        "503 unavailable",
        down["body"],
        503,
        "unavailable",
        payload=down["payload"],
        keyid=down["keyid"],
        live=False,
        note="an admissible envelope while the bus is down: nothing stored; retry the same bytes",
    )
    return v


def _row(x: Vector) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": x.name,
        "icd": x.icd,
        "client": x.client,
        "method": "POST",
        "path": x.path,
        "content_type": x.content_type,
        "body": f"envelopes/{x.name}.body",
        "body_sha256": hashlib.sha256(x.body).hexdigest(),
        "before": list(x.before),
        "status": x.status,
        "problem": x.problem,
    }
    if x.expect:
        row["expect"] = x.expect
    if x.keyid is not None and x.payload is not None:
        ptype = PAYLOAD_TYPE if x.name != "unsupported-payload-type" else "application/json"
        row["keyid"] = x.keyid
        row["payload_sha256"] = hashlib.sha256(x.payload).hexdigest()
        row["pae_sha256"] = hashlib.sha256(pae(ptype, x.payload)).hexdigest()
    if x.note:
        row["note"] = x.note
    if not x.live:
        row["live"] = False
    return row


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
