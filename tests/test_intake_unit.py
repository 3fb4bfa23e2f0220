"""`Intake.check` as a pure function: an in-memory policy, fixed clock, no network.

Mostly the order of the checks (a message failing two checks is refused by the earlier one, as
intake's docstring lists them), and the sanitising of schema errors (never an echo of content).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.client import seal
from broker.errors import PROBLEMS, Refused
from broker.gateway.store import subject_of
from broker.nats.names import accepted_subject
from broker.policy.model import Operator, Organisation, Policy, Sender, SigningKey
from broker.rules.intake import Admitted, Intake, Partial, has_duplicate_keys, parse_created, schema_error
from schemas.clearance import Clearance
from schemas.kinds import KINDS
from schemas.message import MESSAGE_DECODER, PAYLOAD_TYPE

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
CREATED = "2026-11-26T12:00:00Z"
ENC = msgspec.json.Encoder()
LABEL = {"policy": "NATO", "classification": "RESTRICTED", "releasable_to": ["EUMAM", "NSATU"], "caveats": []}
BODY = {"topic": "Hub", "state": "GREEN", "summary": "Nominal."}
MARK = "qzxMARKERxzq"


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass
class World:
    """Senders with keys in every state, and the policy that registers them."""

    keys: dict[str, tuple[str, Ed25519PrivateKey]] = field(default_factory=dict)
    policy: Policy = field(init=False)

    def __post_init__(self) -> None:
        day = timedelta(days=1)
        specs = {
            # sender: (organisation, kinds, not_before, not_after, revoked_at)
            "nsatu-liaison": ("NSATU", {"status.update", "delivery.status"}, NOW - day, NOW + day, None),
            "udcg-liaison": ("UDCG", {"status.update"}, NOW - day, NOW + day, None),
            "eumam-liaison": ("EUMAM", {"status.update", "training.offer"}, NOW - day, NOW + day, None),
            "old-sender": ("NSATU", {"status.update"}, NOW - 30 * day, NOW - day, None),
            "early-sender": ("NSATU", {"status.update"}, NOW + day, NOW + 30 * day, None),
            "gone-sender": ("NSATU", {"status.update"}, NOW - day, NOW + day, NOW - timedelta(seconds=1)),
            "gone-old-sender": ("NSATU", {"status.update"}, NOW - 30 * day, NOW - day, NOW - 2 * day),
        }
        senders = {}
        for ident, (org, kinds, nb, na, rv) in specs.items():
            key = Ed25519PrivateKey.generate()
            keyid = f"{ident}:k1"
            self.keys[ident] = (keyid, key)
            sk = SigningKey(keyid, raw_public(key), nb, na, rv)
            senders[ident] = Sender(ident, org, frozenset(kinds), MappingProxyType({keyid: sk}))
        orgs = {
            "NSATU": Organisation("NSATU", Clearance.parse("NATO:SECRET"), frozenset(KINDS)),
            "EUMAM": Organisation("EUMAM", Clearance.parse("EU:SECRET"), frozenset(KINDS)),
            "UDCG": Organisation("UDCG", Clearance.parse("NATO:CONFIDENTIAL"), frozenset(KINDS)),
        }
        self.policy = Policy(
            name="unit",
            system_high=Clearance.parse("NATO:SECRET"),
            max_age_s=600.0,
            max_skew_s=120.0,
            organisations=MappingProxyType(orgs),
            senders=MappingProxyType(senders),
            operators=MappingProxyType(
                {"duty-officer": Operator("duty-officer", "NSATU", Clearance.parse("NATO:SECRET"))}
            ),
            broker_keys=MappingProxyType({}),
        )

    def msg(self, sender: str = "nsatu-liaison", **over: Any) -> dict[str, Any]:
        org = self.policy.senders[sender].organisation if sender in self.policy.senders else "NSATU"
        m: dict[str, Any] = {
            "id": "01890a5d-ac96-774b-bcce-b302099a8057",
            "kind": "status.update",
            "version": 1,
            "originator": org,
            "sender": sender,
            "created": CREATED,
            "label": {**LABEL, "releasable_to": sorted({org, "NSATU"})},
            "body": dict(BODY),
        }
        m.update(over)
        return m

    def seal(
        self,
        payload: bytes | dict[str, Any],
        signer: str = "nsatu-liaison",
        *,
        keyid: str | None = None,
        key: Ed25519PrivateKey | None = None,
        payload_type: str = PAYLOAD_TYPE,
    ) -> bytes:
        own_keyid, own_key = self.keys[signer]
        data = payload if isinstance(payload, bytes) else ENC.encode(payload)
        return seal(data, keyid or own_keyid, key or own_key, payload_type)

    def check(self, raw: bytes, client: str = "nsatu-liaison", now: datetime = NOW) -> Admitted:
        return Intake().check(raw, client, self.policy, now)


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def refused(world: World, raw: bytes, client: str = "nsatu-liaison", now: datetime = NOW) -> Refused:
    with pytest.raises(Refused) as info:
        world.check(raw, client, now)
    r = info.value
    assert r.name in PROBLEMS
    assert r.digest == hashlib.sha256(raw).hexdigest()
    assert MARK not in json.dumps(r.to_dict()), "the problem echoes message content"
    return r


def env_edit(env: bytes, fn: Callable[[dict[str, Any]], None]) -> bytes:
    doc: dict[str, Any] = json.loads(env)
    fn(doc)
    return json.dumps(doc).encode()


def marked(world: World, sender: str = "nsatu-liaison", **over: Any) -> dict[str, Any]:
    m = world.msg(sender, **over)
    m["body"] = {**m["body"], "summary": f"content {MARK}"} if "summary" in m["body"] else m["body"]
    return m


# -- the straight path -----------------------------------------------------------------------------


def test_admitted(world: World) -> None:
    env = world.seal(world.msg())
    a = world.check(env)
    assert a.envelope == env
    assert a.digest == hashlib.sha256(env).hexdigest()
    assert (a.sender, a.keyid) == ("nsatu-liaison", "nsatu-liaison:k1")
    assert a.message.id == "01890a5d-ac96-774b-bcce-b302099a8057"
    assert subject_of(a) == accepted_subject(1, "NSATU", "status.update", a.message.id)
    assert subject_of(a) == "coord.msg.1.NSATU.status.update.01890a5d-ac96-774b-bcce-b302099a8057"


def test_base64_either_alphabet_with_or_without_padding(world: World) -> None:
    env = world.seal(world.msg())

    def urlsafe(d: dict[str, Any]) -> None:
        d["payload"] = base64.urlsafe_b64encode(base64.b64decode(d["payload"])).decode().rstrip("=")
        s = d["signatures"][0]
        s["sig"] = base64.urlsafe_b64encode(base64.b64decode(s["sig"])).decode().rstrip("=")

    assert world.check(env_edit(env, urlsafe)).message.id == world.msg()["id"]


# -- the order of the checks: each case fails two checks, and the earlier one is named ----------

Case = Callable[[World], tuple[bytes, str]]  # -> (envelope bytes, client identity)


def _two_sigs_bad_type(w: World) -> tuple[bytes, str]:
    env = w.seal(marked(w), payload_type="text/plain")
    return env_edit(env, lambda d: d.__setitem__("signatures", d["signatures"] * 2)), "nsatu-liaison"


def _bad_type_bad_b64(w: World) -> tuple[bytes, str]:
    env = w.seal(marked(w), payload_type="text/plain")
    return env_edit(env, lambda d: d.__setitem__("payload", "***")), "nsatu-liaison"


def _bad_type_unknown_key(w: World) -> tuple[bytes, str]:
    return w.seal(marked(w), keyid="nsatu-liaison:nope", payload_type="text/plain"), "nsatu-liaison"


def _bad_b64_unknown_key(w: World) -> tuple[bytes, str]:
    env = w.seal(marked(w), keyid="nsatu-liaison:nope")
    return env_edit(env, lambda d: d.__setitem__("payload", "%%%")), "nsatu-liaison"


def _unknown_key_bad_sig(w: World) -> tuple[bytes, str]:
    return w.seal(marked(w), keyid="nsatu-liaison:nope", key=Ed25519PrivateKey.generate()), "nsatu-liaison"


def _other_owner_key(w: World) -> tuple[bytes, str]:
    """A valid signature by udcg-liaison, presented by nsatu-liaison's certificate."""
    return w.seal(marked(w, "udcg-liaison"), "udcg-liaison"), "nsatu-liaison"


