"""The figures of one run, in the order they are printed (numbers as in docs/performance.md):

1. baselines: Ed25519 verify, raw JetStream publish, the bare aiohttp mTLS handler;
7. the gateway in 1 and 2 processes, ingest only, with CPU per process;
3. open-loop POST->202 latency at fixed rates, POST->delivery at 500 msg/s;
4. fan-out: release decisions and deliveries per second after a batch burst;
2. ingest through `/v1/messages` and `/v1/messages/batch`;
6. memory after N1 and N2 messages, peak RSS;
5. audit verification.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from broker.bench import procfs
from broker.bench.audit_export import audit_rates
from broker.bench.baselines import raw_nats, verify_rates
from broker.bench.load import batch_ingest, client_session, closed_loop, open_loop
from broker.bench.payloads import Sealer, prepare_state
from broker.bench.report import Figure, fig, percentile, say
from broker.bench.scale import Scale
from broker.bench.servers import child


def _check_ok(what: str, statuses: Counter[int], ok: tuple[int, ...] = (200, 202)) -> None:
    bad = {k: v for k, v in statuses.items() if k not in ok}
    if bad:
        raise RuntimeError(f"{what}: unexpected HTTP statuses {bad}")


@dataclass(frozen=True, slots=True)
class Baselines:
    """What later figures are compared with."""

    bare_rate: float  # bare handler, closed loop, req/s
    bare_p99_ms: float  # bare handler, open loop at 500 msg/s
    async_rate: float  # raw publish_async, msg/s


async def baselines(
    sc: Scale, work: Path, state: Path, sealer: Sealer, ctx: ssl.SSLContext, sample: bytes
) -> tuple[list[Figure], Baselines]:
    """Figure 1."""
    figures: list[Figure] = []
    nacl_rate, crypto_rate = verify_rates(sc.verify_n, sample, state)
    figures.append(
        fig(
            "ed25519 verify (PyNaCl/libsodium)",
            nacl_rate,
            "verify/s",
            crypto_rate,
            "baseline: cryptography/OpenSSL",
        )
    )
    say("raw NATS JetStream publish ...")
    sync_rate, async_rate, window_rate = await raw_nats(work, state, sample, sc)
    figures.append(fig("raw JetStream publish, awaited", sync_rate, "msg/s"))
    figures.append(
        fig(
            f"raw JetStream publish_async (window {sc.raw_window})",
            async_rate,
            "msg/s",
            sync_rate,
            "baseline: awaited",
        )
    )
    figures.append(
        fig(
            f"raw JetStream publish, {sc.scale_clients} in flight",
            window_rate,
            "msg/s",
            note="the store's ceiling for the gateway figures below",
        )
    )
    say("bare aiohttp mTLS handler ...")
    async with child("bare", state, work) as info, client_session(ctx, sc.concurrency) as s:
        url = info["gateway_url"] + "/v1/messages"
        await closed_loop(s, url, [sample] * 200, sc.concurrency, "application/json")
        dt, st = await closed_loop(s, url, [sample] * sc.single_n, sc.concurrency, "application/json")
        _check_ok("bare", st)
        bare_rate = sc.single_n / dt
        lat, _, st = await open_loop(s, url, [(str(i), sample) for i in range(int(500 * sc.latency_s))], 500)
        bare_p99 = percentile(lat, 99) * 1000
    figures.append(fig(f"bare aiohttp mTLS handler ({sc.concurrency} clients)", bare_rate, "req/s"))
    return figures, Baselines(bare_rate, bare_p99, async_rate)


async def gateway_processes(
    sc: Scale, work: Path, state: Path, sealer: Sealer, ctx: ssl.SSLContext
) -> list[Figure]:
    """Figure 7: the gateway in 1 and 2 processes on one port, ingest only, each in a fresh copy of
    the state, with the CPU share of every process and of the machine."""
    scaled: dict[int, float] = {}
    cpu_notes: dict[int, str] = {}
    for n in (1, 2):
        copy = work / f"state-gateway{n}"
        shutil.copytree(state, copy, ignore=shutil.ignore_patterns("nats", "audit", "run"))
        say(f"gateway in {n} process(es), ingest only ...")
        async with child(f"gateway{n}", copy, work) as info, client_session(ctx, sc.scale_clients) as s:
            url = info["gateway_url"] + "/v1/messages"
            await closed_loop(s, url, [b for _, b in sealer.make(200)], sc.scale_clients, "application/json")
            bodies = [b for _, b in sealer.make(sc.scale_n)]
            pids = procfs.tree(int(info["pid"]))
            cpu0 = {pid: procfs.cpu_s(pid) for pid in pids}
            me, m0 = time.process_time(), procfs.machine()
            dt, st = await closed_loop(s, url, bodies, sc.scale_clients, "application/json")
            busy, iowait = procfs.busy(m0, procfs.machine())
            used = {pid: (procfs.cpu_s(pid) - cpu0[pid]) / dt * 100 for pid in pids}
            load = (time.process_time() - me) / dt * 100
            _check_ok(f"gateway x{n}", st)
            scaled[n] = sc.scale_n / dt
            core_pid, workers = int(info["pid"]), set(info["workers"])
            gw = sum(v for p, v in used.items() if p in workers)
            nats = sum(v for p, v in used.items() if p not in workers and p != core_pid)
            core = used.get(core_pid, 0.0)
            total = gw + nats + core + load
            cpu_notes[n] = (
                f"CPU, % of one core: gateway {gw:.0f}, nats-server {nats:.0f}, audit/core {core:.0f}, "
                f"load generator {load:.0f}; total {total:.0f} of {100 * (os.cpu_count() or 1)}; "
                f"machine {busy:.0f}% busy (with kernel and softirq time), {iowait:.0f}% iowait"
            )
        shutil.rmtree(copy, ignore_errors=True)
    return [
        fig(
            f"ingest, gateway in 1 process ({sc.scale_clients} clients)",
            scaled[1],
            "msg/s",
            note=f"ingest only; {cpu_notes[1]}",
        ),
        fig(
            f"ingest, gateway in 2 processes ({sc.scale_clients} clients)",
            scaled[2],
            "msg/s",
            scaled[1],
            f"baseline: 1 process; target >= 1.70; {cpu_notes[2]}",
        ),
    ]


class SystemRun:
    """Figures 2, 3, 4 and 6 against one running system (the `broker` child); `total` counts the
    messages sent so far, which every wait for the dispatcher and the stubs is measured against."""

    def __init__(self, sc: Scale, sealer: Sealer, s: aiohttp.ClientSession, info: dict[str, Any]) -> None:
        self.sc, self.sealer, self.s = sc, sealer, s
        self.gw, self.ctl = info["gateway_url"], info["control_url"]
        self.url = self.gw + "/v1/messages"
        self.total = 0

    async def stats(self) -> dict[str, Any]:
        async with self.s.get(self.ctl + "/stats") as r:
            data: dict[str, Any] = await r.json()
            return data

    async def wait_done(self) -> tuple[float | None, float | None, dict[str, Any]]:
        """Poll until the dispatcher processed `total` and the stubs received `3 * total`; return when
        each was reached (perf_counter, None if not within the drain timeout) and the last stats."""
        t_proc: float | None = None
        t_del: float | None = None
        deadline = time.perf_counter() + self.sc.drain_timeout_s
        while True:
            stats = await self.stats()
            now = time.perf_counter()
            if t_proc is None and stats["processed"] >= self.total:
                t_proc = now
            if t_del is None and sum(stats["delivered"].values()) >= self.total * 3:
                t_del = now
            if (t_proc is not None and t_del is not None) or now > deadline:
                return t_proc, t_del, stats
            await asyncio.sleep(0.02)

    async def batch(self, bodies: list[bytes]) -> tuple[float, int]:
        dt, accepted = await batch_ingest(self.s, self.gw, bodies, self.sc.batch_size, self.sc.batch_parallel)
        self.total += accepted
        return dt, accepted

    async def warm_up(self) -> None:
        warm = self.sealer.make(200)
        await closed_loop(self.s, self.url, [b for _, b in warm], 8, "application/json")
        self.total += 200

    async def latency(self, bare_p99_ms: float) -> list[Figure]:
        """Figure 3, each rate starting from an empty system."""
        figures: list[Figure] = []
        await self.wait_done()
        for rate in self.sc.latency_rates:
            items = self.sealer.make(int(rate * self.sc.latency_s))
            record = rate == 500
            if record:
                async with self.s.post(self.ctl + "/record?on=1") as r:
                    await r.read()
            lat, sent, st = await open_loop(self.s, self.url, items, rate)
            _check_ok(f"latency {rate}", st)
            self.total += len(items)
            figures.append(fig(f"POST->202 p50 @ {rate} msg/s", percentile(lat, 50) * 1000, "ms"))
            figures.append(fig(f"POST->202 p95 @ {rate} msg/s", percentile(lat, 95) * 1000, "ms"))
            base = bare_p99_ms if rate == 500 else None
            figures.append(
                fig(
                    f"POST->202 p99 @ {rate} msg/s",
                    percentile(lat, 99) * 1000,
                    "ms",
                    base,
                    "baseline: bare handler p99 @ 500" if base else "",
                )
            )
            figures.append(fig(f"POST->202 max @ {rate} msg/s", lat[-1] * 1000, "ms"))
            _, t_d, _ = await self.wait_done()
            if record:
                async with self.s.post(self.ctl + "/record?on=0") as r:
                    arrivals = (await r.json())["arrivals"]
                dl = sorted(t - sent[mid] for _, mid, t in arrivals if mid in sent)
                figures.append(
                    fig(
                        "POST->delivery p50 @ 500 msg/s",
                        percentile(dl, 50) * 1000,
                        "ms",
                        note=f"{len(dl)} deliveries",
                    )
                )
                figures.append(fig("POST->delivery p99 @ 500 msg/s", percentile(dl, 99) * 1000, "ms"))
            if t_d is None:
                say(f"after {rate} msg/s the deliveries did not drain within {self.sc.drain_timeout_s:.0f} s")
        return figures

    async def fan_out(self) -> list[Figure]:
        """Figure 4: a burst through the batch endpoint, then decisions and deliveries per second."""
        bodies = [b for _, b in self.sealer.make(self.sc.fanout_n)]
        before = await self.stats()
        t0 = time.perf_counter()
        await self.batch(bodies)
        t_p, t_d, stats = await self.wait_done()
        t_end = time.perf_counter()
        decided = 3 * (stats["processed"] - before["processed"])
        delivered = sum(stats["delivered"].values()) - sum(before["delivered"].values())
        return [
            fig(
                "fan-out: release decisions (3 orgs)",
                decided / ((t_p or t_end) - t0),
                "decisions/s",
                note="" if t_p else "not drained within the timeout",
            ),
            fig(
                "fan-out: deliveries to native systems",
                delivered / ((t_d or t_end) - t0),
                "deliveries/s",
                note=f"{delivered} deliveries" + ("" if t_d else ", not drained within the timeout"),
            ),
        ]

    async def ingest(self, base: Baselines) -> list[Figure]:
        """Figure 2: closed-loop single posts, then batches."""
        sc = self.sc
        bodies = [b for _, b in self.sealer.make(sc.single_n)]
        dt, st = await closed_loop(self.s, self.url, bodies, sc.concurrency, "application/json")
        _check_ok("single ingest", st)
        self.total += sc.single_n
        single = sc.single_n / dt
        bodies = [b for _, b in self.sealer.make(sc.batch_n)]
        dt, accepted = await self.batch(bodies)
        return [
            fig(
                f"ingest POST /v1/messages ({sc.concurrency} clients)",
                single,
                "msg/s",
                base.bare_rate,
                "baseline: bare aiohttp mTLS; target >= 0.40",
            ),
            fig(
                f"ingest POST /v1/messages/batch ({sc.batch_size}/batch)",
                accepted / dt,
                "msg/s",
                base.async_rate,
                "baseline: raw publish_async; target >= 0.50",
            ),
        ]

    async def memory(self) -> list[Figure]:
        """Figure 6: RSS after mem_small and mem_large messages (batch ingest, deliveries running)."""
        sc = self.sc
        rss_at: dict[int, int] = {}
        for target in (sc.mem_small, sc.mem_large):
            while self.total < target:
                n = min(10_000, target - self.total)
                await self.batch([b for _, b in self.sealer.make(n)])
            rss_at[target] = (await self.stats())["rss_kb"]
        stats = await self.stats()  # deliveries may still be catching up: not waited for
        return [
            fig(f"broker RSS after {sc.mem_small:,} messages", rss_at[sc.mem_small] / 1024, "MiB"),
            fig(
                f"broker RSS after {sc.mem_large:,} messages",
                rss_at[sc.mem_large] / 1024,
                "MiB",
                rss_at[sc.mem_small] / 1024,
                "ratio: growth; target <= 1.10",
            ),
            fig(
                "broker peak RSS (python)",
                stats["hwm_kb"] / 1024,
                "MiB",
                note=f"audit records {stats['audit_size']:,}",
            ),
            fig("nats-server peak RSS", stats["nats_hwm_kb"] / 1024, "MiB"),
        ]


def audit(sc: Scale, work: Path, state: Path) -> list[Figure]:
    """Figure 5."""
    say(f"audit export of {sc.audit_records:,} records ...")
    verify_rate, hash_rate, n = audit_rates(work, state, sc.audit_records)
    return [
        fig(
            f"audit verify ({n:,} records)",
            verify_rate,
            "records/s",
            hash_rate,
            "baseline: bare SHA-256 of the lines; target >= 200k/s",
        )
    ]


async def run(sc: Scale, work: Path, gateway_workers: int = 0) -> list[Figure]:
    """Every figure, in a fresh state under `work`; the system's gateway in `gateway_workers`
    processes (0: in the system's process)."""
    state = work / "state"
    say(f"state in {state}")
    prepare_state(state)
    sealer = Sealer(state)
    ctx = sealer.client_ssl()
    sample = sealer.make(1)[0][1]
    say(f"message: delivery.status, {len(sample)} bytes signed")

    figures, base = await baselines(sc, work, state, sealer, ctx, sample)
    figures += await gateway_processes(sc, work, state, sealer, ctx)
    say("starting the system (embedded NATS, gateway, dispatcher, audit, adapters, stubs) ...")
    async with child("broker", state, work, workers=gateway_workers) as info, client_session(ctx, 64) as s:
        system = SystemRun(sc, sealer, s, info)
        await system.warm_up()
        figures += await system.latency(base.bare_p99_ms)
        figures += await system.fan_out()
        figures += await system.ingest(base)
        figures += await system.memory()
    figures += audit(sc, work, state)
    return figures
