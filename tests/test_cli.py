"""The `broker` command as a user runs it: subprocesses, real files, a real `broker up`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.client import GatewayClient
from broker.identity.state import StatePaths
from broker.identity.tls import client_context

BROKER = [sys.executable, "-m", "broker"]


def run(
    *args: str, state: Path, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [*BROKER, "--state", str(state), *args], capture_output=True, text=True, timeout=timeout
    )
    if check and p.returncode != 0:
        raise AssertionError(f"broker {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def test_schemas_export(tmp_path: Path) -> None:
    run("schemas", "export", str(tmp_path / "out"), state=tmp_path / "s")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "message.schema.json" in names and "envelope.schema.json" in names
    assert len([n for n in names if n.endswith(".schema.json")]) == 3 + 7
    assert {"openapi.json", "asyncapi.json"} <= set(names)  # the contract beside them (docs/integration.md)
    assert len(names) == 3 + 7 + 2
    doc = json.loads((tmp_path / "out" / "capability.pledge.schema.json").read_text())
    assert doc["$id"] == "urn:coord:schema:capability.pledge"


def test_keys_new_operator_and_sender_on_a_fresh_state(tmp_path: Path) -> None:
    state = tmp_path / "s"
    run(
        "keys",
        "new",
        "watch-keeper",
        "--org",
        "EUMAM",
        "--operator",
        "--clearance",
        "EU:RESTRICTED",
        state=state,
    )
    run(
        "keys",
        "new",
        "eumam-planning",
        "--org",
        "EUMAM",
        "--publishes",
        "training.offer,status.update",
        state=state,
    )
    paths = StatePaths(state)
    for f in (
        paths.tls_key("watch-keeper"),
        paths.tls_key("eumam-planning"),
        paths.signing_key("eumam-planning"),
    ):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    policy = paths.policy.read_text()
    assert "[operators.watch-keeper]" in policy and '"EU:RESTRICTED"' in policy
    assert "[senders.eumam-planning]" in policy
    bad = run(
        "keys", "new", "x-ray", "--org", "NOPE", "--publishes", "status.update", state=state, check=False
    )
    assert bad.returncode == 2 and "NOPE" in bad.stderr
    both = run(
        "keys",
        "new",
        "y-ray",
        "--org",
        "EUMAM",
        "--operator",
        "--publishes",
        "status.update",
        state=state,
        check=False,
    )
    assert both.returncode == 2


def _wait_for(proc: subprocess.Popen[str], text: str, timeout: float = 90) -> str:
    assert proc.stdout is not None
    seen = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} not seen; output so far:\n{''.join(seen)}")


def _nats_pids(state: Path) -> list[int]:
    return [int(p.stem.rsplit("_", 1)[1]) for p in (state / "nats" / "run").glob("nats-server_*.ports")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.slow
def test_up_serves_the_printed_curl_then_stops_everything_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "s"
    proc = subprocess.Popen(
        [*BROKER, "--state", str(state), "up", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        out = _wait_for(proc, "Ctrl-C stops everything")
        for component in (
            "policy",
            "nats",
            "audit",
            "gateway",
            "dispatcher",
            "adapter NSATU",
            "adapter EUMAM",
            "adapter UDCG",
        ):
            assert f"  {component}" in out
        assert "curl --cacert" in out
        url = (state / "run" / "gateway.url").read_text().strip()
        pids = _nats_pids(state)
        assert len(pids) == 1 and _alive(pids[0])
        envelope = (state / "examples" / "status-update.envelope.json").read_bytes()
        paths = StatePaths(state)

        async def post_twice() -> tuple[int, int]:
            ctx = client_context(paths.ca_crt, paths.tls_crt("nsatu-liaison"), paths.tls_key("nsatu-liaison"))
            async with GatewayClient(url, ctx) as gw:
                return (await gw.post(envelope)).status, (await gw.post(envelope)).status

        assert asyncio.run(post_twice()) == (202, 200)
        msg = tmp_path / "m.json"
        msg.write_text(
            json.dumps(
                {
                    "kind": "status.update",
                    "label": {
                        "policy": "NATO",
                        "classification": "RESTRICTED",
                        "releasable_to": ["NSATU"],
                        "caveats": [],
                    },
                    "body": {"topic": "cli", "state": "AMBER", "summary": "sent by broker send"},
                }
            )
        )
        sent = run("send", str(msg), "--as", "nsatu-liaison", state=state)
        assert '"seq"' in sent.stdout

        def shown() -> bool:  # `accepted` is written once the dispatcher has taken the message
            tail = run("tail", "--as", "duty-officer", "--no-follow", "--json", state=state)
            events = [json.loads(line) for line in tail.stdout.splitlines()]
            return any(
                e["event"] == "accepted" and e.get("content", {}).get("topic") == "cli" for e in events
            )

        deadline = time.monotonic() + 30
        while not shown():
            assert time.monotonic() < deadline, "the accepted message never showed in the tail"
            time.sleep(0.5)
        refused = run("tail", "--as", "nsatu-liaison", "--no-follow", state=state, check=False)
        assert refused.returncode == 1 and "403" in refused.stderr
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        time.sleep(0.2)
        assert not any(_alive(pid) for pid in pids), "nats-server left behind"
        ok = run("audit", "verify", state=state, check=False)  # NATS is gone: a clear error, not a trace
        assert ok.returncode == 2 and "broker:" in ok.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.slow
def test_up_demo_prints_what_each_body_got(tmp_path: Path) -> None:
    p = run("up", "--port", "0", "--demo", "--exit-after-demo", state=tmp_path / "s", timeout=180)
    out = p.stdout
    for org in ("NSATU", "EUMAM", "UDCG"):
        assert f"\n  {org}\n" in out
    assert "rule: clearance" in out and "rule: releasability" in out and "rule: caveats" in out
    udcg = out.split("\n  UDCG\n", 1)[1]
    assert "withheld  delivery.status" in udcg
    assert "received  capability.pledge" in udcg


def _children(pid: int) -> list[int]:
    f = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in f.read_text().split()] if f.exists() else []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_up_gateway_workers_out_of_range_is_refused(tmp_path: Path) -> None:
    for n in ("-1", "65"):
        p = run("up", "--port", "0", "--gateway-workers", n, state=tmp_path / "s", check=False, timeout=60)
        assert p.returncode == 2 and "--gateway-workers must be between 0 and 64" in p.stderr, p.stderr
    assert not (tmp_path / "s" / "nats").exists()  # refused before anything started


@pytest.mark.slow
def test_up_with_gateway_workers_serves_and_workers_die_with_their_parent(tmp_path: Path) -> None:
    """`broker up --gateway-workers 2`: two `run gateway` children serve the printed URL; killed with
    SIGKILL (no clean-up at all), the parent leaves no worker behind: each sees its stdin pipe close."""
    state = tmp_path / "s"
    proc = subprocess.Popen(
        [*BROKER, "--state", str(state), "up", "--port", "0", "--gateway-workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    nats: list[int] = []
    workers: list[int] = []
    try:
        out = _wait_for(proc, "Ctrl-C stops everything")
        assert "2 processes" in out
        workers = [c for c in _children(proc.pid) if " run gateway " in _cmdline(c)]
        nats = _nats_pids(state)
        assert len(workers) == 2 and all(_alive(w) for w in workers)
        url = (state / "run" / "gateway.url").read_text().strip()
        envelope = (state / "examples" / "status-update.envelope.json").read_bytes()
        paths = StatePaths(state)

        async def post_twice() -> tuple[int, int]:
            ctx = client_context(paths.ca_crt, paths.tls_crt("nsatu-liaison"), paths.tls_key("nsatu-liaison"))
            async with GatewayClient(url, ctx) as gw:
                return (await gw.post(envelope)).status, (await gw.post(envelope)).status

        assert asyncio.run(post_twice()) == (202, 200)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers):
            assert time.monotonic() < deadline, "a gateway worker outlived its parent"
            time.sleep(0.1)
    finally:
        for pid in [proc.pid, *workers, *nats]:  # only what this test started, by pid
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
