"""`stop_task` ends a task whose cancellation Python 3.11's `asyncio.wait_for` lost (gh-86296)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from broker.aio import stop_task


async def _looping_on_wait_for(futures: list[asyncio.Future[None]]) -> None:
    """What nats-py's fetch loop looks like: `wait_for` on a future, again and again."""
    loop = asyncio.get_running_loop()
    while True:
        f: asyncio.Future[None] = loop.create_future()
        futures.append(f)
        await asyncio.wait_for(f, 5)


async def _cancel_as_the_result_arrives(
    task: asyncio.Task[None], futures: list[asyncio.Future[None]]
) -> None:
    await asyncio.sleep(0)  # the task now waits inside wait_for
    futures[-1].set_result(None)  # the result arrives ...
    task.cancel()  # ... and the cancellation in the same loop iteration


async def test_a_cancellation_lost_by_wait_for_is_repeated() -> None:
    futures: list[asyncio.Future[None]] = []
    task = asyncio.create_task(_looping_on_wait_for(futures))
    await _cancel_as_the_result_arrives(task, futures)
    done, _ = await asyncio.wait({task}, timeout=0.3)
    if sys.version_info < (3, 12):
        assert not done, "wait_for on this Python no longer loses a cancellation: see broker/aio.py"
    await asyncio.wait_for(stop_task(task, every_s=0.05), 5)
    assert task.cancelled()


async def test_stop_task_waits_for_the_clean_up_of_a_cooperative_task() -> None:
    cleaned: list[str] = []

    async def cooperative() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.1)  # clean-up that takes a while, within every_s
            cleaned.append("done")
            raise

    task = asyncio.create_task(cooperative())
    await asyncio.sleep(0)
    await stop_task(task, every_s=1.0)
    assert cleaned == ["done"] and task.cancelled()


async def test_stop_task_drops_the_exception_of_a_failed_task() -> None:
    async def failing() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    await stop_task(task)  # no raise: the task had already ended
    assert isinstance(task.exception(), RuntimeError)


async def test_async_resource_stops_its_tasks_and_is_never_reopened() -> None:
    import asyncio as _asyncio

    from broker.aio import AsyncResource

    events: list[str] = []

    class Thing(AsyncResource):
        async def _open(self) -> None:
            self.task = self._spawn(_asyncio.sleep(3600), "forever")
            events.append("open")

        async def _close(self) -> None:
            events.append(f"close, task done={self.task.done()}")

    thing = Thing()
    async with thing:
        assert not thing.task.done()
    assert events == ["open", "close, task done=True"]
    await thing.aclose()  # a second close does nothing
    assert events == ["open", "close, task done=True"]
    with pytest.raises(RuntimeError, match="cannot be entered again"):
        async with thing:
            pass


async def test_async_resource_closes_what_a_failed_open_started() -> None:
    from broker.aio import AsyncResource

    closed: list[bool] = []

    class Broken(AsyncResource):
        async def _open(self) -> None:
            raise OSError("no")

        async def _close(self) -> None:
            closed.append(True)

    with pytest.raises(OSError):
        async with Broken():
            pass
    assert closed == [True]


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    from broker.aio import Backoff

    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5
    with pytest.raises(ValueError):
        Backoff(0, 1)
