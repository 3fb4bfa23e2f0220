"""`broker label export|import` (STANAG 4774 XML labels) and `broker vectors export` (golden vectors),
added to the `broker` command by `add_contract_parsers`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec

from broker.errors import MarkingError

_LABEL_ORDER = ("policy", "classification", "releasable_to", "caveats")


def _read(name: str) -> bytes:
    return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()


def _write(out: str | None, data: bytes) -> None:
    if out:
        Path(out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def parse_label_json(data: bytes) -> Any:
    """An ICD §2 label from JSON: its wire type, and sorted, unique lists (ICD §2)."""
    from schemas.label import Label

    try:
        label = msgspec.json.decode(data, type=Label)
    except msgspec.ValidationError as e:
        raise MarkingError(f"not an ICD §2 label: {e}") from None
    except msgspec.DecodeError:
        raise MarkingError("not an ICD §2 label: the file is not JSON") from None
    for field in ("releasable_to", "caveats"):
        values = list(getattr(label, field))
        if values != sorted(set(values)):
            raise MarkingError(f"not an ICD §2 label: {field} must be sorted and unique")
    return label


def cmd_label_export(args: argparse.Namespace) -> int:
    from broker.rules.stanag4774 import label_to_xml

    _write(args.out, label_to_xml(parse_label_json(_read(args.file))))
    return 0


def cmd_label_import(args: argparse.Namespace) -> int:
    from broker.rules.stanag4774 import label_from_xml

    label = label_from_xml(_read(args.file))
    doc = msgspec.to_builtins(label)
    _write(args.out, msgspec.json.encode({k: doc[k] for k in _LABEL_ORDER}) + b"\n")
    return 0


def cmd_vectors_export(args: argparse.Namespace) -> int:
    from broker.contract.vectors import write_vectors

    for p in write_vectors(Path(args.dir)):
        print(p)
    return 0


def add_contract_parsers(sub: Any) -> None:
    label = sub.add_parser("label", help="ICD §2 labels to and from STANAG 4774 XML").add_subparsers(
        dest="label_cmd", required=True
    )
    le = label.add_parser("export", help="an ICD §2 label (JSON) as STANAG 4774 XML")
    le.add_argument("file", help="the JSON label, or - for standard input")
    le.add_argument("--out", help="write here instead of standard output")
    le.set_defaults(func=cmd_label_export)
    li = label.add_parser("import", help="a STANAG 4774 XML label as an ICD §2 label (JSON)")
    li.add_argument("file", help="the XML label, or - for standard input")
    li.add_argument("--out", help="write here instead of standard output")
    li.set_defaults(func=cmd_label_import)

    vectors = sub.add_parser("vectors", help="golden vectors for other implementers").add_subparsers(
        dest="vectors_cmd", required=True
    )
    ve = vectors.add_parser("export", help="write the golden vectors to a folder (docs/integration.md)")
    ve.add_argument("dir")
    ve.set_defaults(func=cmd_vectors_export)
