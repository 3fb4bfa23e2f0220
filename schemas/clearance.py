"""The clearance and marking forms of ICD §2: classification ranks, NATO and EU display markings, and
a clearance `POLICY:LEVEL[:CAVEAT+CAVEAT]` (the policy file's and the command line's form, ICD §9).

These are forms, not decisions: the access decision is `broker.rules.labels.decide`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from schemas.ids import CAVEAT
from schemas.label import Classification, Policy

__all__ = [
    "BY_MARKING",
    "CLASSIFICATIONS",
    "EU_MARKINGS",
    "NATO_MARKINGS",
    "POLICIES",
    "RANK",
    "Clearance",
    "display_marking",
]

#: ranks 0..4, lowest first: the order of the wire type's literal
CLASSIFICATIONS: tuple[str, ...] = get_args(Classification)
RANK: dict[str, int] = {name: i for i, name in enumerate(CLASSIFICATIONS)}
#: the label policies, as the wire type names them
POLICIES: tuple[str, ...] = get_args(Policy)

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
#: display marking -> (policy, classification), for the strict inverse (broker.rules.labels.parse_marking)
BY_MARKING: dict[str, tuple[str, str]] = {
    marking: (policy, CLASSIFICATIONS[rank])
    for policy, table in _MARKINGS.items()
    for rank, marking in enumerate(table)
}

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
                if not CAVEAT.matches(c):
                    raise ValueError(f"caveat {c!r} must match ^[A-Z][A-Z0-9-]{{1,31}}$")
            caveats = frozenset(items)
        return cls(parts[0], parts[1].replace("_", " "), caveats)

    def __str__(self) -> str:
        base = f"{self.policy}:{self.classification.replace(' ', '_')}"
        return base + (":" + "+".join(sorted(self.caveats)) if self.caveats else "")


def display_marking(policy: str, classification: str) -> str:
    """The display marking of ICD §2 (e.g. `NATO SECRET`, `RESTREINT UE/EU RESTRICTED`)."""
    return _MARKINGS[policy][RANK[classification]]
