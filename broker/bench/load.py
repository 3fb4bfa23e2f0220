"""The load generator: keep-alive mTLS sessions, closed loop (N clients, each sends when answered),
open loop (sent on schedule whatever the replies) and batch posts."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Sequence

import aiohttp


def client_session(ctx: ssl.SSLContext, limit: int) -> aiohttp.ClientSession:
    """Up to `limit` keep-alive connections with the client certificate in `ctx`."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx, limit=limit), timeout=aiohttp.ClientTimeout(total=60)
    )


async def closed_loop(
    session: aiohttp.ClientSession, url: str, bodies: Sequence[bytes], concurrency: int, ctype: str
) -> tuple[float, Counter[int]]:
    """`concurrency` keep-alive clients, each posting the next body as soon as its last one is answered."""
    it = iter(bodies)
    statuses: Counter[int] = Counter()
    headers = {"Content-Type": ctype}

    async def worker() -> None:
        for body in it:
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                statuses[r.status] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, statuses


async def open_loop(
    session: aiohttp.ClientSession, url: str, items: Sequence[tuple[str, bytes]], rate: float
) -> tuple[list[float], dict[str, float], Counter[int]]:
    """Send on schedule (request i at start + i/rate), whatever the replies: latency counts from the
    scheduled time, so queueing anywhere (client included) shows."""
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    sent: dict[str, float] = {}
    statuses: Counter[int] = Counter()
    headers = {"Content-Type": "application/json"}

    async def one(body: bytes, t_sched: float) -> None:
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
            lat.append(loop.time() - t_sched)
            statuses[r.status] += 1

    start = loop.time() + 0.05
    tasks = []
    for i, (mid, body) in enumerate(items):
        t_sched = start + i / rate
        delay = t_sched - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[mid] = t_sched
        tasks.append(asyncio.create_task(one(body, t_sched)))
    await asyncio.gather(*tasks)
    lat.sort()
    return lat, sent, statuses


def batches(bodies: Sequence[bytes], size: int) -> list[bytes]:
    """NDJSON request bodies of `size` envelopes each (the last may be shorter)."""
    return [b"\n".join(bodies[i : i + size]) + b"\n" for i in range(0, len(bodies), size)]


async def batch_ingest(
    session: aiohttp.ClientSession, url: str, bodies: Sequence[bytes], size: int, parallel: int
) -> tuple[float, int]:
    """`POST /v1/messages/batch` of `size` messages each, `parallel` at a time; returns (seconds,
    messages accepted)."""
    chunks = batches(bodies, size)
    it = iter(chunks)
    accepted = 0
    headers = {"Content-Type": "application/x-ndjson"}

    async def worker() -> None:
        nonlocal accepted
        for data in it:
            async with session.post(url + "/v1/messages/batch", data=data, headers=headers) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"batch: HTTP {r.status}: {body}")
                accepted += sum(1 for x in body["results"] if "problem" not in x)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(parallel)))
    return time.perf_counter() - t0, accepted
