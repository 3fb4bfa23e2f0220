"""`broker bench [--quick] [--json FILE]`: how fast the broker is, against raw baselines, in one run.

Everything runs on this machine, in a temp folder, with the same message bytes (a signed
`delivery.status` of about 1 KB, NATO RESTRICTED, releasable to all three organisations):

* baselines: Ed25519 verify/s (PyNaCl/libsodium and `cryptography`); raw nats-py JetStream publish
  to a nats-server with the same settings as `broker up` (`sync_interval: always`, file storage,
  `Nats-Msg-Id`), awaited one by one and with `publish_async` in a bounded window; a bare aiohttp
  handler over the same mutual TLS (reads the body, returns 202) in its own process;
* the system (`broker up`'s `System`: embedded NATS, gateway, dispatcher, audit, adapters with stub
  native systems) in its own process: ingest through `POST /v1/messages` and `/v1/messages/batch`,
  open-loop latency at fixed offered rates, POST-to-native delivery latency, fan-out, memory;
* audit verification over a generated export (signed checkpoints every 1000 records).

The load generator is this process; the broker and the baselines' servers run in child processes
started with `python -m broker.bench.run --serve ...`, so client and server do not share an event loop.
Speed is only reported, never asserted: figures are ratios against baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

BENCH_SENDER = "bench-nsatu"
BENCH_ORGS = ("EUMAM", "NSATU", "UDCG")
LABEL = {"policy": "NATO", "classification": "RESTRICTED", "releasable_to": list(BENCH_ORGS), "caveats": []}
BODY = {
    "pledge_ref": (
        "UDCG-ADC-2026-0117/IRIS-T-SLM/LOT-3: launchers, missiles and the TRML-4D radar of pledge "
        "0117, consolidated at the Rzeszow hub for hand-over to the receiving unit; escorted road move "
        "planned, customs pre-cleared, spares and tooling packed with the lot, training cohort 2 informed "
        "of the hand-over window; "
        "next report when the lot is handed over or if the window slips by more than 24 h"
    ),
    "stage": "AT_HUB",
    "quantity_delivered": 24,
    "as_of": "2026-05-14T09:30:00Z",
}
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


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


@dataclass(slots=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value if math.isfinite(self.value) else None,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "note": self.note,
        }


def fig(name: str, value: float, unit: str, baseline: float | None = None, note: str = "") -> Figure:
    ratio = value / baseline if baseline else None
    return Figure(name, value, unit, baseline, ratio, note)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# -- state and messages --------------------------------------------------------------------------


def prepare_state(root: Path) -> None:
    """The dev PKI and policy `broker up` makes, plus a bench sender of NSATU with a high rate limit."""
    from broker.identity.pki import ensure_defaults, new_sender
    from broker.identity.state import StatePaths
    from broker.policy.model import load_policy, write_policy

    paths = StatePaths(root)
    ensure_defaults(paths)
    new_sender(paths, BENCH_SENDER, "NSATU", ["delivery.status"])
    policy = load_policy(paths.policy)
    sender = dataclasses.replace(policy.senders[BENCH_SENDER], rate_per_s=1e9)
    write_policy(paths.policy, dataclasses.replace(policy, senders={**policy.senders, BENCH_SENDER: sender}))


class Sealer:
    """Signed envelopes of the bench sender; each call makes fresh ids and `created` times."""

    def __init__(self, root: Path) -> None:
        from broker.identity.pki import load_signing_key
        from broker.identity.state import StatePaths

        self.paths = StatePaths(root)
        self.keyid, self.key = load_signing_key(self.paths, BENCH_SENDER)

    def make(self, n: int) -> list[tuple[str, bytes]]:
        from broker.client import build_message, seal_message

        out = []
        for _ in range(n):
            msg = build_message(
                kind="delivery.status", sender=BENCH_SENDER, originator="NSATU", label=LABEL, body=BODY
            )
            out.append((str(msg["id"]), seal_message(msg, self.keyid, self.key)))
        return out

    def client_ssl(self) -> ssl.SSLContext:
        from broker.identity.tls import client_context

        p = self.paths
        return client_context(p.ca_crt, p.tls_crt(BENCH_SENDER), p.tls_key(BENCH_SENDER))


# -- child processes -----------------------------------------------------------------------------


def _rss_kb(pid: int | str = "self") -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB from /proc; (0, 0) where it is not readable."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process from /proc (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine() -> list[int]:
    """The machine's CPU time counters (/proc/stat: user nice system idle iowait irq softirq steal)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return [0] * 8


