"""`broker audit export` and `broker audit verify [FILE]` (ICD §7)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from broker.app.statedir import run_file, state_of
from broker.errors import VerifyError

# -- audit --------------------------------------------------------------------------------------------


async def _read_live_log(paths: Any, nats_url: str | None) -> list[bytes]:
    from broker.audit.reader import read_log
    from broker.nats.bus import Bus
    from broker.nats.names import READER
    from broker.nats.settings import bus_settings
    from broker.policy.loader import load_policy

    instance = load_policy(paths.policy).name
    url = nats_url or run_file(paths, "nats.url").read_text().strip()
    # operators' read path: the `reader` NATS identity (pki/nats/reader.crt)
    async with Bus(bus_settings(paths, READER, url, name="coord-audit-export"), ensure_streams=False) as bus:
        await bus.wait_connected(timeout=10)
        return [data for _, data in await read_log(bus, instance=instance)]


def cmd_audit_export(args: argparse.Namespace) -> int:
    paths = state_of(args)
    chunks = asyncio.run(_read_live_log(paths, args.nats_url))
    out = open(args.out, "wb") if args.out else sys.stdout.buffer
    try:
        for c in chunks:
            out.write(c)
    finally:
        if args.out:
            out.close()
    return 0


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int], None] | None]:
    if not enabled:
        yield None
        return

    def show(n: int) -> None:
        sys.stderr.write(f"\r  verified {n:,} records")
        sys.stderr.flush()

    yield show
    sys.stderr.write("\n")


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from broker.audit.note import log_origin
    from broker.audit.verify import verify_export
    from broker.policy.loader import load_policy

    paths = state_of(args)
    policy = load_policy(paths.policy)
    trusted = {kid: Ed25519PublicKey.from_public_bytes(k.public_key) for kid, k in policy.broker_keys.items()}
    origin = log_origin(policy.name)
    trusted_cp = Path(args.checkpoint).read_text() if args.checkpoint else None
    lines: Any
    if args.file:
        lines = open(args.file, "rb")
    else:
        lines = [
            ln for chunk in asyncio.run(_read_live_log(paths, args.nats_url)) for ln in chunk.splitlines()
        ]
    try:
        with _progress(sys.stderr.isatty()) as progress:
            report = verify_export(lines, trusted, origin, trusted_checkpoint=trusted_cp, progress=progress)
    except VerifyError as exc:
        print(f"audit log BROKEN: {exc.name}: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        if args.file:
            lines.close()
    print(
        f"audit log verified: {report.records} records, {report.checkpoints} checkpoints, "
        f"signed up to {report.verified_size}, {report.records_per_second:,.0f} records/s"
    )
    return 0
