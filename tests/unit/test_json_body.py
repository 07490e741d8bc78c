"""The JSON body check (hub/core/json_body.py) agrees with what the JSON actually holds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.core.errors import BadRequest, InvalidInput
from hub.core.json_body import check_json_body, too_deep, unstorable_escape

# Strings with brackets, quotes, backslashes and any code point, surrogates and NUL included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=8)
bracket_text = st.text(alphabet='[]{}"\\ab', max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | any_text | bracket_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(bracket_text, children, max_size=3)
    ),
    max_leaves=60,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@given(json_values, st.integers(min_value=0, max_value=6))
def test_too_deep_is_exactly_nesting_beyond_the_limit(value: Any, limit: int) -> None:
    body = json.dumps(value).encode()
    assert too_deep(body, limit) == (depth(value) > limit)


@given(st.integers(min_value=0, max_value=3000))
def test_a_deep_or_unclosed_body_is_too_deep(levels: int) -> None:
    assert too_deep(b"[" * levels + b"]" * levels, 32) == (levels > 32)
    assert too_deep(b"[" * levels, 32) == (levels > 32)


@given(any_text)
def test_an_escape_is_unstorable_exactly_when_its_string_is(text: str) -> None:
    # ensure_ascii spells NUL, every surrogate and every non-ASCII character as an escape.
    body = json.dumps({"k": text}, ensure_ascii=True).encode()
    assert (unstorable_escape(body) is None) == storable(text)


@pytest.mark.parametrize(
    "body",
    [
        b'"\xff"',
        b'"\xc0\xaf"',  # an overlong "/"
        b'"\xed\xa0\x80"',  # a surrogate, encoded
        '{"a": 1}'.encode("utf-16"),
        b"[" * 33 + b"]" * 33,
    ],
)
def test_bodies_no_decoder_should_see_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest):
        check_json_body(body)


@pytest.mark.parametrize("body", [b'["\\ud800"]', b'["a\\u0000"]', b'{"k": "\\udc00\\ud800"}'])
def test_well_formed_strings_no_column_holds_are_unprocessable(body: bytes) -> None:
    """Valid JSON that a schema's plain string allows: 422, as a rule the data breaks."""
    with pytest.raises(InvalidInput) as refused:
        check_json_body(body)
    assert "cannot store" in refused.value.detail


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"a": "\\\\ud800"}',
        b'["\\ud83d\\ude00"]',
        "«é»".encode(),
        b"[" * 32 + b"]" * 32,
    ],
)
def test_ordinary_bodies_pass(body: bytes) -> None:
    check_json_body(body)
