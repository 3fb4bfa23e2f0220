"""The same promise on a 3-node JetStream cluster (TLS clients and routes, streams at 3 replicas):
kill -9 the stream leader, kill a follower, step the leader down repeatedly, kill all three nodes;
each under load, each restarted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.nats.names import ACCEPTED_STREAM
from tests.faults.processes import Split
from tests.faults.test_faults_single import scenario

pytestmark = [pytest.mark.fault, pytest.mark.timeout(420)]


def _cluster(split: Split):  # type: ignore[no-untyped-def]
    assert split.cluster is not None
    return split.cluster


async def test_kill_stream_leader_and_restart(tmp_path: Path) -> None:
    async def fault(split: Split) -> None:
        c = _cluster(split)
        leader = c.node(await c.stream_leader(ACCEPTED_STREAM))
        leader.kill()
        await asyncio.sleep(3.0)
        await leader.start()

    await scenario(tmp_path, "cluster: kill -9 the COORD_ACCEPTED leader, restart", fault, cluster=True)


async def test_kill_a_follower_and_restart(tmp_path: Path) -> None:
    async def fault(split: Split) -> None:
        c = _cluster(split)
        leader = await c.stream_leader(ACCEPTED_STREAM)
        follower = next(n for n in c.nodes if n.name != leader)
        follower.kill()
        await asyncio.sleep(3.0)
        await follower.start()

    await scenario(tmp_path, "cluster: kill -9 a follower, restart", fault, cluster=True)


async def test_step_the_leader_down_repeatedly(tmp_path: Path) -> None:
    async def fault(split: Split) -> None:
        c = _cluster(split)
        for _ in range(3):
            await c.step_down(ACCEPTED_STREAM)
            await asyncio.sleep(1.0)

    await scenario(tmp_path, "cluster: step the COORD_ACCEPTED leader down 3 times", fault, cluster=True)


async def test_kill_all_three_and_restart(tmp_path: Path) -> None:
    async def fault(split: Split) -> None:
        c = _cluster(split)
        await c.kill_all()
        await asyncio.sleep(2.0)
        await c.start_all()

    await scenario(tmp_path, "cluster: kill -9 all three nodes, restart", fault, cluster=True)