def _operator_client(w: World) -> tuple[bytes, str]:
    return w.seal(marked(w)), "duty-officer"


def _unknown_client(w: World) -> tuple[bytes, str]:
    return w.seal(marked(w)), "nobody-here"


def _keyid_without_colon(w: World) -> tuple[bytes, str]:
    return w.seal(marked(w), keyid="nsatu-liaison"), "nsatu-liaison"


def _revoked_bad_sig(w: World) -> tuple[bytes, str]:
    return w.seal(marked(w, "gone-sender"), "gone-sender", key=Ed25519PrivateKey.generate()), "gone-sender"


def _expired_bad_sig(w: World) -> tuple[bytes, str]:
    return w.seal(marked(w, "old-sender"), "old-sender", key=Ed25519PrivateKey.generate()), "old-sender"


def _not_yet_valid(w: World) -> tuple[bytes, str]:
    return w.seal(marked(w, "early-sender"), "early-sender"), "early-sender"


def _revoked_and_expired(w: World) -> tuple[bytes, str]:
    return w.seal(marked(w, "gone-old-sender"), "gone-old-sender"), "gone-old-sender"


def _bad_sig_bad_utf8(w: World) -> tuple[bytes, str]:
    payload = ENC.encode(marked(w)).replace(b"content", b"\xff\xfe")
    return w.seal(payload, key=Ed25519PrivateKey.generate()), "nsatu-liaison"


