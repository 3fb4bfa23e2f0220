"""The `broker` command (ICD §8). Configuration is read here, once, and passed in."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from broker.app.cmd_audit import cmd_audit_export, cmd_audit_verify
from broker.app.cmd_client import cmd_send, cmd_tail
from broker.app.cmd_identity import cmd_certs_init, cmd_keys_new, cmd_nats_config, cmd_schemas_export
from broker.app.cmd_system import cmd_run, cmd_up
from broker.app.statedir import DEFAULT_STATE
from broker.errors import BrokerError

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
    from broker.bench.cli import add_bench_parser
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
