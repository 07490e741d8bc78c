"""The matching engine against a plain-Python reference (DESIGN.md "Matching semantics")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matching import engine
from matching.engine import Attribute, Side

ANALYTICS, JOINT_OFFERS, REWARDS = 1, 2, 4
TIERS = ("gold", "silver", "bronze")
REGIONS = ("north", "south")

# A small pool of 128-bit keys so matches and duplicates happen; halves at and above 2**63
# catch any signed comparison.
KEY_POOL = [
    (0, 0),
    (0, 2**63),
    (1, 2**64 - 1),
    (2**63 - 1, 5),
    (2**63, 0),
    (2**63, 2**63 + 1),
    (2**64 - 1, 1),
]


@dataclass(frozen=True)
class Records:
    """A side as the test sees it: plain tuples, the reference's input."""

    rows: list[tuple[int, int, int, int]]  # (hi, lo, person, consent)
    n_people: int
    attributes: dict[str, tuple[list[int], tuple[str, ...]]]  # name -> (codes, values)

    def side(self) -> Side:
        rows = self.rows
        return engine.make_side(
            np.array([r[0] for r in rows], dtype=np.uint64),
            np.array([r[1] for r in rows], dtype=np.uint64),
            np.array([r[2] for r in rows], dtype=np.int32),
            np.array([r[3] for r in rows], dtype=np.uint8),
            self.n_people,
            {
                name: Attribute(np.array(codes, dtype=np.int16), values)
                for name, (codes, values) in self.attributes.items()
            },
        )

    def value(self, person: int, name: str) -> str | None:
        if name not in self.attributes:
            return None
        codes, values = self.attributes[name]
        return None if codes[person] < 0 else values[codes[person]]


@st.composite
def records(draw: st.DrawFn, max_people: int = 6) -> Records:
    n_people = draw(st.integers(0, max_people))
    rows: list[tuple[int, int, int, int]] = []
    if n_people:
        rows = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(KEY_POOL),
                    st.integers(0, n_people - 1),
                    st.sampled_from([7, 7, 3, 1, 5, 2, 0]),
                ).map(lambda t: (t[0][0], t[0][1], t[1], t[2])),
                min_size=1,
                max_size=12,
            )
        )
    attributes: dict[str, tuple[list[int], tuple[str, ...]]] = {}
    for name, values in (("tier", TIERS), ("region", REGIONS)):
        if draw(st.booleans()):
            codes = draw(st.lists(st.integers(-1, len(values) - 1), min_size=n_people,
                                  max_size=n_people))  # fmt: skip
            attributes[name] = (codes, values)
    return Records(rows, n_people, attributes)


masks = st.sampled_from([0, ANALYTICS, JOINT_OFFERS, ANALYTICS | REWARDS, 7])
Group = frozenset[tuple[str, int]]


# --------------------------------------------------------------------------- reference


def reference_groups(a: Records, b: Records, mask: int) -> set[Group]:
    """Matched people joined into connected groups with the simplest union-find."""
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def root(node: tuple[str, int]) -> tuple[str, int]:
        parent.setdefault(node, node)
        while parent[node] != node:
            node = parent[node]
        return node

    for ah, al, ap, ac in a.rows:
        for bh, bl, bp, bc in b.rows:
            if (ah, al) == (bh, bl) and ac & mask == mask and bc & mask == mask:
                parent[root(("a", ap))] = root(("b", bp))
    members: dict[tuple[str, int], set[tuple[str, int]]] = {}
    for node in parent:
        members.setdefault(root(node), set()).add(node)
    return {frozenset(group) for group in members.values()}


def engine_groups(groups: engine.Groups) -> set[Group]:
    members: dict[int, set[tuple[str, int]]] = {}
    for person, group in zip(groups.a_person.tolist(), groups.a_group.tolist(), strict=True):
        members.setdefault(group, set()).add(("a", person))
    for person, group in zip(groups.b_person.tolist(), groups.b_group.tolist(), strict=True):
        members.setdefault(group, set()).add(("b", person))
    return {frozenset(group) for group in members.values()}


def smallest(group: Group, side: str) -> int:
    return min(person for s, person in group if s == side)


def reference_breakdown(
    groups: set[Group], sides: dict[str, Records], by: list[tuple[str, str]]
) -> dict[tuple[str | None, ...], int]:
    return dict(
        Counter(
            tuple(sides[side].value(smallest(group, side), name) for side, name in by)
            for group in groups
        )
    )


