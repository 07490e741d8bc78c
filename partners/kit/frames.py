"""Hash a pandas DataFrame of customers column by column (needs the ``pandas`` extra).

:func:`hash_frame` applies the same rules as :func:`partners.kit.files.parse_person` and
:func:`partners.kit.hash_identifier` -- UID2 normalisation, consents, attributes, no contact
details in references or attributes, a row refused whole when one of its identifiers is
invalid -- but on whole columns: string checks run in Arrow, attribute values and consents are
checked once per distinct value, and digests are base64- or hex-encoded as one numpy array.
Only the SHA-256 itself runs per identifier. A customer reference goes through the full
contact-details detector unless it is plainly safe (:func:`plainly_no_contact`: ASCII, no
``@``, fewer than ten digits...), a rule the tests check against the detector itself.

The records frame has the hub's upload shape: ``id_type, id_hash, customer_ref, consents``
(joined by ``|``) and ``attr.<name>`` columns, one row per identifier: the emails in input
order, then the phones. Refused rows are in a
second frame, ``row`` (the input's index label), ``field`` and ``reason``: never a value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from partners.kit.contact import looks_like_contact
from partners.kit.files import ATTR_PREFIX, CONSENTS, MAX_ATTRIBUTES
from partners.kit.normalize import BASE64, GMAIL, HEX

__all__ = ["RECORD_COLUMNS", "HashedFrame", "encode_digests", "hash_frame", "plainly_no_contact"]

_STRINGS = {pa.large_string(): pd.StringDtype("pyarrow"), pa.string(): pd.StringDtype("pyarrow")}
RECORD_COLUMNS = ["id_type", "id_hash", "customer_ref", "consents"]
_PHONE = r"^\+[0-9]{10,15}$"
# Text in this alphabet with no '@', '%', '&' or brackets, fewer than ten digits and not both
# "at" and "dot" cannot hold an address or a phone number by contact.py's rules (an address
# needs an '@', an entity or the spelled words together; a phone needs ten digits).
_PLAIN = re.compile(r"[A-Za-z0-9_\-.:/ ]*")
# The same alphabet with at most nine digits, as one Arrow (RE2) pattern.
_PLAIN_ARROW = r"^[A-Za-z_\-.:/ ]*(?:[0-9][A-Za-z_\-.:/ ]*){0,9}$"


class HashedFrame(NamedTuple):
    """The records to upload, and the refused rows (``row``, ``field``, ``reason``)."""

    records: pd.DataFrame
    refused: pd.DataFrame


def plainly_no_contact(text: str) -> bool:
    """True when ``text`` cannot look like a contact detail by :func:`looks_like_contact`'s
    rules, decided without running them (False means: ask the detector)."""
    if not _PLAIN.fullmatch(text):
        return False
    if sum(c.isdigit() for c in text) >= 10:
        return False
    lowered = text.lower()
    return not ("at" in lowered and "dot" in lowered)


def encode_digests(digests: bytes | list[bytes], encoding: str = BASE64) -> np.ndarray[Any, Any]:
    """32-byte digests (concatenated, or a list) as an array of 44-byte base64 (or 64-byte
    hex) ASCII values (numpy ``S44``/``S64``), encoded in one call rather than one per digest."""
    listed = (
        digests
        if isinstance(digests, list)
        else [digests[i : i + 32] for i in range(0, len(digests), 32)]
    )
    if encoding == HEX:
        return np.frombuffer(binascii.hexlify(b"".join(listed)), dtype="S64")
    if encoding != BASE64:
        raise ValueError(f"encoding must be {BASE64!r} or {HEX!r}")
    # A digest and one zero byte are 11 whole groups of 3 bytes, so the digests joined by zero
    # bytes encode as one base64 string, 44 characters each; the last of each, which encodes
    # only the zero byte, becomes '=' (exactly the standard encoding of the 32 bytes).
    chars = bytearray(base64.b64encode(b"\0".join(listed) + b"\0"))
    table = np.frombuffer(chars, dtype=np.uint8).reshape(len(listed), 44)
    table[:, 43] = ord("=")
    return table.view("S44").ravel()


def _text_array(encoded: np.ndarray[Any, Any]) -> pa.Array:
    """Fixed-width ASCII bytes as Arrow strings, without a Python object per value."""
    width = encoded.dtype.itemsize
    offsets = pa.py_buffer(np.arange(0, (len(encoded) + 1) * width, width, dtype=np.int32))
    data = pa.py_buffer(np.ascontiguousarray(encoded))  # no copy
    return pa.StringArray.from_buffers(len(encoded), offsets, data)


class _Refusals:
    """The first reason each row is refused for (rows are positions 0..n-1)."""

    def __init__(self, count: int) -> None:
        self.refused = np.zeros(count, dtype=bool)
        self.field: dict[int, str] = {}
        self.reason: dict[int, str] = {}

    def add(self, mask: np.ndarray[Any, Any], field: str, reason: str) -> None:
        new = np.flatnonzero(mask & ~self.refused)
        self.refused[new] = True
        for position in new.tolist():
            self.field[position] = field
            self.reason[position] = reason

    def frame(self, index: pd.Index) -> pd.DataFrame:
        positions = np.flatnonzero(self.refused)
        return pd.DataFrame(
            {
                "row": index[positions],
                "field": [self.field[p] for p in positions.tolist()],
                "reason": [self.reason[p] for p in positions.tolist()],
            }
        )


def _strings(column: pd.Series) -> tuple[pa.Array | None, np.ndarray[Any, Any]]:
    """The column as an Arrow string array when every value is a string or missing (else
    None), and where a value is present (not missing, not empty)."""
    values = column.to_numpy(dtype=object)
    try:
        array = pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        present = np.fromiter(
            (v is not None and v is not pd.NA and v == v and v != "" for v in values),
            dtype=bool,
            count=len(values),
        )
        return None, present
    empty = pc.equal(array, "").fill_null(True)
    return array, ~empty.to_numpy(zero_copy_only=False)


def _is_text(column: pd.Series, array: pa.Array | None) -> np.ndarray[Any, Any]:
    if array is not None:
        return _mask(array.is_valid())
    return np.fromiter(
        (isinstance(v, str) for v in column.to_numpy(dtype=object)), dtype=bool, count=len(column)
    )


def _arrow(
    column: pd.Series, mask: np.ndarray[Any, Any], array: pa.Array | None = None
) -> pa.Array:
    """The string values where ``mask`` holds (others empty), as an Arrow string array
    (``array``: the column already converted by :func:`_strings`)."""
    if array is not None:
        array = array.fill_null("") if array.null_count else array
        return array if mask.all() else pc.if_else(pa.array(mask), array, "")
    values = column.to_numpy(dtype=object)
    if not mask.all():
        values = values.copy()
        values[~mask] = ""
    return pa.array(values, type=pa.large_string(), from_pandas=True).fill_null("")


def _mask(array: pa.Array) -> np.ndarray[Any, Any]:
    return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _check_refs(column: pd.Series, out: _Refusals) -> pa.Array:
    array, _ = _strings(column)
    text = _is_text(column, array)
    refs = pc.utf8_trim_whitespace(_arrow(column, text, array))
    out.add(~text | _mask(pc.equal(refs, "")), "customer_ref", "customer_ref is required")
    plain = _mask(pc.match_substring_regex(refs, _PLAIN_ARROW)) & ~_mask(
        pc.match_substring_regex(refs, "(?is)at.*dot|dot.*at")
    )
    raw = column.to_numpy(dtype=object)
    ask = np.flatnonzero(text & ~plain)  # the contact detector reads the value as sent
    suspicious = np.zeros(len(column), dtype=bool)
    suspicious[ask] = [looks_like_contact(raw[p]) for p in ask.tolist()]
    out.add(
        suspicious,
        "customer_ref",
        "customer_ref looks like an email or phone number; use the brand's own pseudonymous "
        "customer id",
    )
    return refs


def _normalise_emails(
    column: pd.Series, usable: np.ndarray[Any, Any], out: _Refusals, array: pa.Array | None
) -> pa.Array:
    """Normalised addresses (UID2) where ``usable`` (a string is there); bad ones refused.

    ``ascii_lower`` changes ASCII letters only, as UID2 does (other scripts keep their case)."""
    lowered = pc.ascii_lower(pc.ascii_ltrim(_arrow(column, usable, array), " "))
    # Exactly one '@' splits; the rare rows that do not are told apart below.
    parts = pc.extract_regex(lowered, r"(?s)^(?P<local>[^@]*)@(?P<domain>[^@]*)$")
    unsplit = usable & _mask(parts.is_null())
    if unsplit.any():
        ats = np.zeros(len(usable), dtype=np.int64)
        rows = np.flatnonzero(unsplit)
        ats[rows] = pc.count_substring(lowered.take(pa.array(rows)), "@").to_numpy()
        out.add(unsplit & (ats == 0), "email", "an email address needs an '@'")
        out.add(unsplit & (ats > 1), "email", "an email address has exactly one '@'")
    local = pc.struct_field(parts, "local")
    domain = pc.ascii_rtrim(pc.struct_field(parts, "domain"), " ")
    out.add(
        usable & _mask(pc.equal(domain, "")),
        "email",
        "an email address needs a domain after the '@'",
    )
    gmail = _mask(pc.equal(domain, GMAIL))
    if gmail.any():  # dots and any +suffix leave a gmail.com local part (UID2)
        theirs = pc.split_pattern(local.filter(pa.array(gmail)), "+", max_splits=1)
        plain = pc.replace_substring(pc.list_element(theirs, 0), ".", "")
        local = pc.replace_with_mask(local, pa.array(gmail), plain)
    out.add(
        usable & _mask(pc.equal(local, "")),
        "email",
        "an email address needs a local part before the '@'",
    )
    return pc.binary_join_element_wise(local, domain, pa.scalar("@", pa.large_string()))


def _check_phones(
    column: pd.Series, usable: np.ndarray[Any, Any], out: _Refusals, array: pa.Array | None
) -> pa.Array:
    """Phones where ``usable``: E.164 is checked, never repaired."""
    values = _arrow(column, usable, array)
    out.add(
        usable & ~_mask(pc.starts_with(values, "+")),
        "phone",
        "a phone number must be in E.164 form: '+' then 10 to 15 digits",
    )
    out.add(
        usable & ~_mask(pc.match_substring_regex(values, r"^\+[0-9]+$")),
        "phone",
        "a phone number in E.164 form has only digits after the '+' "
        "(no spaces, dashes or brackets)",
    )
    lengths = np.asarray(pc.utf8_length(values).to_numpy(zero_copy_only=False)) - 1
    for length in np.unique(lengths[usable & ((lengths < 10) | (lengths > 15))]).tolist():
        out.add(
            usable & (lengths == length),
            "phone",
            f"a phone number in E.164 form has 10 to 15 digits after the '+', not {length}",
        )
    return values


class _Coded(NamedTuple):
    """A column of few distinct values: each row's code into ``values`` (None: empty)."""

    codes: np.ndarray[Any, Any]
    values: list[str | None]

    def arrow(self, keep: np.ndarray[Any, Any]) -> pa.Array:
        """The rows where ``keep``, as strings, built by Arrow from the codes."""
        dictionary = pa.DictionaryArray.from_arrays(
            pa.array(self.codes[keep], pa.int32()), pa.array(self.values, pa.large_string())
        )
        return dictionary.cast(pa.large_string())


