"""The security label of ICD §2 as a wire type.

Structural rules (field types, patterns, enums) live here; the rules that need context (is an
organisation known, is the list sorted and unique, is the originator releasable) are checked by
`broker.rules.labels.check_label` so that every check has one home.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.ids import Caveat, OrgCode

Policy = Literal["NATO", "EU"]
Classification = Literal["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET", "TOP SECRET"]


class Label(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A confidentiality label: who may read a message."""

    policy: Policy
    classification: Classification
    releasable_to: Annotated[list[OrgCode], msgspec.Meta(min_length=1)]
    caveats: list[Caveat]
