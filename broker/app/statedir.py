"""The state folder as the commands see it: from `--state`, and the files a running system leaves in
`<state>/run/` for the commands that talk to it (`gateway.url`, `nats.url`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from broker.errors import BrokerError
from broker.identity.state import StatePaths

__all__ = ["DEFAULT_STATE", "default_url", "run_file", "state_of"]

DEFAULT_STATE = Path(".broker")


def state_of(args: argparse.Namespace) -> StatePaths:
    return StatePaths(Path(args.state))


def run_file(paths: StatePaths, name: str) -> Path:
    return Path(paths.root) / "run" / name


def default_url(paths: StatePaths, given: str | None) -> str:
    if given:
        return given
    f = run_file(paths, "gateway.url")
    if not f.exists():
        raise BrokerError(f"no running broker found ({f} missing): start `broker up` or pass --url")
    return f.read_text().strip()
