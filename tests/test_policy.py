"""broker.policy.model: the TOML loader (fail closed, with file and line), the renderer and the watcher."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from broker.dsse import is_valid_public_key
from broker.errors import PolicyError
from broker.policy.holder import PolicyHolder
from broker.policy.loader import load_policy, parse_policy
from broker.policy.model import Operator, Organisation, Policy, Sender, SigningKey
from broker.policy.render import render_policy, write_policy
from schemas.clearance import CLASSIFICATIONS, Clearance
from schemas.kinds import KINDS


def raw_public(seed: bytes) -> bytes:
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


BK = b64(raw_public(b"broker"))
SK = b64(raw_public(b"nsatu-liaison"))
SK2 = b64(raw_public(b"eumam-liaison"))

GOOD = f"""# a test policy
[broker]
name = "local"
system_high = "NATO:SECRET"
max_age_s = 600
max_skew_s = 120
rate_per_s = 1000
rate_burst = 2000
max_body_bytes = 262144

[broker.keys."broker:local"]
public_key = "{BK}"
not_before = 2026-11-26T00:00:00Z
not_after = 2027-11-26T00:00:00Z

[organisations.NSATU]
clearance = "NATO:SECRET"
need_to_know = [
    "status.update",  # the commonest
    "capability.pledge",
]

[organisations.EUMAM]
clearance = "EU:SECRET"
need_to_know = ["status.update", "training.offer"]

[senders.nsatu-liaison]
organisation = "NSATU"
publishes = ["status.update", "delivery.status"]
rate_per_s = 50

[senders.nsatu-liaison.keys."nsatu-liaison:2026-11"]
public_key = "{SK}"
not_before = 2026-11-26T00:00:00Z
not_after = 2027-11-26T00:00:00Z