def _short_sig(w: World) -> tuple[bytes, str]:
    env = w.seal(marked(w))
    return env_edit(env, lambda d: d["signatures"][0].__setitem__("sig", "AAAA")), "nsatu-liaison"


def _bad_utf8_schema(w: World) -> tuple[bytes, str]:
    payload = ENC.encode(marked(w, version=7)).replace(b"content", b"\xc3\x28")
    return w.seal(payload), "nsatu-liaison"


def _dup_and_schema(w: World) -> tuple[bytes, str]:
    text = ENC.encode(marked(w, version=7)).decode()
    return w.seal(text[:-1].encode() + b',"version":1}'), "nsatu-liaison"


def _dup_escaped_key(w: World) -> tuple[bytes, str]:
    """`"\\u0073ender"` is `"sender"`: the same key, spelled differently."""
    text = ENC.encode(marked(w)).decode()
    return w.seal((text[:-1] + ',"\\u0073ender":"udcg-liaison"}').encode()), "nsatu-liaison"


def _dup_in_label(w: World) -> tuple[bytes, str]:
    """The label's caveats twice: no caveat for one reader, one for another."""
    text = ENC.encode(marked(w)).decode()
    return w.seal(text.replace('"caveats":[]', '"caveats":[],"caveats":["X1"]', 1).encode()), "nsatu-liaison"


def _deep(w: World) -> tuple[bytes, str]:
    return w.seal(b'{"a":' * 5000 + b"1" + b"}" * 5000), "nsatu-liaison"


def _schema_and_sender(w: World) -> tuple[bytes, str]:
    return w.seal(marked(w, sender="udcg-liaison", version=2)), "nsatu-liaison"


def _sender_and_originator(w: World) -> tuple[bytes, str]:
    return w.seal(marked(w, sender="udcg-liaison", originator="EUMAM")), "nsatu-liaison"


