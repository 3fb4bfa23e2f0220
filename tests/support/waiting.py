"""Waiting on a condition, bounded by a generous guard: tests wait on events, never on time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(pred: Callable[[], bool], timeout: float = 15.0, step: float = 0.05) -> None:
    """Until `pred()` holds; AssertionError if it does not within `timeout` (a hang guard)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


async def wait_for(probe: Callable[[], Awaitable[T]], timeout: float = 20.0, step: float = 0.1) -> T:
    """Await `probe()` until it returns something truthy; return that."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


def first(items: list[Any], pred: Callable[[Any], bool]) -> Any:
    return next((x for x in items if pred(x)), None)
