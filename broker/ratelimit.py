"""Per-sender token buckets (ICD §6 `rate-limited`). NATS has no publisher limit: it lives here."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._now = time.monotonic

    def take(self, who: str, n: int, rate: float, burst: int) -> float:
        """Take `n` tokens for `who`; 0.0 if granted, else the seconds to wait before retrying."""
        now = self._now()
        b = self._buckets.get(who)
        if b is None:
            b = self._buckets[who] = _Bucket(float(burst), now)
        b.tokens = min(float(burst), b.tokens + (now - b.stamp) * rate)
        b.stamp = now
        if n > burst:
            return math.inf
        if b.tokens >= n:
            b.tokens -= n
            return 0.0
        return (n - b.tokens) / rate if rate > 0 else math.inf
