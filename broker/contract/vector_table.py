"""One signed request per row of ICD §6, with the status and problem type it must get."""

from __future__ import annotations

from typing import Any

from broker.contract.vector_keys import _ENC, _UNREGISTERED, MAX_BODY_BYTES, RATE_BURST
from broker.contract.vector_requests import _LABEL, _STATUS, Vector, _message, _seal, _time
from broker.errors import PROBLEM_BASE
from schemas.message import PAYLOAD_TYPE


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


