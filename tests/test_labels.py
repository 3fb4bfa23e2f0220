"""ICD §2 as properties of `broker.rules.labels`: the access decision, the markings, clearances."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from broker.errors import MarkingError
from broker.rules.labels import (
    RULES,
    decide,
    label_marking,
    label_problems,
    parse_marking,
)
from schemas.clearance import CLASSIFICATIONS, RANK, Clearance, display_marking
from schemas.label import Label

ORGS = ("EUMAM", "NSATU", "UDCG", "JATEC")
CAVEATS = ("UKR", "ALPHA", "BRAVO-1", "SIGINT")
KINDS = ("status.update", "capability.pledge", "lesson.learned")
LEVELS = ("UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET", "TOP SECRET")

PROPERTY = settings(max_examples=300, deadline=None)

policies = st.sampled_from(("NATO", "EU"))
levels = st.sampled_from(LEVELS)
caveat_sets = st.frozensets(st.sampled_from(CAVEATS))
org_sets = st.frozensets(st.sampled_from(ORGS), min_size=1)


def make_label(policy: str, level: str, orgs: frozenset[str], caveats: frozenset[str]) -> Label:
    return Label(policy=policy, classification=level, releasable_to=sorted(orgs), caveats=sorted(caveats))


labels = st.builds(make_label, policies, levels, org_sets, caveat_sets)
clearances = st.builds(Clearance, policies, levels, caveat_sets)


@st.composite
def readers(draw: st.DrawFn) -> dict[str, Any]:
    """Everything `decide` takes besides the label: an organisation reader or an operator."""
    operator = draw(st.booleans())
    return {
        "system_high": draw(clearances),
        "clearance": draw(clearances),
        "organisation": draw(st.one_of(st.none(), st.sampled_from(ORGS))),
        "kind": draw(st.sampled_from(KINDS)),
        "need_to_know": None if operator else draw(st.frozensets(st.sampled_from(KINDS))),
    }


def allowed(label: Label, reader: dict[str, Any]) -> bool:
    return decide(label, **reader) is None


def oracle(label: Label, reader: dict[str, Any]) -> str | None:
    """ICD §2 written out independently: every failing rule, in order; the decision names the first."""
    rank = LEVELS.index(label.classification)
    failing = [
        name
        for name, fails in (
            ("system-high", rank > LEVELS.index(reader["system_high"].classification)),
            ("clearance", rank > LEVELS.index(reader["clearance"].classification)),
            ("releasability", reader["organisation"] not in label.releasable_to),
            ("caveats", not set(label.caveats) <= set(reader["clearance"].caveats)),
            (
                "need-to-know",
                reader["need_to_know"] is not None and reader["kind"] not in reader["need_to_know"],
            ),
        )
        if fails
    ]
    return failing[0] if failing else None


# -- the decision --------------------------------------------------------------------------------


@PROPERTY
@given(labels, readers())
def test_decide_names_the_first_failing_rule(label: Label, reader: dict[str, Any]) -> None:
    assert decide(label, **reader) == oracle(label, reader)


def test_rule_names_and_order() -> None:
    assert RULES == ("system-high", "clearance", "releasability", "caveats", "need-to-know")


def test_every_rule_is_reported_when_all_fail() -> None:
    """A label failing every rule, then the same label with each rule fixed in turn, in ICD order."""
    label = make_label("NATO", "TOP SECRET", frozenset({"EUMAM"}), frozenset({"UKR"}))
    reader: dict[str, Any] = {
        "system_high": Clearance("NATO", "SECRET"),
        "clearance": Clearance("EU", "CONFIDENTIAL"),
        "organisation": "UDCG",
        "kind": "status.update",
        "need_to_know": frozenset({"lesson.learned"}),
    }
    seen = []
    fixes = [
        ("system_high", Clearance("NATO", "TOP SECRET")),
        ("clearance", Clearance("EU", "TOP SECRET")),
        ("organisation", "EUMAM"),
        ("clearance", Clearance("EU", "TOP SECRET", frozenset({"UKR"}))),
        ("need_to_know", frozenset({"status.update"})),
    ]
    for field, value in fixes:
        seen.append(decide(label, **reader))
        reader[field] = value
    assert seen == list(RULES)
    assert decide(label, **reader) is None


@PROPERTY
@given(labels, readers(), st.sampled_from(CAVEATS))
def test_adding_a_caveat_never_widens_access(label: Label, reader: dict[str, Any], caveat: str) -> None:
    wider = make_label(
        label.policy,
        label.classification,
        frozenset(label.releasable_to),
        frozenset(label.caveats) | {caveat},
    )
    if allowed(wider, reader):
        assert allowed(label, reader)
    if caveat not in reader["clearance"].caveats:
        assert not allowed(wider, reader)


@PROPERTY
@given(labels, readers(), st.sampled_from(ORGS))
def test_removing_an_organisation_never_widens_access(label: Label, reader: dict[str, Any], org: str) -> None:
    rest = frozenset(label.releasable_to) - {org}
    assume(rest)
    narrower = make_label(label.policy, label.classification, rest, frozenset(label.caveats))
    if allowed(narrower, reader):
        assert allowed(label, reader)
    if reader["organisation"] == org:
        assert not allowed(narrower, reader)


@PROPERTY
@given(labels, readers(), levels)
def test_raising_the_classification_never_widens_access(
    label: Label, reader: dict[str, Any], level: str
) -> None:
    assume(RANK[level] >= RANK[label.classification])
    raised = make_label(label.policy, level, frozenset(label.releasable_to), frozenset(label.caveats))
    if allowed(raised, reader):
        assert allowed(label, reader)


@PROPERTY
@given(readers())
def test_a_stricter_reader_never_sees_more(reader: dict[str, Any]) -> None:
    """Lowering the reader's clearance rank never lets it see a label it could not see."""
    label = make_label("NATO", "CONFIDENTIAL", frozenset(ORGS), frozenset())
    c: Clearance = reader["clearance"]
    for level in LEVELS[: RANK[c.classification]]:
        lower = {**reader, "clearance": Clearance(c.policy, level, c.caveats)}
        if allowed(label, lower):
            assert allowed(label, reader)


