"""Classification ranks, display markings and the access decision of ICD §2.

`decide()` is the one place where "may this reader see this message" is answered; it returns the
name of the first rule that fails, or None. Rule names, in order:
`system-high`, `clearance`, `releasability`, `caveats`, `need-to-know`.
"""

from __future__ import annotations

from collections.abc import Iterable

from broker.errors import MarkingError
from schemas.clearance import BY_MARKING, RANK, Clearance, display_marking
from schemas.label import Label

RULES: tuple[str, ...] = ("system-high", "clearance", "releasability", "caveats", "need-to-know")


def label_marking(label: Label) -> str:
    """The banner for a label: its display marking, then `REL TO …`, then caveats."""
    parts = [display_marking(label.policy, label.classification)]
    if label.caveats:
        parts.append(" ".join(label.caveats))
    parts.append("REL TO " + ", ".join(label.releasable_to))
    return " // ".join(parts)


def parse_marking(text: str) -> tuple[str, str]:
    """Strict inverse of `display_marking`: returns (policy, classification).

    Only the exact markings of ICD §2 are accepted: no case folding, no trimming, no guessing.
    """
    try:
        return BY_MARKING[text]
    except KeyError:
        near = [m for m in BY_MARKING if m.casefold() == text.strip().casefold()]
        hint = f" (did you mean {near[0]!r}? markings are case- and space-exact)" if near else ""
        expected = ", ".join(repr(m) for m in BY_MARKING)
        raise MarkingError(f"unknown marking {text!r}{hint}; expected one of {expected}") from None


def label_problems(label: Label, originator: str, organisations: Iterable[str]) -> list[dict[str, str]]:
    """Contextual label rules of ICD §2/§3 as schema errors (empty when the label is sound)."""
    errors: list[dict[str, str]] = []
    known = set(organisations)
    rel = label.releasable_to
    if list(rel) != sorted(set(rel)):
        errors.append({"path": "$.label.releasable_to", "message": "must be sorted and unique"})
    for i, org in enumerate(rel):
        if org not in known:
            errors.append(
                {"path": f"$.label.releasable_to[{i}]", "message": "not an organisation of this broker"}
            )
    if originator not in rel:
        errors.append({"path": "$.label.releasable_to", "message": "must include the originator"})
    if list(label.caveats) != sorted(set(label.caveats)):
        errors.append({"path": "$.label.caveats", "message": "must be sorted and unique"})
    return errors


def decide(
    label: Label,
    *,
    system_high: Clearance,
    clearance: Clearance,
    organisation: str | None,
    kind: str | None = None,
    need_to_know: frozenset[str] | None = None,
) -> str | None:
    """ICD §2's access decision: None if the reader may see it, else the first failing rule.

    `organisation` is the reader's organisation; `need_to_know` is None for operators (rule 5
    applies to organisations only).
    """
    r = RANK[label.classification]
    if r > system_high.rank:
        return "system-high"
    if r > clearance.rank:
        return "clearance"
    if organisation is None or organisation not in label.releasable_to:
        return "releasability"
    if not clearance.caveats.issuperset(label.caveats):
        return "caveats"
    if need_to_know is not None and kind not in need_to_know:
        return "need-to-know"
    return None
