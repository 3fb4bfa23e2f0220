"""The exchange docs/integration.md shows for teams not using Python works as written: the OpenSSL-only
signing script reproduces the golden vector byte for byte, and curl posts what it signs to the live
gateway over mutual TLS."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from broker.app.system import System
from broker.contract.vectors import seed_key
from broker.identity.state import StatePaths
from tests.support.messages import message

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "sign-envelope.sh"
VECTOR = ROOT / "docs" / "vectors" / "envelopes" / "accepted.body"


def test_the_openssl_script_reproduces_the_golden_vector(tmp_path: Path) -> None:
    env = json.loads(VECTOR.read_bytes())
    (tmp_path / "message.json").write_bytes(base64.b64decode(env["payload"]))
    key = seed_key("nsatu-liaison:v1").private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (tmp_path / "signing.key").write_bytes(key)
    out = subprocess.run(
        ["bash", SCRIPT, tmp_path / "message.json", tmp_path / "signing.key", "nsatu-liaison:v1"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert out == VECTOR.read_bytes()  # Ed25519 is deterministic: the same bytes, signature included


async def _run(*argv: str | Path) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out + err


async def test_openssl_and_curl_against_the_live_gateway(
    system: System, state: StatePaths, tmp_path: Path
) -> None:
    keyid = state.keyid_file("nsatu-liaison").read_text().strip()
    (tmp_path / "message.json").write_bytes(json.dumps(message(), separators=(",", ":")).encode())
    rc, env = await _run("bash", SCRIPT, tmp_path / "message.json", state.signing_key("nsatu-liaison"), keyid)
    assert rc == 0, env
    (tmp_path / "envelope.json").write_bytes(env)
    curl = (
        "curl", "--silent", "--show-error", "--cacert", state.ca_crt,
        "--cert", state.tls_crt("nsatu-liaison"), "--key", state.tls_key("nsatu-liaison"),
        "-H", "Content-Type: application/json", "--data-binary", f"@{tmp_path / 'envelope.json'}",
        "--write-out", "\n%{http_code}", system.gateway_url + "/v1/messages",
    )  # fmt: skip
    rc, out = await _run(*curl)
    assert rc == 0, out
    body, status = out.rsplit(b"\n", 1)
    assert status == b"202", out
    assert json.loads(body)["id"] == json.loads((tmp_path / "message.json").read_bytes())["id"]
    rc, out = await _run(*curl)
    assert out.endswith(b"\n200") and json.loads(out.rsplit(b"\n", 1)[0])["duplicate"] is True
