"""Provisioning with the admin identity, and keeping NATS in step with the policy.

`provision` (run by `broker up`) makes each organisation's delivered-ids bucket, each adapter's durable
consumer (filtered to its own deliveries up to its clearance) and the audit writer's inbox consumer;
the streams themselves are the admin `Bus`'s (`ensure_streams`). `NatsPolicyFollower` re-renders the
config (and reloads an embedded server with SIGHUP) and re-provisions the consumers when the policy
changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Protocol

import nats.js.errors
import structlog
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType

from broker.aio import AsyncResource
from broker.errors import BusUnavailable, PKIError
from broker.identity.state import StatePaths
from broker.nats.bus import Bus, translate_errors
from broker.nats.config import NatsSecurity
from broker.nats.names import (
    AUDIT_IN_STREAM,
    DELIVERY_STREAM,
    INBOX_DURABLE,
    adapter_durable,
    delivered_bucket,
    kv_stream,
)
from broker.nats.permissions import NatsView, delivery_filter_subjects
from broker.nats.security import ensure_nats_identities, nats_security
from broker.nats.settings import duplicate_window_s
from broker.policy.holder import PolicyHolder
from broker.policy.model import Policy

__all__ = ["NatsPolicyFollower", "Reloadable", "adapter_consumer_config", "provision"]

log = structlog.get_logger(__name__)


def adapter_consumer_config(org: str, clearance_rank: int, ack_wait_s: float) -> ConsumerConfig:
    """`org`'s adapter durable: as adapters/runtime.py asks for it, but with rank-limited filters."""
    durable = adapter_durable(org)
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        filter_subjects=delivery_filter_subjects(org, clearance_rank),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_ack_pending=1,
        max_deliver=-1,
    )


async def _ensure_bucket(bus: Bus, org: str) -> None:
    """`org`'s delivered-ids bucket with `bus.settings.replicas` copies (an existing bucket with another
    replica count is scaled: a single node's R1 bucket becomes R3 when the broker runs a cluster)."""
    js = bus.js
    replicas = bus.settings.replicas
    try:
        info = await js.stream_info(kv_stream(org))
    except nats.js.errors.NotFoundError:
        pass
    else:
        if (info.config.num_replicas or 1) != replicas:
            await js.update_stream(replace(info.config, num_replicas=replicas))
            log.info("nats.bucket_scaled", bucket=delivered_bucket(org), replicas=replicas)
        return
    await js.create_key_value(
        KeyValueConfig(bucket=delivered_bucket(org), history=1, storage=StorageType.FILE, replicas=replicas)
    )
    log.info("nats.bucket_created", bucket=delivered_bucket(org), replicas=replicas)


async def _ensure_adapter_consumer(bus: Bus, view: NatsView, org: str, ack_wait_s: float) -> bool:
    """Create or update `org`'s adapter consumer; False while a narrowing waits for the backlog."""
    js = bus.js
    want = adapter_consumer_config(org, view.ceiling(org), ack_wait_s)
    try:
        info = await js.consumer_info(DELIVERY_STREAM, adapter_durable(org))
    except nats.js.errors.NotFoundError:
        await js.add_consumer(DELIVERY_STREAM, config=want)
        log.info("nats.consumer_created", consumer=adapter_durable(org), filters=want.filter_subjects)
        return True
    have = info.config
    have_filters = set(have.filter_subjects or ([have.filter_subject] if have.filter_subject else []))
    want_filters = set(want.filter_subjects or ())
    same_wait = abs((have.ack_wait or 0.0) - ack_wait_s) < 1e-3
    if have_filters == want_filters and same_wait:
        return True
    if not have_filters <= want_filters and (info.num_pending or info.num_ack_pending):
        # Narrowing (a clearance lowered): what was released under the old policy is still handed to
        # the adapter, which re-applies the decision and dead-letters it with the failing rule (audited).
        log.info("nats.consumer_narrowing_deferred", consumer=adapter_durable(org), pending=info.num_pending)
        return False
    await js.add_consumer(DELIVERY_STREAM, config=want)
    log.info("nats.consumer_updated", consumer=adapter_durable(org), filters=want.filter_subjects)
    return True


