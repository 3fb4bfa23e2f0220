"""Message bodies in the native formats: validated by converting them through the kind's msgspec type
(`schemas.kinds.BODY_TYPES`, handing back its plain JSON form), text limited to what XML 1.0 can carry
(so any message one codec accepts every codec can deliver), and errors that never echo a value.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from adapters.formats.base import clean_error
from broker.errors import NativeFormatError
from schemas.kinds import BODY_TYPES, KINDS

__all__ = ["sample_bodies", "validate_body"]

_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

def _check_chars(value: Any, path: str) -> None:
    if isinstance(value, str):
        if _NOT_XML_CHAR.search(value):
            raise NativeFormatError(
                f"text at {path} holds a control or non-character code point; only tab, LF, CR and "
                "printable Unicode are carried"
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_chars(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_chars(v, f"{path}[{i}]")


def validate_body(kind: object, body: object, where: str = "message") -> dict[str, Any]:
    """The body of `kind` as plain JSON data, validated by its msgspec type; refusals name the path."""
    if not isinstance(kind, str) or kind not in BODY_TYPES:
        raise NativeFormatError(f"{where}: kind must be one of " + ", ".join(KINDS))
    if not isinstance(body, dict):
        raise NativeFormatError(f"{where}: body of {kind} must be an object")
    try:
        typed = msgspec.convert(body, BODY_TYPES[kind])
    except msgspec.ValidationError as e:
        raise NativeFormatError(
            f"{where}: body of {kind} does not match its schema: {clean_error(e)}"
        ) from None
    out: dict[str, Any] = msgspec.to_builtins(typed)
    try:
        _check_chars(out, "$")
    except NativeFormatError as e:
        raise NativeFormatError(f"{where}: {e}") from None
    return out


def sample_bodies() -> dict[str, dict[str, Any]]:
    """One realistic body per kind (ICD §5), for tests, docs and demos."""
    return {
        "status.update": {
            "topic": "Air-defence ammunition pipeline",
            "state": "AMBER",
            "summary": (
                "Interceptor deliveries for the IRIS-T SLM coalition are 10 days behind plan after a "
                "rail-hub closure; road transport via the Rzeszow hub is being arranged."
            ),
        },
        "capability.pledge": {
            "pledge_ref": "UDCG-ADC-2026-0117",
            "nation": "DEU",
            "coalition": "Integrated Air and Missile Defence Capability Coalition",
            "items": [
                {"designation": "IRIS-T SLM launcher", "category": "air-defence", "quantity": 2},
                {"designation": "IRIS-T SLM missile", "category": "air-defence-munition", "quantity": 48},
                {"designation": "TRML-4D radar", "category": "sensor", "quantity": 1},
            ],
            "delivery_window": {"from": "2026-04-01", "to": "2026-09-30"},
        },
        "delivery.status": {
            "pledge_ref": "UDCG-ADC-2026-0117",
            "stage": "AT_HUB",
            "quantity_delivered": 24,
            "as_of": "2026-05-14T09:30:00Z",
        },
        "training.offer": {
            "course": "IRIS-T SLM operator and maintainer course",
            "location": "Todendorf, DEU",
            "start": "2026-06-01",
            "end": "2026-07-24",
            "seats": 40,
        },
        "training.request": {
            "course": "Combat medic (CLS) train-the-trainer",
            "trainees": 120,
            "earliest_start": "2026-06-15",
        },
        "lesson.learned": {
            "title": "Decoy drones saturate short-range air defence at night",
            "domain": "air-defence",
            "observation": (
                "Waves of low-cost decoys preceding Shahed-type attacks exhausted ready interceptors of "
                "SHORAD batteries before the main strike arrived."
            ),
            "recommendation": (
                "Pair gun-based systems with interceptors and train crews to discriminate decoys using "
                "acoustic sensor cues before committing missiles."
            ),
        },
        "industry.exchange": {
            "topic": "Interoperable labelling of exchanged coordination data",
            "parties": ["EDA", "NSPA", "Ukrainian Ministry of Strategic Industries"],
            "standards": ["STANAG 4774", "STANAG 4778"],
            "summary": (
                "Agreement to bind confidentiality labels to messages exchanged between EU and NATO "
                "coordination cells, using the ICD label with display markings."
            ),
        },
    }
