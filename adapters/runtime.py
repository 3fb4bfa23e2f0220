"""The one small base every adapter (NSATU, EUMAM, UDCG) runs on: an outbound side (broker -> native,
`adapters.outbound`) and an inbound side (native -> broker, `adapters.inbound`) sharing one HTTP
session to the native system.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.formats import Codec
from adapters.inbound import Inbound
from adapters.outbound import AdapterStats, Outbound
from broker.aio import AsyncResource
from broker.audit.records import AuditSink
from broker.client import GatewayClient
from broker.metrics.registry import Registry
from broker.nats.bus import Bus
from broker.nats.names import adapter_durable
from broker.policy.model import PolicySource

__all__ = ["Adapter", "AdapterIdentity", "AdapterStats"]


@dataclass(frozen=True, slots=True)
class AdapterIdentity:
    sender: str
    keyid: str
    key: Ed25519PrivateKey


class Adapter(AsyncResource):
    """Bridges one organisation's native system and the broker, both ways."""

    def __init__(
        self,
        *,
        org: str,
        codec: Codec,
        native_url: str,
        bus: Bus,
        policy: PolicySource,
        audit: AuditSink,
        identity: AdapterIdentity | None,
        gateway: GatewayClient | None,
        state_dir: Path,
        ack_wait_s: float = 30.0,
        poll_s: float = 0.2,
        max_backoff_s: float = 5.0,
        metrics: Registry | None = None,
    ) -> None:
        self.org = org
        self.codec = codec
        self.native_url = native_url.rstrip("/")
        self.bus = bus
        self.policy = policy
        self.audit = audit
        self.identity = identity
        self.gateway = gateway
        self.state_dir = state_dir
        self.ack_wait_s = ack_wait_s
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self.stats = AdapterStats()
        # 1: the native system answered its last request (inbox or outbox) other than 408/429/5xx;
        # 0: no answer, or "retry later". Unset until the first request (the console's health panel)
        self.m_reachable = (metrics or Registry()).labelled_gauge(
            "coord_native_reachable", "native system answering, as its adapter last saw it", ("organisation",)
        )
        self._http: aiohttp.ClientSession | None = None
        self._parts: list[AsyncResource] = []

    @property
    def durable(self) -> str:
        return adapter_durable(self.org)

    async def _open(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        out = Outbound(
            org=self.org,
            codec=self.codec,
            native_url=self.native_url,
            bus=self.bus,
            policy=self.policy,
            audit=self.audit,
            http=self._http,
            stats=self.stats,
            saw_native=self._saw_native,
            ack_wait_s=self.ack_wait_s,
            max_backoff_s=self.max_backoff_s,
        )
        self._parts.append(await out.__aenter__())
        if self.identity is not None and self.gateway is not None:
            inbound = Inbound(
                org=self.org,
                codec=self.codec,
                native_url=self.native_url,
                http=self._http,
                sender=self.identity.sender,
                keyid=self.identity.keyid,
                key=self.identity.key,
                gateway=self.gateway,
                state_dir=self.state_dir,
                stats=self.stats,
                saw_native=self._saw_native,
                poll_s=self.poll_s,
                max_backoff_s=self.max_backoff_s,
            )
            self._parts.append(await inbound.__aenter__())

    def _saw_native(self, status: int | None) -> None:
        up = status is not None and status < 500 and status not in (408, 429)
        self.m_reachable.set(self.org, value=1.0 if up else 0.0)

    async def _close(self) -> None:
        while self._parts:
            await self._parts.pop().aclose()
        if self._http is not None:
            await self._http.close()
