"""How much of everything a run does: `QUICK` (`--quick`, for the test) and `FULL`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Scale:
    quick: bool
    verify_n: int
    raw_sync_n: int
    raw_async_n: int
    raw_window: int
    concurrency: int
    single_n: int
    batch_n: int
    batch_size: int
    batch_parallel: int
    latency_rates: tuple[int, ...]
    latency_s: float
    fanout_n: int
    audit_records: int
    mem_small: int
    mem_large: int
    drain_timeout_s: float
    scale_n: int
    scale_clients: int


QUICK = Scale(
    quick=True,
    verify_n=3000,
    raw_sync_n=500,
    raw_async_n=3000,
    raw_window=256,
    concurrency=16,
    single_n=1000,
    batch_n=3000,
    batch_size=250,
    batch_parallel=2,
    latency_rates=(200, 500, 1000),
    latency_s=0.5,
    fanout_n=300,
    audit_records=20_000,
    mem_small=6000,
    mem_large=12_000,
    drain_timeout_s=10.0,
    scale_n=1000,
    scale_clients=32,
)
FULL = Scale(
    quick=False,
    verify_n=30_000,
    raw_sync_n=5000,
    raw_async_n=30_000,
    raw_window=256,
    concurrency=16,
    single_n=10_000,
    batch_n=30_000,
    batch_size=500,
    batch_parallel=2,
    latency_rates=(200, 500, 1000),
    latency_s=5.0,
    fanout_n=2000,
    audit_records=1_000_000,
    mem_small=60_000,
    mem_large=300_000,
    drain_timeout_s=120.0,
    scale_n=10_000,
    scale_clients=32,
)