def _busy(before: list[int], after: list[int]) -> tuple[float, float]:
    """(% busy, % iowait) of all cores between two `_machine()` readings."""
    d = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(d) or 1
    return 100.0 * (total - d[3] - d[4]) / total, 100.0 * d[4] / total


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    out = [pid]
    with contextlib.suppress(OSError):
        for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out += _tree(int(c))
    return out


def _write_ready(path: Path, info: dict[str, Any]) -> None:
    """Written whole, then renamed: the parent never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def _timed_stub_class() -> type[Any]:
    """The stub native system, instrumented: arrival times of delivered message ids, bodies not kept
    (the stub stands for a system on another machine: its memory and validation are not the broker's)."""
    from adapters.stub import StubNativeSystem

    class TimedStub(StubNativeSystem):
        def __init__(
            self, name: str, media_type: str, *, validate: bool = True, idempotent: bool = False
        ) -> None:
            super().__init__(name, media_type, validate=False, idempotent=idempotent)
            self.count = 0
            self.recording = False
            self.arrivals: list[tuple[str, float]] = []

        async def _inbox(self, request: web.Request) -> web.Response:
            resp = await super()._inbox(request)
            if resp.status == 202:
                t = time.monotonic()
                doc = self.received.pop()
                self.count += 1
                if self.recording:
                    m = _UUID.search(doc.body)
                    if m is not None:
                        self.arrivals.append((m.group(0).decode(), t))
            return resp

    return TimedStub


async def _serve_broker(state: Path, ready: Path, workers: int = 0) -> None:
    import broker.app.system as service
    from broker import logs

    logs.configure(console=False, level=logging.WARNING)
    setattr(service, "StubNativeSystem", _timed_stub_class())  # noqa: B010 - bench instrumentation only
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with service.System(service.SystemOptions(state=state, port=0, gateway_workers=workers)) as system:
        nats_pid = system.nats.proc.pid if system.nats is not None and system.nats.proc else 0

        async def stats(request: web.Request) -> web.Response:
            rss, hwm = _rss_kb()
            for pid in system.workers.pids if system.workers is not None else []:
                w_rss, w_hwm = _rss_kb(pid)  # the gateway processes are broker processes too
                rss, hwm = rss + w_rss, hwm + w_hwm
            nrss, nhwm = _rss_kb(nats_pid)
            return web.json_response(
                {
                    "processed": system.dispatcher.processed,
                    "delivered": {org: getattr(s, "count", 0) for org, s in system.stubs.items()},
                    "audit_size": system.writer.tree.size,
                    "audit_depth": system.writer.depth,
                    "rss_kb": rss,
                    "hwm_kb": hwm,
                    "nats_rss_kb": nrss,
                    "nats_hwm_kb": nhwm,
                }
            )

        async def record(request: web.Request) -> web.Response:
            on = request.query.get("on", "1") == "1"
            out: list[tuple[str, str, float]] = []
            for org, s in system.stubs.items():
                out += [(org, i, t) for i, t in getattr(s, "arrivals", [])]
                s.arrivals = []  # type: ignore[attr-defined]
                s.recording = on  # type: ignore[attr-defined]
            return web.json_response({"arrivals": out})

        ctl = web.Application()
        ctl.router.add_get("/stats", stats)
        ctl.router.add_post("/record", record)
        runner = web.AppRunner(ctl, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        info = {
            "gateway_url": system.gateway_url,
            "nats_url": system.nats_url,
            "control_url": f"http://127.0.0.1:{port}",
            "pid": os.getpid(),
            "nats_pid": nats_pid,
        }
        _write_ready(ready, info)
        await stop.wait()
        await runner.cleanup()


async def _serve_gateway(state: Path, ready: Path, workers: int) -> None:
    """Ingest only, for the scaling figure: the gateway in `workers` processes, the audit writer and
    NATS; no dispatcher, no adapters (their work does not grow with gateway processes)."""
    import broker.app.system as service
    from broker import logs

    logs.configure(console=False, level=logging.WARNING)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    opts = service.SystemOptions(
        state=state, port=0, gateway_workers=workers, dispatcher=False, adapters=False
    )
    async with service.System(opts) as system:
        pids = system.workers.pids if system.workers is not None else []
        _write_ready(ready, {"gateway_url": system.gateway_url, "pid": os.getpid(), "workers": pids})
        await stop.wait()


async def _serve_bare(state: Path, ready: Path) -> None:
    """The baseline: aiohttp over the same mutual TLS, a handler that reads the body and answers 202."""
    from broker.identity.state import StatePaths
    from broker.identity.tls import server_context

    paths = StatePaths(state)

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202, body=b'{"ok":true}', content_type="application/json")

    app = web.Application(client_max_size=5 * 1024 * 1024)
    app.router.add_post("/v1/messages", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, "127.0.0.1", 0, ssl_context=server_context(paths.ca_crt, paths.server_crt, paths.server_key)
    )
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    _write_ready(ready, {"gateway_url": f"https://127.0.0.1:{port}", "pid": os.getpid()})
    await stop.wait()
    await runner.cleanup()


@contextlib.asynccontextmanager
async def child(
    kind: str, state: Path, work: Path, timeout: float = 90.0, *, workers: int = 0
) -> AsyncIterator[dict[str, Any]]:
    """Start `python -m broker.bench.run --serve KIND` and yield what it reports once ready."""
    ready = work / f"{kind}.ready.json"
    ready.unlink(missing_ok=True)
    logf = (work / f"{kind}.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own interpreter and module
        [
            *(sys.executable, "-m", "broker.bench.run", "--serve", kind),
            *("--state", str(state), "--ready", str(ready), "--gateway-workers", str(workers)),
        ],
        stdout=logf,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    logf.close()
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bench {kind} server did not start; see {work / (kind + '.log')}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        yield json.loads(ready.read_text())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            for _ in range(300):
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# -- load generation -----------------------------------------------------------------------------


def _session(ctx: ssl.SSLContext, limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx, limit=limit), timeout=aiohttp.ClientTimeout(total=60)
    )


async def closed_loop(
    session: aiohttp.ClientSession, url: str, bodies: Sequence[bytes], concurrency: int, ctype: str
) -> tuple[float, Counter[int]]:
    """`concurrency` keep-alive clients, each posting the next body as soon as its last one is answered."""
    it = iter(bodies)
    statuses: Counter[int] = Counter()
    headers = {"Content-Type": ctype}

    async def worker() -> None:
        for body in it:
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                statuses[r.status] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, statuses


async def open_loop(
    session: aiohttp.ClientSession, url: str, items: Sequence[tuple[str, bytes]], rate: float
) -> tuple[list[float], dict[str, float], Counter[int]]:
    """Send on schedule (request i at start + i/rate), whatever the replies: latency counts from the
    scheduled time, so queueing anywhere (client included) shows."""
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    sent: dict[str, float] = {}
    statuses: Counter[int] = Counter()
    headers = {"Content-Type": "application/json"}

    async def one(body: bytes, t_sched: float) -> None:
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
            lat.append(loop.time() - t_sched)
            statuses[r.status] += 1

    start = loop.time() + 0.05
    tasks = []
    for i, (mid, body) in enumerate(items):
        t_sched = start + i / rate
        delay = t_sched - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[mid] = t_sched
        tasks.append(asyncio.create_task(one(body, t_sched)))
    await asyncio.gather(*tasks)
    lat.sort()
    return lat, sent, statuses


def batches(bodies: Sequence[bytes], size: int) -> list[bytes]:
    return [b"\n".join(bodies[i : i + size]) + b"\n" for i in range(0, len(bodies), size)]


# -- baselines -----------------------------------------------------------------------------------


def verify_rates(n: int, envelope: bytes, root: Path) -> tuple[float, float]:
    """Raw Ed25519 verify/s over the envelope's PAE: (PyNaCl/libsodium, cryptography/OpenSSL)."""
    import nacl.signing
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from broker.dsse import b64decode_any, pae
    from schemas.message import ENVELOPE_DECODER

    env = ENVELOPE_DECODER.decode(envelope)
    msg = pae(env.payload_type, b64decode_any(env.payload))
    sig = b64decode_any(env.signatures[0].sig)
    raw = Sealer(root).key.public_key().public_bytes_raw()
    nk = nacl.signing.VerifyKey(raw)
    t0 = time.perf_counter()
    for _ in range(n):
        nk.verify(msg, sig)
    nacl_rate = n / (time.perf_counter() - t0)
    ck = Ed25519PublicKey.from_public_bytes(raw)
    t0 = time.perf_counter()
    for _ in range(n):
        ck.verify(sig, msg)
    return nacl_rate, n / (time.perf_counter() - t0)


RAW_IDENTITY = "bench-raw"


async def raw_nats(work: Path, state: Path, envelope: bytes, sc: Scale) -> tuple[float, float, float]:
    """JetStream publish of the envelope (with `Nats-Msg-Id`) to a nats-server rendered as `broker up`
    renders it (TLS only, handshake first, certificate-mapped users, `sync_interval: always`), by a
    bench-only user: awaited one by one, `publish_async` with the raw window, and with
    `scale_clients` in flight (what the gateway's closed-loop figure can have)."""
    from broker.client import uuid7
    from broker.identity.state import StatePaths
    from broker.nats.auth import bus_settings, issue_nats_identity, nats_security, nats_user
    from broker.nats.raw import raw_jetstream
    from broker.nats.server import NatsPermissions, NatsServer, NatsUser
    from broker.policy.model import load_policy

    paths = StatePaths(state)
    issue_nats_identity(paths, RAW_IDENTITY)
    everything = NatsPermissions(
        publish_allow=(">",), publish_deny=("$SYS.>",), subscribe_allow=(">",), subscribe_deny=("$SYS.>",)
    )
    user = NatsUser(nats_user(RAW_IDENTITY), everything, "bench only: the raw baseline")
    security = nats_security(paths, load_policy(paths.policy), extra_users=[user])
    subject = "bench.raw.x"
    async with NatsServer(work / "raw-nats", security=security) as srv:
        conn = bus_settings(paths, RAW_IDENTITY, srv.url, name="bench-raw", ensure_streams=False)
        async with raw_jetstream(conn, window=sc.raw_window) as js:
            await js.add_stream("BENCH_RAW", ["bench.raw.>"], duplicate_window_s=900.0)
            for _ in range(50):  # warm up
                await js.publish(subject, envelope, uuid7())
            t0 = time.perf_counter()
            for _ in range(sc.raw_sync_n):
                await js.publish(subject, envelope, uuid7())
            sync_rate = sc.raw_sync_n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            await js.publish_window(subject, envelope, (uuid7() for _ in range(sc.raw_async_n)))
            async_rate = sc.raw_async_n / (time.perf_counter() - t0)
            slots = asyncio.Semaphore(sc.scale_clients)

            async def one() -> None:
                async with slots:
                    await js.publish(subject, envelope, uuid7())

            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(sc.raw_async_n)))
            window_rate = sc.raw_async_n / (time.perf_counter() - t0)
    return sync_rate, async_rate, window_rate


