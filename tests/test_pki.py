"""broker.identity.pki and state: the dev CA, certificates, signing keys, identities and policy entries."""

from __future__ import annotations

import ipaddress
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from structlog.testing import capture_logs

from broker.errors import PKIError, PolicyError
from broker.identity.keys import load_signing_key, new_signing_key
from broker.identity.state import StatePaths, write_private, write_public
from broker.identity.x509 import ensure_server_cert, init_ca, issue_client_cert
from broker.policy.admin import new_operator, new_sender, revoke_key
from broker.policy.defaults import ensure_defaults
from broker.policy.loader import load_policy
from schemas.clearance import Clearance
from schemas.kinds import KINDS


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    return StatePaths(tmp_path / "state")


def cert_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def cn(cert: x509.Certificate) -> str:
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def raw(key: object) -> bytes:
    assert isinstance(key, Ed25519PrivateKey)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_state_paths_layout(tmp_path: Path) -> None:
    p = StatePaths(tmp_path)
    assert p.ca_crt == tmp_path / "pki/ca.crt" and p.ca_key == tmp_path / "pki/ca.key"
    assert p.server_crt == tmp_path / "pki/server.crt" and p.server_key == tmp_path / "pki/server.key"
    assert p.policy == tmp_path / "policy.toml"
    assert p.tls_crt("nsatu-liaison") == tmp_path / "identities/nsatu-liaison/tls.crt"
    assert p.tls_key("nsatu-liaison") == tmp_path / "identities/nsatu-liaison/tls.key"
    assert p.signing_key("nsatu-liaison") == tmp_path / "identities/nsatu-liaison/signing.key"
    assert p.keyid_file("nsatu-liaison") == tmp_path / "identities/nsatu-liaison/keyid"
    assert p.broker_signing_key == tmp_path / "identities/broker/signing.key"
    assert p.broker_keyid_file == tmp_path / "identities/broker/keyid"
    assert p.nats_dir == tmp_path / "nats" and p.audit_dir == tmp_path / "audit"
    for bad in ("../etc", "a/b", "Ab", "x", ""):
        with pytest.raises(ValueError, match="identity id"):
            p.identity_dir(bad)


def test_write_private_is_0600_even_with_a_wide_umask(tmp_path: Path) -> None:
    path = tmp_path / "d" / "secret"
    old = os.umask(0)
    try:
        write_private(path, b"one")
        assert mode(path) == 0o600 and path.read_bytes() == b"one"
        os.chmod(path, 0o644)
        write_private(path, b"two")  # replaced by a new 0600 file, never the old inode widened
        assert mode(path) == 0o600 and path.read_bytes() == b"two"
        write_public(tmp_path / "d" / "public", b"x")
        assert mode(tmp_path / "d" / "public") == 0o644
    finally:
        os.umask(old)
    with pytest.raises(FileExistsError):
        write_private(path, b"three", overwrite=False)
    assert path.read_bytes() == b"two"
    assert sorted(f.name for f in path.parent.iterdir()) == ["public", "secret"]


def test_init_ca(paths: StatePaths) -> None:
    assert init_ca(paths) is True
    assert init_ca(paths) is False
    ca = cert_of(paths.ca_crt)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    ca.verify_directly_issued_by(ca)
    assert mode(paths.ca_key) == 0o600
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > timedelta(days=3000)


def test_init_ca_refuses_a_lone_key(paths: StatePaths) -> None:
    write_private(paths.ca_key, b"not ours to overwrite")
    with pytest.raises(PKIError, match="without"):
        init_ca(paths)
    assert paths.ca_key.read_bytes() == b"not ours to overwrite"