[operators.duty-officer]
organisation = "NSATU"
clearance = "NATO:SECRET:ALPHA+BRAVO"
"""

SENDER_KEY_BLOCK = f"""public_key = "{SK}"
not_before = 2026-11-26T00:00:00Z
not_after = 2027-11-26T00:00:00Z"""


def line_of(text: str, marker: str) -> int:
    assert text.count(marker) == 1, marker
    return text[: text.index(marker)].count("\n") + 1


def test_good_policy_loads(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD, encoding="utf-8")
    p = load_policy(path)
    assert p.source == str(path)
    assert p.name == "local" and p.broker_keyid == "broker:local"
    assert p.system_high == Clearance("NATO", "SECRET")
    assert (p.max_age_s, p.max_skew_s, p.rate_per_s, p.rate_burst, p.max_body_bytes) == (
        600,
        120,
        1000,
        2000,
        262144,
    )
    assert p.organisations["NSATU"].need_to_know == {"status.update", "capability.pledge"}
    assert p.organisations["EUMAM"].clearance == Clearance("EU", "SECRET")
    s = p.senders["nsatu-liaison"]
    assert s.organisation == "NSATU" and s.publishes == {"status.update", "delivery.status"}
    assert s.rate_per_s == 50
    key = s.keys["nsatu-liaison:2026-11"]
    assert key.public_key == base64.b64decode(SK)
    assert key.not_before == datetime(2026, 11, 26, tzinfo=UTC)
    assert key.problem_at(datetime(2027, 1, 1, tzinfo=UTC)) is None
    assert p.operators["duty-officer"].clearance == Clearance("NATO", "SECRET", frozenset({"ALPHA", "BRAVO"}))
    assert p.broker_keys["broker:local"].public_key == base64.b64decode(BK)


def test_optional_parts_take_defaults() -> None:
    text = GOOD.replace("rate_per_s = 1000\nrate_burst = 2000\nmax_body_bytes = 262144\n", "")
    text = text[: text.index("[senders.")]
    p = parse_policy(text)
    assert (p.rate_per_s, p.rate_burst, p.max_body_bytes) == (1000.0, 2000, 256 * 1024)
    assert dict(p.senders) == {} and dict(p.operators) == {}


def test_policy_is_immutable() -> None:
    p = parse_policy(GOOD)
    with pytest.raises(TypeError):
        p.senders["x"] = p.senders["nsatu-liaison"]  # type: ignore[index]


def test_offset_times_are_normalised_to_utc() -> None:
    text = GOOD.replace(
        SENDER_KEY_BLOCK,
        SENDER_KEY_BLOCK.replace(
            "not_before = 2026-11-26T00:00:00Z", "not_before = 2026-11-26T02:00:00+02:00"
        ),
    )
    key = parse_policy(text).senders["nsatu-liaison"].keys["nsatu-liaison:2026-11"]
    assert key.not_before == datetime(2026, 11, 26, tzinfo=UTC)
    assert key.not_before.utcoffset() == timedelta(0)


SHORT = b64(bytes(31))
NOT_A_POINT = b64(b"\xff" * 32)  # y >= p: not a canonical Ed25519 encoding
SMALL_ORDER = b64(b"\x01" + bytes(31))  # the identity point

# (id, old text, new text, marker on the offending line in the new text, words of the reason)
HOSTILE: list[tuple[str, str, str, str, str]] = [
    ("syntax", "max_age_s = 600", "max_age_s = = 600", "max_age_s = =", "not valid TOML"),
    (
        "duplicate-toml-key",
        'name = "local"',
        'name = "local"\nname = "other"',
        'name = "other"',
        "not valid TOML",
    ),
    ("unknown-key", "max_skew_s = 120", "max_skew_s = 120\nmax_skw = 5", "max_skw", "unknown key"),
    (
        "unknown-key-in-key",
        SENDER_KEY_BLOCK,
        SENDER_KEY_BLOCK + "\nalgorithm = 'ed448'",
        "algorithm",
        "unknown key",
    ),
    ("unknown-top-level", "# a test policy", "# a test policy\nversion = 2", "version = 2", "unknown key"),
    ("bad-org-code", "[organisations.EUMAM]", "[organisations.eumam]", "[organisations.eumam]", "must match"),
    (
        "sender-unknown-org",
        'organisation = "NSATU"\npublishes',
        'organisation = "NSAT"\npublishes',
        'organisation = "NSAT"',
        "unknown organisation",
    ),
    (
        "operator-unknown-org",
        'organisation = "NSATU"\nclearance = "NATO:SECRET:',
        'organisation = "UDCG"\nclearance = "NATO:SECRET:',
        'organisation = "UDCG"',
        "unknown organisation",
    ),
    (
        "unknown-kind",
        '    "capability.pledge",',
        '    "capability.pledges",',
        "capability.pledges",
        "unknown kind",
    ),
    (
        "duplicate-kind",
        'publishes = ["status.update", "delivery.status"]',
        'publishes = ["status.update", "status.update"]',
        'publishes = ["status.update", "status.update"]',
        "listed twice",
    ),
    ("short-public-key", f'public_key = "{SK}"', f'public_key = "{SHORT}"', SHORT, "32 bytes"),
    (
        "not-a-point",
        f'public_key = "{SK}"',
        f'public_key = "{NOT_A_POINT}"',
        NOT_A_POINT,
        "not a valid Ed25519",
    ),
    (
        "small-order",
        f'public_key = "{SK}"',
        f'public_key = "{SMALL_ORDER}"',
        SMALL_ORDER,
        "not a valid Ed25519",
    ),
    ("not-base64", f'public_key = "{SK}"', 'public_key = "not base64!"', "not base64!", "base64"),
    (
        "same-key-two-owners",
        f'public_key = "{SK}"',
        f'public_key = "{BK}"',
        f'public_key = "{BK}"\nnot_before = 2026-11-26T00:00:00Z\nnot_after = 2027-11-26T00:00:00Z\n\n[op',
        "registered to 'broker'",
    ),
    (
        "not-before-after-not-after",
        SENDER_KEY_BLOCK,
        SENDER_KEY_BLOCK.replace("not_after = 2027-11-26T00:00:00Z", "not_after = 2026-11-26T00:00:00+00:00"),
        "not_after = 2026-11-26T00:00:00+00:00",
        "after not_before",
    ),
    (
        "naive-datetime",
        'public_key = "' + BK + '"\nnot_before = 2026-11-26T00:00:00Z',
        'public_key = "' + BK + '"\nnot_before = 2026-11-26T00:00:00\n',
        "not_before = 2026-11-26T00:00:00\n",
        "offset",
    ),
    (
        "date-not-datetime",
        SENDER_KEY_BLOCK,
        SENDER_KEY_BLOCK.replace("not_after = 2027-11-26T00:00:00Z", "not_after = 2027-11-26"),
        "not_after = 2027-11-26\n",
        "date-time",
    ),
    (
        "missing-broker-key",
        f'[broker.keys."broker:local"]\npublic_key = "{BK}"\nnot_before = 2026-11-26T00:00:00Z\n'
        "not_after = 2027-11-26T00:00:00Z\n",
        "[broker.keys]\n",
        "[broker.keys]",
        "missing the broker's countersigning key 'broker:local'",
    ),
    (
        "broker-key-other-name",
        '[broker.keys."broker:local"]',
        '[broker.keys."broker:other"]',
        '[broker.keys."broker:other"]',
        "must be 'broker:local'",
    ),
    ("bool-where-int", "rate_burst = 2000", "rate_burst = true", "rate_burst = true", "not a boolean"),
    ("bool-where-number", "max_age_s = 600", "max_age_s = false", "max_age_s = false", "not a boolean"),
    ("float-where-int", "max_body_bytes = 262144", "max_body_bytes = 1.5", "max_body_bytes = 1.5", "integer"),
    ("zero-max-age", "max_age_s = 600", "max_age_s = 0", "max_age_s = 0", "greater than 0"),
    ("negative-skew", "max_skew_s = 120", "max_skew_s = -1", "max_skew_s = -1", "negative"),
    ("nan-rate", "rate_per_s = 1000", "rate_per_s = nan", "rate_per_s = nan", "finite"),
    (
        "keyid-owner-mismatch",
        '[senders.nsatu-liaison.keys."nsatu-liaison:2026-11"]',
        '[senders.nsatu-liaison.keys."eumam-liaison:2026-11"]',
        '"eumam-liaison:2026-11"',
        "owner 'eumam-liaison' is not 'nsatu-liaison'",
    ),
    (
        "bad-key-name",
        '[senders.nsatu-liaison.keys."nsatu-liaison:2026-11"]',
        '[senders.nsatu-liaison.keys."nsatu-liaison:2026/11"]',
        "2026/11",
        "key id",
    ),
    (
        "bad-clearance",
        'clearance = "NATO:SECRET:ALPHA+BRAVO"',
        'clearance = "NATO:SEKRET"',
        "NATO:SEKRET",
        "level must be one of",
    ),
    (
        "bad-system-high",
        'system_high = "NATO:SECRET"',
        'system_high = "UN:SECRET"',
        "UN:SECRET",
        "policy must be",
    ),
    (
        "reserved-sender-id",
        "[operators.duty-officer]",
        '[senders.broker]\norganisation = "NSATU"\npublishes = []\n\n[operators.duty-officer]',
        "[senders.broker]",
        "reserved",
    ),
    (
        "bad-sender-id",
        "[operators.duty-officer]",
        '[senders.Nsatu]\norganisation = "NSATU"\npublishes = []\n\n[operators.duty-officer]',
        "[senders.Nsatu]",
        "must match",
    ),
    (
        "sender-and-operator",
        "[operators.duty-officer]",
        '[operators.nsatu-liaison]\norganisation = "NSATU"\nclearance = "NATO:SECRET"\n\n'
        "[operators.duty-officer]",
        "[operators.nsatu-liaison]",
        "one id has one role",
    ),
    (
        "missing-required-key",
        '[organisations.EUMAM]\nclearance = "EU:SECRET"\n',
        "[organisations.EUMAM]\n",
        "[organisations.EUMAM]",
        "missing key 'clearance'",
    ),
    (
        "string-not-list",
        'need_to_know = ["status.update", "training.offer"]',
        'need_to_know = "status.update"',
        'need_to_know = "status.update"',
        "must be a list",
    ),
    (
        "inline-table-bad-value",
        "[senders.nsatu-liaison]\n",
        "[senders.nsatu-liaison]\n"
        'keys."nsatu-liaison:x" = { public_key = "AAAA", not_before = 1, not_after = 2 }\n',
        'keys."nsatu-liaison:x"',
        "32 bytes",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "marker", "reason"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_policy_is_refused_with_its_line(old: str, new: str, marker: str, reason: str) -> None:
    assert GOOD.count(old) == 1, old
    text = GOOD.replace(old, new)
    expected = line_of(text, marker)
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "test.toml")
    err = info.value
    assert err.path == "test.toml"
    assert err.line == expected, str(err)
    assert str(err).startswith(f"test.toml:{expected}: ")
    assert reason in str(err)


def test_hostile_policy_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD.replace("rate_burst = 2000", "rate_burst = true"), encoding="utf-8")
    with pytest.raises(PolicyError, match=rf"^{path}:{line_of(GOOD, 'rate_burst')}: broker.rate_burst"):
        load_policy(path)


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(GOOD.encode().replace(b"# a test policy", b"# a test \xff policy"))
    with pytest.raises(PolicyError, match="not UTF-8") as info:
        load_policy(path)
    assert info.value.line == 1


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nope.toml")


def test_no_organisation_is_refused() -> None:
    text = GOOD[: GOOD.index("[organisations.NSATU]")] + "[organisations]\n"
    with pytest.raises(PolicyError, match="at least one organisation") as info:
        parse_policy(text)
    assert info.value.line == line_of(text, "[organisations]")


def test_clearance_above_system_high_is_allowed() -> None:
    text = GOOD.replace('clearance = "EU:SECRET"', 'clearance = "EU:TOP_SECRET"')
    assert parse_policy(text).organisations["EUMAM"].clearance.classification == "TOP SECRET"


def test_error_never_echoes_key_material() -> None:
    text = GOOD.replace(f'public_key = "{SK}"', f'public_key = "{NOT_A_POINT}"')
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert NOT_A_POINT not in str(info.value)


def test_quoted_and_dotted_keys_are_located() -> None:
    text = GOOD.replace("[senders.nsatu-liaison]", '[ senders . "nsatu-liaison" ]').replace(
        'organisation = "NSATU"\npublishes', "'organisation' = \"NSATX\"\npublishes"
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert info.value.line == line_of(text, "NSATX")


def test_ed25519_validity() -> None:
    for i in range(50):
        assert is_valid_public_key(raw_public(bytes([i])))
    assert not is_valid_public_key(bytes(32))  # x = 0, y = 0: not on the curve
    assert not is_valid_public_key(b"\x01" + bytes(31))  # identity
    assert not is_valid_public_key(b"\xec" + b"\xff" * 30 + b"\x7f")  # y = p - 1, order 2
    assert not is_valid_public_key(b"\x01" + bytes(30) + b"\x80")  # x = 0 with the sign bit set
    assert not is_valid_public_key(raw_public(b"x")[:31])


def test_ed25519_mixed_order_points_are_refused() -> None:
    """A key point plus a point of order 8 is on the curve and not of small order, but outside the
    prime-order subgroup: no key generator makes one, and libsodium's check refuses it."""
    import nacl.bindings

    order8 = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")
    for i in range(5):
        key = raw_public(bytes([i]))
        mixed = nacl.bindings.crypto_core_ed25519_add(key, order8)
        assert is_valid_public_key(key)
        assert not is_valid_public_key(mixed)


