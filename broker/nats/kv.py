"""A JetStream key-value bucket behind the bus boundary: what the adapters' redelivery guard needs."""

from __future__ import annotations

from typing import Any

import nats.js.errors

from broker.nats.bus import Bus, translate_errors

__all__ = ["KeyValue"]


class KeyValue:
    """`await KeyValue.open(bus, bucket)`; `get` answers None for a key that is not there."""

    def __init__(self, kv: Any) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, bus: Bus, bucket: str) -> KeyValue:
        """Bind to a bucket that exists (the admin identity makes them)."""
        with translate_errors(f"bucket {bucket}"):
            return cls(await bus.js.key_value(bucket))

    async def get(self, key: str) -> bytes | None:
        with translate_errors("kv get"):
            try:
                entry = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                return None
        return bytes(entry.value or b"")

    async def put(self, key: str, value: bytes) -> int:
        """Store `value` under `key`; returns the revision once the server has it."""
        with translate_errors("kv put"):
            return int(await self._kv.put(key, value))