# -- audit export --------------------------------------------------------------------------------


def generate_export(path: Path, root: Path, records: int) -> tuple[dict[str, Any], str]:
    """An export like the writer's: records of a realistic mix, a signed checkpoint every 1000."""
    from broker.audit.merkle import CompactRange, leaf_hash
    from broker.audit.note import Checkpoint, sign_checkpoint
    from broker.audit.records import RECORD_ENCODER, AuditEvent, make_record
    from broker.client import uuid7
    from broker.identity.pki import load_signing_key
    from broker.identity.state import StatePaths
    from broker.policy.model import load_policy
    from schemas.label import Label

    paths = StatePaths(root)
    name = load_policy(paths.policy).name
    keyid, key = load_signing_key(paths, "broker")
    origin = f"coord-broker/{name}"
    label = Label(policy="NATO", classification="RESTRICTED", releasable_to=list(BENCH_ORGS), caveats=[])
    tree = CompactRange()
    events = ("accepted", "released", "released", "released", "delivered", "delivered", "delivered")
    digest = hashlib.sha256(b"bench").hexdigest()
    with path.open("wb") as f:
        buf: list[bytes] = []
        mid = uuid7()
        for i in range(records):
            ev = events[i % len(events)]
            if ev == "accepted":
                mid = uuid7()
            rec = make_record(
                i,
                name,
                AuditEvent(
                    event=ev,  # type: ignore[arg-type]
                    time="2026-05-14T09:30:00.123456Z",
                    message_id=mid,
                    kind="delivery.status",
                    originator="NSATU",
                    label=label,
                    actor=BENCH_SENDER if ev == "accepted" else BENCH_ORGS[i % 3],
                    envelope_sha256=digest,
                ),
            )
            line = RECORD_ENCODER.encode(rec)
            tree.append(leaf_hash(line))
            buf.append(line)
            if tree.size % 1000 == 0 or i == records - 1:
                note = sign_checkpoint(Checkpoint(origin, tree.size, tree.root()), keyid, key)
                buf.append(json.dumps({"type": "checkpoint", "note": note}, separators=(",", ":")).encode())
                f.write(b"\n".join(buf) + b"\n")
                buf = []
    return {keyid: key.public_key()}, origin


