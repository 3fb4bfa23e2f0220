"""Mutual TLS at the gateway: without a good client certificate there is no HTTP at all.

Each refusal must be a failed TLS connection (aiohttp's connection errors), never an HTTP status:
the gateway does not see a request from an unauthenticated peer. Both TLS 1.2 (the server's alert
comes during the handshake) and TLS 1.3 (it comes after the client's Finished, when the client
first reads) are tried. A good certificate is the positive control, under the same client code.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.app.system import System
from broker.audit.reader import read_log, split_lines
from broker.clock import utcnow
from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.identity.x509 import init_ca, issue_client_cert, load_ca
from broker.nats.bus import Bus

TLS_VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
REFUSED = (aiohttp.ClientConnectorError, aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)


def pinned(ctx: ssl.SSLContext, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx.minimum_version = version
    ctx.maximum_version = version
    return ctx


async def get_healthz(url: str, ctx: ssl.SSLContext) -> int:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, force_close=True)) as s,
        s.get(url + "/healthz") as r,
    ):
        await r.read()
        return r.status


async def post_message(url: str, ctx: ssl.SSLContext) -> int:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, force_close=True)) as s,
        s.post(url + "/v1/messages", data=b"{}", headers={"Content-Type": "application/json"}) as r,
    ):
        await r.read()
        return r.status


def http_requests_seen(system: System) -> float:
    """Every HTTP request the gateway has answered, by its own metrics."""
    return sum(system.gateway.m_requests.values.values())


async def assert_refused(system: System, ctx: ssl.SSLContext) -> None:
    seen = http_requests_seen(system)
    for call in (get_healthz, post_message):
        with pytest.raises(REFUSED) as info:
            status = await call(system.gateway_url, ctx)
            pytest.fail(f"got HTTP {status}: the handshake should have been refused")
        assert not isinstance(info.value, aiohttp.ClientResponseError)
    assert http_requests_seen(system) == seen, "an unauthenticated peer reached the HTTP layer"


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_good_certificate_is_served(version: ssl.TLSVersion, system: System, state: StatePaths) -> None:
    ctx = pinned(
        client_context(state.ca_crt, state.tls_crt("nsatu-liaison"), state.tls_key("nsatu-liaison")), version
    )
    seen = http_requests_seen(system)
    assert await get_healthz(system.gateway_url, ctx) == 200
    assert await post_message(system.gateway_url, ctx) == 400  # reached intake: `{}` is no envelope
    assert http_requests_seen(system) == seen + 2


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_no_client_certificate(version: ssl.TLSVersion, system: System, state: StatePaths) -> None:
    await assert_refused(system, pinned(client_context(state.ca_crt), version))


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_certificate_from_another_ca(
    version: ssl.TLSVersion, system: System, state: StatePaths, tmp_path: Path
) -> None:
    """Same CN as a real sender, issued by a CA the gateway does not trust."""
    other = StatePaths(tmp_path / "other")
    assert init_ca(other)
    issue_client_cert(other, "nsatu-liaison")
    ctx = client_context(state.ca_crt, other.tls_crt("nsatu-liaison"), other.tls_key("nsatu-liaison"))
    await assert_refused(system, pinned(ctx, version))


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_expired_certificate(
    version: ssl.TLSVersion, system: System, state: StatePaths, tmp_path: Path
) -> None:
    """Issued by the right CA to a real sender, but its validity ended yesterday."""
    out = StatePaths(tmp_path / "expired")
    now = utcnow()
    issue_client_cert(
        out,
        "nsatu-liaison",
        not_before=now - timedelta(days=30),
        not_after=now - timedelta(days=1),
        ca_crt_path=state.ca_crt,
        ca_key_path=state.ca_key,
    )
    ctx = client_context(state.ca_crt, out.tls_crt("nsatu-liaison"), out.tls_key("nsatu-liaison"))
    await assert_refused(system, pinned(ctx, version))


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_not_yet_valid_certificate(
    version: ssl.TLSVersion, system: System, state: StatePaths, tmp_path: Path
) -> None:
    out = StatePaths(tmp_path / "future")
    now = utcnow()
    issue_client_cert(
        out,
        "nsatu-liaison",
        not_before=now + timedelta(days=1),
        not_after=now + timedelta(days=30),
        ca_crt_path=state.ca_crt,
        ca_key_path=state.ca_key,
    )
    ctx = client_context(state.ca_crt, out.tls_crt("nsatu-liaison"), out.tls_key("nsatu-liaison"))
    await assert_refused(system, pinned(ctx, version))


async def test_fresh_certificate_from_the_right_ca_is_served(
    system: System, state: StatePaths, tmp_path: Path
) -> None:
    """The control for the two tests above: the same issuing path with a current window works."""
    out = StatePaths(tmp_path / "fresh")
    issue_client_cert(out, "nsatu-liaison", ca_crt_path=state.ca_crt, ca_key_path=state.ca_key)
    ctx = client_context(state.ca_crt, out.tls_crt("nsatu-liaison"), out.tls_key("nsatu-liaison"))
    assert await get_healthz(system.gateway_url, ctx) == 200


async def test_a_certificate_without_exactly_one_cn_is_refused_and_audited(
    system: System, state: StatePaths, tmp_path: Path, bus: Bus
) -> None:
    """Issued by the right CA, but naming two subjects: the gateway cannot tell who it is, answers 403
    `forbidden` and audits the refusal (ICD §6: every rejection), with no actor to name."""
    ca_cert, ca_key = load_ca(state)
    key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "nsatu-liaison"),
            x509.NameAttribute(NameOID.COMMON_NAME, "eumam-liaison"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    crt, key_file = tmp_path / "two.crt", tmp_path / "two.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    before = system.writer.tree.size
    assert await post_message(system.gateway_url, client_context(state.ca_crt, crt, key_file)) == 403

    async def refusals() -> list[dict[str, object]]:
        lines = [
            line
            for _, data in await read_log(bus, instance=system.holder.current.name)
            for line in split_lines(data)
        ]
        recs = [json.loads(line) for line in lines]
        return [
            r
            for r in recs
            if r.get("type") == "record" and r["index"] >= before and r.get("reason") == "forbidden"
        ]

    for _ in range(100):
        found = await refusals()
        if found:
            break
        await asyncio.sleep(0.1)
    assert len(found) == 1 and found[0]["event"] == "rejected" and found[0].get("actor") is None, found
