"""A 3-node JetStream cluster on loopback, secured like the single node (issue #7): TLS first on the client
port, mutual TLS on the route port with the route certificate as the only route user, the generated
per-service users. Streams at 3 replicas survive `kill -9` of their leader (nothing acknowledged is lost,
a retried publish with the same `Nats-Msg-Id` is stored once), a restarted node catches up, the admin
moves a leader, and a plaintext or foreign-certificate client or route is refused.

The tests in this module share one cluster and run in order (each leaves it healthy for the next).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import socket
import stat
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import nats
import nats.errors
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.errors import BusUnavailable
from broker.identity.state import StatePaths
from broker.identity.tls import client_context
from broker.identity.x509 import ensure_route_cert, init_ca, load_ca, route_cert_paths
from broker.nats.bus import Bus
from broker.nats.cluster import NatsCluster, free_ports, lagging_replicas
from broker.nats.config import cluster_routes, render_config
from broker.nats.names import (
    ACCEPTED_STREAM,
    ADMIN,
    AUDIT_IN_STREAM,
    AUDIT_STREAM,
    DEAD_STREAM,
    DELIVERY_STREAM,
    GATEWAY,
    MSG_ID,
    inbox_prefix,
    kv_stream,
)
from broker.nats.permissions import NatsView, permissions, services
from broker.nats.provision import provision
from broker.nats.security import (
    ROUTE_USER,
    credential_paths,
    ensure_nats_identities,
    example_cluster_config,
    nats_security,
    render_nats_cluster_config,
)
from broker.nats.server import NatsServer
from broker.nats.settings import admin_access, bus_settings
from broker.policy.defaults import ensure_defaults
from broker.policy.loader import load_policy
from tests.support.waiting import eventually

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "nats-cluster-node-1.conf"
SUBJECT = "coord.msg.0.NSATU.status.update"  # the gateway may publish it (rank 0, NSATU)


def test_deploy_cluster_example_is_the_generated_config() -> None:
    assert DEPLOY.read_text(encoding="utf-8") == example_cluster_config(1), (
        "deploy/nats-cluster-node-1.conf is stale: regenerate it with "
        "broker.nats.security.example_cluster_config(1)"
    )


def test_route_certificate_serves_and_dials(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    ensure_defaults(paths)
    server = x509.load_pem_x509_certificate(paths.server_crt.read_bytes())
    server_ekus = list(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert server_ekus == [ExtendedKeyUsageOID.SERVER_AUTH]  # hence a route certificate of its own
    assert ensure_route_cert(paths) and not ensure_route_cert(paths)
    crt, key = route_cert_paths(paths)
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert cert.subject.rfc4514_string() == ROUTE_USER
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # the route user is no client user: a route certificate cannot connect as a service
    view = NatsView.of(load_policy(paths.policy))
    assert ROUTE_USER not in {u.user for u in permissions(view)}
    made = ensure_nats_identities(paths, view, route=True)
    assert "pki/route.crt" not in made and ensure_nats_identities(paths, view, route=True) == []


def test_bus_settings_take_a_seed_list(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    ensure_defaults(paths)
    ensure_nats_identities(paths, load_policy(paths.policy))
    seeds = ("tls://127.0.0.1:4222", "tls://127.0.0.1:4223", "tls://127.0.0.1:4224")
    for given in (seeds, ",".join(seeds)):
        s = bus_settings(paths, ADMIN, given, replicas=3)
        assert s.servers == seeds and s.tls is not None and s.tls_handshake_first and s.replicas == 3
    with pytest.raises(ValueError, match="all be tls"):
        bus_settings(paths, ADMIN, ("tls://127.0.0.1:4222", "nats://127.0.0.1:4223"))


def test_only_the_admin_may_step_down_a_leader() -> None:
    view = NatsView("local", 3, (("EUMAM", 3), ("NSATU", 3), ("UDCG", 2)))
    orgs = view.organisations
    for u in permissions(view):
        p = u.permissions
        stepdown = {s for s in p.publish_allow if ".LEADER." in s}
        if u.user == f"CN=nats.{ADMIN}":
            assert stepdown == {
                f"$JS.API.STREAM.LEADER.STEPDOWN.{s}"
                for s in (
                    ACCEPTED_STREAM,
                    DELIVERY_STREAM,
                    AUDIT_STREAM,
                    DEAD_STREAM,
                    AUDIT_IN_STREAM,
                    *map(kv_stream, orgs),
                )
            }
            assert "$JS.API.STREAM.LEADER.>" not in p.publish_deny
            assert "$JS.API.META.>" in p.publish_deny and "$SYS.>" in p.publish_deny
        else:
            assert not stepdown and "$JS.API.STREAM.LEADER.>" in p.publish_deny, u.user
    assert len(list(permissions(view))) == len(services(view))


# ------------------------------------------------------------------------------------ the cluster


@pytest.fixture(scope="module")
def cpaths(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    paths = StatePaths(tmp_path_factory.mktemp("cluster-state"))
    ensure_defaults(paths)
    made = ensure_nats_identities(paths, load_policy(paths.policy), route=True)
    assert "pki/route.crt" in made and "pki/route.key" in made
    return paths


@pytest_asyncio.fixture(scope="module")
async def cluster(cpaths: StatePaths) -> AsyncIterator[NatsCluster]:
    security = nats_security(cpaths, load_policy(cpaths.policy))
    started = time.monotonic()
    async with NatsCluster(cpaths.nats_dir, security, 3, admin=admin_access(cpaths)) as c:
        print(f"\ncluster of 3 formed in {time.monotonic() - started:.2f} s")
        yield c


@pytest_asyncio.fixture(scope="module")
async def admin(cluster: NatsCluster, cpaths: StatePaths) -> AsyncIterator[Bus]:
    """The bootstrap identity: creates the broker's streams at 3 replicas and the buckets."""
    async with Bus(bus_settings(cpaths, ADMIN, cluster.urls, replicas=3)) as bus:
        async with asyncio.timeout(30):
            await bus.wait_ready()
        yield bus