def test_client_cert(paths: StatePaths) -> None:
    init_ca(paths)
    cert = issue_client_cert(paths, "nsatu-liaison")
    assert cert == cert_of(paths.tls_crt("nsatu-liaison"))
    assert cn(cert) == "nsatu-liaison"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(cert_of(paths.ca_crt))
    assert mode(paths.tls_key("nsatu-liaison")) == 0o600
    key = serialization.load_pem_private_key(paths.tls_key("nsatu-liaison").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    now = datetime.now(UTC)
    assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def test_expired_cert_can_be_made(paths: StatePaths) -> None:
    init_ca(paths)
    now = datetime.now(UTC)
    cert = issue_client_cert(
        paths, "eumam-liaison", not_before=now - timedelta(days=10), not_after=now - timedelta(days=1)
    )
    assert cert.not_valid_after_utc < now
    cert.verify_directly_issued_by(cert_of(paths.ca_crt))
    with pytest.raises(PKIError, match="before"):
        issue_client_cert(paths, "eumam-liaison", not_before=now, not_after=now)


def test_cert_from_another_ca_does_not_chain(paths: StatePaths, tmp_path: Path) -> None:
    init_ca(paths)
    other = StatePaths(tmp_path / "other")
    init_ca(other)
    cert = issue_client_cert(paths, "udcg-liaison", ca_crt_path=other.ca_crt, ca_key_path=other.ca_key)
    cert.verify_directly_issued_by(cert_of(other.ca_crt))
    with pytest.raises((InvalidSignature, ValueError)):
        cert.verify_directly_issued_by(cert_of(paths.ca_crt))


def test_server_cert(paths: StatePaths) -> None:
    init_ca(paths)
    assert ensure_server_cert(paths) is True
    assert ensure_server_cert(paths) is False
    cert = cert_of(paths.server_crt)
    cert.verify_directly_issued_by(cert_of(paths.ca_crt))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert mode(paths.server_key) == 0o600


def test_server_cert_is_reissued_with_the_same_key_for_a_new_ca(paths: StatePaths) -> None:
    init_ca(paths)
    ensure_server_cert(paths)
    key_before = paths.server_key.read_bytes()
    paths.ca_crt.unlink()
    paths.ca_key.unlink()
    init_ca(paths)
    assert ensure_server_cert(paths) is True
    assert paths.server_key.read_bytes() == key_before
    cert_of(paths.server_crt).verify_directly_issued_by(cert_of(paths.ca_crt))


def test_signing_key(paths: StatePaths) -> None:
    keyid, public = new_signing_key(paths, "nsatu-liaison", "2026-11")
    assert keyid == "nsatu-liaison:2026-11" and len(public) == 32
    assert paths.keyid_file("nsatu-liaison").read_text() == "nsatu-liaison:2026-11\n"
    assert mode(paths.signing_key("nsatu-liaison")) == 0o600
    pem_head = b"-----BEGIN " + b"PRIVATE KEY-----"  # built: no PEM header stands in the repository
    assert paths.signing_key("nsatu-liaison").read_bytes().startswith(pem_head)
    loaded_id, key = load_signing_key(paths, "nsatu-liaison")
    assert loaded_id == keyid and raw(key) == public
    with pytest.raises(PolicyError):
        new_signing_key(paths, "nsatu-liaison", "bad/name")
    paths.keyid_file("nsatu-liaison").write_text("eumam-liaison:2026-11\n")
    with pytest.raises(PKIError, match="does not belong"):
        load_signing_key(paths, "nsatu-liaison")


def test_ensure_defaults_makes_the_default_state_and_is_idempotent(paths: StatePaths) -> None:
    with capture_logs() as logs:
        created = ensure_defaults(paths)
    assert "pki/ca.crt" in created and "pki/ca.key" in created and "policy.toml" in created
    assert "identities/broker/signing.key" in created
    assert "identities/nsatu-liaison/tls.crt" in created
    assert "PRIVATE KEY" not in repr(logs)
    files = {f.name: f for f in paths.root.rglob("*") if f.is_file()}
    assert files
    snapshot = {f: f.read_bytes() for f in paths.root.rglob("*") if f.is_file()}

    assert ensure_defaults(paths) == []
    assert {f: f.read_bytes() for f in paths.root.rglob("*") if f.is_file()} == snapshot

    for f in paths.root.rglob("*"):
        if f.name in ("ca.key", "server.key", "tls.key", "signing.key"):
            assert mode(f) == 0o600, f

    policy = load_policy(paths.policy)
    assert policy.name == "local" and policy.broker_keyid == "broker:local"
    assert str(policy.system_high) == "NATO:SECRET"
    assert {c: str(o.clearance) for c, o in policy.organisations.items()} == {
        "NSATU": "NATO:SECRET",
        "EUMAM": "EU:SECRET",
        "UDCG": "NATO:CONFIDENTIAL",
    }
    assert all(o.need_to_know == frozenset(KINDS) for o in policy.organisations.values())
    any_kind = {"status.update", "lesson.learned", "industry.exchange"}
    rights = {
        "NSATU": any_kind | {"delivery.status", "training.request"},
        "EUMAM": any_kind | {"training.offer"},
        "UDCG": any_kind | {"capability.pledge"},
    }
    assert set(policy.senders) == {
        f"{o}-{r}" for o in ("nsatu", "eumam", "udcg") for r in ("liaison", "adapter")
    }
    for ident, sender in policy.senders.items():
        assert sender.publishes == rights[sender.organisation]
        assert ident.startswith(sender.organisation.lower() + "-")
        keyid, key = load_signing_key(paths, ident)
        assert sender.keys[keyid].public_key == raw(key)
        assert sender.keys[keyid].problem_at(datetime.now(UTC)) is None
        assert cn(cert_of(paths.tls_crt(ident))) == ident
    keyid, key = load_signing_key(paths, "broker")
    assert keyid == "broker:local" and policy.broker_keys[keyid].public_key == raw(key)
    op = policy.operators["duty-officer"]
    assert op.organisation == "NSATU" and op.clearance == Clearance("NATO", "SECRET")
    cert_of(paths.tls_crt("duty-officer")).verify_directly_issued_by(cert_of(paths.ca_crt))
    assert not paths.signing_key("duty-officer").exists()


def test_ensure_defaults_honours_identities_made_beforehand(paths: StatePaths) -> None:
    # a sender made with `broker keys new` before `broker up`, with narrower rights
    new_sender(paths, "nsatu-liaison", "NSATU", ["status.update"], key_name="mine")
    tls_before = paths.tls_crt("nsatu-liaison").read_bytes()
    # a signing key put in place by hand, not yet in the policy
    keyid, public = new_signing_key(paths, "udcg-liaison", "handmade")
    signing_before = paths.signing_key("udcg-liaison").read_bytes()

    created = ensure_defaults(paths)
    assert "policy.toml: sender nsatu-liaison" not in created
    policy = load_policy(paths.policy)
    s = policy.senders["nsatu-liaison"]
    assert s.publishes == {"status.update"} and list(s.keys) == ["nsatu-liaison:mine"]
    assert paths.tls_crt("nsatu-liaison").read_bytes() == tls_before
    assert paths.signing_key("udcg-liaison").read_bytes() == signing_before
    assert policy.senders["udcg-liaison"].keys[keyid].public_key == public
    assert "eumam-liaison" in policy.senders and "duty-officer" in policy.operators
    assert ensure_defaults(paths) == []


def test_ensure_defaults_refuses_a_local_key_the_policy_contradicts(paths: StatePaths) -> None:
    ensure_defaults(paths)
    keyid, _ = load_signing_key(paths, "eumam-liaison")
    new_signing_key(paths, "eumam-liaison", keyid.split(":")[1])  # same id, other key
    with pytest.raises(PKIError, match="not the key"):
        ensure_defaults(paths)


def test_new_sender_updates_the_policy(paths: StatePaths) -> None:
    ensure_defaults(paths)
    policy = new_sender(paths, "nsatu-logistics", "NSATU", ["delivery.status", "status.update"])
    assert policy == load_policy(paths.policy)
    sender = policy.senders["nsatu-logistics"]
    assert sender.organisation == "NSATU" and sender.publishes == {"delivery.status", "status.update"}
    keyid, key = load_signing_key(paths, "nsatu-logistics")
    assert keyid == "nsatu-logistics:" + datetime.now(UTC).strftime("%Y-%m")
    registered = sender.keys[keyid]
    assert registered.public_key == raw(key)
    assert timedelta(days=364) < registered.not_after - registered.not_before <= timedelta(days=366)
    assert cn(cert_of(paths.tls_crt("nsatu-logistics"))) == "nsatu-logistics"
    assert mode(paths.signing_key("nsatu-logistics")) == 0o600
    assert mode(paths.policy) == 0o644

    # rotation: a new key name adds a key, the old one stays registered
    rotated = new_sender(paths, "nsatu-logistics", "NSATU", ["status.update"], key_name="next")
    keys = rotated.senders["nsatu-logistics"].keys
    assert set(keys) == {keyid, "nsatu-logistics:next"}
    assert rotated.senders["nsatu-logistics"].publishes == {"status.update"}
    assert load_signing_key(paths, "nsatu-logistics")[0] == "nsatu-logistics:next"

    revoked = revoke_key(paths, keyid)
    assert revoked.senders["nsatu-logistics"].keys[keyid].problem_at(datetime.now(UTC)) == "revoked-key"


@pytest.mark.parametrize(
    ("ident", "org", "kinds", "match"),
    [
        ("nsatu-logistics", "NOPE", ["status.update"], "unknown organisation"),
        ("nsatu-logistics", "NSATU", ["status.updates"], "unknown kind"),
        ("nsatu-logistics", "NSATU", ["status.update", "status.update"], "twice"),
        ("duty-officer", "NSATU", ["status.update"], "operator already"),
        ("nsatu-liaison", "EUMAM", ["status.update"], "belongs to NSATU"),
        ("broker", "NSATU", ["status.update"], "reserved"),
        ("Bad_Id", "NSATU", ["status.update"], "must match"),
    ],
)
def test_new_sender_refusals(paths: StatePaths, ident: str, org: str, kinds: list[str], match: str) -> None:
    ensure_defaults(paths)
    before = paths.policy.read_bytes()
    with pytest.raises(PolicyError, match=match):
        new_sender(paths, ident, org, kinds)
    assert paths.policy.read_bytes() == before


def test_new_sender_refuses_an_existing_key_name(paths: StatePaths) -> None:
    new_sender(paths, "eumam-training", "EUMAM", ["training.offer"], key_name="k1")
    signing = paths.signing_key("eumam-training").read_bytes()
    with pytest.raises(PolicyError, match="registered already"):
        new_sender(paths, "eumam-training", "EUMAM", ["training.offer"], key_name="k1")
    assert paths.signing_key("eumam-training").read_bytes() == signing


def test_new_sender_on_an_empty_state_makes_the_base(paths: StatePaths) -> None:
    policy = new_sender(paths, "udcg-air", "UDCG", ["capability.pledge"])
    assert set(policy.organisations) == {"NSATU", "EUMAM", "UDCG"}
    assert set(policy.senders) == {"udcg-air"} and not policy.operators
    assert paths.ca_crt.exists() and paths.broker_signing_key.exists()


def test_new_operator(paths: StatePaths) -> None:
    ensure_defaults(paths)
    policy = new_operator(paths, "eu-watch", "EUMAM", "EU:CONFIDENTIAL:ALPHA")
    assert policy.operators["eu-watch"].clearance == Clearance("EU", "CONFIDENTIAL", frozenset({"ALPHA"}))
    assert load_policy(paths.policy) == policy
    cert = cert_of(paths.tls_crt("eu-watch"))
    assert cn(cert) == "eu-watch"
    cert.verify_directly_issued_by(cert_of(paths.ca_crt))
    assert mode(paths.tls_key("eu-watch")) == 0o600
    with pytest.raises(PolicyError, match="sender already"):
        new_operator(paths, "nsatu-liaison", "NSATU", "NATO:SECRET")
    with pytest.raises(PolicyError, match="exists already"):
        new_operator(paths, "eu-watch", "EUMAM", "EU:SECRET")
    with pytest.raises(PolicyError, match="unknown organisation"):
        new_operator(paths, "un-watch", "UN", "NATO:SECRET")
    with pytest.raises(PolicyError, match="level must be"):
        new_operator(paths, "nato-watch", "NSATU", "NATO:SEKRET")


def test_a_state_with_an_outside_ca_cannot_issue(paths: StatePaths) -> None:
    init_ca(paths)
    paths.ca_key.unlink()  # only the outside CA's certificate is here
    assert init_ca(paths) is False
    with pytest.raises(PKIError, match="cannot issue"):
        issue_client_cert(paths, "nsatu-liaison")
