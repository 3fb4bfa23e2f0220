"""The `broker` command (ICD §8). Configuration is read here, once, and passed in."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from broker.errors import BrokerError

DEFAULT_STATE = Path(".broker")


def _state(args: argparse.Namespace) -> Any:
    from broker.state import StatePaths

    return StatePaths(Path(args.state))


def _run_file(paths: Any, name: str) -> Path:
    return Path(paths.root) / "run" / name


def _default_url(paths: Any, given: str | None) -> str:
    if given:
        return given
    f = _run_file(paths, "gateway.url")
    if not f.exists():
        raise BrokerError(f"no running broker found ({f} missing): start `broker up` or pass --url")
    return f.read_text().strip()


# -- up -----------------------------------------------------------------------------------------------


def _workers(n: int) -> int:
    if not 0 <= n <= 64:
        raise BrokerError(f"--gateway-workers must be between 0 and 64, not {n}")
    return n


def cmd_up(args: argparse.Namespace) -> int:
    from broker import logs
    from broker.service import SystemOptions

    logs.configure(console=True)
    opts = SystemOptions(
        state=Path(args.state).resolve(),
        port=args.port,
        cluster=args.cluster,
        gateway_workers=_workers(args.gateway_workers),
    )
    (opts.state / "run").mkdir(parents=True, exist_ok=True)
    return asyncio.run(_up(args, opts))


async def _up(args: argparse.Namespace, opts: Any) -> int:
    from broker.examples import example_curl
    from broker.service import System

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with System(opts) as system:
        run = Path(opts.state) / "run"
        (run / "gateway.url").write_text(system.gateway_url + "\n")
        (run / "nats.url").write_text(system.nats_url + "\n")
        out = sys.stdout
        print("coordination broker is up", file=out)
        width = max(len(c) for c, _ in system.status.lines)
        for component, where in system.status.lines:
            print(f"  {component.ljust(width)}  {where}", file=out)
        if system.created:
            made = sorted({c.split("/")[1] for c in system.created if c.startswith("identities/")})
            print(
                f"  made ({len(system.created)} items): dev PKI and policy where missing; identities: "
                f"{', '.join(made) or 'none'}",
                file=out,
            )
        print(f"\ngateway: {system.gateway_url}\nnats:    {system.nats_url}\n", file=out)
        print("post a signed message (valid for 10 minutes; a second post answers 200 duplicate):", file=out)
        print(example_curl(system.paths, system.gateway_url), file=out)
        if args.demo:
            from broker.demo import run_demo

            await run_demo(system, out)
        if args.exit_after_demo:
            return 0
        print("\nCtrl-C stops everything.", file=out, flush=True)
        await stop.wait()
        print("stopping ...", file=out, flush=True)
    print("stopped.", file=sys.stdout, flush=True)
    return 0


# -- run (one part per process) ----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """One part of the system in this process, against external NATS: what the fault suite kills."""
    from broker import logs
    from broker.service import ORGANISATIONS, SystemOptions

    logs.configure(console=False)
    part = args.part
    if part == "adapter" and (args.org not in ORGANISATIONS or not args.native_url or not args.gateway_url):
        raise BrokerError(
            f"an adapter needs --org ({', '.join(ORGANISATIONS)}), --native-url and --gateway-url"
        )
    opts = SystemOptions(
        state=Path(args.state).resolve(),
        host=args.host,
        port=args.port,
        nats_url=args.nats_url,
        gateway=part == "core",
        gateway_worker=part == "gateway",
        worker_index=args.worker_index,
        gateway_workers=_workers(args.gateway_workers) if part == "core" else 0,
        dispatcher=part == "dispatcher",
        adapters=part == "adapter",
        adapter_orgs=(args.org,) if part == "adapter" else None,
        native_urls={args.org: args.native_url} if part == "adapter" else None,
        gateway_url=args.gateway_url,
        adapter_ack_wait_s=args.adapter_ack_wait,
        checkpoint_interval_s=args.checkpoint_interval,
        replicas=args.replicas,
    )
    return asyncio.run(_run_part(opts, stop_on_stdin_eof=args.worker_of_parent))


def _on_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """A worker started by `GatewayWorkers` holds a pipe from its parent on stdin: EOF means the parent
    is gone (even by SIGKILL), so the worker stops instead of serving on as an orphan."""

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            fd = sys.stdin.fileno()
            while os.read(fd, 4096):  # the raw fd: no buffer lock held at interpreter exit
                pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


async def _run_part(opts: Any, *, stop_on_stdin_eof: bool = False) -> int:
    from broker.service import System

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if stop_on_stdin_eof:
        _on_stdin_eof(loop, stop)
    async with System(opts) as system:
        ready = {"ready": [c for c, _ in system.status.lines], "gateway": system.gateway_url}
        print(json.dumps(ready), flush=True)
        await stop.wait()
    return 0


# -- send ---------------------------------------------------------------------------------------------


def cmd_send(args: argparse.Namespace) -> int:
    doc = json.loads(Path(args.file).read_text(encoding="utf-8"))
    return asyncio.run(_send(args, doc))


async def _send(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    from broker.client import GatewayClient, build_message, seal_message
    from broker.pki import load_signing_key
    from broker.policy import load_policy
    from broker.tls import client_context

    paths = _state(args)
    policy = load_policy(paths.policy)
    sender = policy.senders.get(args.sender)
    if sender is None:
        raise BrokerError(f"{args.sender!r} is not a sender in {paths.policy}")
    msg = build_message(
        kind=doc["kind"],
        sender=args.sender,
        originator=doc.get("originator", sender.organisation),
        label=doc["label"],
        body=doc["body"],
        msg_id=doc.get("id"),
        created=doc.get("created"),
        in_reply_to=doc.get("in_reply_to"),
    )
    keyid, key = load_signing_key(paths, args.sender)
    env = seal_message(msg, keyid, key)
    ctx = client_context(paths.ca_crt, paths.tls_crt(args.sender), paths.tls_key(args.sender))
    async with GatewayClient(_default_url(paths, args.url), ctx) as gw:
        reply = await gw.send(env)  # the same bytes again after 503/429/timeouts (broker.client.Retry)
    print(json.dumps(reply.body if not isinstance(reply.body, bytes) else reply.body.decode(), indent=2))
    return 0 if reply.status in (200, 202) else 1


# -- certs, keys, schemas -----------------------------------------------------------------------------


def cmd_certs_init(args: argparse.Namespace) -> int:
    from broker.pki import ensure_server_cert, init_ca

    paths = _state(args)
    made = init_ca(paths)
    made_server = ensure_server_cert(paths)
    print(f"CA {'made' if made else 'kept'}: {paths.ca_crt}")
    print(f"server certificate {'made' if made_server else 'kept'}: {paths.server_crt}")
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    from broker.pki import new_operator, new_sender

    paths = _state(args)
    if args.operator:
        if not args.clearance or args.publishes:
            raise BrokerError("an operator takes --clearance POLICY:LEVEL[:CAVEAT+CAVEAT] and no --publishes")
        new_operator(paths, args.id, args.org, args.clearance)
        print(f"operator {args.id} ({args.org}, {args.clearance}): {paths.identity_dir(args.id)}")
    else:
        if not args.publishes or args.clearance:
            raise BrokerError("a sender takes --publishes KIND[,KIND...] and no --clearance")
        kinds = [k.strip() for k in args.publishes.split(",") if k.strip()]
        new_sender(paths, args.id, args.org, kinds, key_name=args.key_name)
        print(f"sender {args.id} ({args.org}, publishes {', '.join(kinds)}): {paths.identity_dir(args.id)}")
    _ensure_nats_identities(paths)
    return 0


def _ensure_nats_identities(paths: Any) -> None:
    from broker.nats_auth import ensure_nats_identities
    from broker.policy import load_policy

    for made in ensure_nats_identities(paths, load_policy(paths.policy)):
        print(f"NATS identity made: {made}")


def cmd_nats_config(args: argparse.Namespace) -> int:
    """Print the NATS config generated from the policy (TLS, one user per service, permissions)."""
    from broker.nats_auth import render_nats_config
    from broker.policy import load_policy

    paths = _state(args)
    host, _, port = args.listen.rpartition(":")
    sys.stdout.write(render_nats_config(paths, load_policy(paths.policy), host=host, port=int(port)))
    return 0


def cmd_schemas_export(args: argparse.Namespace) -> int:
    from broker.contract.export import export_contract, state_view
    from schemas.export import export

    view = state_view(_state(args))  # AsyncAPI: the subjects and rights of this policy (or ICD §9's)
    for p in (*export(Path(args.dir)), *export_contract(Path(args.dir), view)):
        print(p)
    return 0


# -- audit --------------------------------------------------------------------------------------------


async def _read_live_log(paths: Any, nats_url: str | None) -> list[bytes]:
    from broker.audit.writer import read_log
    from broker.bus import Bus
    from broker.nats_auth import READER, bus_settings
    from broker.policy import load_policy

    instance = load_policy(paths.policy).name
    url = nats_url or _run_file(paths, "nats.url").read_text().strip()
    # operators' read path: the `reader` NATS identity (pki/nats/reader.crt)
    async with Bus(bus_settings(paths, READER, url, name="coord-audit-export"), ensure_streams=False) as bus:
        await bus.wait_connected(timeout=10)
        return [data for _, data in await read_log(bus, instance=instance)]


def cmd_audit_export(args: argparse.Namespace) -> int:
    paths = _state(args)
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

    from broker.audit.verify import VerifyError, verify_export
    from broker.policy import load_policy

    paths = _state(args)
    policy = load_policy(paths.policy)
    trusted = {kid: Ed25519PublicKey.from_public_bytes(k.public_key) for kid, k in policy.broker_keys.items()}
    origin = f"coord-broker/{policy.name}"
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


# -- tail ---------------------------------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    from broker.tail import run_tail

    paths = _state(args)
    try:
        return asyncio.run(run_tail(paths, _default_url(paths, args.url), args))
    except KeyboardInterrupt:
        return 130


# -- parser -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="broker", description="EU-NATO coordination broker (see ICD §8)")
    p.add_argument("--state", default=str(DEFAULT_STATE), help="state folder (default ./.broker)")
    sub = p.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("up", help="run the whole system on this machine")
    up.add_argument("--port", type=int, default=8443, help="gateway port (0: any free port)")
    up.add_argument("--demo", action="store_true", help="play the coordination scenario")
    up.add_argument(
        "--cluster", type=int, choices=[1, 3], default=1, help="NATS nodes (3: a JetStream cluster)"
    )
    up.add_argument(
        "--gateway-workers",
        type=int,
        default=0,
        metavar="N",
        help="run the gateway as N processes sharing the port (0: in the main process)",
    )
    up.add_argument("--exit-after-demo", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_up)

    run = sub.add_parser("run", help="run one part of the system against an external NATS")
    run.add_argument("part", choices=["core", "gateway", "dispatcher", "adapter"])
    run.add_argument("--nats-url", required=True, help="NATS URL, or seeds comma-separated (tls://...)")
    run.add_argument("--host", default="127.0.0.1", help="gateway address (core, gateway)")
    run.add_argument("--port", type=int, default=8443, help="gateway port (core, gateway)")
    run.add_argument("--gateway-workers", type=int, default=0, metavar="N", help="core: gateway processes")
    run.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    run.add_argument("--worker-of-parent", action="store_true", help=argparse.SUPPRESS)
    run.add_argument("--org", help="the adapter's organisation")
    run.add_argument("--native-url", help="the adapter's native system")
    run.add_argument("--gateway-url", help="where the adapter publishes inbound messages")
    run.add_argument("--adapter-ack-wait", type=float, default=30.0)
    run.add_argument("--checkpoint-interval", type=float, default=10.0)
    run.add_argument("--replicas", type=int, default=1)
    run.set_defaults(func=cmd_run)

    send = sub.add_parser("send", help="sign a message file and post it")
    send.add_argument("file")
    send.add_argument("--as", dest="sender", required=True)
    send.add_argument("--url")
    send.set_defaults(func=cmd_send)

    certs = sub.add_parser("certs").add_subparsers(dest="certs_cmd", required=True)
    certs.add_parser("init", help="make the dev CA and server certificate").set_defaults(func=cmd_certs_init)

    keys = sub.add_parser("keys").add_subparsers(dest="keys_cmd", required=True)
    kn = keys.add_parser("new", help="make a sender or operator identity")
    kn.add_argument("id")
    kn.add_argument("--org", required=True)
    kn.add_argument("--publishes")
    kn.add_argument("--operator", action="store_true")
    kn.add_argument("--clearance")
    kn.add_argument("--key-name")
    kn.set_defaults(func=cmd_keys_new)

    nc = sub.add_parser("nats-config", help="print the NATS config generated from the policy")
    nc.add_argument("--listen", default="127.0.0.1:4222", help="client listen address HOST:PORT")
    nc.set_defaults(func=cmd_nats_config)

    schemas = sub.add_parser("schemas").add_subparsers(dest="schemas_cmd", required=True)
    se = schemas.add_parser("export", help="write the JSON Schemas, OpenAPI and AsyncAPI to a folder")
    se.add_argument("dir")
    se.set_defaults(func=cmd_schemas_export)

    audit = sub.add_parser("audit").add_subparsers(dest="audit_cmd", required=True)
    ae = audit.add_parser("export", help="the audit log as JSON lines")
    ae.add_argument("--out")
    ae.add_argument("--nats-url")
    ae.set_defaults(func=cmd_audit_export)
    av = audit.add_parser("verify", help="verify an export (or the live log)")
    av.add_argument("file", nargs="?")
    av.add_argument("--checkpoint", help="a trusted checkpoint note (file) the log must reach")
    av.add_argument("--nats-url")
    av.set_defaults(func=cmd_audit_verify)

    tail = sub.add_parser("tail", help="follow the audited stream as an operator")
    tail.add_argument("--as", dest="operator", required=True)
    tail.add_argument("--kind")
    tail.add_argument("--originator")
    tail.add_argument("--since")
    tail.add_argument("--json", action="store_true")
    tail.add_argument("--no-follow", action="store_true")
    tail.add_argument("--url")
    tail.set_defaults(func=cmd_tail)
    from broker.bench import add_bench_parser
    from broker.contract.cli import add_contract_parsers

    add_bench_parser(sub)
    add_contract_parsers(sub)  # label export|import, vectors export
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    from broker import logs

    args = build_parser().parse_args(argv)
    if args.func not in (cmd_up, cmd_run):
        logs.configure(console=True, level=logging.WARNING)
    try:
        rc: int = args.func(args)
    except (BrokerError, OSError, ValueError, KeyError, TimeoutError) as exc:
        print(f"broker: {exc or type(exc).__name__}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
