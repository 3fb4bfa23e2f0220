"""The golden vectors of docs/vectors/: regenerated and compared byte for byte, then recomputed
independently of the code that wrote them (own PAE, Ed25519 by `cryptography`, an own ICD §2 oracle, an
own RFC 9162 Merkle tree and C2SP note check), judged by the broker's intake at the stated "now", and
posted to a live gateway (its clock set to that "now") for their statuses."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from broker.app.options import GatewayOptions, SystemOptions
from broker.app.system import System
from broker.audit.verify import verify_export
from broker.cli import build_parser
from broker.contract import vectors as gen
from broker.errors import PROBLEMS, Refused
from broker.identity.state import StatePaths, write_private, write_public
from broker.identity.tls import client_context
from broker.policy.loader import parse_policy
from broker.rules.intake import Intake

DIR = Path(__file__).resolve().parent.parent / "docs" / "vectors"
CLASSES = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET", "TOP SECRET"]  # ICD §2, ranks 0..4


def load(name: str) -> Any:
    return json.loads((DIR / name).read_text(encoding="utf-8"))


def rows() -> list[dict[str, Any]]:
    return list(load("envelopes.json")["vectors"])


def body(row: dict[str, Any]) -> bytes:
    return (DIR / row["body"]).read_bytes()


def now() -> datetime:
    return datetime.fromisoformat(load("envelopes.json")["now"].replace("Z", "+00:00"))


# -- regenerate and compare --------------------------------------------------------------------------


def test_the_committed_vectors_are_what_the_command_writes(tmp_path: Path) -> None:
    args = build_parser().parse_args(["vectors", "export", str(tmp_path)])
    assert args.func(args) == 0
    written = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    committed = {str(p.relative_to(DIR)): p.read_bytes() for p in DIR.rglob("*") if p.is_file()}
    assert sorted(written) == sorted(committed)
    for rel, data in written.items():
        assert committed[rel] == data, f"docs/vectors/{rel} differs: run `broker vectors export docs/vectors`"


# -- envelopes ---------------------------------------------------------------------------------------


def own_pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def public_keys() -> dict[str, Ed25519PublicKey]:
    out = {}
    for kid, k in load("keys.json")["keys"].items():
        if k["seed_hex"] is None:
            continue
        priv = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(k["seed_hex"]))
        raw = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert base64.b64encode(raw).decode() == k["public_key"]  # the seed gives the published key
        out[kid] = priv.public_key()
    return out


def test_every_icd_row_has_a_vector() -> None:
    problems = {r["problem"].removeprefix("urn:coord:problem:") for r in rows() if r["problem"]}
    not_in_icd_table = {"forbidden", "not-found", "method-not-allowed", "internal"}  # docs/decisions.md
    assert problems == set(PROBLEMS) - not_in_icd_table
    assert {r["status"] for r in rows() if r["problem"] is None} == {200, 202}
    for r in rows():
        if r["problem"]:
            assert PROBLEMS[r["problem"].removeprefix("urn:coord:problem:")][0] == r["status"]


def test_envelope_bytes_payloads_pae_and_signatures_recomputed() -> None:
    keys = public_keys()
    policy = parse_policy((DIR / "policy.toml").read_text())
    for kid, key in keys.items():  # the policy registers exactly the published keys
        owner = kid.split(":")[0]
        registered = policy.broker_keys if owner == "broker" else policy.senders[owner].keys
        assert registered[kid].public_key == key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    checked = 0
    for r in rows():
        data = body(r)
        assert hashlib.sha256(data).hexdigest() == r["body_sha256"]
        if "keyid" not in r:
            continue
        env = json.loads(data)
        payload = base64.b64decode(env["payload"], validate=True)
        assert hashlib.sha256(payload).hexdigest() == r["payload_sha256"]
        assert hashlib.sha256(own_pae(env["payloadType"], payload)).hexdigest() == r["pae_sha256"]
        sig = env["signatures"][0]
        assert sig["keyid"] == r["keyid"]
        key = keys.get(sig["keyid"], keys["nsatu-liaison:v1"])  # the unregistered id is signed with v1
        try:
            key.verify(base64.b64decode(sig["sig"]), own_pae(env["payloadType"], payload))
            verifies = True
        except InvalidSignature:
            verifies = False
        assert verifies is (r["name"] != "bad-signature"), r["name"]
        checked += 1
    assert checked >= 20


def test_the_broker_judges_every_envelope_as_stated() -> None:
    policy = parse_policy((DIR / "policy.toml").read_text())
    intake = Intake()
    by_name = {r["name"]: r for r in rows()}
    for r in rows():
        data = body(r)
        for earlier in r["before"]:
            assert list(by_name).index(earlier) < list(by_name).index(r["name"])  # listed in sending order
        if r["path"].endswith("/batch"):
            lines = data.rstrip(b"\n").split(b"\n")
            if r["status"] == 429:
                assert len(lines) > policy.rate_burst
            else:
                outcomes = []
                for line in lines:
                    try:
                        intake.check(line, r["client"], policy, now())
                        outcomes.append("admitted")
                    except Refused as e:
                        outcomes.append("urn:coord:problem:" + e.name)
                expected = [res.get("problem", "admitted") for res in r["expect"]["results"]]
                assert outcomes == expected
            continue
        if r["status"] == 413:
            assert len(data) > policy.max_body_bytes
        if r["content_type"] != "application/json":
            assert r["status"] == 415
            continue
        try:
            admitted = intake.check(data, r["client"], policy, now())
        except Refused as e:
            assert r["problem"] == "urn:coord:problem:" + e.name, r["name"]
            continue
        assert r["status"] in (200, 202, 409, 413, 503), r["name"]  # admitted; the rest is the store's
        if r["name"] == "id-conflict":
            first = intake.check(body(by_name["accepted"]), "nsatu-liaison", policy, now())
            assert first.message.id == admitted.message.id and first.digest != admitted.digest
        if r["name"] == "duplicate":
            assert data == body(by_name["accepted"])


# -- labels ------------------------------------------------------------------------------------------


def oracle(label: dict[str, Any], reader: dict[str, Any], kind: str, system_high: str) -> str | None:
    """ICD §2 written out again, independently of broker/labels.py."""

    def rank(clearance: str) -> int:
        return CLASSES.index(clearance.split(":")[1].replace("_", " "))

    r = CLASSES.index(label["classification"])
    if r > rank(system_high):
        return "system-high"
    if r > rank(reader["clearance"]):
        return "clearance"
    if reader["organisation"] not in label["releasable_to"]:
        return "releasability"
    parts = reader["clearance"].split(":")
    held = set(parts[2].split("+")) if len(parts) > 2 else set()
    if not set(label["caveats"]) <= held:
        return "caveats"
    ntk = reader["need_to_know"]
    if ntk is not None and ntk != "all" and kind not in ntk:
        return "need-to-know"
    return None


def test_label_decisions_recomputed() -> None:
    doc = load("labels.json")
    readers = {r["name"]: r for r in doc["readers"]}
    seen_rules = set()
    for d in doc["decisions"]:
        rule = oracle(doc["labels"][d["label"]], readers[d["reader"]], d["kind"], doc["system_high"])
        assert d["rule"] == rule, d
        assert d["outcome"] == ("released" if rule is None else "withheld")
        seen_rules.add(rule)
    assert seen_rules == {None, *doc["rules"]}  # every rule decides some row, and some rows pass


# -- audit -------------------------------------------------------------------------------------------


def own_root(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + own_root(leaves[:k]) + own_root(leaves[k:])).digest()


def own_verify(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def test_audit_leaves_root_proofs_and_checkpoint_recomputed() -> None:
    doc = load("audit.json")
    recs = doc["records"]
    leaves = []
    for i, rec in enumerate(recs):
        raw = rec["bytes"].encode()
        assert json.loads(raw)["type"] == "record" and json.loads(raw)["index"] == i
        h = hashlib.sha256(b"\x00" + raw).digest()
        assert base64.b64decode(rec["leaf_hash"]) == h
        leaves.append(h)
    root = own_root(leaves)
    assert base64.b64decode(doc["root"]) == root and doc["size"] == len(leaves)
    for i, rec in enumerate(recs):
        assert own_verify(leaves[i], i, len(leaves), [base64.b64decode(p) for p in rec["proof"]], root)
        assert not own_verify(
            leaves[i], i, len(leaves), [*[base64.b64decode(p) for p in rec["proof"]][::-1], root], root
        )
    # C2SP signed note: body lines, a blank line, "— <name> <base64(key id || signature)>"
    body_text, sig_line = doc["checkpoint"].split("\n\n")
    assert body_text.split("\n") == [doc["origin"], str(len(leaves)), doc["root"]]
    name, blob = sig_line.rstrip("\n").removeprefix("\u2014 ").split(" ")
    assert name == doc["key"]["name"]
    raw_key = base64.b64decode(doc["key"]["public_key"])
    blob_bytes = base64.b64decode(blob)
    assert blob_bytes[:4] == hashlib.sha256(name.encode() + b"\n\x01" + raw_key).digest()[:4]
    Ed25519PublicKey.from_public_bytes(raw_key).verify(blob_bytes[4:], (body_text + "\n").encode())
    # and the export file is what `broker audit verify FILE` accepts
    lines = (DIR / "audit.export.jsonl").read_bytes().splitlines()
    assert [ln.decode() for ln in lines[:-1]] == [r["bytes"] for r in recs]
    report = verify_export(lines, {name: Ed25519PublicKey.from_public_bytes(raw_key)}, doc["origin"])
    assert report.records == len(recs) and report.checkpoints == 1


# -- against a live gateway --------------------------------------------------------------------------


def _store_key(paths: StatePaths, ident: str, keyid: str) -> None:
    key = gen.seed_key(keyid)
    write_private(
        paths.signing_key(ident), key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    write_public(paths.keyid_file(ident), (keyid + "\n").encode())


@pytest_asyncio.fixture
async def vector_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[System]:
    """A system judging by the vectors' policy, with the gateway's clock at the vectors' "now"."""
    paths = StatePaths(tmp_path / "state")
    paths.policy.parent.mkdir(parents=True, exist_ok=True)
    paths.policy.write_bytes((DIR / "policy.toml").read_bytes())
    _store_key(paths, "broker", "broker:vectors")
    for ident in ("nsatu-liaison", "eumam-liaison", "udcg-liaison"):
        _store_key(paths, ident, f"{ident}:v1")
    monkeypatch.setattr("broker.gateway.web.utcnow", now)
    opts = SystemOptions(state=paths.root, parts=frozenset({"core"}), gateway=GatewayOptions(port=0))
    async with System(opts) as s:
        yield s


