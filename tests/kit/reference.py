"""A line-by-line port of the UID2 operator's email parser (InputUtil.normalizeEmailString),
kept as the reference the kit's faster implementation is checked against."""

from __future__ import annotations

from partners.kit import InvalidIdentifier


def reference_normalize_email(raw: str) -> str:
    local: list[str] = []  # the local part as given (lower-cased)
    local_gmail: list[str] = []  # the same without dots and +suffix
    domain: list[str] = []
    spaces: list[str] = []  # spaces inside the domain are kept only if more text follows
    state = "start"
    in_suffix = False
    for given in raw:
        c = chr(ord(given) + 32) if "A" <= given <= "Z" else given
        if state == "start":
            if c == " ":
                continue
            state = "local"
        if state == "local":
            if c == "@":
                state = "domain"
            elif c == ".":
                local.append(c)
            elif c == "+":
                local.append(c)
                in_suffix = True
            else:
                local.append(c)
                if not in_suffix:
                    local_gmail.append(c)
        else:
            if c == "@":
                raise InvalidIdentifier("an email address has exactly one '@'")
            if c == " ":
                spaces.append(c)
                continue
            if spaces:
                domain.extend(spaces)
                spaces.clear()
            domain.append(c)
    if state != "domain":
        raise InvalidIdentifier("an email address needs an '@'")
    if not domain:
        raise InvalidIdentifier("an email address needs a domain after the '@'")
    domain_part = "".join(domain)
    local_part = "".join(local_gmail if domain_part == "gmail.com" else local)
    if not local_part:
        raise InvalidIdentifier("an email address needs a local part before the '@'")
    return f"{local_part}@{domain_part}"
