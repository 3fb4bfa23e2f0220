"""Classification ranks, display markings and the access decision of ICD §2.

`decide()` is the one place where "may this reader see this message" is answered; it returns the
name of the first rule that fails, or None. Rule names, in order:
`system-high`, `clearance`, `releasability`, `caveats`, `need-to-know`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from broker.errors import MarkingError
from schemas.label import Label

CLASSIFICATIONS: tuple[str, ...] = ("UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET", "TOP SECRET")
RANK: dict[str, int] = {name: i for i, name in enumerate(CLASSIFICATIONS)}
POLICIES: tuple[str, ...] = ("NATO", "EU")

NATO_MARKINGS: tuple[str, ...] = (
    "NATO UNCLASSIFIED",
    "NATO RESTRICTED",
    "NATO CONFIDENTIAL",
    "NATO SECRET",
    "COSMIC TOP SECRET",
)
EU_MARKINGS: tuple[str, ...] = (
    "UNCLASSIFIED",
    "RESTREINT UE/EU RESTRICTED",
    "CONFIDENTIEL UE/EU CONFIDENTIAL",
    "SECRET UE/EU SECRET",
    "TRES SECRET UE/EU TOP SECRET",
)
_MARKINGS = {"NATO": NATO_MARKINGS, "EU": EU_MARKINGS}
_BY_MARKING: dict[str, tuple[str, str]] = {
    marking: (policy, CLASSIFICATIONS[rank])
    for policy, table in _MARKINGS.items()
    for rank, marking in enumerate(table)
}

RULES: tuple[str, ...] = ("system-high", "clearance", "releasability", "caveats", "need-to-know")


@dataclass(frozen=True, slots=True)
class Clearance:
    """What a reader (or the system) is cleared for: `POLICY:LEVEL[:CAVEAT+CAVEAT]`."""

    policy: str
    classification: str
    caveats: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        if self.classification not in RANK:
            raise ValueError(
                f"level must be one of {', '.join(c.replace(' ', '_') for c in CLASSIFICATIONS)}, "
                f"not {self.classification!r}"
            )

    @property
    def rank(self) -> int:
        return RANK[self.classification]

    @classmethod
    def parse(cls, text: str) -> Clearance:
        """Parse `NATO:SECRET`, `EU:TOP_SECRET:CAVEAT+OTHER` (spaces in levels written as `_`)."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise ValueError(f"clearance must look like POLICY:LEVEL[:CAVEAT+CAVEAT], not {text!r}")
        caveats: frozenset[str] = frozenset()
        if len(parts) == 3:
            items = parts[2].split("+")
            for c in items:
                if not _is_caveat(c):
                    raise ValueError(f"caveat {c!r} must match ^[A-Z][A-Z0-9-]{{1,31}}$")
            caveats = frozenset(items)
        return cls(parts[0], parts[1].replace("_", " "), caveats)

    def __str__(self) -> str:
        base = f"{self.policy}:{self.classification.replace(' ', '_')}"
        return base + (":" + "+".join(sorted(self.caveats)) if self.caveats else "")


def _is_caveat(c: str) -> bool:
    return (
        2 <= len(c) <= 32
        and "A" <= c[0] <= "Z"
        and all(("A" <= ch <= "Z") or ("0" <= ch <= "9") or ch == "-" for ch in c)
    )


def display_marking(policy: str, classification: str) -> str:
    """The display marking of ICD §2 (e.g. `NATO SECRET`, `RESTREINT UE/EU RESTRICTED`)."""
    return _MARKINGS[policy][RANK[classification]]


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
        return _BY_MARKING[text]
    except KeyError:
        near = [m for m in _BY_MARKING if m.casefold() == text.strip().casefold()]
        hint = f" (did you mean {near[0]!r}? markings are case- and space-exact)" if near else ""
        expected = ", ".join(repr(m) for m in _BY_MARKING)
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
