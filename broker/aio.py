"""Asyncio foundations: stopping tasks for sure, exponential back-off, and the base of every
long-lived resource.

On Python 3.11, `asyncio.wait_for` returns the inner result instead of raising when a cancellation
arrives in the same loop iteration as that result (CPython gh-86296, fixed by the 3.12 rewrite), and
nats-py's `fetch`, `request` and `next_msg` all use `wait_for`. A task cancelled at that moment simply
goes on: a loop like `pull_forever` then runs for ever and an `await task` after `task.cancel()` hangs
the shutdown of the whole system. `stop_task` cancels again until the task has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

__all__ = ["AsyncResource", "Backoff", "stop_task"]


async def stop_task(task: asyncio.Task[Any] | asyncio.Future[Any], *, every_s: float = 0.5) -> None:
    """Cancel `task` and wait until it has ended, cancelling again every `every_s` seconds while it has
    not (a lost cancellation, above). Its result or exception is dropped; its end is awaited."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every_s)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


class Backoff:
    """Exponential back-off: `first`, then doubling up to `cap` seconds; `reset()` after a success.
    The one place where a retry loop decides how long to wait."""

    __slots__ = ("_delay", "cap", "first")

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        if not 0 < first <= cap:
            raise ValueError("back-off needs 0 < first <= cap")
        self.first = first
        self.cap = cap
        self._delay = first

    def next(self) -> float:
        """The delay to wait now; the one after it is twice as long, up to the cap."""
        delay = self._delay
        self._delay = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._delay = self.first

    async def sleep(self) -> None:
        await asyncio.sleep(self.next())


class AsyncResource:
    """The base of every long-lived resource: `async with Resource(...) as r:` opens it once
    (`_open`), leaving closes it once (`aclose`, then `_close`); a closed resource is never reopened
    (httpx's ClientState, anyio's AsyncResource). Background tasks started with `_spawn` belong to
    the resource: `aclose` stops every one of them (for sure, `stop_task`) before `_close` runs."""

    _state: str = "new"

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError(f"{type(self).__name__} is {self._state}: it cannot be entered again")
        self._state = "open"
        try:
            await self._open()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the resource's tasks, then release what it holds; a second call does nothing."""
        if self._state == "closed":
            return
        self._state = "closed"
        try:
            await self._stop_tasks()
        finally:
            await self._close()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a task this resource owns."""
        tasks: list[asyncio.Task[Any]] = self.__dict__.setdefault("_owned_tasks", [])
        task = asyncio.create_task(coro, name=name)
        tasks.append(task)
        return task

    async def _stop_tasks(self) -> None:
        tasks: list[asyncio.Task[Any]] = self.__dict__.get("_owned_tasks", [])
        while tasks:
            await stop_task(tasks.pop())

    async def _open(self) -> None:
        """Acquire what the resource holds and start its tasks."""

    async def _close(self) -> None:
        """Release what the resource holds (its tasks are stopped already)."""
