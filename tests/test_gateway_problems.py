"""ICD §6's error table, row by row, against the running gateway over mutual TLS.

Every refusal is checked the same way (`Rejection.check`): the HTTP status, the problem type
`urn:coord:problem:<name>`, `application/problem+json` with a `title` and a `detail`, no echo of
the rejected message's content anywhere in the response (each hostile message carries a unique
marker), nothing new in the accepted stream, and a `rejected` audit record for it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.app.system import System
from broker.audit.reader import read_log
from broker.client import seal
from broker.clock import rfc3339, utcnow
from broker.errors import MAX_ERRORS
from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.nats.bus import Bus
from broker.nats.names import ACCEPTED_STREAM, AUDIT_STREAM
from broker.policy.admin import new_sender, revoke_key
from broker.policy.loader import load_policy
from broker.policy.model import Policy
from broker.policy.render import write_policy
from schemas.message import PAYLOAD_TYPE
from tests.support.messages import LABEL_NR, message, signer

ENC = msgspec.json.Encoder()
PROBLEM_JSON = "application/problem+json"


def marker() -> str:
    """A string that cannot appear in a response unless the response echoes the message."""
    return f"zqx{uuid.uuid4().hex}qxz"


def hostile_message(mark: str, **kw: Any) -> dict[str, Any]:
    body = kw.pop("body", None) or {"topic": f"Topic {mark}", "state": "AMBER", "summary": f"Secret {mark}"}
    return message(body=body, **kw)


def encode(msg: dict[str, Any]) -> bytes:
    return ENC.encode(msg)


def seal_as(
    state: StatePaths,
    ident: str,
    payload: bytes,
    *,
    keyid: str | None = None,
    key: Ed25519PrivateKey | None = None,
    payload_type: str = PAYLOAD_TYPE,
) -> bytes:
    own_keyid, own_key = signer(state, ident)
    return seal(payload, keyid or own_keyid, key or own_key, payload_type)


def env_edit(env: bytes, fn: Callable[[dict[str, Any]], None]) -> bytes:
    doc: dict[str, Any] = msgspec.json.decode(env)
    fn(doc)
    return ENC.encode(doc)


# -- a raw client: the response bytes exactly as sent -------------------------------------------


@dataclass(frozen=True)
class RawReply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def doc(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.json.decode(self.raw)
        return out


class RawClient:
    def __init__(self, ident: str, base: str, session: aiohttp.ClientSession) -> None:
        self.ident = ident
        self.base = base
        self.session = session

    async def post(
        self, data: Any, *, path: str = "/v1/messages", content_type: str = "application/json"
    ) -> RawReply:
        async with self.session.post(
            self.base + path, data=data, headers={"Content-Type": content_type}
        ) as r:
            return RawReply(r.status, dict(r.headers), await r.read())

    async def batch(self, lines: list[bytes]) -> RawReply:
        return await self.post(
            b"\n".join(lines) + b"\n", path="/v1/messages/batch", content_type="application/x-ndjson"
        )


RawFactory = Callable[[str], Awaitable[RawClient]]


@pytest_asyncio.fixture(scope="module")
async def raw_for(system: System, state: StatePaths) -> AsyncIterator[RawFactory]:
    sessions: dict[str, aiohttp.ClientSession] = {}

    async def make(ident: str) -> RawClient:
        if ident not in sessions:
            ctx = client_context(state.ca_crt, state.tls_crt(ident), state.tls_key(ident))
            sessions[ident] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
        return RawClient(ident, system.gateway_url, sessions[ident])

    yield make
    for s in sessions.values():
        await s.close()


# -- the common assertions ----------------------------------------------------------------------


async def audit_records(bus: Bus, start_seq: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _, data in await read_log(bus, start_seq=start_seq):
        for line in data.split(b"\n"):
            if line:
                doc = msgspec.json.decode(line)
                if isinstance(doc, dict) and doc.get("type") == "record":
                    out.append(doc)
    return out


async def wait_audited(
    bus: Bus, start_seq: int, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        for rec in await audit_records(bus, start_seq):
            if pred(rec):
                return rec
        if loop.time() > end:
            raise AssertionError("no matching audit record")
        await asyncio.sleep(0.1)


def assert_problem(
    reply: RawReply, status: int, name: str, hostile: Iterable[str | bytes] = ()
) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.raw[:500])
    assert reply.headers.get("Content-Type", "").split(";")[0].strip() == PROBLEM_JSON
    doc = reply.doc
    assert doc["type"] == f"urn:coord:problem:{name}", doc
    assert doc["status"] == status
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["detail"], str) and doc["detail"]
    everything = reply.raw + repr(sorted(reply.headers.items())).encode()
    for h in hostile:
        token = h.encode() if isinstance(h, str) else h
        assert token, "an empty token would prove nothing"
        assert token not in everything, f"the response echoes {token!r}"
        # also in the JSON-escaped form (non-ASCII text comes back as \\uXXXX)
        escaped = ENC.encode(h if isinstance(h, str) else h.decode("latin-1"))[1:-1]
        assert escaped not in everything, f"the response echoes {token!r} (escaped)"
    return doc


@dataclass
class Rejection:
    """Post one hostile request and check everything ICD §6 promises about its refusal."""

    client: RawClient
    bus: Bus

    async def check(
        self,
        data: Any,
        status: int,
        name: str,
        hostile: Iterable[str | bytes] = (),
        *,
        content_type: str = "application/json",
        path: str = "/v1/messages",
        digest_known: bool = True,
    ) -> dict[str, Any]:
        """`digest_known=False`: refused before intake, so the audit record has no envelope digest."""
        accepted_before = await self.bus.last_seq(ACCEPTED_STREAM)
        audit_before = await self.bus.last_seq(AUDIT_STREAM)
        reply = await self.client.post(data, content_type=content_type, path=path)
        doc = assert_problem(reply, status, name, hostile)
        assert await self.bus.last_seq(ACCEPTED_STREAM) == accepted_before, "a rejected message was stored"
        if not digest_known:  # refused before the body was read whole: no digest, found by actor and reason
            actor = self.client.ident
            await wait_audited(
                self.bus,
                audit_before + 1,
                lambda r: (
                    r["event"] == "rejected"
                    and r["actor"] == actor
                    and r["reason"] == name
                    and r["envelope_sha256"] is None
                ),
            )
        else:
            digest = hashlib.sha256(data).hexdigest()
            rec = await wait_audited(
                self.bus,
                audit_before + 1,
                lambda r: r["event"] == "rejected" and r["envelope_sha256"] == digest,
            )
            assert rec["reason"] == name
            text = ENC.encode(rec)
            for h in hostile:
                assert (h.encode() if isinstance(h, str) else h) not in text, "the audit record holds content"
        return doc


@pytest_asyncio.fixture
async def liaison(raw_for: RawFactory, bus: Bus) -> Rejection:
    return Rejection(await raw_for("nsatu-liaison"), bus)


async def wait_policy(system: System, pred: Callable[[Policy], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred(system.holder.current):
        if loop.time() > end:
            raise AssertionError("the running system did not pick up the policy change")
        await asyncio.sleep(0.05)


def edit_policy(state: StatePaths, fn: Callable[[Policy], Policy]) -> Policy:
    return write_policy(state.policy, fn(load_policy(state.policy)))


# == 400 malformed =============================================================================


@pytest.mark.parametrize(
    "case",
    [
        "not-json",
        "json-array",
        "not-envelope",
        "envelope-unknown-field",
        "bad-base64-payload",
        "bad-base64-sig",
        "two-alphabets",
        "no-signature",
        "two-signatures",
    ],
)
async def test_malformed_envelope(case: str, liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    good = seal_as(state, "nsatu-liaison", encode(hostile_message(mark)))
    data = {
        "not-json": f"this is {mark} not json {{".encode(),
        "json-array": ENC.encode([mark]),
        "not-envelope": ENC.encode({"message": mark}),
        "envelope-unknown-field": env_edit(good, lambda d: d.__setitem__("note", mark)),
        "bad-base64-payload": env_edit(good, lambda d: d.__setitem__("payload", f"*{mark}*")),
        "bad-base64-sig": env_edit(good, lambda d: d["signatures"][0].__setitem__("sig", f"!{mark}")),
        "two-alphabets": env_edit(good, lambda d: d.__setitem__("payload", "ab+_" + d["payload"][4:])),
        "no-signature": env_edit(good, lambda d: d.__setitem__("signatures", [])),
        "two-signatures": env_edit(good, lambda d: d.__setitem__("signatures", d["signatures"] * 2)),
    }[case]
    await liaison.check(data, 400, "malformed", [mark])


async def test_payload_not_utf8(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    payload = encode(hostile_message(mark)).replace(b"Secret ", b"Secret \xff\xfe ")
    await liaison.check(seal_as(state, "nsatu-liaison", payload), 400, "malformed", [mark])


def _dup_top(text: str, mark: str) -> str:
    return text[:-1] + ',"sender":"nsatu-liaison"}'


def _dup_body(text: str, mark: str) -> str:
    return text.replace('"body":{', f'"body":{{"topic":"hidden {mark}",', 1)


def _dup_label(text: str, mark: str) -> str:
    # the classic: a SECRET reading for one parser, a RESTRICTED one for another
    return text.replace(
        '"classification":"RESTRICTED"', '"classification":"SECRET","classification":"RESTRICTED"', 1
    )


@pytest.mark.parametrize("dup", [_dup_top, _dup_body, _dup_label], ids=["top-level", "in-body", "in-label"])
async def test_duplicate_keys_are_malformed(
    dup: Callable[[str, str], str], liaison: Rejection, state: StatePaths
) -> None:
    mark = marker()
    text = encode(hostile_message(mark)).decode()
    payload = dup(text, mark).encode()
    assert payload != text.encode()
    await liaison.check(seal_as(state, "nsatu-liaison", payload), 400, "malformed", [mark])


@pytest.mark.parametrize(
    "payload", [b"{not json", b'{"a": NaN}', b"MESSAGE trailing", b"MESSAGE MESSAGE", b""]
)
async def test_signed_payload_not_json(payload: bytes, liaison: Rejection, state: StatePaths) -> None:
    payload = payload.replace(b"MESSAGE", encode(message()))
    doc = await liaison.check(seal_as(state, "nsatu-liaison", payload), 400, "malformed")
    assert "errors" not in doc


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"just a string"', b"null"])
async def test_signed_payload_json_but_not_an_object(
    payload: bytes, liaison: Rejection, state: StatePaths
) -> None:
    """Well-formed JSON of the wrong type is a schema violation at the root."""
    doc = await liaison.check(seal_as(state, "nsatu-liaison", payload), 422, "invalid")
    assert [e["path"] for e in doc["errors"]] == ["$"]


@pytest.mark.parametrize("opener", [b"[", b'{"a":'], ids=["arrays", "objects"])
async def test_deeply_nested_payload_is_malformed(
    opener: bytes, liaison: Rejection, state: StatePaths
) -> None:
    """Nesting beyond any schema must be a clean 400, not an internal error (the duplicate-key scan
    and the decoder are both recursive)."""
    depth = 20_000
    closer = b"]" if opener == b"[" else b"}"
    payload = opener * depth + b"1" + closer * depth
    await liaison.check(seal_as(state, "nsatu-liaison", payload), 400, "malformed")


async def test_deeply_nested_line_in_a_batch(liaison: Rejection, state: StatePaths, bus: Bus) -> None:
    """One such line must not sink the batch: the good line beside it is stored and reported."""
    deep = seal_as(state, "nsatu-liaison", b"[" * 20_000 + b"]" * 20_000)
    good = seal_as(state, "nsatu-liaison", encode(message()))
    before = await bus.last_seq(ACCEPTED_STREAM)
    reply = await liaison.client.batch([good, deep])
    assert reply.status == 200, reply.raw[:300]
    ok, bad = reply.doc["results"]
    assert ok["seq"] == before + 1
    assert bad["problem"]["type"] == "urn:coord:problem:malformed"


# == 401 keys and signatures ===================================================================


async def test_payload_changed_after_signing(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    msg = hostile_message(mark)
    env = seal_as(state, "nsatu-liaison", encode(msg))
    msg["body"]["state"] = "RED"
    forged = env_edit(env, lambda d: d.__setitem__("payload", base64.b64encode(encode(msg)).decode()))
    await liaison.check(forged, 401, "bad-signature", [mark])


async def test_label_lowered_after_signing(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    msg = hostile_message(mark, label={**LABEL_NR, "classification": "SECRET"})
    env = seal_as(state, "nsatu-liaison", encode(msg))
    msg["label"]["classification"] = "RESTRICTED"
    forged = env_edit(env, lambda d: d.__setitem__("payload", base64.b64encode(encode(msg)).decode()))
    await liaison.check(forged, 401, "bad-signature", [mark])


async def test_other_payload_type(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    env = seal_as(state, "nsatu-liaison", encode(hostile_message(mark)), payload_type="application/json")
    await liaison.check(env, 415, "unsupported-media-type", [mark])


async def test_key_id_of_another_sender_is_unknown(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    other_keyid, other_key = signer(state, "eumam-liaison")
    env = seal_as(state, "nsatu-liaison", encode(hostile_message(mark)), keyid=other_keyid, key=other_key)
    await liaison.check(env, 401, "unknown-key", [mark])


async def test_own_key_id_signed_by_another_senders_key(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    _, other_key = signer(state, "eumam-liaison")
    env = seal_as(state, "nsatu-liaison", encode(hostile_message(mark)), key=other_key)
    await liaison.check(env, 401, "bad-signature", [mark])


async def test_unknown_key_id(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    env = seal_as(state, "nsatu-liaison", encode(hostile_message(mark)), keyid="nsatu-liaison:no-such-key")
    await liaison.check(env, 401, "unknown-key", [mark])


async def test_rogue_key_under_a_valid_key_id(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    env = seal_as(state, "nsatu-liaison", encode(hostile_message(mark)), key=Ed25519PrivateKey.generate())
    await liaison.check(env, 401, "bad-signature", [mark])


async def test_signature_of_wrong_length(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    env = seal_as(state, "nsatu-liaison", encode(hostile_message(mark)))
    short = env_edit(
        env, lambda d: d["signatures"][0].__setitem__("sig", base64.b64encode(b"x" * 63).decode())
    )
    await liaison.check(short, 401, "bad-signature", [mark])


async def test_revoked_key(system: System, state: StatePaths, raw_for: RawFactory, bus: Bus) -> None:
    ident = "revoked-sender"
    new_sender(state, ident, "NSATU", ["status.update"])
    keyid, _ = signer(state, ident)
    await wait_policy(system, lambda p: ident in p.senders)
    rej = Rejection(await raw_for(ident), bus)
    # the control: the key works before it is revoked
    ok = await rej.client.post(seal_as(state, ident, encode(message(sender=ident))))
    assert ok.status == 202, ok.raw
    revoke_key(state, keyid)
    await wait_policy(system, lambda p: p.senders[ident].keys[keyid].revoked_at is not None)
    mark = marker()
    await rej.check(
        seal_as(state, ident, encode(hostile_message(mark, sender=ident))), 401, "revoked-key", [mark]
    )


async def test_expired_key(system: System, state: StatePaths, raw_for: RawFactory, bus: Bus) -> None:
    ident = "expired-sender"
    new_sender(state, ident, "NSATU", ["status.update"])
    keyid, _ = signer(state, ident)
    now = utcnow().replace(microsecond=0)

    def expire(p: Policy) -> Policy:
        s = p.senders[ident]
        key = dataclasses.replace(
            s.keys[keyid], not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
        )
        sender = dataclasses.replace(s, keys={**s.keys, keyid: key})
        return dataclasses.replace(p, senders={**p.senders, ident: sender})

    edit_policy(state, expire)
    await wait_policy(system, lambda p: ident in p.senders and p.senders[ident].keys[keyid].not_after < now)
    rej = Rejection(await raw_for(ident), bus)
    mark = marker()
    await rej.check(
        seal_as(state, ident, encode(hostile_message(mark, sender=ident))), 401, "expired-key", [mark]
    )


async def test_key_not_yet_valid(system: System, state: StatePaths, raw_for: RawFactory, bus: Bus) -> None:
    ident = "future-sender"
    new_sender(state, ident, "NSATU", ["status.update"])
    keyid, _ = signer(state, ident)
    now = utcnow().replace(microsecond=0)

    def postdate(p: Policy) -> Policy:
        s = p.senders[ident]
        key = dataclasses.replace(
            s.keys[keyid], not_before=now + timedelta(days=1), not_after=now + timedelta(days=30)
        )
        return dataclasses.replace(
            p, senders={**p.senders, ident: dataclasses.replace(s, keys={**s.keys, keyid: key})}
        )

    edit_policy(state, postdate)
    await wait_policy(system, lambda p: ident in p.senders and p.senders[ident].keys[keyid].not_before > now)
    rej = Rejection(await raw_for(ident), bus)
    mark = marker()
    await rej.check(
        seal_as(state, ident, encode(hostile_message(mark, sender=ident))), 401, "expired-key", [mark]
    )


async def test_operator_certificate_cannot_publish(raw_for: RawFactory, bus: Bus, state: StatePaths) -> None:
    mark = marker()
    rej = Rejection(await raw_for("duty-officer"), bus)
    await rej.check(
        seal_as(state, "nsatu-liaison", encode(hostile_message(mark))), 401, "unknown-key", [mark]
    )


# == 403 authorisation =========================================================================


async def test_sender_mismatch(raw_for: RawFactory, bus: Bus, state: StatePaths) -> None:
    """nsatu-tools' certificate and key, a message naming nsatu-liaison as its sender."""
    mark = marker()
    rej = Rejection(await raw_for("nsatu-tools"), bus)
    env = seal_as(state, "nsatu-tools", encode(hostile_message(mark, sender="nsatu-liaison")))
    await rej.check(env, 403, "sender-mismatch", [mark])


