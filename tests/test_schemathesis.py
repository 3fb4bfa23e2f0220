"""schemathesis against the live gateway over mutual TLS (issue 16).

The document is the one the gateway serves (`GET /v1/openapi.json`). Two runs, each bounded in time:
every operation as a liaison sender, then the operators' operations as an operator. Every check
schemathesis has (tests/schemathesis.toml says which two are off, and why): no 5xx, every status,
content type, header and body as the document says (so every error is problem+json of a problem
type that status may carry), schema-invalid requests refused with a 4xx, 405 with `Allow`.

Time: `COORD_FUZZ_SECONDS` per run (default 50, so about two minutes in all); set it higher for a
longer search. What the runs found is kept as plain tests in tests/test_fuzz_findings.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from broker.app.system import System
from broker.identity.state import StatePaths
from tests.conftest import ClientFactory

FUZZ_SECONDS = int(os.environ.get("COORD_FUZZ_SECONDS", "50"))
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
CONFIG = Path(__file__).with_name("schemathesis.toml")


async def _run(schema: Path, url: str, state: StatePaths, ident: str, report: Path, *extra: str) -> str:
    st = Path(sys.executable).with_name("st")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "NO_COLOR": "1"}
    proc = await asyncio.create_subprocess_exec(
        str(st),
        "--config-file",
        str(CONFIG),
        "run",
        str(schema),
        "--url",
        url,
        "--tls-verify",
        str(state.ca_crt),
        "--request-cert",
        str(state.tls_crt(ident)),
        "--request-cert-key",
        str(state.tls_key(ident)),
        "--max-time",
        str(FUZZ_SECONDS),
        "--request-timeout",
        "20",
        "--workers",
        "1",  # hypothesis in several threads hits CPython 3.11's ast.parse race ("recursion depth mismatch")
        "--seed",
        os.environ.get("COORD_FUZZ_SEED", "16"),
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"schemathesis as {ident} failed:\n{text[-20000:]}"
    return text


@pytest.mark.slow
@pytest.mark.timeout(2 * FUZZ_SECONDS + 240)
async def test_schemathesis_live_gateway(
    system: System, state: StatePaths, client_for: ClientFactory, tmp_path: Path
) -> None:
    gw = await client_for("nsatu-liaison")
    reply = await gw.request("GET", "/v1/openapi.json")
    assert reply.status == 200
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(reply.body))
    url = system.gateway_url
    sender = await _run(schema, url, state, "nsatu-liaison", tmp_path / "sender.xml")
    operator = await _run(
        schema, url, state, "duty-officer", tmp_path / "operator.xml", "--include-tag", "operators"
    )
    for text in (sender, operator):
        assert "No issues found" in text or "passed" in text.lower(), text[-3000:]