def reference_audience(
    groups: set[Group], side: Records, which: str, filters: Mapping[str, Collection[str]]
) -> list[int]:
    people = {person for group in groups for s, person in group if s == which}
    return sorted(
        p for p in people if all(side.value(p, n) in allowed for n, allowed in filters.items())
    )


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(records(), records(), masks)
def test_groups_equal_the_reference_partition(a: Records, b: Records, mask: int) -> None:
    groups = engine.match(a.side(), b.side(), mask)
    expected = reference_groups(a, b, mask)
    assert groups.count == len(expected) == engine.overlap(a.side(), b.side(), mask)
    assert engine_groups(groups) == expected
    assert groups.a_person.tolist() == sorted({p for g in expected for s, p in g if s == "a"})
    assert groups.b_person.tolist() == sorted({p for g in expected for s, p in g if s == "b"})


@settings(max_examples=200, deadline=None)
@given(records(), records(), masks)
def test_group_ids_follow_the_smallest_a_person(a: Records, b: Records, mask: int) -> None:
    groups = engine.match(a.side(), b.side(), mask)
    by_id = sorted(engine_groups(groups), key=lambda g: smallest(g, "a"))
    reps_a = engine.representatives(groups, "a").tolist()
    reps_b = engine.representatives(groups, "b").tolist()
    assert reps_a == [smallest(g, "a") for g in by_id]
    assert reps_b == [smallest(g, "b") for g in by_id]


@settings(max_examples=200, deadline=None)
@given(records(), records(), masks, st.data())
def test_breakdown_counts_groups_by_representative_values(
    a: Records, b: Records, mask: int, data: st.DataObject
) -> None:
    dimension = st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["tier", "region"]))
    by = data.draw(st.lists(dimension, min_size=1, max_size=2))
    groups = engine.match(a.side(), b.side(), mask)
    cells = engine.breakdown(groups, a.side(), b.side(), by)  # type: ignore[arg-type]
    assert cells == reference_breakdown(reference_groups(a, b, mask), {"a": a, "b": b}, by)
    assert sum(cells.values()) == groups.count
    assert all(count > 0 for count in cells.values())


@settings(max_examples=200, deadline=None)
@given(records(), records(), masks, st.data())
def test_audience_keeps_people_admitted_by_every_filter(
    a: Records, b: Records, mask: int, data: st.DataObject
) -> None:
    filters = data.draw(
        st.dictionaries(
            st.sampled_from(["tier", "region"]), st.sets(st.sampled_from(TIERS + REGIONS))
        )
    )
    other_filters = data.draw(st.dictionaries(st.sampled_from(["tier", "region"]),
                                              st.sets(st.sampled_from(TIERS))))  # fmt: skip
    a_side, b_side = a.side(), b.side()
    groups = engine.match(a_side, b_side, mask)
    expected = reference_groups(a, b, mask)
    for which, records_, side in (("a", a, a_side), ("b", b, b_side)):
        got = engine.audience(groups, side, which, filters)  # type: ignore[arg-type]
        assert got.tolist() == reference_audience(expected, records_, which, filters)
    # B's filters restrict B's people only: A's audience is the same whatever B asks.
    unfiltered_a = engine.audience(groups, a_side, "a").tolist()
    engine.audience(groups, b_side, "b", other_filters)
    assert engine.audience(groups, a_side, "a").tolist() == unfiltered_a
    assert unfiltered_a == reference_audience(expected, a, "a", {})


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), min_size=1, max_size=3), masks)
def test_overlap_matrix_is_pairwise_overlap_with_consented_people_on_the_diagonal(
    sides: list[Records], mask: int
) -> None:
    matrix = engine.overlap_matrix([r.side() for r in sides], mask)
    for i, a in enumerate(sides):
        people = {p for _, _, p, c in a.rows if c & mask == mask}
        assert matrix[i, i] == len(people) == engine.people_with(a.side(), mask)
        for j, b in enumerate(sides):
            if i != j:
                assert matrix[i, j] == matrix[j, i] == len(reference_groups(a, b, mask))


@settings(max_examples=200, deadline=None)
@given(records())
def test_make_side_sorts_records_by_unsigned_key(r: Records) -> None:
    side = r.side()
    keys = list(zip(side.hi.tolist(), side.lo.tolist(), strict=True))
    assert keys == sorted(keys)
    rows = zip(keys, side.person.tolist(), side.consent.tolist(), strict=True)
    assert sorted((h, lo, p, c) for (h, lo), p, c in rows) == sorted(r.rows)


# --------------------------------------------------------------------------- examples


def side_of(keys: list[int], people: list[int], consent: int | list[int] = 7) -> Side:
    consents = consent if isinstance(consent, list) else [consent] * len(keys)
    n_people = max(people, default=-1) + 1
    return engine.make_side(keys, [0] * len(keys), people, consents, n_people)


