"""Stopping asyncio tasks for sure.

On Python 3.11, `asyncio.wait_for` returns the inner result instead of raising when a cancellation
arrives in the same loop iteration as that result (CPython gh-86296, fixed by the 3.12 rewrite), and
nats-py's `fetch`, `request` and `next_msg` all use `wait_for`. A task cancelled at that moment simply
goes on: a loop like `pull_forever` then runs for ever and an `await task` after `task.cancel()` hangs
the shutdown of the whole system. `stop_task` cancels again until the task has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["stop_task"]


async def stop_task(task: asyncio.Task[Any] | asyncio.Future[Any], *, every_s: float = 0.5) -> None:
    """Cancel `task` and wait until it has ended, cancelling again every `every_s` seconds while it has
    not (a lost cancellation, above). Its result or exception is dropped; its end is awaited."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every_s)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