def audit_rates(work: Path, root: Path, records: int) -> tuple[float, float, int]:
    """(verify_export records/s, raw leaf-hashing records/s over the same lines, records)."""
    from broker.audit.verify import verify_export

    path = work / f"audit-export-{records}.jsonl"
    trusted, origin = generate_export(path, root, records)
    with path.open("rb") as f:
        t0 = time.perf_counter()
        n = 0
        for line in f:
            hashlib.sha256(b"\x00" + line[:-1]).digest()
            n += 1
        raw = n / (time.perf_counter() - t0)
    with path.open("rb") as f:
        report = verify_export(f, trusted, origin)
    return report.records_per_second, raw, report.records


# -- the run -------------------------------------------------------------------------------------


async def _stats(session: aiohttp.ClientSession, ctl: str) -> dict[str, Any]:
    async with session.get(ctl + "/stats") as r:
        data: dict[str, Any] = await r.json()
        return data


async def _wait_done(
    session: aiohttp.ClientSession, ctl: str, processed: int, delivered: int, timeout: float
) -> tuple[float | None, float | None, dict[str, Any]]:
    """Poll until the dispatcher processed `processed` and the stubs received `delivered` in total;
    return when each was reached (perf_counter, None if not within `timeout`) and the last stats."""
    t_proc: float | None = None
    t_del: float | None = None
    deadline = time.perf_counter() + timeout
    while True:
        s = await _stats(session, ctl)
        now = time.perf_counter()
        if t_proc is None and s["processed"] >= processed:
            t_proc = now
        if t_del is None and sum(s["delivered"].values()) >= delivered:
            t_del = now
        if (t_proc is not None and t_del is not None) or now > deadline:
            return t_proc, t_del, s
        await asyncio.sleep(0.02)