def _originator_and_kind(w: World) -> tuple[bytes, str]:
    m = marked(w, originator="EUMAM", kind="lesson.learned")
    m["body"] = {"title": "t", "domain": "d", "observation": f"o {MARK}", "recommendation": "r"}
    return w.seal(m), "nsatu-liaison"


def _kind_and_label(w: World) -> tuple[bytes, str]:
    m = marked(w, kind="lesson.learned", label={**LABEL, "releasable_to": ["EUMAM"]})
    m["body"] = {"title": "t", "domain": "d", "observation": f"o {MARK}", "recommendation": "r"}
    return w.seal(m), "nsatu-liaison"


def _label_and_system_high(w: World) -> tuple[bytes, str]:
    m = marked(w, label={**LABEL, "classification": "TOP SECRET", "releasable_to": ["NSATU", "EUMAM"]})
    return w.seal(m), "nsatu-liaison"


def _system_high_and_clearance(w: World) -> tuple[bytes, str]:
    m = marked(w, "udcg-liaison", label={**LABEL, "classification": "TOP SECRET", "releasable_to": ["UDCG"]})
    return w.seal(m, "udcg-liaison"), "udcg-liaison"


def _clearance_and_stale(w: World) -> tuple[bytes, str]:
    m = marked(
        w,
        "udcg-liaison",
        created="2026-11-26T10:00:00Z",
        label={**LABEL, "classification": "SECRET", "releasable_to": ["UDCG"]},
    )
    return w.seal(m, "udcg-liaison"), "udcg-liaison"


def _eu_label_above_nato_clearance(w: World) -> tuple[bytes, str]:
    """Equivalence: EU SECRET is above UDCG's NATO CONFIDENTIAL."""
    m = marked(
        w,
        "udcg-liaison",
        label={**LABEL, "policy": "EU", "classification": "SECRET", "releasable_to": ["UDCG"]},
    )
    return w.seal(m, "udcg-liaison"), "udcg-liaison"


def _not_a_date(w: World) -> tuple[bytes, str]:
    return w.seal(marked(w, created="2026-02-30T12:00:00Z")), "nsatu-liaison"


ORDER: list[tuple[str, Case, str]] = [
    ("signature count before payloadType", _two_sigs_bad_type, "malformed"),
    ("base64 (step 1) before payloadType (step 2)", _bad_type_bad_b64, "malformed"),
    ("payloadType before key", _bad_type_unknown_key, "unsupported-media-type"),
    ("base64 before key", _bad_b64_unknown_key, "malformed"),
    ("key before signature", _unknown_key_bad_sig, "unknown-key"),
    ("key of another owner", _other_owner_key, "unknown-key"),
    ("an operator is no sender", _operator_client, "unknown-key"),
    ("an unknown client", _unknown_client, "unknown-key"),
    ("key id without a name", _keyid_without_colon, "unknown-key"),
    ("revoked before signature", _revoked_bad_sig, "revoked-key"),
    ("expired before signature", _expired_bad_sig, "expired-key"),
    ("not yet valid", _not_yet_valid, "expired-key"),
    ("revoked before expired", _revoked_and_expired, "revoked-key"),
    ("signature before UTF-8", _bad_sig_bad_utf8, "bad-signature"),
    ("signature of the wrong length", _short_sig, "bad-signature"),
    ("UTF-8 before schema", _bad_utf8_schema, "malformed"),
    ("duplicate key before schema", _dup_and_schema, "malformed"),
    ("duplicate key spelled with an escape", _dup_escaped_key, "malformed"),
    ("duplicate key in the label", _dup_in_label, "malformed"),
    ("nesting too deep", _deep, "malformed"),
    ("schema before sender", _schema_and_sender, "invalid"),
    ("sender before originator", _sender_and_originator, "sender-mismatch"),
    ("originator before kind", _originator_and_kind, "originator-mismatch"),
    ("kind before label", _kind_and_label, "not-permitted"),
    ("label before system high", _label_and_system_high, "invalid"),
    ("system high before clearance", _system_high_and_clearance, "above-system-high"),
    ("clearance before freshness", _clearance_and_stale, "above-clearance"),
    ("EU label against a NATO clearance", _eu_label_above_nato_clearance, "above-clearance"),
    ("a date that does not exist", _not_a_date, "invalid"),
]


