"""The whole system on one machine, assembled once from its options (what `broker up` runs).

    NatsServer ─ Bus(audit) ─ AuditWriter
               ─ Bus(gateway) ─ Gateway (HTTPS, mTLS) ─ JetStream COORD_ACCEPTED
               ─ Bus(dispatcher) ─ Dispatcher ─ JetStream COORD_DELIVER
               ─ Bus(adapter-x) ─ Adapter x ─ StubNativeSystem x        (x = nsatu, eumam, udcg)

Each connection is its own NATS identity (broker/nats/permissions.py, docs/nats-security.md): `coord-admin`
creates the streams, buckets and adapter consumers and follows policy changes; the others only use them.

Each part is an async context manager entered on one `AsyncExitStack`, so leaving the `System`
stops everything it started, in reverse order, and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from aiohttp import web

from adapters.formats import codec_for
from adapters.runtime import Adapter, AdapterIdentity
from adapters.stub import StubNativeSystem
from broker.aio import AsyncResource, stop_task
from broker.app.options import ORGANISATIONS, SystemOptions
from broker.audit.inbox import RemoteAuditSink
from broker.audit.lookup import AuditLogReader
from broker.audit.note import log_origin
from broker.audit.records import AuditSink
from broker.audit.snapshot import AuditSnapshot, RemoteAuditView
from broker.audit.writer import AuditWriter
from broker.client import GatewayClient
from broker.console import Console, Health
from broker.dispatch.dispatcher import Dispatcher
from broker.errors import BusUnavailable
from broker.gateway.limiter import SharedRateLimiter
from broker.gateway.operators import AuditApi, AuditView
from broker.gateway.web import Gateway, build_app
from broker.gateway.workers import GatewayWorkers, WorkerSettings
from broker.identity.keys import load_signing_key
from broker.identity.state import StatePaths
from broker.identity.tls import client_context, server_context
from broker.metrics.registry import Registry
from broker.metrics.share import MetricsShare
from broker.nats.bus import Bus, BusSettings
from broker.nats.cluster import NatsCluster
from broker.nats.names import audit_subject
from broker.nats.provision import NatsPolicyFollower
from broker.nats.security import ensure_nats_identities, nats_security
from broker.nats.server import NatsServer
from broker.nats.settings import admin_access, duplicate_window_s, service_for_bus
from broker.nats.settings import bus_settings as nats_bus_settings
from broker.policy.defaults import ensure_defaults
from broker.policy.holder import PolicyHolder

log = structlog.get_logger(__name__)

@dataclass
class Status:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, component: str, where: str) -> None:
        self.lines.append((component, where))


class System(AsyncResource):
    """`async with System(options) as system:` runs everything; `system.status` says where."""

    def __init__(self, options: SystemOptions) -> None:
        self.options = options
        self.paths = StatePaths(options.state)
        self.metrics = Registry()
        self.status = Status()
        self.created: list[str] = []
        self.stubs: dict[str, StubNativeSystem] = {}
        self.adapters: dict[str, Adapter] = {}
        self.nats: NatsServer | None = None
        self.cluster: NatsCluster | None = None
        self.workers: GatewayWorkers | None = None
        self._stack = AsyncExitStack()
        self.gateway_url = ""
        self.nats_url = ""
        self.audit: AuditSink
        self.writer: AuditWriter

    async def _open(self) -> None:
        await self._start()

    async def _close(self) -> None:
        await self._stack.aclose()

    def bus_settings(self, name: str) -> BusSettings:
        p = self.holder.current
        seeds = tuple(u.strip() for u in self.nats_url.split(",") if u.strip())
        return nats_bus_settings(
            self.paths,
            service_for_bus(name),
            seeds[0],
            servers=seeds,
            name=name,
            replicas=max(self.options.nats.replicas, 3 if self.options.nats.cluster > 1 else 1),
            # a stream leader election takes 5-9 s after a node dies: ride it out in cluster mode
            publish_retry_s=20.0 if self.options.nats.cluster > 1 or "," in self.nats_url else 8.0,
            duplicate_window_s=duplicate_window_s(p),
        )

    async def _bus(self, name: str, timeout: float = 60.0) -> Bus:
        """A connection entered on the stack, returned once it is connected and the streams exist."""
        bus = await self._stack.enter_async_context(Bus(self.bus_settings(name)))
        try:
            async with asyncio.timeout(timeout):
                await bus.wait_ready()
        except TimeoutError:
            raise BusUnavailable(
                f"{name}: NATS at {self.nats_url} not ready within {timeout:.0f} s"
            ) from None
        return bus

    async def _start(self) -> None:
        o, paths, st = self.options, self.paths, self._stack
        self.created = ensure_defaults(paths)
        self.holder = PolicyHolder(paths.policy)
        self.created += ensure_nats_identities(paths, self.holder.current, route=o.nats.cluster > 1)
        watcher = asyncio.create_task(self.holder.watch(), name="policy-watch")
        st.push_async_callback(_cancel, watcher)
        self.status.add("policy", f"{paths.policy} (reloaded on change)")

        if o.nats.url is None and o.nats.cluster > 1:
            self.cluster = await st.enter_async_context(
                NatsCluster(
                    paths.nats_dir,
                    nats_security(paths, self.holder.current),
                    o.nats.cluster,
                    admin=admin_access(paths),
                )
            )
            self.nats_url = ",".join(self.cluster.urls)
            names = ", ".join(n.name for n in self.cluster.nodes)
            self.status.add("nats", f"{self.nats_url} (embedded cluster {names}: TLS clients and routes)")
        elif o.nats.url is None:
            self.nats = await st.enter_async_context(
                NatsServer(paths.nats_dir, security=nats_security(paths, self.holder.current))
            )
            self.nats_url = self.nats.url
            where = f"embedded, TLS + one user per service, JetStream in {paths.nats_dir}"
            self.status.add("nats", f"{self.nats_url} ({where})")
        else:
            self.nats_url = o.nats.url
            self.status.add("nats", f"{self.nats_url} (external)")

        policy = self.holder.current
        self.broker_keyid, self.broker_key = load_signing_key(paths, "broker")
        if o.runs("core"):
            await self._start_core()
        elif o.runs("gateway-worker"):
            await self._start_worker()
        else:
            self.gateway_url = o.adapters.gateway_url or ""

        if o.runs("dispatcher"):
            disp_bus = await self._bus("coord-dispatcher")
            self.dispatcher = await st.enter_async_context(
                Dispatcher(
                    disp_bus,
                    policy=self.holder,
                    audit=await self._sink(disp_bus, "dispatcher"),
                    broker_keyid=self.broker_keyid,
                    broker_key=self.broker_key,
                    metrics=self.metrics,
                )
            )
            self.status.add(
                "dispatcher", f"durable consumer on COORD_ACCEPTED, countersigning as {self.broker_keyid}"
            )

        if o.runs("adapter"):
            orgs = o.adapters.orgs if o.adapters.orgs is not None else tuple(ORGANISATIONS)
            for org in orgs:
                await self._start_adapter(org, ORGANISATIONS[org])
        log.info("system.started", instance=policy.name, parts=[c for c, _ in self.status.lines])

    async def _sink(self, bus: Bus, service: str) -> AuditSink:
        """The writer itself when it runs in this process; otherwise its inbox, as `service`."""
        if self.options.runs("core"):
            return self.writer
        self.status.add(f"audit ({service})", "events to the audit writer through COORD_AUDIT_IN")
        return await self._stack.enter_async_context(RemoteAuditSink(bus, service))

    async def _start_core(self) -> None:
        o, paths, st = self.options, self.paths, self._stack
        policy = self.holder.current
        admin_bus = await self._bus("coord-admin")
        await st.enter_async_context(
            NatsPolicyFollower(
                self.holder,
                admin_bus,
                paths,
                self.cluster or self.nats,
                adapter_ack_wait_s=o.adapters.ack_wait_s,
            )
        )
        audit_bus = await self._bus("coord-audit")
        self.writer = await st.enter_async_context(
            AuditWriter(
                audit_bus,
                instance=policy.name,
                key_name=self.broker_keyid,
                signing_key=self.broker_key,
                metrics=self.metrics,
                checkpoint_interval_s=o.checkpoint_interval_s,
                inbox=not (o.runs("dispatcher") and o.runs("adapter")) or o.gateway.workers > 0,
                files=paths.audit_dir,
            )
        )
        self.audit = self.writer
        await self.writer.wait_ready(timeout=60)
        self.status.add(
            "audit", f"tree size {self.writer.tree.size}, checkpoints signed by {self.broker_keyid}"
        )

        if o.gateway.workers > 0:
            # the core serves no HTTP: its metrics reach /metrics through the gateway processes
            await st.enter_async_context(MetricsShare(self.metrics, self._metrics_dir, "core"))
            workers = await st.enter_async_context(
                GatewayWorkers(
                    WorkerSettings(
                        count=o.gateway.workers,
                        state=paths.root,
                        nats_url=self.nats_url,
                        host=o.gateway.host,
                        port=o.gateway.port,
                    )
                )
            )
            self.workers = workers
            self.gateway_url = workers.url
            pids = ", ".join(map(str, workers.pids))
            self.status.add(
                "gateway",
                f"{self.gateway_url} (mutual TLS, CA {paths.ca_crt}; {o.gateway.workers} processes: {pids})",
            )
            self.status.add("console", f"{self.gateway_url}/console (operators; docs/console.md)")
            return
        await self._serve_gateway(
            await self._bus("coord-gateway"), self.writer, self.writer, reuse_port=False, render_metrics=None
        )

    async def _start_worker(self) -> None:
        """One gateway process of several: audit events to the core's writer, proofs from its files."""
        gw_bus = await self._bus("coord-gateway")
        sink = await self._stack.enter_async_context(RemoteAuditSink(gw_bus, "gateway"))
        name = self.holder.current.name
        snapshot = AuditSnapshot(
            self.paths.audit_dir,
            trusted={self.broker_keyid: self.broker_key.public_key()},
            origin=log_origin(name),
        )
        view = RemoteAuditView(snapshot, sink, audit_subject(name))
        share = await self._stack.enter_async_context(
            MetricsShare(self.metrics, self._metrics_dir, f"gateway-{self.options.gateway.worker_index}")
        )
        await self._serve_gateway(gw_bus, sink, view, reuse_port=True, render_metrics=share.render_all)

    @property
    def _metrics_dir(self) -> Path:
        return self.paths.root / "run" / "metrics"

    async def _serve_gateway(
        self,
        gw_bus: Bus,
        sink: AuditSink,
        view: AuditView,
        *,
        reuse_port: bool,
        render_metrics: Callable[[], str] | None,
    ) -> None:
        o, paths, st = self.options, self.paths, self._stack
        policy = self.holder.current
        (paths.root / "run").mkdir(parents=True, exist_ok=True)
        # one bucket per sender for every gateway process on this host (broker/ratelimit.py)
        limiter = st.enter_context(SharedRateLimiter(paths.root / "run" / "ratelimit"))
        self.gateway = Gateway(
            policy=self.holder,
            bus=gw_bus,
            audit=sink,
            metrics=self.metrics,
            instance=policy.name,
            limiter=limiter,
            worker=o.gateway.worker_index if o.runs("gateway-worker") else None,
            render_metrics=render_metrics,
        )
        reader_bus = await self._bus("coord-reader")
        audit_api = AuditApi(policy=self.holder, audit=view, bus=reader_bus, instance=policy.name)
        # the operators' web console and what /readyz adds for its health panel (docs/console.md)
        console = Console(policy=self.holder, api=audit_api, log=AuditLogReader(reader_bus, view.subject))
        self.gateway.readiness_details = Health(
            reader_bus, self.holder, self.gateway.render_metrics, worker=self.gateway.worker
        ).details

        def routes(app: web.Application) -> None:
            audit_api.add_routes(app)
            console.install(app)

        app = build_app(self.gateway, routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        st.push_async_callback(runner.cleanup)
        site = web.TCPSite(
            runner,
            o.gateway.host,
            o.gateway.port,
            ssl_context=server_context(paths.ca_crt, paths.server_crt, paths.server_key),
            reuse_port=reuse_port or None,
        )
        await site.start()
        port = runner.addresses[0][1]
        self.gateway_url = f"https://{o.gateway.host}:{port}"
        self.status.add("gateway", f"{self.gateway_url} (mutual TLS, CA {paths.ca_crt})")
        self.status.add("console", f"{self.gateway_url}/console (operators; docs/console.md)")

    async def _start_adapter(self, org: str, name: str) -> None:
        o, paths, st = self.options, self.paths, self._stack
        codec = codec_for(name)
        if o.adapters.native_urls is None:
            stub = await st.enter_async_context(
                StubNativeSystem(name, codec.media_type, idempotent=o.adapters.stub_idempotent)
            )
            self.stubs[org] = stub
            native_url, where = stub.url, f"stub {stub.url}"
        else:
            native_url, where = o.adapters.native_urls[org], f"native system {o.adapters.native_urls[org]}"
        sender = f"{name}-adapter"
        keyid, key = load_signing_key(paths, sender)
        client = await st.enter_async_context(
            GatewayClient(
                self.gateway_url, client_context(paths.ca_crt, paths.tls_crt(sender), paths.tls_key(sender))
            )
        )
        bus = await self._bus(f"coord-adapter-{name}")
        adapter = await st.enter_async_context(
            Adapter(
                org=org,
                codec=codec,
                native_url=native_url,
                bus=bus,
                policy=self.holder,
                audit=await self._sink(bus, f"adapter-{name}"),
                identity=AdapterIdentity(sender, keyid, key),
                gateway=client,
                state_dir=paths.root / "adapters" / name,
                ack_wait_s=self.options.adapters.ack_wait_s,
                metrics=self.metrics,
            )
        )
        self.adapters[org] = adapter
        self.status.add(f"adapter {org}", f"delivers to {where} ({codec.media_type}), publishes as {sender}")


async def _cancel(task: asyncio.Task[None]) -> None:
    await stop_task(task)
