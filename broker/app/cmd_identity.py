"""`broker certs init`, `broker keys new`, `broker nats-config`, `broker schemas export`: what makes and
shows the state folder's identities, policy entries and generated configs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from broker.app.statedir import state_of
from broker.errors import BrokerError

# -- certs, keys, schemas -----------------------------------------------------------------------------


def cmd_certs_init(args: argparse.Namespace) -> int:
    from broker.identity.x509 import ensure_server_cert, init_ca

    paths = state_of(args)
    made = init_ca(paths)
    made_server = ensure_server_cert(paths)
    print(f"CA {'made' if made else 'kept'}: {paths.ca_crt}")
    print(f"server certificate {'made' if made_server else 'kept'}: {paths.server_crt}")
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    from broker.policy.admin import new_operator, new_sender

    paths = state_of(args)
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
    from broker.nats.security import ensure_nats_identities
    from broker.policy.loader import load_policy

    for made in ensure_nats_identities(paths, load_policy(paths.policy)):
        print(f"NATS identity made: {made}")


def cmd_nats_config(args: argparse.Namespace) -> int:
    """Print the NATS config generated from the policy (TLS, one user per service, permissions)."""
    from broker.nats.security import render_nats_config
    from broker.policy.loader import load_policy

    paths = state_of(args)
    host, _, port = args.listen.rpartition(":")
    sys.stdout.write(render_nats_config(paths, load_policy(paths.policy), host=host, port=int(port)))
    return 0


def cmd_schemas_export(args: argparse.Namespace) -> int:
    from broker.contract.export import export_contract, state_view
    from schemas.export import export

    view = state_view(state_of(args))  # AsyncAPI: the subjects and rights of this policy (or ICD §9's)
    for p in (*export(Path(args.dir)), *export_contract(Path(args.dir), view)):
        print(p)
    return 0
