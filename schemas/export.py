"""JSON Schema export of the wire types (ICD §5: `GET /v1/schemas`, `broker schemas export`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from schemas.label import Label
from schemas.message import MESSAGE_TYPES, Envelope, Message

_BASE = "urn:coord:schema:"


def _schema(tp: Any, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = msgspec.json.schema(tp)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": _BASE + name, **doc}


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every schema by name: `message`, `envelope`, `label`, then one per kind."""
    out = {
        "message": _schema(Message, "message"),
        "envelope": _schema(Envelope, "envelope"),
        "label": _schema(Label, "label"),
    }
    for kind, tp in MESSAGE_TYPES.items():
        out[kind] = _schema(tp, kind)
    return out


def export(directory: Path) -> list[Path]:
    """Write each schema as `<name>.schema.json` under `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in all_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