@pytest.mark.parametrize("case", ORDER, ids=[c[0] for c in ORDER])
def test_check_order(case: tuple[str, Case, str], world: World) -> None:
    _, build, expected = case
    raw, client = build(world)
    assert refused(world, raw, client).name == expected


def test_partial_is_empty_until_the_signature_and_schema_pass(world: World) -> None:
    """Nothing a message claims reaches the audit record unless it is signed and well-formed."""
    for build in (_unknown_key_bad_sig, _bad_sig_bad_utf8, _dup_and_schema, _schema_and_sender):
        raw, client = build(world)
        assert refused(world, raw, client).partial == Partial()
    raw, client = _sender_and_originator(world)
    p = refused(world, raw, client).partial
    assert (p.id, p.kind, p.originator) == ("01890a5d-ac96-774b-bcce-b302099a8057", "status.update", "EUMAM")
    assert p.label is not None and p.label.classification == "RESTRICTED"


# -- freshness ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "created, ok",
    [
        ("2026-11-26T11:50:00Z", True),  # exactly max_age before
        ("2026-11-26T11:49:59.999999Z", False),
        ("2026-11-26T11:49:59Z", False),
        ("2026-11-26T12:02:00Z", True),  # exactly max_skew after
        ("2026-11-26T12:02:00.000001Z", False),
        ("2026-11-26T12:02:00.0000001Z", True),  # beyond microseconds: truncated
        ("2026-11-26T13:00:00Z", False),
        ("2026-11-26T11:00:00Z", False),
    ],
)
def test_freshness_window(created: str, ok: bool, world: World) -> None:
    env = world.seal(world.msg(created=created))
    if ok:
        assert world.check(env).message.created == created
    else:
        assert refused(world, env).name == "stale"


def test_key_validity_is_judged_at_receipt_not_at_created(world: World) -> None:
    """A message that claims to be written before the revocation is still refused after it."""
    env = world.seal(world.msg("gone-sender", created="2026-11-26T11:55:00Z"), "gone-sender")
    assert refused(world, env, "gone-sender").name == "revoked-key"
    # and one second before the revocation it was fine
    assert world.check(env, "gone-sender", NOW - timedelta(seconds=2)).sender == "gone-sender"


def test_parse_created() -> None:
    assert parse_created("2026-11-26T12:00:00Z") == NOW
    assert parse_created("2026-11-26T12:00:00.5Z") == NOW + timedelta(milliseconds=500)
    assert parse_created("2026-11-26T12:00:00.123456789Z") == NOW + timedelta(microseconds=123456)
    with pytest.raises(ValueError):
        parse_created("2026-13-01T00:00:00Z")


# -- duplicate keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, dup",
    [
        ('{"a":1,"b":2}', False),
        ('{"a":1,"a":1}', True),
        ('{"a":{"b":1,"b":2}}', True),
        ('{"a":[{"b":1},{"b":2}]}', False),
        ('{"a":[{"b":1,"b":2}]}', True),
        ('{"a":1,"\\u0061":2}', True),
        ('{"a":{"b":1},"c":{"b":2}}', False),
        ("not json", False),
    ],
)
def test_has_duplicate_keys(text: str, dup: bool) -> None:
    assert has_duplicate_keys(text) is dup


# -- schema errors never echo content --------------------------------------------------------------


def _validation_error(payload: bytes) -> msgspec.ValidationError:
    with pytest.raises(msgspec.ValidationError) as info:
        MESSAGE_DECODER.decode(payload)
    return info.value