def _check_ok(what: str, statuses: Counter[int], ok: tuple[int, ...] = (200, 202)) -> None:
    bad = {k: v for k, v in statuses.items() if k not in ok}
    if bad:
        raise RuntimeError(f"{what}: unexpected HTTP statuses {bad}")


async def _batch_ingest(
    session: aiohttp.ClientSession, url: str, bodies: Sequence[bytes], sc: Scale
) -> tuple[float, int]:
    """Batch posts, `batch_parallel` at a time; returns (seconds, messages accepted)."""
    chunks = batches(bodies, sc.batch_size)
    it = iter(chunks)
    accepted = 0
    headers = {"Content-Type": "application/x-ndjson"}

    async def worker() -> None:
        nonlocal accepted
        for data in it:
            async with session.post(url + "/v1/messages/batch", data=data, headers=headers) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"batch: HTTP {r.status}: {body}")
                accepted += sum(1 for x in body["results"] if "problem" not in x)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sc.batch_parallel)))
    return time.perf_counter() - t0, accepted


async def run(sc: Scale, work: Path, gateway_workers: int = 0) -> list[Figure]:
    figures: list[Figure] = []
    state = work / "state"
    _say(f"state in {state}")
    prepare_state(state)
    sealer = Sealer(state)
    ctx = sealer.client_ssl()
    sample = sealer.make(1)[0][1]
    _say(f"message: delivery.status, {len(sample)} bytes signed")

    # 1. baselines
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
    _say("raw NATS JetStream publish ...")
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
    _say("bare aiohttp mTLS handler ...")
    async with child("bare", state, work) as info, _session(ctx, sc.concurrency) as s:
        url = info["gateway_url"] + "/v1/messages"
        await closed_loop(s, url, [sample] * 200, sc.concurrency, "application/json")
        dt, st = await closed_loop(s, url, [sample] * sc.single_n, sc.concurrency, "application/json")
        _check_ok("bare", st)
        bare_rate = sc.single_n / dt
        lat, _, st = await open_loop(s, url, [(str(i), sample) for i in range(int(500 * sc.latency_s))], 500)
        bare_p99 = percentile(lat, 99) * 1000
    figures.append(fig(f"bare aiohttp mTLS handler ({sc.concurrency} clients)", bare_rate, "req/s"))

    # 7. the gateway in 1 and 2 processes on one port, ingest only, in fresh copies of the state
    scaled: dict[int, float] = {}
    cpu_notes: dict[int, str] = {}
    for n in (1, 2):
        copy = work / f"state-gateway{n}"
        shutil.copytree(state, copy, ignore=shutil.ignore_patterns("nats", "audit", "run"))
        _say(f"gateway in {n} process(es), ingest only ...")
        async with child(f"gateway{n}", copy, work) as info, _session(ctx, sc.scale_clients) as s:
            url = info["gateway_url"] + "/v1/messages"
            await closed_loop(s, url, [b for _, b in sealer.make(200)], sc.scale_clients, "application/json")
            bodies = [b for _, b in sealer.make(sc.scale_n)]
            pids = _tree(int(info["pid"]))
            cpu0 = {pid: _cpu_s(pid) for pid in pids}
            me, m0 = time.process_time(), _machine()
            dt, st = await closed_loop(s, url, bodies, sc.scale_clients, "application/json")
            busy, iowait = _busy(m0, _machine())
            used = {pid: (_cpu_s(pid) - cpu0[pid]) / dt * 100 for pid in pids}
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
    figures.append(
        fig(
            f"ingest, gateway in 1 process ({sc.scale_clients} clients)",
            scaled[1],
            "msg/s",
            note=f"ingest only; {cpu_notes[1]}",
        )
    )
    figures.append(
        fig(
            f"ingest, gateway in 2 processes ({sc.scale_clients} clients)",
            scaled[2],
            "msg/s",
            scaled[1],
            f"baseline: 1 process; target >= 1.70; {cpu_notes[2]}",
        )
    )

    # 2-6. the system
    _say("starting the system (embedded NATS, gateway, dispatcher, audit, adapters, stubs) ...")
    async with child("broker", state, work, workers=gateway_workers) as info, _session(ctx, 64) as s:
        gw, ctl = info["gateway_url"], info["control_url"]
        url = gw + "/v1/messages"
        warm = sealer.make(200)
        await closed_loop(s, url, [b for _, b in warm], 8, "application/json")
        total = 200

        # 3. latency at fixed offered rates (empty system first)
        t_p, t_d, _ = await _wait_done(s, ctl, total, total * 3, sc.drain_timeout_s)
        for rate in sc.latency_rates:
            items = sealer.make(int(rate * sc.latency_s))
            record = rate == 500
            if record:
                async with s.post(ctl + "/record?on=1") as r:
                    await r.read()
            lat, sent, st = await open_loop(s, url, items, rate)
            _check_ok(f"latency {rate}", st)
            total += len(items)
            figures.append(fig(f"POST->202 p50 @ {rate} msg/s", percentile(lat, 50) * 1000, "ms"))
            figures.append(fig(f"POST->202 p95 @ {rate} msg/s", percentile(lat, 95) * 1000, "ms"))
            base = bare_p99 if rate == 500 else None
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
            t_p, t_d, stats = await _wait_done(s, ctl, total, total * 3, sc.drain_timeout_s)
            if record:
                async with s.post(ctl + "/record?on=0") as r:
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
                _say(f"after {rate} msg/s the deliveries did not drain within {sc.drain_timeout_s:.0f} s")

        # 4. fan-out: a burst through the batch endpoint, then decisions and deliveries per second
        bodies = [b for _, b in sealer.make(sc.fanout_n)]
        before = await _stats(s, ctl)
        t0 = time.perf_counter()
        _, accepted = await _batch_ingest(s, gw, bodies, sc)
        total += accepted
        t_p, t_d, stats = await _wait_done(s, ctl, total, total * 3, sc.drain_timeout_s)
        t_end = time.perf_counter()
        decided = 3 * (stats["processed"] - before["processed"])
        delivered = sum(stats["delivered"].values()) - sum(before["delivered"].values())
        figures.append(
            fig(
                "fan-out: release decisions (3 orgs)",
                decided / ((t_p or t_end) - t0),
                "decisions/s",
                note="" if t_p else "not drained within the timeout",
            )
        )
        figures.append(
            fig(
                "fan-out: deliveries to native systems",
                delivered / ((t_d or t_end) - t0),
                "deliveries/s",
                note=f"{delivered} deliveries" + ("" if t_d else ", not drained within the timeout"),
            )
        )

        # 2. ingest
        bodies = [b for _, b in sealer.make(sc.single_n)]
        dt, st = await closed_loop(s, url, bodies, sc.concurrency, "application/json")
        _check_ok("single ingest", st)
        total += sc.single_n
        single = sc.single_n / dt
        figures.append(
            fig(
                f"ingest POST /v1/messages ({sc.concurrency} clients)",
                single,
                "msg/s",
                bare_rate,
                "baseline: bare aiohttp mTLS; target >= 0.40",
            )
        )
        bodies = [b for _, b in sealer.make(sc.batch_n)]
        dt, accepted = await _batch_ingest(s, gw, bodies, sc)
        total += accepted
        figures.append(
            fig(
                f"ingest POST /v1/messages/batch ({sc.batch_size}/batch)",
                accepted / dt,
                "msg/s",
                async_rate,
                "baseline: raw publish_async; target >= 0.50",
            )
        )

        # 6. memory: RSS after mem_small and mem_large messages (batch ingest, deliveries running)
        rss_at: dict[int, int] = {}
        for target in (sc.mem_small, sc.mem_large):
            while total < target:
                n = min(10_000, target - total)
                _, accepted = await _batch_ingest(s, gw, [b for _, b in sealer.make(n)], sc)
                total += accepted
            rss_at[target] = (await _stats(s, ctl))["rss_kb"]
        stats = await _stats(s, ctl)  # deliveries may still be catching up: not waited for
        figures.append(fig(f"broker RSS after {sc.mem_small:,} messages", rss_at[sc.mem_small] / 1024, "MiB"))
        figures.append(
            fig(
                f"broker RSS after {sc.mem_large:,} messages",
                rss_at[sc.mem_large] / 1024,
                "MiB",
                rss_at[sc.mem_small] / 1024,
                "ratio: growth; target <= 1.10",
            )
        )
        figures.append(
            fig(
                "broker peak RSS (python)",
                stats["hwm_kb"] / 1024,
                "MiB",
                note=f"audit records {stats['audit_size']:,}",
            )
        )
        figures.append(fig("nats-server peak RSS", stats["nats_hwm_kb"] / 1024, "MiB"))

    # 5. audit verification
    _say(f"audit export of {sc.audit_records:,} records ...")
    verify_rate, hash_rate, n = audit_rates(work, state, sc.audit_records)
    figures.append(
        fig(
            f"audit verify ({n:,} records)",
            verify_rate,
            "records/s",
            hash_rate,
            "baseline: bare SHA-256 of the lines; target >= 200k/s",
        )
    )
    return figures