def _consents(column: pd.Series | None, count: int, out: _Refusals) -> _Coded:
    """Each row's consents as the hub's CSV cell (sorted, joined by '|'), checked once per
    distinct value."""
    if column is None:
        return _Coded(np.zeros(count, dtype=np.int32), [""])
    values = column.to_numpy(dtype=object)
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        verdicts = [_consent_cell(v) for v in uniques.tolist()]
    except TypeError:  # lists: unhashable, one verdict per row
        codes = np.arange(count)
        verdicts = [_consent_cell(v) for v in values.tolist()]
    reasons = np.array([reason or "" for reason, _ in verdicts], dtype=object)[codes]
    for reason in sorted({r for r, _ in verdicts if r}):
        out.add(reasons == reason, "consents", reason)
    return _Coded(np.asarray(codes), [cell for _, cell in verdicts])


def _consent_cell(value: Any) -> tuple[str | None, str]:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None, ""
    if isinstance(value, str):
        items: Any = [c.strip() for c in value.split("|") if c.strip()]
    elif isinstance(value, list | tuple | np.ndarray):
        items = list(value)
    else:
        return "consents must be a list of purposes", ""
    if not all(isinstance(c, str) for c in items):
        return "consents must be a list of purposes", ""
    unknown = sorted(set(items) - set(CONSENTS))
    if unknown:
        return f"unknown consent {unknown[0]!r}; use {', '.join(CONSENTS)}", ""
    return None, "|".join(sorted(set(items)))