# --------------------------------------------------------------------------------------------------
# Rendering


def test_render_round_trip_of_the_good_policy() -> None:
    p = parse_policy(GOOD)
    text = render_policy(p)
    assert text.startswith("# ")
    assert parse_policy(text) == p
    assert render_policy(parse_policy(text)) == text  # deterministic


def _times() -> st.SearchStrategy[datetime]:
    return st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    )


@st.composite
def _keys(draw: st.DrawFn, owner: str, names: st.SearchStrategy[str], salt: bytes) -> dict[str, SigningKey]:
    out: dict[str, SigningKey] = {}
    for name in draw(st.lists(names, max_size=3, unique=True)):
        keyid = f"{owner}:{name}"
        start = draw(_times())
        end = start + draw(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=4000)))
        revoked = draw(st.none() | _times())
        out[keyid] = SigningKey(keyid, raw_public(salt + keyid.encode()), start, end, revoked)
    return out


_CLEARANCES = st.builds(
    Clearance,
    st.sampled_from(["NATO", "EU"]),
    st.sampled_from(CLASSIFICATIONS),
    st.frozensets(st.from_regex(r"[A-Z][A-Z0-9-]{1,31}", fullmatch=True), max_size=3),
)
_KINDSETS = st.frozensets(st.sampled_from(KINDS))
_POS = st.floats(min_value=1e-3, max_value=1e9, allow_nan=False, allow_infinity=False) | st.integers(1, 10**9)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    salt = draw(st.binary(max_size=8))
    name = draw(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True))
    orgs = {
        code: Organisation(code, draw(_CLEARANCES), draw(_KINDSETS))
        for code in draw(
            st.lists(st.from_regex(r"[A-Z][A-Z0-9]{1,15}", fullmatch=True), min_size=1, max_size=4)
        )
    }
    org_codes = sorted(orgs)
    ids = draw(
        st.lists(st.from_regex(r"[a-z][a-z0-9-]{2,62}", fullmatch=True), max_size=6, unique=True).map(
            lambda xs: [x for x in xs if x != "broker"]
        )
    )
    cut = draw(st.integers(0, len(ids)))
    key_names = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
    senders = {
        i: Sender(
            i,
            draw(st.sampled_from(org_codes)),
            draw(_KINDSETS),
            MappingProxyType(draw(_keys(i, key_names, salt))),
            draw(st.none() | _POS),
        )
        for i in ids[:cut]
    }
    operators = {i: Operator(i, draw(st.sampled_from(org_codes)), draw(_CLEARANCES)) for i in ids[cut:]}
    bkeyid = f"broker:{name}"
    start = draw(_times())
    broker_keys = {bkeyid: SigningKey(bkeyid, raw_public(salt + b"broker"), start, start + timedelta(days=1))}
    return Policy(
        name=name,
        system_high=draw(_CLEARANCES),
        max_age_s=draw(_POS),
        max_skew_s=draw(st.just(0) | _POS),
        organisations=orgs,
        senders=senders,
        operators=operators,
        broker_keys=broker_keys,
        rate_per_s=draw(_POS),
        rate_burst=draw(st.integers(1, 10**12)),
        max_body_bytes=draw(st.integers(1, 10**12)),
    )