def render(figures: Sequence[Figure]) -> str:
    rows = [("figure", "value", "unit", "baseline", "ratio", "note")]
    for f in figures:
        rows.append(
            (
                f.name,
                f"{f.value:,.1f}" if f.value < 1000 else f"{f.value:,.0f}",
                f.unit,
                ""
                if f.baseline is None
                else (f"{f.baseline:,.1f}" if f.baseline < 1000 else f"{f.baseline:,.0f}"),
                "" if f.ratio is None else f"{f.ratio:.2f}",
                f.note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    out = []
    for j, r in enumerate(rows):
        cells = (
            [r[0].ljust(widths[0])]
            + [r[i].rjust(widths[i]) for i in (1,)]
            + [r[2].ljust(widths[2]), r[3].rjust(widths[3]), r[4].rjust(widths[4]), r[5]]
        )
        out.append("  ".join(cells).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# -- command -------------------------------------------------------------------------------------


def add_bench_parser(subparsers: Any) -> None:
    b = subparsers.add_parser("bench", help="benchmark the system against raw baselines (one run)")
    b.add_argument("--quick", action="store_true", help="a small run (under a minute)")
    b.add_argument("--json", dest="json_file", help="also write the figures as JSON to this file")
    b.add_argument("--keep", action="store_true", help="keep the temp folder (logs, state)")
    b.add_argument(
        "--gateway-workers",
        type=int,
        default=0,
        metavar="N",
        help="the system's gateway in N processes, like `broker up --gateway-workers N` (0: in-process)",
    )
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from broker import logs

    logs.configure(console=True, level=logging.WARNING)
    sc = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    t0 = time.perf_counter()
    try:
        figures = asyncio.run(run(sc, work, args.gateway_workers))
    finally:
        if not getattr(args, "keep", False):
            shutil.rmtree(work, ignore_errors=True)
    print(render(figures))
    print(
        f"\n({'quick' if sc.quick else 'full'} run, {time.perf_counter() - t0:.0f} s, {os.cpu_count()} CPUs)"
    )
    if args.json_file:
        Path(args.json_file).write_text(json.dumps([f.to_json() for f in figures], indent=2) + "\n")
    return 0


def _serve_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="broker.bench.run")
    p.add_argument("--serve", choices=("broker", "bare", "gateway1", "gateway2"), required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--gateway-workers", type=int, default=0)
    a = p.parse_args(argv)
    state, ready = Path(a.state), Path(a.ready)
    if a.serve.startswith("gateway"):
        asyncio.run(_serve_gateway(state, ready, int(a.serve[-1])))
    elif a.serve == "broker":
        asyncio.run(_serve_broker(state, ready, a.gateway_workers))
    else:
        asyncio.run(_serve_bare(state, ready))
    return 0


if __name__ == "__main__":
    if "--serve" in sys.argv:
        sys.exit(_serve_main(sys.argv[1:]))
    parser = argparse.ArgumentParser(prog="broker bench")
    add_bench_parser(parser.add_subparsers(dest="cmd", required=True))
    sys.exit(cmd_bench(parser.parse_args(["bench", *sys.argv[1:]])))
