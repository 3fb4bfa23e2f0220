"""`broker audit export` and `broker audit verify` from the command line on the live log,
with a distinct exit code for each kind of tampering (ICD §7: 2 and 10-17)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.app.system import System
from broker.audit.note import Checkpoint, parse_checkpoint, sign_checkpoint
from broker.identity.keys import load_signing_key
from broker.identity.state import StatePaths
from broker.nats.server import NatsServer
from tests.conftest import ClientFactory
from tests.support.messages import message, sealed
from tests.support.waiting import eventually

BROKER = [sys.executable, "-m", "broker"]


def _broker(state: StatePaths, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BROKER, "--state", str(state.root), *args], capture_output=True, text=True, timeout=120
    )


async def test_export_verify_and_every_tampering_class(
    system: System, state: StatePaths, client_for: ClientFactory, nats_server: NatsServer, tmp_path: Path
) -> None:
    gw = await client_for("udcg-liaison")
    for _ in range(3):
        label = {
            "policy": "NATO",
            "classification": "RESTRICTED",
            "releasable_to": ["NSATU", "UDCG"],
            "caveats": [],
        }
        msg = message(sender="udcg-liaison", originator="UDCG", label=label)
        assert (await gw.post(sealed(state, msg))).status == 202
    await eventually(
        lambda: (
            system.writer.checkpoint is not None
            and system.writer.checkpoint.size == system.writer.tree.size
            and system.writer.tree.size > 10
        )
    )
    export = tmp_path / "audit.jsonl"
    p = _broker(state, "audit", "export", "--nats-url", nats_server.url, "--out", str(export))
    assert p.returncode == 0, p.stderr
    lines = export.read_bytes().splitlines()
    live = _broker(state, "audit", "verify", "--nats-url", nats_server.url)
    assert live.returncode == 0, live.stderr
    ok = _broker(state, "audit", "verify", str(export))
    assert ok.returncode == 0 and "audit log verified" in ok.stdout

    rec = [i for i, ln in enumerate(lines) if ln.startswith(b'{"type":"record"')]
    cps = [i for i, ln in enumerate(lines) if ln.startswith(b'{"type":"checkpoint"')]
    a, b = rec[2], rec[3]

    def variant(name: str, new: list[bytes]) -> Path:
        f = tmp_path / f"{name}.jsonl"
        f.write_bytes(b"\n".join(new) + b"\n")
        return f

    edited = list(lines)
    edited[a] = edited[a].replace(b'"time":"2', b'"time":"1', 1)
    swapped = list(lines)
    swapped[a], swapped[b] = swapped[b], swapped[a]
    last_cp = cps[-1]
    covered = [i for i in rec if i < last_cp]
    note = json.loads(lines[last_cp])["note"]
    sig_line = note.rstrip("\n").rsplit("\n", 1)[1]
    bad_sig = note.replace(
        sig_line, sig_line[:-6] + ("AAAAA=" if not sig_line.endswith("AAAAA=") else "BBBBB=")
    )
    checkpoint, _ = parse_checkpoint(note)
    keyid, broker_key = load_signing_key(state, "broker")
    stranger = sign_checkpoint(checkpoint, keyid, Ed25519PrivateKey.generate())  # same name, other key
    forked = Checkpoint(checkpoint.origin, checkpoint.size, bytes(32))  # same size, other root
    fork = sign_checkpoint(forked, keyid, broker_key)

    def checkpoint_line(text: str) -> bytes:
        return json.dumps({"type": "checkpoint", "note": text}).encode()

    cases = {
        "malformed": ([*lines[:a], b"{not json", *lines[a:]], 2),
        "unknown-key": ([*lines[:last_cp], checkpoint_line(stranger), *lines[last_cp + 1 :]], 16),
        "equivocation": ([*lines[: last_cp + 1], checkpoint_line(fork), *lines[last_cp + 1 :]], 17),
        "edited": (edited, 10),
        "removed": ([ln for i, ln in enumerate(lines) if i != a], 11),
        "reordered": (swapped, 12),
        "inserted": ([*lines[: a + 1], lines[a], *lines[a + 1 :]], 13),
        # the log cut below its last signed checkpoint: the last three records it covers are gone
        # (and whatever came after it), the checkpoint line stays
        "truncated": (
            [ln for i, ln in enumerate(lines) if i < last_cp and i not in covered[-3:]] + [lines[last_cp]],
            14,
        ),
        "bad-signature": (
            [
                *lines[:last_cp],
                json.dumps({"type": "checkpoint", "note": bad_sig}).encode(),
                *lines[last_cp + 1 :],
            ],
            15,
        ),
    }
    for name, (new, code) in cases.items():
        r = _broker(state, "audit", "verify", str(variant(name, new)))
        assert r.returncode == code, (name, r.returncode, r.stderr)
        assert "audit log BROKEN" in r.stderr