def test_person_with_email_and_phone_matched_to_two_people_is_one_group() -> None:
    email, phone = 10, 20
    a = side_of([email, phone], [0, 0])
    b = side_of([email, phone], [0, 1])
    groups = engine.match(a, b, ANALYTICS)
    assert groups.count == 1
    assert groups.b_person.tolist() == [0, 1]
    assert groups.b_group.tolist() == [0, 0]


def test_consent_on_one_side_only_does_not_match() -> None:
    a = side_of([1, 2], [0, 1], consent=[ANALYTICS, JOINT_OFFERS])
    b = side_of([1, 2], [0, 1], consent=[JOINT_OFFERS, JOINT_OFFERS])
    assert engine.overlap(a, b, ANALYTICS) == 0
    assert engine.overlap(a, b, JOINT_OFFERS) == 1


def test_full_overlap_counts_every_person() -> None:
    keys = list(range(100))
    assert engine.overlap(side_of(keys, keys), side_of(keys[::-1], keys), ANALYTICS) == 100


def test_duplicate_keys_match_as_a_cross_product_beyond_the_first_buffer() -> None:
    # 40 x 50 records on one key: 2,000 pairs, far more than either side's length.
    a = side_of([5] * 40, list(range(40)))
    b = side_of([5] * 50, list(range(50)))
    pair_a, pair_b = engine.matched_pairs(a, b, ANALYTICS)
    assert len(pair_a) == len(pair_b) == 2000
    groups = engine.match(a, b, ANALYTICS)
    assert groups.count == 1
    assert len(groups.a_person) == 40
    assert len(groups.b_person) == 50


def test_empty_sides_have_no_overlap() -> None:
    empty = engine.empty_side()
    assert engine.overlap(empty, empty, ANALYTICS) == 0
    assert engine.overlap(empty, side_of([1], [0]), ANALYTICS) == 0
    assert engine.breakdown(engine.match(empty, empty, 1), empty, empty, [("a", "tier")]) == {}
    assert engine.overlap_matrix([empty, empty], 1).tolist() == [[0, 0], [0, 0]]


def test_keys_at_and_above_two_to_the_63_are_ordered_unsigned() -> None:
    high, low = 2**63 + 1, 1
    side = engine.make_side([high, low], [0, 0], [0, 1], [1, 1], 2)
    assert side.hi.tolist() == [low, high]
    other = engine.make_side([low, high], [0, 0], [0, 1], [1, 1], 2)
    assert engine.overlap(side, other, ANALYTICS) == 2


def test_breakdown_by_an_attribute_missing_on_a_side_is_none() -> None:
    tier = Attribute(np.array([0, 1], dtype=np.int16), ("gold", "silver"))
    a = engine.make_side([1, 2], [0, 0], [0, 1], [1, 1], 2, {"tier": tier})
    b = side_of([1, 2], [0, 1])
    groups = engine.match(a, b, ANALYTICS)
    assert engine.breakdown(groups, a, b, [("a", "tier")]) == {("gold",): 1, ("silver",): 1}
    assert engine.breakdown(groups, a, b, [("a", "tier"), ("b", "tier")]) == {
        ("gold", None): 1,
        ("silver", None): 1,
    }
    assert engine.audience(groups, b, "b", {"tier": {"gold"}}).tolist() == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (([1, 2], [0], [0, 0], [1, 1], 1), "equal length"),
        (([1], [0], [3], [1], 2), "0..n_people-1"),
    ],
)
def test_make_side_refuses_inconsistent_columns(
    arguments: tuple[list[int], list[int], list[int], list[int], int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        engine.make_side(*arguments)


def test_attribute_codes_must_cover_every_person() -> None:
    tier = Attribute(np.array([0], dtype=np.int16), ("gold",))
    with pytest.raises(ValueError, match="one code per person"):
        engine.make_side([1], [0], [0], [1], 2, {"tier": tier})


@settings(max_examples=100, deadline=None)
@given(records(), records(), masks)
def test_merging_key_ranges_on_threads_gives_the_same_groups(
    a: Records, b: Records, mask: int
) -> None:
    sequential = engine.match(a.side(), b.side(), mask)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "_PARALLEL_FROM", 1)
        patch.setattr(engine, "_THREADS", 3)
        threaded = engine.match(a.side(), b.side(), mask)
    assert threaded.count == sequential.count
    for name in ("a_person", "a_group", "b_person", "b_group"):
        assert getattr(threaded, name).tolist() == getattr(sequential, name).tolist()
