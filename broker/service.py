"""The whole system on one machine, assembled once from its options (what `broker up` runs).

    NatsServer ─ Bus(audit) ─ AuditWriter
               ─ Bus(gateway) ─ Gateway (HTTPS, mTLS) ─ JetStream COORD_ACCEPTED
               ─ Bus(dispatcher) ─ Dispatcher ─ JetStream COORD_DELIVER
               ─ Bus(adapter-x) ─ Adapter x ─ StubNativeSystem x        (x = nsatu, eumam, udcg)

Each connection is its own NATS identity (broker/nats_auth.py, docs/nats-security.md): `coord-admin`
creates the streams, buckets and adapter consumers and follows policy changes; the others only use them.

Each part is an async context manager entered on one `AsyncExitStack`, so leaving the `System`
stops everything it started, in reverse order, and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import structlog
from aiohttp import web

from adapters.formats import codec_for
from adapters.runtime import Adapter, AdapterIdentity
from adapters.stub import StubNativeSystem
from broker.aio import stop_task
from broker.audit.records import AuditSink
from broker.audit.remote import RemoteAuditSink
from broker.audit.snapshot import AuditSnapshot, RemoteAuditView
from broker.audit.writer import AuditWriter, audit_subject
from broker.bus import Bus, BusSettings
from broker.client import GatewayClient
from broker.cluster import NatsCluster
from broker.console import Console, Health
from broker.console.auditlog import AuditLogReader
from broker.dispatcher import Dispatcher
from broker.errors import BusUnavailable
from broker.metrics import Registry
from broker.metrics_share import MetricsShare
from broker.nats_auth import (
    NatsPolicyFollower,
    admin_access,
    duplicate_window_s,
    ensure_nats_identities,
    nats_security,
    service_for_bus,
)
from broker.nats_auth import bus_settings as nats_bus_settings
from broker.natsd import NatsServer
from broker.pki import ensure_defaults, load_signing_key
from broker.policy import PolicyHolder
from broker.ratelimit import SharedRateLimiter
from broker.state import StatePaths
from broker.tls import client_context, server_context
from broker.web_audit import AuditApi, AuditView
from broker.web_gateway import Gateway, build_app
from broker.workers import GatewayWorkers, WorkerSettings

log = structlog.get_logger(__name__)

ORGANISATIONS: dict[str, str] = {"NSATU": "nsatu", "EUMAM": "eumam", "UDCG": "udcg"}


@dataclass(frozen=True, slots=True)
class SystemOptions:
    """What this process runs. The default is everything (`broker up`); `broker run` starts one part
    per process (the fault suite kills them one by one):

    - core: `gateway` + the audit writer (taking other processes' events from COORD_AUDIT_IN) + the
      operators' API + the admin identity that provisions NATS;
    - `dispatcher` alone, or one adapter (`adapter_orgs`) alone: their audit events go to the core
      through JetStream (`RemoteAuditSink`), and an adapter talks to `native_urls[org]`;
    - `gateway_worker`: one process of a gateway spread over `gateway_workers` processes on one port
      (broker/workers.py); its audit events go to the core like the dispatcher's, and it serves
      checkpoints and proofs from the audit writer's files.
    """

    state: Path
    host: str = "127.0.0.1"
    port: int = 8443
    nats_url: str | None = None  # None: start the embedded nats-server; may list seeds, comma-separated
    adapters: bool = True
    adapter_ack_wait_s: float = 30.0
    checkpoint_interval_s: float = 10.0
    gateway: bool = True  # the gateway, the audit writer and NATS provisioning (the core)
    dispatcher: bool = True
    adapter_orgs: tuple[str, ...] | None = None  # None: every organisation of ORGANISATIONS
    native_urls: Mapping[str, str] | None = None  # external native systems; None: start stubs here
    gateway_url: str | None = None  # where adapters publish inbound, when the gateway runs elsewhere
    stub_idempotent: bool = False
    replicas: int = 1  # copies of every stream (3 with `cluster=3`)
    cluster: int = 1  # embedded NATS nodes (1, or 3 for a JetStream cluster on loopback)
    gateway_workers: int = 0  # the core's gateway: 0 in this process; N in N worker processes
    gateway_worker: bool = False  # this process is one gateway worker (`broker run gateway`)
    worker_index: int = 0  # which one (shown by its /healthz)


@dataclass
class Status:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, component: str, where: str) -> None:
        self.lines.append((component, where))


class System:
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

    async def __aenter__(self) -> System:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
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
            replicas=max(self.options.replicas, 3 if self.options.cluster > 1 else 1),
            # a stream leader election takes 5-9 s after a node dies: ride it out in cluster mode
            publish_retry_s=20.0 if self.options.cluster > 1 or "," in self.nats_url else 8.0,
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
        self.created += ensure_nats_identities(paths, self.holder.current, route=o.cluster > 1)
        watcher = asyncio.create_task(self.holder.watch(), name="policy-watch")
        st.push_async_callback(_cancel, watcher)
        self.status.add("policy", f"{paths.policy} (reloaded on change)")

        if o.nats_url is None and o.cluster > 1:
            self.cluster = await st.enter_async_context(
                NatsCluster(
                    paths.nats_dir,
                    nats_security(paths, self.holder.current),
                    o.cluster,
                    admin=admin_access(paths),
                )
            )
            self.nats_url = ",".join(self.cluster.urls)
            names = ", ".join(n.name for n in self.cluster.nodes)
            self.status.add("nats", f"{self.nats_url} (embedded cluster {names}: TLS clients and routes)")
        elif o.nats_url is None:
            self.nats = await st.enter_async_context(
                NatsServer(paths.nats_dir, security=nats_security(paths, self.holder.current))
            )
            self.nats_url = self.nats.url
            where = f"embedded, TLS + one user per service, JetStream in {paths.nats_dir}"
            self.status.add("nats", f"{self.nats_url} ({where})")
        else:
            self.nats_url = o.nats_url
            self.status.add("nats", f"{self.nats_url} (external)")

        policy = self.holder.current
        self.broker_keyid, self.broker_key = load_signing_key(paths, "broker")
        if o.gateway:
            await self._start_core()
        elif o.gateway_worker:
            await self._start_worker()
        else:
            self.gateway_url = o.gateway_url or ""

        if o.dispatcher:
            disp_bus = await self._bus("coord-dispatcher")
            self.dispatcher = await st.enter_async_context(
                Dispatcher(
                    disp_bus,
                    policy=self.holder,
                    audit=self._sink(disp_bus, "dispatcher"),
                    broker_keyid=self.broker_keyid,
                    broker_key=self.broker_key,
                    metrics=self.metrics,
                )
            )
            self.status.add(
                "dispatcher", f"durable consumer on COORD_ACCEPTED, countersigning as {self.broker_keyid}"
            )

        if o.adapters:
            orgs = o.adapter_orgs if o.adapter_orgs is not None else tuple(ORGANISATIONS)
            for org in orgs:
                await self._start_adapter(org, ORGANISATIONS[org])
        log.info("system.started", instance=policy.name, parts=[c for c, _ in self.status.lines])

    def _sink(self, bus: Bus, service: str) -> AuditSink:
        """The writer itself when it runs in this process; otherwise its inbox, as `service`."""
        if self.options.gateway:
            return self.writer
        self.status.add(f"audit ({service})", "events to the audit writer through COORD_AUDIT_IN")
        return RemoteAuditSink(bus, service)

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
                adapter_ack_wait_s=o.adapter_ack_wait_s,
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
                inbox=not (o.dispatcher and o.adapters) or o.gateway_workers > 0,
                files=paths.audit_dir,
            )
        )
        self.audit = self.writer
        await self.writer.wait_ready(timeout=60)
        self.status.add(
            "audit", f"tree size {self.writer.tree.size}, checkpoints signed by {self.broker_keyid}"
        )

        if o.gateway_workers > 0:
            # the core serves no HTTP: its metrics reach /metrics through the gateway processes
            await st.enter_async_context(MetricsShare(self.metrics, self._metrics_dir, "core"))
            workers = await st.enter_async_context(
                GatewayWorkers(
                    WorkerSettings(
                        count=o.gateway_workers,
                        state=paths.root,
                        nats_url=self.nats_url,
                        host=o.host,
                        port=o.port,
                    )
                )
            )
            self.workers = workers
            self.gateway_url = workers.url
            pids = ", ".join(map(str, workers.pids))
            self.status.add(
                "gateway",
                f"{self.gateway_url} (mutual TLS, CA {paths.ca_crt}; {o.gateway_workers} processes: {pids})",
            )
            self.status.add("console", f"{self.gateway_url}/console (operators; docs/console.md)")
            return
        await self._serve_gateway(
            await self._bus("coord-gateway"), self.writer, self.writer, reuse_port=False, render_metrics=None
        )

    async def _start_worker(self) -> None:
        """One gateway process of several: audit events to the core's writer, proofs from its files."""
        gw_bus = await self._bus("coord-gateway")
        sink = RemoteAuditSink(gw_bus, "gateway")
        name = self.holder.current.name
        snapshot = AuditSnapshot(
            self.paths.audit_dir,
            trusted={self.broker_keyid: self.broker_key.public_key()},
            origin=f"coord-broker/{name}",
        )
        view = RemoteAuditView(snapshot, sink, audit_subject(name))
        share = await self._stack.enter_async_context(
            MetricsShare(self.metrics, self._metrics_dir, f"gateway-{self.options.worker_index}")
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
            worker=o.worker_index if o.gateway_worker else None,
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
            o.host,
            o.port,
            ssl_context=server_context(paths.ca_crt, paths.server_crt, paths.server_key),
            reuse_port=reuse_port or None,
        )
        await site.start()
        port = runner.addresses[0][1]
        self.gateway_url = f"https://{o.host}:{port}"
        self.status.add("gateway", f"{self.gateway_url} (mutual TLS, CA {paths.ca_crt})")
        self.status.add("console", f"{self.gateway_url}/console (operators; docs/console.md)")

    async def _start_adapter(self, org: str, name: str) -> None:
        o, paths, st = self.options, self.paths, self._stack
        codec = codec_for(name)
        if o.native_urls is None:
            stub = await st.enter_async_context(
                StubNativeSystem(name, codec.media_type, idempotent=o.stub_idempotent)
            )
            self.stubs[org] = stub
            native_url, where = stub.url, f"stub {stub.url}"
        else:
            native_url, where = o.native_urls[org], f"native system {o.native_urls[org]}"
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
                audit=self._sink(bus, f"adapter-{name}"),
                identity=AdapterIdentity(sender, keyid, key),
                gateway=client,
                state_dir=paths.root / "adapters" / name,
                ack_wait_s=self.options.adapter_ack_wait_s,
                metrics=self.metrics,
            )
        )
        self.adapters[org] = adapter
        self.status.add(f"adapter {org}", f"delivers to {where} ({codec.media_type}), publishes as {sender}")


async def _cancel(task: asyncio.Task[None]) -> None:
    await stop_task(task)
