"""Reading from JetStream without nats-py leaking out: durable pull consumers and their deliveries,
and ordered reads of one subject (the audit log, the tail).

    Delivery       one message a durable consumer handed out: data, headers, stream sequence, and
                   ack / in_progress / nak / term
    durable        create (or update) and bind a durable pull consumer
    bound          bind one the admin made (adapters and the audit writer may not create consumers)
    pull_forever   fetch batches from a consumer for ever, surviving reconnections and silent spells
    SubjectReader  one subject of a stream from a sequence on, in order (`async with`), no acks

nats-py's exceptions stop here as `BusUnavailable` (broker.nats.bus.translate_errors).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from broker.aio import AsyncResource
from broker.errors import BusUnavailable
from broker.nats.bus import Bus, translate_errors

__all__ = ["Delivery", "Puller", "SubjectReader", "bound", "durable", "pull_forever"]

log = structlog.get_logger(__name__)


class Delivery:
    """One message handed out by a durable pull consumer."""

    __slots__ = ("_m",)

    def __init__(self, m: Msg) -> None:
        self._m = m

    @property
    def data(self) -> bytes:
        return self._m.data

    @property
    def headers(self) -> Mapping[str, str]:
        return self._m.headers or {}

    @property
    def seq(self) -> int:
        """The stream sequence of the message."""
        return int(self._m.metadata.sequence.stream)

    @property
    def num_delivered(self) -> int:
        """How often the consumer has handed this message out (1 the first time)."""
        return int(self._m.metadata.num_delivered or 1)

    async def ack(self) -> None:
        """Acknowledge, and wait for the server to confirm it."""
        with translate_errors("ack"):
            await self._m.ack_sync()

    async def in_progress(self) -> None:
        """Tell the server the message is still being worked on (resets its ack wait); best effort."""
        with contextlib.suppress(Exception):
            await self._m.in_progress()

    async def nak(self, delay_s: float | None = None) -> None:
        with translate_errors("nak"):
            await self._m.nak(delay=delay_s)

    async def term(self) -> None:
        """Never hand this message out again."""
        with translate_errors("term"):
            await self._m.term()


class Puller:
    """A bound pull subscription: `fetch` returns at most `n` deliveries, an empty list when none came
    within `timeout` (nats.py #418: a timeout is an empty batch, never an error)."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub

    async def fetch(self, n: int, timeout: float) -> list[Delivery]:
        with translate_errors("fetch"):
            try:
                msgs = await self._sub.fetch(n, timeout=timeout)
            except (nats.errors.TimeoutError, TimeoutError):
                return []
        return [Delivery(m) for m in msgs]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


async def durable(
    bus: Bus,
    stream: str,
    name: str,
    *,
    filter_subject: str,
    ack_wait_s: float,
    max_ack_pending: int,
) -> Puller:
    """Create (or update) the durable pull consumer `name` on `stream` and bind to it."""
    await bus.wait_ready()
    with translate_errors(f"subscribe {name}"):
        sub = await bus.js.pull_subscribe(
            filter_subject,
            durable=name,
            stream=stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait_s,
                max_ack_pending=max_ack_pending,
                max_deliver=-1,
            ),
        )
    return Puller(sub)


async def bound(bus: Bus, stream: str, name: str) -> Puller:
    """Bind to the durable consumer `name` that the admin identity made on `stream`."""
    await bus.wait_ready()
    with translate_errors(f"bind {name}"):
        return Puller(await bus.js.pull_subscribe_bind(durable=name, stream=stream))


async def pull_forever(
    bus: Bus,
    subscribe: Callable[[], Awaitable[Puller]],
    handle: Callable[[list[Delivery]], Awaitable[None]],
    *,
    batch: int,
    what: str,
    idle_limit: int = 30,
) -> None:
    """Fetch from a durable pull consumer and hand each batch to `handle`, for ever.

    The subscription is made anew after a reconnection (`bus.generation` changed) and after
    `idle_limit` empty one-second fetches, since a pull subscription can go silent after a server
    restart (nats.py #504). Bus failures are logged and retried; only cancellation ends the loop.
    """
    while True:
        puller: Puller | None = None
        try:
            puller = await subscribe()
            gen = bus.generation
            idle = 0
            while gen == bus.generation and idle < idle_limit:
                got = await puller.fetch(batch, timeout=1.0)
                if not got:
                    idle += 1
                    continue
                idle = 0
                await handle(got)
        except asyncio.CancelledError:
            raise
        except BusUnavailable as exc:
            log.warning("bus.pull_error", consumer=what, error=str(exc))
            await asyncio.sleep(0.5)
        except Exception:
            log.exception("bus.pull_failed", consumer=what)
            await asyncio.sleep(1.0)
        finally:
            if puller is not None:
                await puller.close()


@dataclass(frozen=True, slots=True)
class Read:
    seq: int
    data: bytes


class SubjectReader(AsyncResource):
    """`async with SubjectReader(bus, stream, subject, start_seq) as r:` then `await r.fetch(n, timeout)`
    gives the next messages on `subject` in stream order (an ephemeral consumer, no acks, gone 30 s
    after the reader is left)."""

    def __init__(self, bus: Bus, stream: str, subject: str, start_seq: int = 1) -> None:
        self.bus = bus
        self.stream = stream
        self.subject = subject
        self.start_seq = start_seq
        self._sub: Any = None

    async def _open(self) -> None:
        with translate_errors(f"read {self.subject}"):
            self._sub = await self.bus.js.pull_subscribe(
                self.subject,
                stream=self.stream,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=self.start_seq,
                    inactive_threshold=30.0,
                    ack_policy=AckPolicy.NONE,
                ),
            )

    async def _close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def fetch(self, n: int, timeout: float) -> list[Read]:
        """Up to `n` messages; an empty list when none came within `timeout`."""
        with translate_errors(f"read {self.subject}"):
            try:
                msgs = await self._sub.fetch(n, timeout=timeout)
            except (nats.errors.TimeoutError, TimeoutError):
                return []
        return [Read(int(m.metadata.sequence.stream), m.data) for m in msgs]