async def test_certificate_of_one_sender_key_of_another(
    raw_for: RawFactory, bus: Bus, state: StatePaths
) -> None:
    """nsatu-liaison's own, valid signature presented over nsatu-tools' TLS connection."""
    mark = marker()
    rej = Rejection(await raw_for("nsatu-tools"), bus)
    env = seal_as(state, "nsatu-liaison", encode(hostile_message(mark)))
    await rej.check(env, 401, "unknown-key", [mark])


async def test_originator_mismatch(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    msg = hostile_message(mark, originator="EUMAM")
    await liaison.check(seal_as(state, "nsatu-liaison", encode(msg)), 403, "originator-mismatch", [mark])


async def test_kind_not_in_senders_rights(raw_for: RawFactory, bus: Bus, state: StatePaths) -> None:
    mark = marker()
    body = {
        "course": f"Course {mark}",
        "location": "Wiesbaden",
        "start": "2027-01-10",
        "end": "2027-02-10",
        "seats": 20,
    }
    msg = message(kind="training.offer", body=body)
    await Rejection(await raw_for("nsatu-liaison"), bus).check(
        seal_as(state, "nsatu-liaison", encode(msg)), 403, "not-permitted", [mark]
    )
    # nsatu-tools may publish status.update only, even kinds its organisation may
    msg = message(
        sender="nsatu-tools",
        kind="lesson.learned",
        body={"title": "T", "domain": "D", "observation": f"O {mark}", "recommendation": "R"},
    )
    await Rejection(await raw_for("nsatu-tools"), bus).check(
        seal_as(state, "nsatu-tools", encode(msg)), 403, "not-permitted", [mark]
    )


async def test_above_organisation_clearance(raw_for: RawFactory, bus: Bus, state: StatePaths) -> None:
    mark = marker()
    label = {"policy": "NATO", "classification": "SECRET", "releasable_to": ["NSATU", "UDCG"], "caveats": []}
    msg = hostile_message(mark, sender="udcg-liaison", originator="UDCG", label=label)
    await Rejection(await raw_for("udcg-liaison"), bus).check(
        seal_as(state, "udcg-liaison", encode(msg)), 403, "above-clearance", [mark]
    )


async def test_at_organisation_clearance_is_accepted(
    raw_for: RawFactory, bus: Bus, state: StatePaths
) -> None:
    """The control for the row above: CONFIDENTIAL (UDCG's clearance) goes through."""
    label = {
        "policy": "NATO",
        "classification": "CONFIDENTIAL",
        "releasable_to": ["NSATU", "UDCG"],
        "caveats": [],
    }
    msg = message(sender="udcg-liaison", originator="UDCG", label=label)
    r = await (await raw_for("udcg-liaison")).post(seal_as(state, "udcg-liaison", encode(msg)))
    assert r.status == 202, r.raw


@pytest.mark.parametrize("policy", ["NATO", "EU"])
async def test_above_system_high(policy: str, liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    label = {**LABEL_NR, "policy": policy, "classification": "TOP SECRET"}
    msg = hostile_message(mark, label=label)
    await liaison.check(seal_as(state, "nsatu-liaison", encode(msg)), 403, "above-system-high", [mark])


# == 422 invalid and stale =====================================================================


async def test_originator_not_releasable(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    msg = hostile_message(mark, label={**LABEL_NR, "releasable_to": ["EUMAM"]})
    doc = await liaison.check(seal_as(state, "nsatu-liaison", encode(msg)), 422, "invalid", [mark])
    assert {"path": "$.label.releasable_to", "message": "must include the originator"} in doc["errors"]


@pytest.mark.parametrize(
    "releasable, path",
    [
        (["NSATU", "EUMAM"], "$.label.releasable_to"),
        (["NSATU", "NSATU"], "$.label.releasable_to"),
        (["NSATU", "ZZNOBODY"], "$.label.releasable_to[1]"),
    ],
    ids=["unsorted", "repeated", "unknown-org"],
)
async def test_label_context_rules(
    releasable: list[str], path: str, liaison: Rejection, state: StatePaths
) -> None:
    mark = marker()
    msg = hostile_message(mark, label={**LABEL_NR, "releasable_to": releasable})
    doc = await liaison.check(seal_as(state, "nsatu-liaison", encode(msg)), 422, "invalid", [mark])
    assert path in [e["path"] for e in doc["errors"]]


async def test_a_longer_freshness_window_widens_the_duplicate_window(
    system: System, state: StatePaths, bus: Bus
) -> None:
    """A reload that admits older messages (max_age_s 600 -> 3000) must keep every admissible resend
    inside JetStream's duplicate window, or a resend would be stored twice instead of answering 200
    (or 409): the admin widens the window, and never narrows it back."""
    original = load_policy(state.policy)
    want = 3000 + original.max_skew_s + 60
    assert (await bus.js.stream_info(ACCEPTED_STREAM)).config.duplicate_window < want
    edit_policy(state, lambda p: dataclasses.replace(p, max_age_s=3000))
    try:
        await wait_policy(system, lambda p: p.max_age_s == 3000)
        window = 0.0
        for _ in range(100):
            window = (await bus.js.stream_info(ACCEPTED_STREAM)).config.duplicate_window or 0.0
            if window >= want:
                break
            await asyncio.sleep(0.1)
        assert window >= want
    finally:
        write_policy(state.policy, original)
        await wait_policy(system, lambda p: p.max_age_s == original.max_age_s)
    await asyncio.sleep(1.0)  # a shorter freshness window again: the duplicate window stays wide
    assert ((await bus.js.stream_info(ACCEPTED_STREAM)).config.duplicate_window or 0.0) >= want


async def test_thousands_of_label_errors_are_capped(liaison: Rejection, state: StatePaths) -> None:
    """One error per unknown organisation would let a 200 KiB message buy a 2 MB answer: the list
    stops at MAX_ERRORS and says how many more there were."""
    mark = marker()
    orgs = sorted(f"Z{i:05d}" for i in range(20_000))
    msg = hostile_message(mark, label={**LABEL_NR, "releasable_to": ["NSATU", *orgs]})
    doc = await liaison.check(seal_as(state, "nsatu-liaison", encode(msg)), 422, "invalid", [mark])
    assert len(doc["errors"]) == MAX_ERRORS + 1
    assert doc["errors"][-1] == {"path": "$", "message": "and 19980 more errors, not listed"}


@pytest.mark.parametrize(
    "offset", [timedelta(hours=-1), timedelta(minutes=10)], ids=["hour-old", "ten-min-ahead"]
)
async def test_stale(offset: timedelta, liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    msg = hostile_message(mark, created=rfc3339(utcnow() + offset))
    await liaison.check(seal_as(state, "nsatu-liaison", encode(msg)), 422, "stale", [mark])


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(m: dict[str, Any]) -> None:
        target = m
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value

    return fn


def _drop(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def fn(m: dict[str, Any]) -> None:
        target = m
        for p in path[:-1]:
            target = target[p]
        del target[path[-1]]

    return fn


INVALID_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, list[str]]] = [
    # (id, mutation, the path the 422 names, offending tokens that must not come back)
    (
        "lowercase-classification",
        _set(("label", "classification"), "restricted"),
        "$.label.classification",
        ["restricted"],
    ),
    (
        "cyrillic-homoglyph",
        _set(("label", "classification"), "R\u0415STRICTED"),
        "$.label.classification",
        ["R\u0415STRICTED"],
    ),
    (
        "greek-homoglyph",
        _set(("label", "classification"), "\u03a4OP SECRET"),
        "$.label.classification",
        ["\u03a4OP SECRET"],
    ),
    ("lowercase-policy", _set(("label", "policy"), "nato"), "$.label.policy", ["'nato'", '"nato"']),
    ("enum-outside-set", _set(("body", "state"), "MARK"), "$.body.state", ["MARK"]),
    ("unknown-body-field", _set(("body", "MARK"), 1), "$.body", ["MARK"]),
    ("unknown-top-field", _set(("MARK",), 1), "$", ["MARK"]),
    ("unknown-label-field", _set(("label", "MARK"), 1), "$.label", ["MARK"]),
    ("missing-body-field", _drop(("body", "summary")), "$.body", []),
    ("missing-body", _drop(("body",)), "$", []),
    ("id-not-uuid", _set(("id",), "MARK"), "$.id", ["MARK"]),
    ("id-uppercase", lambda m: m.__setitem__("id", m["id"].upper()), "$.id", []),
    ("unknown-kind", _set(("kind",), "MARK.kind"), "$.kind", ["MARK"]),
    ("version-2", _set(("version",), 2), "$.version", []),
    ("created-offset", lambda m: m.__setitem__("created", m["created"][:-1] + "+00:00"), "$.created", []),
    ("created-not-a-date", _set(("created",), "2026-02-30T10:00:00Z"), "$.created", []),
    ("caveat-lowercase", _set(("label", "caveats"), ["mark"]), "$.label.caveats[0]", []),
    ("empty-releasable", _set(("label", "releasable_to"), []), "$.label.releasable_to", []),
    ("summary-too-long", _set(("body", "summary"), "MARK" + "x" * 2000), "$.body.summary", ["MARK"]),
]


@pytest.mark.parametrize("case", INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
async def test_schema_invalid(
    case: tuple[str, Callable[[dict[str, Any]], None], str, list[str]], liaison: Rejection, state: StatePaths
) -> None:
    _, mutate, path, tokens = case
    mark = marker()
    msg = hostile_message(mark)
    mutate(msg)
    payload = encode(msg).replace(b"MARK", mark.upper().encode())
    hostile = [mark, mark.upper(), *[t.replace("MARK", mark.upper()) for t in tokens]]
    doc = await liaison.check(seal_as(state, "nsatu-liaison", payload), 422, "invalid", hostile)
    assert doc["errors"], doc
    assert [e["path"] for e in doc["errors"]] == [path], doc["errors"]
    assert all(set(e) == {"path", "message"} and e["message"] for e in doc["errors"])


# == 409 / 200: the same id again ==============================================================


async def test_same_id_other_bytes_conflicts(liaison: Rejection, state: StatePaths, bus: Bus) -> None:
    msg = message()
    first = await liaison.client.post(seal_as(state, "nsatu-liaison", encode(msg)))
    assert first.status == 202, first.raw
    mark = marker()
    msg["body"] = {**msg["body"], "summary": f"Changed {mark}"}
    doc = await liaison.check(seal_as(state, "nsatu-liaison", encode(msg)), 409, "id-conflict", [mark])
    assert "errors" not in doc
    stored = await bus.get(ACCEPTED_STREAM, first.doc["seq"])
    assert mark.encode() not in stored.data


async def test_identical_resend_is_a_duplicate_stored_once(
    liaison: Rejection, state: StatePaths, bus: Bus
) -> None:
    env = seal_as(state, "nsatu-liaison", encode(message()))
    before = await bus.last_seq(ACCEPTED_STREAM)
    first = await liaison.client.post(env)
    assert first.status == 202
    for _ in range(3):
        again = await liaison.client.post(env)
        assert again.status == 200
        assert again.doc == {**first.doc, "duplicate": True}
    assert await bus.last_seq(ACCEPTED_STREAM) == before + 1


# == 413 / 415: the HTTP envelope ==============================================================


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-ndjson", "application/json; charset=latin-1", "application/jsonx"],
)
async def test_wrong_content_type(content_type: str, liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    env = seal_as(state, "nsatu-liaison", encode(hostile_message(mark)))
    await liaison.check(
        env, 415, "unsupported-media-type", [mark], content_type=content_type, digest_known=False
    )


async def test_body_over_limit(liaison: Rejection, state: StatePaths, system: System) -> None:
    limit = system.holder.current.max_body_bytes
    assert limit == 256 * 1024
    mark = marker()
    data = ENC.encode({"payloadType": PAYLOAD_TYPE, "payload": mark + "A" * limit, "signatures": []})
    await liaison.check(data, 413, "too-large", [mark], digest_known=False)


async def test_body_over_limit_chunked(liaison: Rejection, system: System) -> None:
    """Without a Content-Length the limit is enforced while reading."""
    limit = system.holder.current.max_body_bytes
    mark = marker()

    async def chunks() -> AsyncIterator[bytes]:
        yield mark.encode()
        for _ in range(limit // 8192 + 2):
            yield b"A" * 8192

    await liaison.check(chunks(), 413, "too-large", [mark], digest_known=False)


async def test_body_at_limit_is_read(liaison: Rejection, system: System) -> None:
    """The control: exactly the limit is read and judged (here: not an envelope), not refused as too large."""
    limit = system.holder.current.max_body_bytes
    data = b'{"x":"' + b"A" * (limit - 8) + b'"}'
    assert len(data) == limit
    await liaison.check(data, 400, "malformed")


# == batches ===================================================================================


async def test_batch_with_a_broken_line(liaison: Rejection, state: StatePaths, bus: Bus) -> None:
    mark = marker()
    good = [seal_as(state, "nsatu-liaison", encode(message())) for _ in range(3)]
    forged = env_edit(
        seal_as(state, "nsatu-liaison", encode(hostile_message(mark))),
        lambda d: d["signatures"][0].__setitem__("keyid", "nsatu-liaison:nope"),
    )
    lines = [good[0], f"broken {mark}".encode(), good[1], forged, good[2], good[0]]
    before = await bus.last_seq(ACCEPTED_STREAM)
    reply = await liaison.client.batch(lines)
    assert reply.status == 200, reply.raw
    assert mark.encode() not in reply.raw
    results = reply.doc["results"]
    assert len(results) == len(lines)
    # lines 0 and 5 are the same envelope: one stores it, the other is its duplicate
    first, again = sorted((results[0], results[5]), key=lambda r: r.get("duplicate", False))
    assert again == {**first, "duplicate": True}
    stored = [first, results[2], results[4]]
    assert {r["seq"] for r in stored} == {before + 1, before + 2, before + 3}
    for r, env in zip(stored, good, strict=True):
        assert set(r) == {"id", "seq"}
        assert r["id"] == msgspec.json.decode(base64.b64decode(msgspec.json.decode(env)["payload"]))["id"]
        assert (await bus.get(ACCEPTED_STREAM, r["seq"])).data == env
    for i, name in ((1, "malformed"), (3, "unknown-key")):
        p = results[i]["problem"]
        assert set(results[i]) == {"problem"}
        assert p["type"] == f"urn:coord:problem:{name}" and p["title"] and p["detail"]
    assert await bus.last_seq(ACCEPTED_STREAM) == before + 3


async def test_batch_over_1000_lines(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    env = seal_as(state, "nsatu-liaison", encode(hostile_message(mark)))
    data = b"\n".join([env] + [b"{}"] * 1000) + b"\n"
    await liaison.check(
        data,
        413,
        "too-large",
        [mark],
        path="/v1/messages/batch",
        content_type="application/x-ndjson",
        digest_known=False,
    )


async def test_batch_over_4_mib(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    line = ENC.encode({"pad": mark + "A" * (1 << 20)})
    data = io.BytesIO(b"\n".join([line] * 5) + b"\n")
    await liaison.check(
        data,
        413,
        "too-large",
        [mark],
        path="/v1/messages/batch",
        content_type="application/x-ndjson",
        digest_known=False,
    )


async def test_batch_of_1000_lines_is_judged(liaison: Rejection) -> None:
    """The control: 1000 lines is within the limit (each judged alone: here each malformed)."""
    reply = await liaison.client.batch([b"{}"] * 1000)
    assert reply.status == 200, reply.raw[:300]
    results = reply.doc["results"]
    assert len(results) == 1000
    assert all(r["problem"]["type"] == "urn:coord:problem:malformed" for r in results)


async def test_batch_wrong_content_type(liaison: Rejection, state: StatePaths) -> None:
    mark = marker()
    env = seal_as(state, "nsatu-liaison", encode(hostile_message(mark)))
    await liaison.check(
        env + b"\n", 415, "unsupported-media-type", [mark], path="/v1/messages/batch", digest_known=False
    )


# == 429 =======================================================================================


async def test_rate_limited(system: System, state: StatePaths, raw_for: RawFactory, bus: Bus) -> None:
    ident = "rate-sender"
    new_sender(state, ident, "NSATU", ["status.update"])
    original_burst = system.holder.current.rate_burst

    def limit(p: Policy) -> Policy:
        s = dataclasses.replace(p.senders[ident], rate_per_s=0.5)
        return dataclasses.replace(p, rate_burst=3, senders={**p.senders, ident: s})

    edit_policy(state, limit)
    try:
        await wait_policy(
            system, lambda p: p.rate_burst == 3 and ident in p.senders and p.senders[ident].rate_per_s == 0.5
        )
        client = await raw_for(ident)
        for _ in range(3):
            r = await client.post(seal_as(state, ident, encode(message(sender=ident))))
            assert r.status == 202, r.raw
        mark = marker()
        audit_before = await bus.last_seq(AUDIT_STREAM)
        before = await bus.last_seq(ACCEPTED_STREAM)
        reply = await client.post(seal_as(state, ident, encode(hostile_message(mark, sender=ident))))
        assert_problem(reply, 429, "rate-limited", [mark])
        retry = int(reply.headers["Retry-After"])
        assert 1 <= retry <= 3
        assert await bus.last_seq(ACCEPTED_STREAM) == before
        await wait_audited(
            bus,
            audit_before + 1,
            lambda r: r["event"] == "rejected" and r["actor"] == ident and r["reason"] == "rate-limited",
        )
        # a batch larger than the burst can never pass: told to come back much later
        big = await client.batch([b"{}"] * 4)
        assert_problem(big, 429, "rate-limited")
        # another sender is not limited by this one
        other = await (await raw_for("nsatu-liaison")).post(
            seal_as(state, "nsatu-liaison", encode(message()))
        )
        assert other.status == 202
    finally:
        edit_policy(state, lambda p: dataclasses.replace(p, rate_burst=original_burst))
        await wait_policy(system, lambda p: p.rate_burst == original_burst)


async def _raw_batch(client: RawClient, body: bytes) -> RawReply:
    return await client.post(body, path="/v1/messages/batch", content_type="application/x-ndjson")


async def test_batch_line_forms(liaison: Rejection, state: StatePaths, bus: Bus) -> None:
    """CRLF line ends and a missing final newline are accepted; a blank line in between is a
    `malformed` result; a line over the size limit is a `too-large` result; the same id with other
    bytes is an `id-conflict` result; each line is judged alone and only the sound ones are stored."""
    first = message()
    good = seal_as(state, "nsatu-liaison", encode(first))
    other = seal_as(state, "nsatu-liaison", encode({**first, "body": {**first["body"], "summary": "Other."}}))
    crlf = seal_as(state, "nsatu-liaison", encode(message()))
    last = seal_as(state, "nsatu-liaison", encode(message()))
    huge = b'{"pad": "' + b"x" * (load_policy(state.policy).max_body_bytes + 1) + b'"}'
    before = await bus.last_seq(ACCEPTED_STREAM)
    body = b"\n".join([good, crlf + b"\r", b"", huge, other, last])  # no final newline
    reply = await _raw_batch(liaison.client, body)
    assert reply.status == 200, reply.raw[:300]
    results = reply.doc["results"]
    assert len(results) == 6
    assert (
        set(results[0]) == {"id", "seq"}
        and set(results[1]) == {"id", "seq"}
        and set(results[5]) == {"id", "seq"}
    )
    assert results[2]["problem"]["type"] == "urn:coord:problem:malformed"
    assert results[3]["problem"]["type"] == "urn:coord:problem:too-large"
    assert results[4]["problem"]["type"] == "urn:coord:problem:id-conflict"
    assert await bus.last_seq(ACCEPTED_STREAM) == before + 3


async def test_empty_batch_is_malformed(liaison: Rejection, bus: Bus) -> None:
    """No line at all is 400 `malformed` (a body of one newline is one blank line: a result)."""
    before = await bus.last_seq(ACCEPTED_STREAM)
    assert_problem(await _raw_batch(liaison.client, b""), 400, "malformed")
    blank = await _raw_batch(liaison.client, b"\n")
    assert blank.status == 200 and blank.doc["results"][0]["problem"]["type"] == "urn:coord:problem:malformed"
    assert await bus.last_seq(ACCEPTED_STREAM) == before


async def test_batch_needing_more_tokens_than_remain_is_refused_whole(
    system: System, state: StatePaths, raw_for: RawFactory, bus: Bus
) -> None:
    """Burst 5: a batch of 3 passes, the next batch of 3 (within the burst, over what is left) is
    refused whole with 429 and Retry-After, audited, and nothing of it is stored."""
    ident = "batch-rate-sender"
    new_sender(state, ident, "NSATU", ["status.update"])
    original_burst = system.holder.current.rate_burst

    def limit(p: Policy) -> Policy:
        s = dataclasses.replace(p.senders[ident], rate_per_s=0.2)
        return dataclasses.replace(p, rate_burst=5, senders={**p.senders, ident: s})

    edit_policy(state, limit)
    try:
        await wait_policy(system, lambda p: p.rate_burst == 5 and ident in p.senders)
        client = await raw_for(ident)
        three = [seal_as(state, ident, encode(message(sender=ident))) for _ in range(3)]
        ok = await client.batch(three)
        assert ok.status == 200 and all("seq" in r for r in ok.doc["results"]), ok.raw[:300]
        before, audit_before = await bus.last_seq(ACCEPTED_STREAM), await bus.last_seq(AUDIT_STREAM)
        again = await client.batch([seal_as(state, ident, encode(message(sender=ident))) for _ in range(3)])
        assert_problem(again, 429, "rate-limited")
        assert 1 <= int(again.headers["Retry-After"]) <= 10
        assert await bus.last_seq(ACCEPTED_STREAM) == before
        await wait_audited(
            bus,
            audit_before + 1,
            lambda r: r["event"] == "rejected" and r["actor"] == ident and r["reason"] == "rate-limited",
        )
    finally:
        edit_policy(state, lambda p: dataclasses.replace(p, rate_burst=original_burst))
        await wait_policy(system, lambda p: p.rate_burst == original_burst)
