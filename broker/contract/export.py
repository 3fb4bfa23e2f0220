"""`broker schemas export DIR`: the machine-readable contract beside the JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from broker.contract.asyncapi import asyncapi_document
from broker.gateway.openapi import openapi_document
from broker.identity.state import StatePaths
from broker.nats.permissions import NatsView
from broker.policy.defaults import DEFAULT_BROKER_NAME, DEFAULT_ORGANISATIONS, DEFAULT_SYSTEM_HIGH
from broker.policy.loader import load_policy
from schemas.clearance import Clearance


def _write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def default_view() -> NatsView:
    """The NATS projection of the default policy of ICD §9 (no state folder needed)."""
    return NatsView(
        instance=DEFAULT_BROKER_NAME,
        system_high=Clearance.parse(DEFAULT_SYSTEM_HIGH).rank,
        clearances=tuple(sorted((o, Clearance.parse(c).rank) for o, c in DEFAULT_ORGANISATIONS.items())),
    )


def state_view(paths: StatePaths) -> NatsView:
    """The state folder's policy if it has one, else the default policy's."""
    return NatsView.of(load_policy(paths.policy)) if paths.policy.exists() else default_view()


def export_contract(directory: Path, view: NatsView | None = None) -> list[Path]:
    """Write `openapi.json` and `asyncapi.json` (for `view`, default: ICD §9's policy) under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        _write(directory / "openapi.json", openapi_document()),
        _write(directory / "asyncapi.json", asyncapi_document(view or default_view())),
    ]