def _attribute(name: str, column: pd.Series, out: _Refusals) -> tuple[_Coded, np.ndarray[Any, Any]]:
    """One attribute column (None where empty), each distinct value checked once; and where
    a row has a value."""
    values = column.to_numpy(dtype=object)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    codes = np.where(codes < 0, len(uniques), codes)  # missing: the last slot, empty
    shown: list[str | None] = [None] * (len(uniques) + 1)
    verdicts = np.zeros(len(uniques) + 1, dtype=np.int8)  # 0 ok, 1 not a string, 2 contact
    for i, value in enumerate(uniques.tolist()):
        if value == "":
            continue
        if not isinstance(value, str | int | float | bool):
            verdicts[i] = 1
            continue
        text = str(value)
        if not plainly_no_contact(text) and looks_like_contact(text):
            verdicts[i] = 2
        shown[i] = text
    row_verdicts = verdicts[codes]
    field = f"attributes.{name}"
    out.add(row_verdicts == 1, field, "an attribute value must be a string")
    out.add(row_verdicts == 2, field, "the value looks like an email or phone number")
    present = np.array([v is not None for v in shown], dtype=bool)[codes]
    return _Coded(codes, shown), present


def hash_frame(
    frame: pd.DataFrame,
    *,
    customer_ref: str = "customer_ref",
    email: str | None = "email",
    phone: str | None = "phone",
    consents: str | None = "consents",
    attributes: Sequence[str] | None = None,
    encoding: str = BASE64,
) -> HashedFrame:
    """Normalise and hash the emails and phone numbers of ``frame`` (UID2 rules).

    ``customer_ref`` names the brand's own reference column; ``email`` and ``phone`` the raw
    identifier columns (a default name absent from the frame is skipped; ``None`` skips it);
    ``consents`` a column of purposes (``"analytics|joint_offers"`` or lists); ``attributes``
    the segment columns to send (default: the frame's ``attr.<name>`` columns), written as
    ``attr.<name>``. Returns the records, one per valid identifier, and the refused rows.
    """
    if customer_ref not in frame.columns:
        raise KeyError(f"the frame has no column {customer_ref!r} (the customer reference)")
    id_columns = {
        id_type: name
        for id_type, name, default in (("email", email, "email"), ("phone", phone, "phone"))
        if name is not None and (name in frame.columns or name != default)
    }
    for name in id_columns.values():
        if name not in frame.columns:
            raise KeyError(f"the frame has no column {name!r}")
    if consents is not None and consents not in frame.columns and consents != "consents":
        raise KeyError(f"the frame has no column {consents!r}")
    attribute_names = _attribute_columns(frame, attributes)
    count = len(frame)
    out = _Refusals(count)
    # The checks run in parse_person's order, so a row is refused for the same first reason.
    refs = _check_refs(frame[customer_ref], out)
    usable: dict[str, np.ndarray[Any, Any]] = {}
    converted: dict[str, tuple[pa.Array | None, np.ndarray[Any, Any]]] = {}
    any_present = np.zeros(count, dtype=bool)
    for id_type, name in id_columns.items():
        array, present = converted[id_type] = _strings(frame[name])
        text = _is_text(frame[name], array)
        out.add(present & ~text, id_type, f"{id_type} must be a string")
        any_present |= present
        usable[id_type] = present & text
    out.add(~any_present, "email", "the row has neither an email nor a phone number")
    consent_cells = _consents(
        frame[consents] if consents is not None and consents in frame.columns else None, count, out
    )
    attribute_cells: dict[str, _Coded] = {}
    filled = np.zeros(count, dtype=np.int64)
    for column, name in attribute_names.items():
        cells, present = _attribute(name, frame[column], out)
        attribute_cells[name] = cells
        filled += present
    out.add(
        filled > MAX_ATTRIBUTES, "attributes", f"at most {MAX_ATTRIBUTES} attributes per record"
    )
    identifiers = {
        id_type: (
            (_normalise_emails if id_type == "email" else _check_phones)(
                frame[name], usable[id_type], out, converted[id_type][0]
            ),
            usable[id_type],
        )
        for id_type, name in id_columns.items()
    }
    records = _records(identifiers, ~out.refused, refs, consent_cells, attribute_cells, encoding)
    return HashedFrame(records, out.frame(frame.index))