@pytest.mark.parametrize(
    "mutate, path",
    [
        (lambda m: m["body"].__setitem__("state", MARK), "$.body.state"),
        (lambda m: m["label"].__setitem__("classification", MARK), "$.label.classification"),
        (lambda m: m["label"].__setitem__("policy", MARK), "$.label.policy"),
        (lambda m: m.__setitem__("kind", MARK), "$.kind"),
        (lambda m: m.__setitem__("version", 700913), "$.version"),
        (lambda m: m["body"].__setitem__(MARK, 1), "$.body"),
        (lambda m: m.__setitem__(MARK, 1), "$"),
        (lambda m: m["label"].__setitem__(MARK, 1), "$.label"),
        (lambda m: m.__setitem__("id", MARK), "$.id"),
        (lambda m: m["body"].__setitem__("summary", MARK * 300), "$.body.summary"),
        (lambda m: m["label"].__setitem__("caveats", [MARK]), "$.label.caveats[0]"),
    ],
    ids=[
        "enum",
        "classification",
        "policy",
        "tag",
        "int-literal",
        "unknown-body",
        "unknown-top",
        "unknown-label",
        "pattern",
        "length",
        "caveat",
    ],
)
def test_schema_error_never_echoes(mutate: Callable[[dict[str, Any]], None], path: str, world: World) -> None:
    m = world.msg()
    mutate(m)
    err = schema_error(_validation_error(ENC.encode(m)))
    assert err["path"] == path
    assert err["message"]
    text = json.dumps(err)
    assert MARK not in text and "700913" not in text
    # and the whole refusal says the same, nothing more
    r = refused(world, world.seal(m))
    assert r.name == "invalid" and r.errors == [err]
    assert "700913" not in json.dumps(r.to_dict())


@pytest.mark.parametrize(
    "message, expected",
    [
        (
            "Invalid enum value 'SECRET_DATA' - at `$.a`",
            {"path": "$.a", "message": "value is not one of the allowed values"},
        ),
        (
            "Invalid enum value 42 - at `$.a`",
            {"path": "$.a", "message": "value is not one of the allowed values"},
        ),
        (
            "Invalid value 'x.y' - at `$.kind`",
            {"path": "$.kind", "message": "value is not one of the allowed values"},
        ),
        (
            "Object contains unknown field `SECRET_DATA` - at `$.body`",
            {"path": "$.body", "message": "unknown field (unknown fields are refused at every level)"},
        ),
        (
            "Object contains unknown field `a - at `$.b`` - at `$.body`",
            {"path": "$.body", "message": "unknown field (unknown fields are refused at every level)"},
        ),
        (
            "Object missing required field `body`",
            {"path": "$", "message": "Object missing required field `body`"},
        ),
        (
            "Expected `str`, got `int` - at `$.x[3]`",
            {"path": "$.x[3]", "message": "Expected `str`, got `int`"},
        ),
    ],
)
def test_schema_error_forms(message: str, expected: dict[str, str]) -> None:
    assert schema_error(msgspec.ValidationError(message)) == expected


WORLD_FOR_PROPS = World()


@settings(max_examples=200, deadline=None)
@given(
    st.text(min_size=1, max_size=30), st.sampled_from(["state", "classification", "policy", "kind", "field"])
)
def test_schema_error_never_echoes_any_value(value: str, where: str) -> None:
    hostile = f"QZ{value}ZQ"
    msg = WORLD_FOR_PROPS.msg()
    if where == "state":
        msg["body"]["state"] = hostile
    elif where == "field":
        msg["body"][hostile] = 1
    elif where == "kind":
        msg["kind"] = hostile
    else:
        msg["label"][where] = hostile
    with pytest.raises(msgspec.ValidationError) as info:
        MESSAGE_DECODER.decode(ENC.encode(msg))
    out = schema_error(info.value)
    assert hostile not in json.dumps(out, ensure_ascii=False)
    assert out["message"] and out["path"].startswith("$")
