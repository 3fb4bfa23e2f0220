"""Baselines measured in the same run: raw Ed25519 verification, and raw nats-py JetStream publish
to a nats-server rendered as `broker up` renders it (through `broker.nats.raw`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from broker.bench.payloads import Sealer
from broker.bench.scale import Scale


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
    from broker.nats.config import NatsPermissions, NatsUser
    from broker.nats.names import nats_user
    from broker.nats.raw import raw_jetstream
    from broker.nats.security import issue_nats_identity, nats_security
    from broker.nats.server import NatsServer
    from broker.nats.settings import bus_settings
    from broker.policy.loader import load_policy

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