def _attribute_columns(frame: pd.DataFrame, attributes: Sequence[str] | None) -> dict[str, str]:
    """Input column -> attribute name."""
    if attributes is None:
        chosen = {c: c[len(ATTR_PREFIX) :] for c in frame.columns if str(c).startswith(ATTR_PREFIX)}
    else:
        chosen = {c: str(c).removeprefix(ATTR_PREFIX) for c in attributes}
    for column, name in chosen.items():
        if column not in frame.columns:
            raise KeyError(f"the frame has no attribute column {column!r}")
        if looks_like_contact(name):  # never echo it: the name is the leak
            raise ValueError("an attribute column's name looks like an email or phone number")
    return chosen


def _sha256_each(texts: pa.Array) -> list[bytes]:
    """The SHA-256 of each string: read from the Arrow buffers as bytes, so no Python string
    is made or encoded per value."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = texts.cast(pa.large_string())
    if texts.offset:
        texts = pa.concat_arrays([texts])  # a slice: its buffers start before it
    _, offsets, data = texts.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int64)[: len(texts) + 1].tolist()
    blob = data.to_pybytes() if data is not None else b""
    sha256 = hashlib.sha256
    return [sha256(blob[a:b]).digest() for a, b in itertools.pairwise(bounds)]


def _records(
    identifiers: dict[str, tuple[pa.Array, np.ndarray[Any, Any]]],
    keep: np.ndarray[Any, Any],
    refs: pa.Array,
    consent_cells: _Coded,
    attribute_cells: dict[str, _Coded],
    encoding: str,
) -> pd.DataFrame:
    """One record per kept identifier: the emails in input order, then the phones."""
    parts = []
    for id_type, (normalised, usable) in identifiers.items():
        chosen = usable & keep
        mask = pa.array(chosen)
        digests = _sha256_each(normalised.filter(mask))
        encoded = encode_digests(digests, encoding) if chosen.any() else np.array([], "S44")
        columns = {
            "id_type": pa.repeat(pa.scalar(id_type, pa.large_string()), int(chosen.sum())),
            "id_hash": _text_array(encoded).cast(pa.large_string()),
            "customer_ref": refs.filter(mask),
            "consents": consent_cells.arrow(chosen),
            **{ATTR_PREFIX + n: cells.arrow(chosen) for n, cells in attribute_cells.items()},
        }
        parts.append(pa.table(columns))
    if not parts:
        return pd.DataFrame(columns=RECORD_COLUMNS)
    return pa.concat_tables(parts).to_pandas(types_mapper=_STRINGS.get)
