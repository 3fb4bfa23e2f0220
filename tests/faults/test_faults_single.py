"""Nothing acknowledged is ever lost, on a single secured nats-server, with each part of the system
in its own process: kill -9 NATS, the core (gateway + audit writer), the dispatcher or an adapter
mid-load and restart it, or stop a native system for 30 s. For each: lost = unexpected = duplicated
= misdelivered = 0, each organisation gets its messages in accepted order, and the audit log
verifies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from broker.policy.loader import load_policy
from tests.faults.harness import (
    AuditCompleteness,
    LoadGenerator,
    LoadReport,
    audit_completeness,
    check,
    longest_gap,
    wait_delivered,
)
from tests.faults.processes import (
    Split,
    alive,
    audit_export,
    audit_verifies,
    gateway_worker_pids,
    split_system,
    wall,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(360)]

LOAD_S = 8.0
FAULT_AT_S = 3.0
RATE = 40.0
REPORT = Path(__file__).with_name("last-report.jsonl")


async def scenario(
    tmp_path: Path,
    name: str,
    fault: Callable[[Split], Awaitable[None]],
    *,
    cluster: bool = False,
    gateway_workers: int = 0,
) -> None:
    """Load for LOAD_S, the fault at FAULT_AT_S, then every check of the suite."""
    async with split_system(tmp_path, cluster=cluster, gateway_workers=gateway_workers) as split:
        gen = LoadGenerator(
            split.paths, load_policy(split.paths.policy), split.gateway_url, rate=RATE, workers=2
        )
        load = asyncio.create_task(gen.run(LOAD_S, deadline_extra=90.0))
        await asyncio.sleep(FAULT_AT_S)
        t_fault = wall()
        await fault(split)
        report = await load
        recover = await wait_delivered(report, split.stubs, timeout=120.0)
        result = check(report, split.stubs)
        verified = await audit_verifies(split.paths, split.nats_url)
        complete = await _complete(split, report, tmp_path / "audit.jsonl")
        row = {
            "fault": name,
            "sent": result.sent,
            "acknowledged": result.acknowledged,
            "delivered": result.delivered,
            "lost": len(result.lost),
            "unexpected": len(result.unexpected),
            "duplicated": len(result.duplicated),
            "misdelivered": len(result.misdelivered),
            "misordered": len(result.misordered),
            "retries": report.retries,
            "unanswered": report.unanswered,
            "longest_intake_stall_s": round(longest_gap(report.ack_times, t_fault), 2),
            "native_repeats": {o: s.repeats for o, s in split.stubs.items()},
            "seconds_to_all_delivered_after_load": round(recover, 2),
            "seconds_since_fault": round(wall() - t_fault, 2),
            "audit_verify": verified.returncode,
            "audit_missing": len(complete.missing),
            "audit_delivered_twice": len(complete.delivered_twice),
            "audit_repeated_records": complete.repeated_records,
        }
        with REPORT.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"\n{name}: {result.row()}")
        assert report.refused == {}, report.refused
        assert report.unanswered == 0
        assert result.acknowledged > RATE * LOAD_S * 0.5
        assert result.clean, (
            result.lost[:5],
            result.unexpected[:5],
            result.duplicated[:5],
            result.misdelivered[:5],
            result.misordered[:5],
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert not complete.missing, complete.missing[:5]
        assert not complete.delivered_twice and not complete.released_to_uncleared


async def _complete(split: Split, report: LoadReport, out: Path) -> AuditCompleteness:
    """The log is written a moment after the last delivery: wait until it holds every record."""
    deadline = wall() + 60.0
    while True:
        complete = audit_completeness(await audit_export(split.paths, split.nats_url, out), report)
        if not complete.missing or wall() > deadline:
            return complete
        await asyncio.sleep(1.0)


async def test_kill_nats_and_restart(tmp_path: Path) -> None:
    async def fault(split: Split) -> None:
        split.nats.kill()
        await asyncio.sleep(2.0)
        await split.restart_nats()

    await scenario(tmp_path, "kill -9 nats-server, restart", fault)


async def test_kill_core_mid_load_and_restart(tmp_path: Path) -> None:
    async def fault(split: Split) -> None:
        split.parts["core"].kill()
        await asyncio.sleep(1.0)
        await split.parts["core"].start()

    await scenario(tmp_path, "kill -9 gateway+audit (core), restart", fault)


async def test_kill_dispatcher_and_restart(tmp_path: Path) -> None:
    async def fault(split: Split) -> None:
        split.parts["dispatcher"].kill()
        await asyncio.sleep(2.0)
        await split.parts["dispatcher"].start()

    await scenario(tmp_path, "kill -9 dispatcher, restart", fault)


async def test_kill_adapter_mid_batch_and_restart(tmp_path: Path) -> None:
    async def fault(split: Split) -> None:
        split.parts["NSATU"].kill()
        await asyncio.sleep(2.0)
        await split.parts["NSATU"].start()

    await scenario(tmp_path, "kill -9 NSATU adapter, restart", fault)


async def test_native_system_down_for_30s(tmp_path: Path) -> None:
    async def fault(split: Split) -> None:
        split.stubs["EUMAM"].set_down(True)
        await asyncio.sleep(30.0)
        split.stubs["EUMAM"].set_down(False)

    await scenario(tmp_path, "EUMAM native system down 30 s", fault)


async def test_kill_a_gateway_worker_mid_load(tmp_path: Path) -> None:
    """The gateway as 2 processes: one dies by SIGKILL; the other takes the new connections, the core
    restarts the dead one, and clients retry what was reset."""

    async def fault(split: Split) -> None:
        pids = gateway_worker_pids(split.parts["core"])
        assert len(pids) == 2, pids
        os.kill(pids[0], signal.SIGKILL)  # a child of the core process this test started
        deadline = wall() + 30.0
        while True:
            now = gateway_worker_pids(split.parts["core"])
            if len(now) == 2 and pids[0] not in now:
                return
            assert wall() < deadline, f"gateway worker not restarted: {now}"
            await asyncio.sleep(0.2)

    await scenario(tmp_path, "kill -9 one of 2 gateway processes", fault, gateway_workers=2)


async def test_kill_core_with_gateway_workers_and_restart(tmp_path: Path) -> None:
    """The core dies by SIGKILL: its gateway processes see their stdin pipe close and stop (nobody
    would audit them), and the restarted core starts new ones on the same port."""

    async def fault(split: Split) -> None:
        old = gateway_worker_pids(split.parts["core"])
        assert len(old) == 2, old
        split.parts["core"].kill()
        deadline = wall() + 20.0
        while any(alive(pid) for pid in old):
            assert wall() < deadline, "gateway workers outlived the core"
            await asyncio.sleep(0.1)
        await split.parts["core"].start()

    await scenario(tmp_path, "kill -9 core with 2 gateway processes, restart", fault, gateway_workers=2)
