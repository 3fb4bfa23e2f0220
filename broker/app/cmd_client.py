"""`broker send` and `broker tail`: a sender and an operator talking to a running gateway."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from broker.app.statedir import default_url, state_of
from broker.errors import BrokerError

# -- send ---------------------------------------------------------------------------------------------


def cmd_send(args: argparse.Namespace) -> int:
    doc = json.loads(Path(args.file).read_text(encoding="utf-8"))
    return asyncio.run(_send(args, doc))


async def _send(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    from broker.client import GatewayClient, build_message, seal_message
    from broker.identity.keys import load_signing_key
    from broker.identity.tls import client_context
    from broker.policy.loader import load_policy

    paths = state_of(args)
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
    async with GatewayClient(default_url(paths, args.url), ctx) as gw:
        reply = await gw.send(env)  # the same bytes again after 503/429/timeouts (broker.client.Retry)
    print(json.dumps(reply.body if not isinstance(reply.body, bytes) else reply.body.decode(), indent=2))
    return 0 if reply.status in (200, 202) else 1


# -- tail ---------------------------------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    from broker.app.tail import run_tail

    paths = state_of(args)
    try:
        return asyncio.run(run_tail(paths, default_url(paths, args.url), args))
    except KeyboardInterrupt:
        return 130