@PROPERTY
@given(levels, levels, caveat_sets, org_sets, st.sampled_from(ORGS))
def test_nato_eu_equivalence_is_symmetric(
    x: str, y: str, caveats: frozenset[str], orgs: frozenset[str], org: str
) -> None:
    """A reader cleared NATO:X may read EU:Y iff one cleared EU:X may read NATO:Y iff rank Y <= rank X."""
    high = Clearance("NATO", "TOP SECRET")
    both = orgs | {org}

    def may(reader_policy: str, label_policy: str) -> str | None:
        return decide(
            make_label(label_policy, y, both, frozenset()),
            system_high=high,
            clearance=Clearance(reader_policy, x, caveats),
            organisation=org,
        )

    nato_reads_eu, eu_reads_nato = may("NATO", "EU"), may("EU", "NATO")
    assert nato_reads_eu == eu_reads_nato
    assert may("NATO", "NATO") == may("EU", "EU") == nato_reads_eu
    assert (nato_reads_eu is None) == (RANK[y] <= RANK[x])
    if nato_reads_eu is not None:
        assert nato_reads_eu == "clearance"


@PROPERTY
@given(levels, levels, policies, policies)
def test_system_high_applies_across_policies(label_level: str, high_level: str, lp: str, hp: str) -> None:
    label = make_label(lp, label_level, frozenset({"NSATU"}), frozenset())
    verdict = decide(
        label,
        system_high=Clearance(hp, high_level),
        clearance=Clearance("NATO", "TOP SECRET"),
        organisation="NSATU",
    )
    assert (verdict == "system-high") == (RANK[label_level] > RANK[high_level])


