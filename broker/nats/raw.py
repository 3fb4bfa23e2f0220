"""A bare nats-py JetStream connection, for baselines only (`broker bench`'s raw publish figures).

No `Bus`: no retries, no stream checks, no error translation. It is here, not in the bench, because
`broker/nats/` is the one package that imports `nats`; the bench does the timing, this module only
the nats-py calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import nats
from nats.js.api import StorageType, StreamConfig
from nats.js.client import JetStreamContext

from broker.nats.bus import BusSettings


class RawJetStream:
    """One JetStream context on a plain connection; every publish carries a `Nats-Msg-Id`."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def add_stream(self, name: str, subjects: list[str], duplicate_window_s: float) -> None:
        """A file-stored stream (as the broker's streams are)."""
        await self._js.add_stream(
            StreamConfig(
                name=name, subjects=subjects, storage=StorageType.FILE, duplicate_window=duplicate_window_s
            )
        )

    async def publish(self, subject: str, data: bytes, msg_id: str) -> None:
        """One publish, awaited until the server's ack."""
        await self._js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})

    async def publish_window(self, subject: str, data: bytes, msg_ids: Iterable[str]) -> None:
        """`publish_async` of one message per id (at most the connection's window pending), then
        wait until every one is acked."""
        futs = []
        for msg_id in msg_ids:
            futs.append(await self._js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id}))
        await self._js.publish_async_completed()
        await asyncio.gather(*futs)


@asynccontextmanager
async def raw_jetstream(settings: BusSettings, *, window: int) -> AsyncIterator[RawJetStream]:
    """Connect with `settings`' servers, TLS and inbox prefix (nothing else of them is used), with
    `window` as the `publish_async` limit; the connection is closed on exit."""
    nc = await nats.connect(
        servers=list(settings.servers),
        tls=settings.tls,
        tls_handshake_first=settings.tls_handshake_first,
        inbox_prefix=settings.inbox_prefix,
        pending_size=0,
    )
    try:
        yield RawJetStream(nc.jetstream(timeout=5, publish_async_max_pending=window))
    finally:
        await nc.close()
