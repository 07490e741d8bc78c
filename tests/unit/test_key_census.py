"""The census of staged match keys: it may say "look" when no key repeats (equal 64-bit
prefixes), but it must never say "no repeat" when one does."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from partners.identifiers.uploads.staging import KeyCensus, key_prefixes


def census_of(*chunks: list[bytes]) -> KeyCensus:
    census = KeyCensus()
    for keys in chunks:
        rows = [("k", 1, False, 1, key) for key in keys]
        census.add(key_prefixes(rows, len(rows)))
    return census


def test_an_empty_upload_has_no_repeat() -> None:
    assert census_of().may_repeat() is False
    assert census_of([]).may_repeat() is False


def test_distinct_keys_across_chunks_have_no_repeat() -> None:
    keys = [os.urandom(32) for _ in range(30_000)]
    assert census_of(keys[:10_000], keys[10_000:]).may_repeat() is False


def test_a_key_repeated_in_a_later_chunk_is_seen() -> None:
    keys = [os.urandom(32) for _ in range(20_000)]
    assert census_of(keys[:10_000], [*keys[10_000:], keys[3]]).may_repeat() is True


def test_only_the_accepted_rows_count() -> None:
    key = os.urandom(32)
    rows = [("k", 1, False, 1, key), ("k", 2, True, 1, key)]  # the second one was refused
    census = KeyCensus()
    census.add(key_prefixes(rows, 1))
    assert census.may_repeat() is False


def test_equal_prefixes_with_different_keys_only_ask_for_the_exact_check() -> None:
    prefix = os.urandom(8)
    assert census_of([prefix + os.urandom(24), prefix + os.urandom(24)]).may_repeat() is True


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=60), st.data())
def test_a_repeat_is_never_missed(keys: list[bytes], data: st.DataObject) -> None:
    if keys:
        keys = [*keys, data.draw(st.sampled_from(keys))]
    split = data.draw(st.integers(0, len(keys)))
    assert census_of(keys[:split], keys[split:]).may_repeat() is (len(set(keys)) < len(keys))