def test_operators_skip_need_to_know_but_not_releasability() -> None:
    label = make_label("NATO", "RESTRICTED", frozenset({"EUMAM"}), frozenset())
    op = {"system_high": Clearance("NATO", "SECRET"), "clearance": Clearance("NATO", "SECRET"), "kind": "x"}
    assert decide(label, organisation="EUMAM", need_to_know=None, **op) is None
    assert decide(label, organisation="NSATU", need_to_know=None, **op) == "releasability"
    assert decide(label, organisation=None, need_to_know=None, **op) == "releasability"
    assert decide(label, organisation="EUMAM", need_to_know=frozenset(), **op) == "need-to-know"


def test_caveats_need_every_one() -> None:
    label = make_label("EU", "RESTRICTED", frozenset({"EUMAM"}), frozenset({"ALPHA", "UKR"}))
    base = {"system_high": Clearance("NATO", "SECRET"), "organisation": "EUMAM"}
    assert decide(label, clearance=Clearance("EU", "SECRET", frozenset({"UKR"})), **base) == "caveats"
    assert decide(label, clearance=Clearance("EU", "SECRET", frozenset({"UKR", "ALPHA"})), **base) is None
    assert (
        decide(label, clearance=Clearance("EU", "SECRET", frozenset({"UKR", "ALPHA", "X1"})), **base) is None
    )


# -- markings ------------------------------------------------------------------------------------

MARKINGS = {
    ("NATO", "UNCLASSIFIED"): "NATO UNCLASSIFIED",
    ("NATO", "RESTRICTED"): "NATO RESTRICTED",
    ("NATO", "CONFIDENTIAL"): "NATO CONFIDENTIAL",
    ("NATO", "SECRET"): "NATO SECRET",
    ("NATO", "TOP SECRET"): "COSMIC TOP SECRET",
    ("EU", "UNCLASSIFIED"): "UNCLASSIFIED",
    ("EU", "RESTRICTED"): "RESTREINT UE/EU RESTRICTED",
    ("EU", "CONFIDENTIAL"): "CONFIDENTIEL UE/EU CONFIDENTIAL",
    ("EU", "SECRET"): "SECRET UE/EU SECRET",
    ("EU", "TOP SECRET"): "TRES SECRET UE/EU TOP SECRET",
}


def test_classifications_and_ranks() -> None:
    assert CLASSIFICATIONS == LEVELS
    assert RANK == {level: i for i, level in enumerate(LEVELS)}


@pytest.mark.parametrize(("key", "marking"), list(MARKINGS.items()), ids=list(MARKINGS.values()))
def test_display_marking_table(key: tuple[str, str], marking: str) -> None:
    assert display_marking(*key) == marking
    assert parse_marking(marking) == key


def test_markings_are_all_distinct() -> None:
    assert len({display_marking(p, c) for p in ("NATO", "EU") for c in LEVELS}) == 10


@pytest.mark.parametrize(
    "text",
    [
        "nato secret",
        "Nato Secret",
        "NATO  SECRET",
        " NATO SECRET",
        "NATO SECRET ",
        "NATO SECRET\n",
        "SECRET",  # ambiguous: NATO writes "NATO SECRET", the EU "SECRET UE/EU SECRET"
        "TOP SECRET",
        "NATO TOP SECRET",
        "COSMIC TOP SECRET//",
        "RESTREINT UE",
        "restreint ue/eu restricted",
        "SECRET UE",
        "EU SECRET",
        "NATO UNCLASSIFIED ",
        "N\u0410TO SECRET",  # Cyrillic A
        "NATO S\u0395CRET",  # Greek Epsilon
        "",
    ],
)
def test_parse_marking_refuses_anything_but_the_exact_table(text: str) -> None:
    with pytest.raises(MarkingError):
        parse_marking(text)


@PROPERTY
@given(st.text(max_size=40))
def test_parse_marking_accepts_only_the_ten(text: str) -> None:
    if text in MARKINGS.values():
        assert display_marking(*parse_marking(text)) == text
    else:
        with pytest.raises(MarkingError):
            parse_marking(text)