@settings(max_examples=60, deadline=None)
@given(policies())
def test_render_parse_round_trip(policy: Policy) -> None:
    text = render_policy(policy)
    assert parse_policy(text) == policy


# --------------------------------------------------------------------------------------------------
# Writing and watching


def test_write_policy_is_atomic_and_public(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    p = parse_policy(GOOD)
    written = write_policy(path, p)
    assert written == p and written.source == str(path)
    assert path.stat().st_mode & 0o777 == 0o644
    assert load_policy(path) == p
    assert [f.name for f in tmp_path.iterdir()] == ["policy.toml"]  # no temporary file left behind


async def _until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_holder_picks_up_a_good_change_and_keeps_the_old_policy_on_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD, encoding="utf-8")
    holder = PolicyHolder(path)
    first = holder.current
    assert first.max_age_s == 600
    seen: list[Policy] = []
    holder.on_change.append(seen.append)
    task = asyncio.create_task(holder.watch(interval=0.01))
    try:
        with capture_logs() as logs:
            path.write_text(GOOD.replace("max_age_s = 600", "max_age_s = 300"), encoding="utf-8")
            await _until(lambda: holder.current.max_age_s == 300)
            assert seen == [holder.current]
            assert any(e["event"] == "policy.reloaded" for e in logs)

            good_now = holder.current
            bad = GOOD.replace(f'public_key = "{SK}"', f'public_key = "{NOT_A_POINT}"')
            path.write_text(bad, encoding="utf-8")
            await _until(lambda: any(e["event"] == "policy.reload_failed" for e in logs))
            assert holder.current is good_now
            failure = next(e for e in logs if e["event"] == "policy.reload_failed")
            assert failure["log_level"] == "warning"
            assert failure["line"] == line_of(bad, NOT_A_POINT)
            assert NOT_A_POINT not in repr(logs) and SK not in repr(logs)
            await asyncio.sleep(0.1)
            assert sum(e["event"] == "policy.reload_failed" for e in logs) == 1  # logged once, not per poll

            write_policy(path, parse_policy(GOOD.replace("max_skew_s = 120", "max_skew_s = 30")))
            await _until(lambda: holder.current.max_skew_s == 30)
            assert holder.current.max_age_s == 600
            assert len(seen) == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_holder_reload_now(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD, encoding="utf-8")
    holder = PolicyHolder(path)
    before = holder.current
    assert holder.reload_now() is True  # unchanged content: what is in force is the file
    assert holder.current is before
    path.write_text(GOOD.replace("[broker]", "[broker"), encoding="utf-8")
    with capture_logs() as logs:
        assert holder.reload_now() is False
    assert holder.current is before
    assert [e["event"] for e in logs] == ["policy.reload_failed"]
    path.unlink()
    assert holder.reload_now() is False
    assert holder.current is before
    path.write_text(GOOD.replace("rate_per_s = 1000", "rate_per_s = 10"), encoding="utf-8")
    assert holder.reload_now() is True
    assert holder.current.rate_per_s == 10


def test_holder_refuses_a_bad_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD.replace("max_age_s = 600", "max_age_s = 0"), encoding="utf-8")
    with pytest.raises(PolicyError, match="max_age_s"):
        PolicyHolder(path)


def test_a_failing_callback_does_not_undo_the_swap(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD, encoding="utf-8")
    holder = PolicyHolder(path)

    def boom(_: Policy) -> None:
        raise RuntimeError("boom")

    holder.on_change.append(boom)
    path.write_text(GOOD.replace("max_age_s = 600", "max_age_s = 60"), encoding="utf-8")
    with capture_logs() as logs:
        assert holder.reload_now() is True
    assert holder.current.max_age_s == 60
    assert "policy.on_change_failed" in [e["event"] for e in logs]
