"""Free text written to the hub (names, titles, descriptions) holds no contact details.

DESIGN.md "Principles": no raw PII ever enters the hub. Partner and client names, offer titles
and descriptions are stored, shown to the other member and written to the audit log, so an
email address or phone number pasted there leaks as surely as one in a customer reference.
The rule is the kit's (:mod:`partners.kit.contact`), the one identifier records follow too; a
refusal names the field, never the text.
"""

from __future__ import annotations

from hub.core.errors import InvalidInput
from partners.kit.contact import looks_like_contact

__all__ = ["refuse_contact_details"]

REASON = "looks like an email address or phone number"


def refuse_contact_details(**fields: str | None) -> None:
    """Raise :class:`InvalidInput` (422) listing every field whose text holds an email
    address or phone number, plain or obfuscated; fields that are None are not sent."""
    bad = sorted(name for name, text in fields.items() if text and looks_like_contact(text))
    if not bad:
        return
    raise InvalidInput(
        f"{', '.join(bad)} {REASON}; contact details never enter the hub.",
        errors=[{"index": 0, "field": name, "reason": REASON} for name in bad],
        fix="Remove the email address or phone number (in any spelling: '[at]', spaced out, "
        "full-width...) from these fields and send the request again.",
    )