async def _ensure_inbox_consumer(bus: Bus) -> None:
    """The audit writer's durable on COORD_AUDIT_IN (events of parts run in other processes)."""
    try:
        await bus.js.consumer_info(AUDIT_IN_STREAM, INBOX_DURABLE)
    except nats.js.errors.NotFoundError:
        await bus.js.add_consumer(
            AUDIT_IN_STREAM,
            ConsumerConfig(
                durable_name=INBOX_DURABLE,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                # short: after a writer crash its unwritten events come back within seconds; a
                # redelivery of an event still queued is skipped by the writer (no double record)
                ack_wait=5.0,
                max_ack_pending=5000,
                max_deliver=-1,
            ),
        )


async def provision(bus: Bus, view: NatsView, *, adapter_ack_wait_s: float) -> bool:
    """With the admin identity: the streams (the Bus ensures them), each organisation's bucket and
    adapter consumer. True when everything is as the view wants it. Replicas: the buckets get
    `bus.settings.replicas` copies; consumers follow their stream's (num_replicas 0)."""
    await bus.wait_ready()
    done = True
    with translate_errors("provision audit inbox"):
        await _ensure_inbox_consumer(bus)
    for org in view.organisations:
        with translate_errors(f"provision {org}"):
            await _ensure_bucket(bus, org)
            done = await _ensure_adapter_consumer(bus, view, org, adapter_ack_wait_s) and done
    return done



class Reloadable(Protocol):
    """What the follower reloads: a `NatsServer`, or every node of a `NatsCluster`."""

    @property
    def secure(self) -> bool: ...

    def reload(self, security: NatsSecurity) -> bool: ...


class NatsPolicyFollower(AsyncResource):
    """Keeps NATS in step with the policy: on a change of what NATS sees (organisations, clearances,
    system high, instance), issue missing identities, reload an embedded server's config (SIGHUP) and
    re-provision the adapter consumers (a narrowing waits until the consumer's backlog is handed over).
    Use as `async with NatsPolicyFollower(...)`; entering provisions once and waits for it."""

    def __init__(
        self,
        holder: PolicyHolder,
        admin: Bus,
        paths: StatePaths,
        server: Reloadable | None,
        *,
        adapter_ack_wait_s: float,
        provision_timeout_s: float = 60.0,
    ) -> None:
        self.holder = holder
        self.admin = admin
        self.paths = paths
        self.server = server
        self.ack_wait_s = adapter_ack_wait_s
        self.timeout = provision_timeout_s
        self.view = NatsView.of(holder.current)
        self._changed = asyncio.Event()
        self._pending = False

    def _on_change(self, _policy: Policy) -> None:
        self._changed.set()

    async def _open(self) -> None:
        async with asyncio.timeout(self.timeout):
            while True:
                try:
                    self._pending = not await provision(
                        self.admin, self.view, adapter_ack_wait_s=self.ack_wait_s
                    )
                    break
                except BusUnavailable as exc:
                    log.warning("nats.provision_retry", error=str(exc))
                    await asyncio.sleep(0.5)
        self.holder.on_change.append(self._on_change)
        self._spawn(self._run(), "nats-policy-follower")

    async def _close(self) -> None:
        with contextlib.suppress(ValueError):
            self.holder.on_change.remove(self._on_change)

    async def step(self) -> None:
        view = NatsView.of(self.holder.current)
        if view != self.view:
            ensure_nats_identities(self.paths, view)
            if self.server is not None and self.server.secure:
                self.server.reload(nats_security(self.paths, view))
            log.info("nats.policy_followed", organisations=len(view.clearances), system_high=view.system_high)
            self.view = view
        await self.admin.widen_duplicate_window(duplicate_window_s(self.holder.current))
        self._pending = not await provision(self.admin, view, adapter_ack_wait_s=self.ack_wait_s)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0 if self._pending else None):
                    await self._changed.wait()
            self._changed.clear()
            try:
                await self.step()
            except (BusUnavailable, PKIError) as exc:
                log.warning("nats.follow_failed", error=str(exc))
                self._pending = True
