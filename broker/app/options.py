"""What one process of the broker runs, built once by the command line (or a test) and passed in.

`broker up` runs every part in one process; `broker run PART` one part per process (the fault suite
kills them one by one):

    core             the gateway (in this process, or `gateway.workers` processes), the audit writer
                     (taking other processes' events from COORD_AUDIT_IN), the operators' API, and the
                     admin identity that provisions NATS
    gateway-worker   one gateway process of several on one port (broker/gateway/workers.py): audit
                     events to the core through JetStream, checkpoints and proofs from the writer's files
    dispatcher       the dispatcher; its audit events go to the core through JetStream
    adapter          the adapters of `adapters.orgs` (default: every organisation), each with a stub
                     native system unless `adapters.native_urls` names the real one
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "EVERYTHING",
    "ORGANISATIONS",
    "AdapterOptions",
    "GatewayOptions",
    "NatsOptions",
    "Part",
    "SystemOptions",
]

Part = Literal["core", "gateway-worker", "dispatcher", "adapter"]
#: `broker up`: the whole system in one process
EVERYTHING: frozenset[Part] = frozenset({"core", "dispatcher", "adapter"})

#: the organisations an adapter is built for, and each one's native format (adapters/formats)
ORGANISATIONS: Mapping[str, str] = {"NSATU": "nsatu", "EUMAM": "eumam", "UDCG": "udcg"}


@dataclass(frozen=True, slots=True)
class NatsOptions:
    url: str | None = None  # None: start the embedded nats-server; may list seeds, comma-separated
    cluster: int = 1  # embedded NATS nodes (1, or 3 for a JetStream cluster on loopback)
    replicas: int = 1  # copies of every stream (3 with `cluster=3`)


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    host: str = "127.0.0.1"
    port: int = 8443  # 0: any free port
    workers: int = 0  # the core's gateway: 0 in this process; N in N worker processes
    worker_index: int = 0  # as a `gateway-worker` part: which one (shown by its /healthz)


@dataclass(frozen=True, slots=True)
class AdapterOptions:
    orgs: tuple[str, ...] | None = None  # None: every organisation of ORGANISATIONS
    native_urls: Mapping[str, str] | None = None  # external native systems; None: start stubs here
    gateway_url: str | None = None  # where adapters publish inbound, when the gateway runs elsewhere
    ack_wait_s: float = 30.0
    stub_idempotent: bool = False


@dataclass(frozen=True, slots=True)
class SystemOptions:
    state: Path
    parts: frozenset[Part] = EVERYTHING
    nats: NatsOptions = field(default_factory=NatsOptions)
    gateway: GatewayOptions = field(default_factory=GatewayOptions)
    adapters: AdapterOptions = field(default_factory=AdapterOptions)
    checkpoint_interval_s: float = 10.0

    def runs(self, part: Part) -> bool:
        return part in self.parts