@pytest_asyncio.fixture(scope="module")
async def gateway(cluster: NatsCluster, cpaths: StatePaths, admin: Bus) -> AsyncIterator[Bus]:
    settings = bus_settings(cpaths, GATEWAY, cluster.urls, publish_timeout_s=2.0)
    async with Bus(settings) as bus:
        async with asyncio.timeout(30):
            await bus.wait_ready()
        yield bus


@dataclass
class Ledger:
    """What the publisher was told: id -> sequence of every acknowledged publish."""

    acked: dict[str, int] = field(default_factory=dict)
    retries: int = 0


async def publish_until_acked(bus: Bus, ledger: Ledger, msg_id: str, deadline_s: float = 30.0) -> float:
    """Publish with the same `Nats-Msg-Id` until acknowledged; return when it was (monotonic)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            ack = await bus.publish(f"{SUBJECT}.{msg_id}", msg_id.encode(), msg_id=msg_id)
        except BusUnavailable:
            if time.monotonic() > end:
                raise
            ledger.retries += 1
            await asyncio.sleep(0.05)
            continue
        ledger.acked[msg_id] = ack.seq
        return time.monotonic()


async def stored_ids(bus: Bus) -> dict[str, list[int]]:
    """Every message of the accepted stream, read back by sequence: id -> sequences."""
    out: dict[str, list[int]] = {}
    for seq in range(1, await bus.last_seq(ACCEPTED_STREAM) + 1):
        got = await bus.get(ACCEPTED_STREAM, seq)
        out.setdefault(got.headers[MSG_ID], []).append(seq)
    return out


def assert_nothing_lost(ledger: Ledger, stored: dict[str, list[int]]) -> None:
    lost = {i for i in ledger.acked if i not in stored}
    assert not lost, f"acknowledged but not stored: {sorted(lost)[:5]} ({len(lost)})"
    twice = {i: s for i, s in stored.items() if len(s) > 1}
    assert not twice, f"stored more than once: {twice}"
    moved = {i: (ledger.acked[i], stored[i]) for i in ledger.acked if stored[i] != [ledger.acked[i]]}
    assert not moved, f"stored at another sequence than acknowledged: {moved}"


async def test_three_nodes_form_over_tls_routes(cluster: NatsCluster, cpaths: StatePaths) -> None:
    assert [n.name for n in cluster.nodes] == ["coord-1", "coord-2", "coord-3"]
    assert len({n.pid for n in cluster.nodes}) == 3 and all(n.running for n in cluster.nodes)
    assert all(u.startswith("tls://127.0.0.1:") for u in cluster.urls)
    ports = {p for n in cluster.nodes for p in (n.client_port, n.route_port)}
    assert len(ports) == 6 and len({n.server.cfg.store_dir for n in cluster.nodes}) == 3
    for n in cluster.nodes:
        conf = n.server.config_path.read_text(encoding="utf-8")
        assert stat.S_IMODE(n.server.config_path.stat().st_mode) == 0o600
        assert conf == render_config(n.server.cfg)
        assert f'server_name: "{n.name}"' in conf and "sync_interval: always" in conf
        assert f'listen: "127.0.0.1:{n.route_port}"' in conf and "verify_and_map: true" in conf
        assert f'user: "{ROUTE_USER}"' in conf and str(route_cert_paths(cpaths)[0]) in conf
        assert n.server.cfg.cluster == cluster_routes(n.index, [m.route_port for m in cluster.nodes])
    # what NatsCluster runs is what `render_nats_cluster_config` prints (but the folders)
    first = cluster.nodes[0]
    ports_pairs = [(m.client_port, m.route_port) for m in cluster.nodes]
    printed = render_nats_cluster_config(cpaths, load_policy(cpaths.policy), index=1, ports=ports_pairs)
    assert printed == render_config(replace(first.server.cfg, ports_dir=None))
    # every route is TLS: each node logs its peers' routes as TLS-established, none fails
    for n in cluster.nodes:
        text = n.log_path.read_text(encoding="utf-8", errors="replace")
        assert "Route connection created" in text, n.name
        assert "TLS route handshake error" not in text and "Authorization Error" not in text, n.name


async def test_streams_are_created_at_three_replicas(
    cluster: NatsCluster, cpaths: StatePaths, admin: Bus, gateway: Bus
) -> None:
    for stream in (ACCEPTED_STREAM, DELIVERY_STREAM, AUDIT_STREAM, DEAD_STREAM):
        info = await cluster.stream_info(stream)
        assert info["config"]["num_replicas"] == 3, stream
    await cluster.wait_healthy(30, streams=(ACCEPTED_STREAM,))
    info = await cluster.stream_info(ACCEPTED_STREAM)
    assert len(info["cluster"]["replicas"]) == 2 and not lagging_replicas(info)
    ledger = Ledger()
    for _ in range(20):
        await publish_until_acked(gateway, ledger, uuid.uuid4().hex)
    assert_nothing_lost(ledger, await stored_ids(gateway))
    # the buckets follow the replicas setting too; the consumers follow their stream's
    view = NatsView.of(load_policy(cpaths.policy))
    assert await provision(admin, view, adapter_ack_wait_s=5.0)
    for org in view.organisations:
        kv = await cluster.stream_info(kv_stream(org))
        assert kv["config"]["num_replicas"] == 3, org
        durable = await admin.js.consumer_info(DELIVERY_STREAM, f"adapter-{org.lower()}")
        assert durable.cluster is not None and len(durable.cluster.replicas or []) == 2, org


@dataclass(frozen=True)
class Failover:
    killed: str
    elected_log_s: float  # kill -9 .. a surviving node logs itself the stream's new leader
    elected_api_s: float  # kill -9 .. STREAM.INFO (admin) names another leader
    resumed_s: float  # kill -9 .. the first publish begun after the kill is acknowledged
    gap_s: float  # the longest time without any acknowledgement, around the kill

    def __str__(self) -> str:
        return (
            f"kill -9 of stream leader {self.killed}: new leader elected after {self.elected_log_s:.2f} s "
            f"(server log), named by STREAM.INFO after {self.elected_api_s:.2f} s; publishing resumed "
            f"after {self.resumed_s:.2f} s, longest gap without an ack {self.gap_s:.2f} s"
        )


def _new_leader_logged(cluster: NatsCluster, stream: str, after: datetime) -> datetime | None:
    """When a node logged itself the new leader of `stream` after `after` (the log's local time)."""
    mark = f"JetStream cluster new stream leader for '$G > {stream}'"
    found = []
    for n in cluster.nodes:
        for line in n.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if mark in line:
                stamp = datetime.strptime(" ".join(line.split()[1:3]), "%Y/%m/%d %H:%M:%S.%f")
                if stamp > after:
                    found.append(stamp)
    return min(found, default=None)


async def failover(cluster: NatsCluster, gateway: Bus, ledger: Ledger) -> Failover:
    """Publish steadily, kill -9 the accepted stream's leader, keep publishing (same id until acked)."""
    leader = await cluster.stream_leader(ACCEPTED_STREAM)
    stop = asyncio.Event()
    acks: list[tuple[float, float]] = []  # (began, acknowledged), monotonic

    async def publisher() -> None:
        while not stop.is_set():
            began = time.monotonic()
            acks.append((began, await publish_until_acked(gateway, ledger, uuid.uuid4().hex)))

    task = asyncio.create_task(publisher())
    try:
        await eventually(lambda: len(acks) >= 30, timeout=15)
        killed_wall, killed = datetime.now(), time.monotonic()
        cluster.node(leader).kill()
        named = await cluster.stream_leader(ACCEPTED_STREAM, timeout=30)
        while named == leader:  # an answer from before the kill
            await asyncio.sleep(0.05)
            named = await cluster.stream_leader(ACCEPTED_STREAM, timeout=30)
        elected_api = time.monotonic() - killed
        await eventually(lambda: sum(b > killed for b, _ in acks) >= 30, timeout=30)  # and it goes on
        logged = _new_leader_logged(cluster, ACCEPTED_STREAM, killed_wall)
    finally:
        stop.set()
        await asyncio.wait_for(task, 35)
    assert logged is not None, "no node logged itself the new leader"
    done = sorted(a for _, a in acks)
    gap = max(b - a for a, b in itertools.pairwise(done) if b > killed)
    return Failover(
        killed=leader,
        elected_log_s=(logged - killed_wall).total_seconds(),
        elected_api_s=elected_api,
        resumed_s=min(a for b, a in acks if b > killed) - killed,
        gap_s=gap,
    )


async def test_killing_the_leader_loses_nothing_acknowledged(cluster: NatsCluster, gateway: Bus) -> None:
    ledger = Ledger()
    result = await failover(cluster, gateway, ledger)
    print(f"\n{result} ({len(ledger.acked)} acknowledged, {ledger.retries} retries)")
    assert await cluster.stream_leader(ACCEPTED_STREAM) != result.killed
    assert_nothing_lost(ledger, await stored_ids(gateway))
    # the killed node rejoins with the same ports and store and catches up: 3 current replicas
    node = cluster.node(result.killed)
    assert not node.running
    ports_before = (node.client_port, node.route_port)
    started = time.monotonic()
    await node.start()
    await cluster.wait_healthy(30, streams=(ACCEPTED_STREAM,))
    print(f"restarted {node.name}: caught up after {time.monotonic() - started:.2f} s")
    assert (node.client_port, node.route_port) == ports_before and node.running
    assert node.url in cluster.urls
    info = await cluster.stream_info(ACCEPTED_STREAM)
    assert len(info["cluster"]["replicas"]) == 2 and not lagging_replicas(info)
    assert info["state"]["last_seq"] >= max(ledger.acked.values())


async def test_step_down_moves_the_leader(cluster: NatsCluster) -> None:
    before = await cluster.stream_leader(ACCEPTED_STREAM)
    after = await cluster.step_down(ACCEPTED_STREAM)
    assert after != before and after in {n.name for n in cluster.nodes}


async def test_the_restarted_node_holds_everything(cluster: NatsCluster, gateway: Bus) -> None:
    """Make each node the leader in turn and read the whole stream back from it."""
    ledger_ids = await stored_ids(gateway)
    seen: set[str] = set()
    for _ in range(6):
        leader = await cluster.stream_leader(ACCEPTED_STREAM)
        if leader not in seen:
            seen.add(leader)
            assert await stored_ids(gateway) == ledger_ids, leader
        if len(seen) == 3:
            break
        await cluster.step_down(ACCEPTED_STREAM)
    assert len(seen) >= 2


async def test_a_second_failover_and_a_power_cut(cluster: NatsCluster, gateway: Bus) -> None:
    ledger = Ledger()
    result = await failover(cluster, gateway, ledger)
    print(f"\nagain: {result}")
    await cluster.node(result.killed).start()
    # a power cut: every node killed, then all started again on their stores
    await cluster.kill_all()
    assert not any(n.running for n in cluster.nodes)
    started = time.monotonic()
    await cluster.start_all()
    await cluster.wait_healthy(30, streams=(ACCEPTED_STREAM,))
    print(f"all 3 killed -9 and restarted: healthy after {time.monotonic() - started:.2f} s")
    assert_nothing_lost(ledger, await stored_ids(gateway))


# ---------------------------------------------------------------------------------- refusals


async def test_only_the_admin_steps_down(cluster: NatsCluster, cpaths: StatePaths) -> None:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    crt, key = credential_paths(cpaths, GATEWAY)
    nc = await nats.connect(
        list(cluster.urls),
        tls=client_context(cpaths.ca_crt, crt, key),
        tls_handshake_first=True,
        inbox_prefix=inbox_prefix(GATEWAY),
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        subject = f"$JS.API.STREAM.LEADER.STEPDOWN.{ACCEPTED_STREAM}"
        with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
            await nc.request(subject, b"", timeout=1.0)
        await eventually(lambda: any(f'publish to "{subject.lower()}"' in e for e in errors), timeout=5)
    finally:
        await nc.close()


def _talk_plain(port: int, hello: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(hello)
        got = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(4096):
                got += chunk
        return got


async def test_a_plaintext_client_or_route_is_refused(cluster: NatsCluster) -> None:
    node = cluster.nodes[0]
    got = await asyncio.to_thread(_talk_plain, node.client_port, b"CONNECT {}\r\nPING\r\n")
    assert b"INFO" not in got and b"PONG" not in got, got  # TLS first: nothing in plaintext
    # a route in plaintext: the route port too waits for a TLS handshake, says nothing and closes
    hello = b'CONNECT {"tls_required":false,"name":"rogue","cluster":"coord"}\r\nPING\r\n'
    got = await asyncio.to_thread(_talk_plain, node.route_port, hello)
    assert b"INFO" not in got and b"PONG" not in got, got


async def test_a_policy_change_reloads_every_node(
    cluster: NatsCluster, cpaths: StatePaths, admin: Bus
) -> None:
    """`NatsPolicyFollower` reloads a cluster as it reloads a single server: every node's config."""
    security = nats_security(cpaths, load_policy(cpaths.policy))
    extra = replace(security.users[0], user="CN=nats.tests-extra", comment="tests only")
    try:
        assert cluster.reload(replace(security, users=(*security.users, extra)))
        for n in cluster.nodes:
            assert '"CN=nats.tests-extra"' in n.server.config_path.read_text(encoding="utf-8")
        await asyncio.sleep(0.5)
        await cluster.wait_healthy(30, streams=(ACCEPTED_STREAM,))
    finally:
        cluster.reload(security)
    assert not cluster.reload(security)  # nothing changed, nothing signalled
    for n in cluster.nodes:
        text = n.log_path.read_text(encoding="utf-8", errors="replace")
        assert "Reloaded server configuration" in text, n.name


def _issue(folder: Path, cn: str, ca: StatePaths) -> tuple[Path, Path]:
    """A certificate for `cn` with serverAuth + clientAuth and loopback SANs, signed by `ca`'s CA."""
    ca_cert, ca_key = load_ca(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now().astimezone()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    crt, k = folder / f"{cn}.crt", folder / f"{cn}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    k.chmod(0o600)
    return crt, k


async def test_a_route_with_a_foreign_or_wrong_certificate_is_refused(
    cluster: NatsCluster, cpaths: StatePaths, tmp_path: Path
) -> None:
    """Rogue nodes dial node 1's route port: one with a route certificate of another CA (right name),
    one with a certificate of our CA whose subject is not the route user, one without TLS. Node 1
    refuses each, and no rogue ever sees the cluster's JetStream."""
    other = StatePaths(tmp_path / "other")
    init_ca(other)
    target = cluster.nodes[0]
    before = len(target.log_path.read_text(encoding="utf-8", errors="replace"))
    security = nats_security(cpaths, load_policy(cpaths.policy))
    foreign = _issue(tmp_path / "foreign", "nats.route", other)
    wrong = _issue(tmp_path / "wrong", "nats.gateway", cpaths)
    rogues = {
        "foreign-ca": replace(security, route_cert_file=str(foreign[0]), route_key_file=str(foreign[1])),
        "wrong-subject": replace(security, route_cert_file=str(wrong[0]), route_key_file=str(wrong[1])),
        "plaintext": None,
    }
    servers: list[NatsServer] = []
    try:
        for i, (label, sec) in enumerate(rogues.items()):
            port, rport = free_ports(2)
            routes = cluster_routes(1, [rport, target.route_port])
            servers.append(
                NatsServer(
                    tmp_path / label, port=port, security=sec, server_name=f"rogue-{i}", cluster=routes
                )
            )
        await asyncio.gather(*(s.start() for s in servers))

        def target_log() -> str:
            return target.log_path.read_text(encoding="utf-8", errors="replace")[before:]

        await eventually(
            lambda: (
                "certificate signed by unknown authority" in target_log()  # another CA
                and "authentication error" in target_log()  # our CA, not the route user
                and "first record does not look like a TLS handshake" in target_log()
            ),  # plaintext
            timeout=10,
        )
        for srv in servers:
            text = (srv.dir / "nats-server.log").read_text(encoding="utf-8", errors="replace")
            assert "metadata leader" not in text and "rogue" not in target_log(), srv.dir.name
    finally:
        for srv in servers:
            await srv.stop()
    await cluster.wait_healthy(30, streams=(ACCEPTED_STREAM,))
