"""`GatewayWorkers`' supervision with stand-in processes (no NATS needed): a worker that says it is
ready and then dies at once is restarted with a growing back-off, not every half second."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from broker.errors import WorkerStartError
from broker.gateway.workers import GatewayWorkers, WorkerSettings

CRASHER = "import sys; print('{\"ready\": []}', flush=True); sys.exit(3)"
SILENT = "import sys; sys.exit(4)"


class StandIn(GatewayWorkers):
    def __init__(self, settings: WorkerSettings, code: str) -> None:
        super().__init__(settings)
        self.code = code

    def _argv(self, index: int) -> list[str]:
        return [sys.executable, "-c", self.code]


def _settings(tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(count=1, state=tmp_path, nats_url="tls://127.0.0.1:1", port=0, start_timeout_s=20)


async def test_a_crash_looping_worker_backs_off(tmp_path: Path) -> None:
    async with StandIn(_settings(tmp_path), CRASHER) as w:
        await asyncio.sleep(4.0)
        # back-off 0.5, 1, 2 s: at most 3 restarts in 4 s (a fixed 0.5 s would give about 8)
        assert 2 <= w.restarts <= 3, w.restarts


async def test_a_worker_that_never_says_ready_fails_the_start(tmp_path: Path) -> None:
    with pytest.raises(WorkerStartError, match="failed to start"):
        async with StandIn(_settings(tmp_path), SILENT):
            pass
