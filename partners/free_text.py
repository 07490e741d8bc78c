"""Free text written to the hub (names, titles, descriptions) holds no contact details.

DESIGN.md "Principles": no raw PII ever enters the hub. Partner and client names, offer titles,
descriptions and filters are stored, shown to the other member and written to the audit log,
so an email address or phone number pasted there leaks as surely as one in a customer
reference. The rule is the kit's (:mod:`partners.kit.contact`), the one identifier records
follow too; a refusal names the field, never the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from hub.core.errors import InvalidInput
from partners.kit.contact import looks_like_contact

__all__ = ["filter_texts", "refuse_contact_details"]

REASON = "looks like an email address or phone number"


def refuse_contact_details(texts: Iterable[tuple[str, str]] = (), /, **fields: str | None) -> None:
    """Raise :class:`InvalidInput` (422) listing every field whose text holds an email
    address or phone number, plain or obfuscated. Fields come as keywords (None: not sent)
    or as (field, text) pairs, for fields that hold several texts."""
    pairs = [*texts, *((name, text) for name, text in fields.items() if text is not None)]
    bad = sorted({name for name, text in pairs if text and looks_like_contact(text)})
    if not bad:
        return
    raise InvalidInput(
        f"{', '.join(bad)} {REASON}; contact details never enter the hub.",
        errors=[{"index": 0, "field": name, "reason": REASON} for name in bad],
        fix="Remove the email address or phone number (in any spelling: '[at]', spaced out, "
        "full-width...) from these fields and send the request again.",
    )


def filter_texts(
    filters: Mapping[str, Sequence[str]] | None, field: str = "filters"
) -> Iterator[tuple[str, str]]:
    """(field, text) pairs of an offer's filters, attribute names and values, for
    :func:`refuse_contact_details`; an attribute is named in the field unless its name is
    itself the leak."""
    for attribute, values in (filters or {}).items():
        named = field if looks_like_contact(attribute) else f"{field}.{attribute}"
        yield named, attribute
        for value in values:
            yield named, value
