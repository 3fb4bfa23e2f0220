"""`broker schemas export DIR`: the machine-readable contract beside the JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from broker.contract.openapi import openapi_document


def _write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def export_contract(directory: Path) -> list[Path]:
    """Write `openapi.json` under `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    return [_write(directory / "openapi.json", openapi_document())]