def test_parse_marking_hints_at_the_case_exact_form() -> None:
    with pytest.raises(MarkingError, match="NATO SECRET"):
        parse_marking("nato secret")


def test_label_marking_banner() -> None:
    label = make_label("EU", "RESTRICTED", frozenset({"EUMAM", "NSATU"}), frozenset({"ALPHA", "UKR"}))
    assert label_marking(label) == "RESTREINT UE/EU RESTRICTED // ALPHA UKR // REL TO EUMAM, NSATU"
    plain = make_label("NATO", "SECRET", frozenset({"NSATU"}), frozenset())
    assert label_marking(plain) == "NATO SECRET // REL TO NSATU"


# -- clearances ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "NATO:SECRET",
        "EU:TOP_SECRET",
        "NATO:UNCLASSIFIED",
        "EU:TOP_SECRET:ALPHA+UKR",
        "NATO:RESTRICTED:BRAVO-1",
    ],
)
def test_clearance_text_round_trips(text: str) -> None:
    assert str(Clearance.parse(text)) == text


@PROPERTY
@given(clearances)
def test_clearance_parse_inverts_str(c: Clearance) -> None:
    assert Clearance.parse(str(c)) == c
    assert Clearance.parse(str(c)).rank == RANK[c.classification]


def test_clearance_parse_reads_levels_and_caveats() -> None:
    c = Clearance.parse("EU:TOP_SECRET:UKR+ALPHA")
    assert (c.policy, c.classification, c.caveats, c.rank) == (
        "EU",
        "TOP SECRET",
        frozenset({"UKR", "ALPHA"}),
        4,
    )
    assert str(c) == "EU:TOP_SECRET:ALPHA+UKR"  # caveats in canonical order


@pytest.mark.parametrize(
    "text",
    [
        "",
        "NATO",
        "NATO:",
        ":SECRET",
        "nato:SECRET",
        "NATO:secret",
        "NATO:Secret",
        "OTAN:SECRET",
        "NATO:SECRET:",
        "NATO:SECRET:ukr",
        "NATO:SECRET:U",
        "NATO:SECRET:UKR+",
        "NATO:SECRET:UKR++ALPHA",
        "NATO:SECRET:UKR:ALPHA",
        "NATO:TOP__SECRET",
        "NATO:S\u0415CRET",
        "NATO:SECRET:\u0410LPHA",
        "NATO:COSMIC_TOP_SECRET",
    ],
)
def test_clearance_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        Clearance.parse(text)


def test_clearance_constructor_refuses_unknown_values() -> None:
    with pytest.raises(ValueError):
        Clearance("NATO", "TOP_SECRET")
    with pytest.raises(ValueError):
        Clearance("UN", "SECRET")


# -- label context rules -------------------------------------------------------------------------


def test_label_problems() -> None:
    good = make_label("NATO", "RESTRICTED", frozenset({"EUMAM", "NSATU"}), frozenset({"UKR"}))
    assert label_problems(good, "NSATU", ORGS) == []
    bad = Label(
        policy="NATO",
        classification="RESTRICTED",
        releasable_to=["NSATU", "EUMAM", "XYZ"],
        caveats=["UKR", "ALPHA"],
    )
    paths = [e["path"] for e in label_problems(bad, "UDCG", ("NSATU", "EUMAM", "UDCG"))]
    assert paths == [
        "$.label.releasable_to",
        "$.label.releasable_to[2]",
        "$.label.releasable_to",
        "$.label.caveats",
    ]
    dup = Label(
        policy="EU", classification="SECRET", releasable_to=["EUMAM", "EUMAM"], caveats=["UKR", "UKR"]
    )
    assert [e["path"] for e in label_problems(dup, "EUMAM", ORGS)] == [
        "$.label.releasable_to",
        "$.label.caveats",
    ]