async def test_the_live_gateway_answers_every_vector_as_stated(vector_system: System) -> None:
    paths = vector_system.paths
    sessions: dict[str, aiohttp.ClientSession] = {}
    checked = []
    try:
        for r in rows():
            if r.get("live") is False:
                continue
            if r["client"] not in sessions:
                ctx = client_context(paths.ca_crt, paths.tls_crt(r["client"]), paths.tls_key(r["client"]))
                sessions[r["client"]] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
            async with sessions[r["client"]].post(
                vector_system.gateway_url + r["path"],
                data=body(r),
                headers={"Content-Type": r["content_type"]},
            ) as resp:
                doc = await resp.json(content_type=None)
                assert resp.status == r["status"], (r["name"], doc)
                if r["problem"]:
                    assert resp.headers["Content-Type"].startswith("application/problem+json")
                    assert doc["type"] == r["problem"], (r["name"], doc)
                expect = r.get("expect", {})
                if "duplicate" in expect:
                    assert doc.get("duplicate") is True
                if "Retry-After" in expect:
                    assert resp.headers["Retry-After"] == expect["Retry-After"]
                for res, want in zip(doc.get("results", []), expect.get("results", []), strict=True):
                    if "problem" in want:
                        assert res["problem"]["type"] == want["problem"]
                    elif want.get("duplicate"):
                        assert res.get("duplicate") is True
                    else:
                        assert "seq" in res and "duplicate" not in res
            checked.append(r["name"])
    finally:
        for s in sessions.values():
            await s.close()
    assert len(checked) == len(rows()) - 1  # all but `unavailable` (it needs the bus down)
