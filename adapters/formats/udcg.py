"""UDCG tables: CSV (`text/csv`, RFC 4180) with NATO markings, one message per row (pledges: per row group).

UDCG is a NATO-coordinated coalition (Ramstein format), so its tables carry NATO display markings only;
EU markings are refused in the `marking` column. The table type is chosen by the header, which must match
one of the headers below exactly (same names, same order, nothing more, nothing less):

* pledge table (kind `capability.pledge`), one row per pledged item::

    marking,releasability,caveats,ref,in_reply_to,pledge_ref,nation,coalition,window_from,window_to,
        designation,category,quantity
    NATO RESTRICTED,"REL TO NSATU, UDCG",,PL-0117,,UDCG-ADC-0117,DEU,IAMD,2026-04-01,2026-09-30,
        IRIS-T SLM launcher,air-defence,2
    NATO RESTRICTED,"REL TO NSATU, UDCG",,PL-0117,,UDCG-ADC-0117,DEU,IAMD,2026-04-01,2026-09-30,
        IRIS-T SLM missile,air-defence-munition,48

  (each record is one line in the file; wrapped here for width.)

  A multi-item pledge is a run of consecutive rows with the same `pledge_ref`; every column except
  `designation`, `category`, `quantity` must be identical within the run, and a `pledge_ref` may not
  reappear after another pledge's rows. Each run is one message; items keep row order.
* delivery table (kind `delivery.status`), one row a message::

    marking,releasability,caveats,ref,in_reply_to,pledge_ref,stage,quantity_delivered,as_of

* generic table (every other kind; `capability.pledge` and `delivery.status` are refused here, they have
  their own tables), one row a message, the body as one compact JSON object (duplicate keys refused)::

    marking,releasability,caveats,ref,in_reply_to,kind,body_json

Each table also exists in a delivered variant, the one the broker writes: the header above followed by
`original_marking,originator,sender,created`. `originator`, `sender`, `created` are the released
message's provenance (checked, then ignored on input: the publisher is the adapter's identity).
`original_marking` is empty, or - when the message carries an EU label - the EU marking of the same rank
as `marking`, which restores the EU policy on input.

Cells: `marking` an exact NATO display marking (ICD §2); `releasability` `REL TO A, B` (sorted, unique);
`caveats` codes separated by one space, empty for none; `ref`/`in_reply_to` a document id or empty;
integers canonical decimal (`0`, `48`; never `048`, `+48`, `48.0`); every row has exactly as many cells as
the header; empty rows are refused; at least one data row. UTF-8, an optional leading BOM is accepted on
input (spreadsheets write one) and never written; output lines end with CRLF.

Spreadsheet formula injection (OWASP "CSV injection"): on output, a cell that, after any run of leading
apostrophes, begins with `=`, `+`, `-`, `@`, tab or CR is written with one more leading `'`; on input, a
cell that is one or more `'` followed by one of those characters loses exactly one leading `'`. So
`=SUM(A1)` is written `'=SUM(A1)` and read back as `=SUM(A1)`; `'=x` is written `''=x` and read back as
`'=x`; a cell like `'abc` is never touched. Unprefixed formula-like cells from UDCG are read as text.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from adapters.formats.base import (
    DeliveredMessage,
    NativeMessage,
    check_provenance,
    check_ref,
    format_caveats,
    format_releasability,
    make_label,
    parse_caveats,
    parse_classification,
    parse_original_marking,
    parse_releasability,
    render_marking,
    strict_json_loads,
    utf8_text,
)
from adapters.formats.bodies import validate_body
from broker.errors import NativeFormatError

__all__ = [
    "DELIVERED_COLUMNS",
    "DELIVERY_HEADER",
    "GENERIC_HEADER",
    "MEDIA_TYPE",
    "PLEDGE_HEADER",
    "UdcgCodec",
    "neutralise_cell",
    "restore_cell",
]

MEDIA_TYPE = "text/csv"
_FMT = "UDCG"
_COMMON = ("marking", "releasability", "caveats", "ref", "in_reply_to")
PLEDGE_HEADER = (
    *_COMMON,
    *("pledge_ref", "nation", "coalition", "window_from", "window_to", "designation", "category", "quantity"),
)
DELIVERY_HEADER = (*_COMMON, "pledge_ref", "stage", "quantity_delivered", "as_of")
GENERIC_HEADER = (*_COMMON, "kind", "body_json")
DELIVERED_COLUMNS = ("original_marking", "originator", "sender", "created")
_ITEM_COLUMNS = ("designation", "category", "quantity")
_TABLES = {
    "capability.pledge": PLEDGE_HEADER,
    "delivery.status": DELIVERY_HEADER,
}
_HEADERS: dict[tuple[str, ...], str] = {}
for _kind, _hdr in (*_TABLES.items(), ("*", GENERIC_HEADER)):
    _HEADERS[_hdr] = _kind
    _HEADERS[(*_hdr, *DELIVERED_COLUMNS)] = _kind

_TRIGGER = re.compile(r"^'*[=+\-@\t\r]")
_PREFIXED = re.compile(r"^'+[=+\-@\t\r]")
_INT = re.compile(r"^(0|-?[1-9][0-9]{0,17})$")


def neutralise_cell(cell: str) -> str:
    """The cell as written for spreadsheets: one `'` added before a formula trigger (see module doc)."""
    return "'" + cell if _TRIGGER.match(cell) else cell


def restore_cell(cell: str) -> str:
    """Inverse of `neutralise_cell`: removes the one `'` it added, and nothing else."""
    return cell[1:] if _PREFIXED.match(cell) else cell


class UdcgCodec:
    """CSV tables with NATO markings; a document holds one or more messages."""

    name: str = "udcg"
    media_type: str = MEDIA_TYPE

    def decode(self, data: bytes) -> list[NativeMessage]:
        text = utf8_text(data, _FMT, allow_bom=True)
        try:
            records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
        except csv.Error as e:
            raise NativeFormatError(
                f"{_FMT} document is not valid CSV (RFC 4180 quoting, cells up to 128 KiB): {_csv_reason(e)}"
            ) from None
        if not records:
            raise NativeFormatError(f"{_FMT} document is empty; expected a header row and data rows")
        header = tuple(records[0])
        table = _HEADERS.get(header)
        if table is None:
            raise NativeFormatError(
                f"{_FMT} header does not match a table; expected exactly one of: "
                f"pledge ({','.join(PLEDGE_HEADER)}), delivery ({','.join(DELIVERY_HEADER)}), "
                f"generic ({','.join(GENERIC_HEADER)}), each optionally followed by "
                f"{','.join(DELIVERED_COLUMNS)}"
            )
        rows: list[tuple[int, dict[str, str]]] = []
        for n, rec in enumerate(records[1:], start=2):
            if not rec:
                raise NativeFormatError(f"{_FMT} record {n} is empty; empty rows are not allowed")
            if len(rec) != len(header):
                raise NativeFormatError(
                    f"{_FMT} record {n} has {len(rec)} cells; expected {len(header)} (one per header column)"
                )
            rows.append((n, dict(zip(header, (restore_cell(c) for c in rec), strict=True))))
        if not rows:
            raise NativeFormatError(f"{_FMT} document has a header but no data rows")
        if table == "capability.pledge":
            return [_pledge(group) for group in _group_pledges(rows)]
        if table == "delivery.status":
            return [_message(n, row, "delivery.status", _delivery_body(n, row)) for n, row in rows]
        return [_generic(n, row) for n, row in rows]

    def encode(self, msg: DeliveredMessage) -> bytes:
        body = validate_body(msg.kind, msg.body)
        marking, original = render_marking(msg.label, "NATO")
        check_provenance(msg.originator, msg.sender, msg.created, _FMT)
        common = [
            marking,
            format_releasability(list(msg.label.releasable_to)),
            format_caveats(list(msg.label.caveats)),
            check_ref(msg.id, "id") or "",
            check_ref(msg.in_reply_to, "in_reply_to") or "",
        ]
        suffix = [original or "", msg.originator, msg.sender, msg.created]
        if msg.kind == "capability.pledge":
            header: tuple[str, ...] = PLEDGE_HEADER
            head = [
                body["pledge_ref"],
                body["nation"],
                body["coalition"],
                body["delivery_window"]["from"],
                body["delivery_window"]["to"],
            ]
            rows = [
                [*common, *head, it["designation"], it["category"], str(it["quantity"]), *suffix]
                for it in body["items"]
            ]
        elif msg.kind == "delivery.status":
            header = DELIVERY_HEADER
            fields = [body["pledge_ref"], body["stage"], str(body["quantity_delivered"]), body["as_of"]]
            rows = [[*common, *fields, *suffix]]
        else:
            header = GENERIC_HEADER
            body_json = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
            rows = [[*common, msg.kind, body_json, *suffix]]
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL, strict=True)
        writer.writerow([*header, *DELIVERED_COLUMNS])
        writer.writerows([[neutralise_cell(c) for c in row] for row in rows])
        return out.getvalue().encode("utf-8")


def _csv_reason(e: csv.Error) -> str:
    text = str(e)
    return text if len(text) <= 80 and "'" not in text and '"' not in text else "malformed quoting"


def _int(row: dict[str, str], col: str, n: int) -> int:
    text = row[col]
    if not _INT.match(text):
        raise NativeFormatError(
            f"{_FMT} record {n} column {col} must be an integer in canonical decimal (e.g. 48; no sign, "
            "spaces, decimals or leading zeros)"
        )
    return int(text)


def _message(n: int, row: dict[str, str], kind: str, raw_body: dict[str, Any]) -> NativeMessage:
    where = f"{_FMT} record {n}"
    policy, classification = parse_classification(row["marking"], "NATO", where)
    if row.get("original_marking"):
        policy = parse_original_marking(row["original_marking"], "NATO", classification, where)
    if "originator" in row:
        check_provenance(row["originator"], row["sender"], row["created"], where)
    body = validate_body(kind, raw_body, where)
    try:
        ref = check_ref(row["ref"] or None, "ref")
        in_reply_to = check_ref(row["in_reply_to"] or None, "in_reply_to")
    except NativeFormatError as e:
        raise NativeFormatError(f"{where}: {e}") from None
    return NativeMessage(
        kind=kind,
        label=make_label(
            policy,
            classification,
            parse_releasability(row["releasability"], where),
            parse_caveats(row["caveats"], where),
        ),
        body=body,
        ref=ref,
        in_reply_to=in_reply_to,
    )


def _delivery_body(n: int, row: dict[str, str]) -> dict[str, Any]:
    return {
        "pledge_ref": row["pledge_ref"],
        "stage": row["stage"],
        "quantity_delivered": _int(row, "quantity_delivered", n),
        "as_of": row["as_of"],
    }


def _group_pledges(rows: list[tuple[int, dict[str, str]]]) -> list[list[tuple[int, dict[str, str]]]]:
    groups: list[list[tuple[int, dict[str, str]]]] = []
    seen: set[str] = set()
    for n, row in rows:
        if groups and groups[-1][0][1]["pledge_ref"] == row["pledge_ref"]:
            first = groups[-1][0][1]
            for col, value in row.items():
                if col not in _ITEM_COLUMNS and first[col] != value:
                    raise NativeFormatError(
                        f"{_FMT} record {n} column {col} differs from the first row of its pledge; rows of "
                        "one pledge_ref may differ only in designation, category, quantity"
                    )
            groups[-1].append((n, row))
            continue
        if row["pledge_ref"] in seen:
            raise NativeFormatError(
                f"{_FMT} record {n}: a pledge_ref may appear in one run of consecutive rows only"
            )
        seen.add(row["pledge_ref"])
        groups.append([(n, row)])
    return groups


def _pledge(group: list[tuple[int, dict[str, str]]]) -> NativeMessage:
    n, first = group[0]
    body = {
        "pledge_ref": first["pledge_ref"],
        "nation": first["nation"],
        "coalition": first["coalition"],
        "items": [
            {"designation": r["designation"], "category": r["category"], "quantity": _int(r, "quantity", m)}
            for m, r in group
        ],
        "delivery_window": {"from": first["window_from"], "to": first["window_to"]},
    }
    return _message(n, first, "capability.pledge", body)


def _generic(n: int, row: dict[str, str]) -> NativeMessage:
    kind = row["kind"]
    if kind in _TABLES:
        raise NativeFormatError(
            f"{_FMT} record {n}: {kind} rows belong in their own table, not the generic one"
        )
    body = strict_json_loads(row["body_json"], f"{_FMT} record {n} column body_json")
    return _message(n, row, kind, body)
