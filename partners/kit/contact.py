"""Whether a text holds a raw email address or phone number, plain or obfuscated.

The hub refuses raw contact details everywhere a partner or an admin writes free text
(customer references, attribute names and values, offer titles and descriptions, partner and
client names); the kit refuses them on the brand's side before anything is sent. Both ask
:func:`looks_like_contact`, so there is one rule, stated here:

* The text is first brought to what a reader sees: NFKC (the full-width at sign U+FF20,
  full stop, digits and plus become ASCII), format and other invisible characters (zero-width
  space, joiner and non-joiner, soft hyphen, BOM, variation selectors...) removed -- or,
  between two digits, read as a separator, since nobody types an invisible character inside a
  loyalty number --, Unicode dashes read as ``-``, look-alike dots (U+3002, the middle dot)
  as ``.``, case folded.
* **Email**: ``local@domain.tld`` anywhere in the text, the TLD being letters. The ``@`` may be
  written ``[at]``, ``(at)``, ``{at}``, ``<at>``, ``%40`` or ``&#64;``, and the dot ``[dot]``,
  ``(dot)`` and so on; the words ``at`` and ``dot`` (between spaces, ``_``, ``-`` or ``.``)
  count only together, as in ``john at example dot com`` ("book at booking.com" is
  prose). A letter-by-letter spaced address (``j o h n @ e x a m p l e . c o m``) is read
  joined, and an ``@`` or a dot standing alone between spaces is read as glued to its
  neighbours (so is a space after an ``@`` glued to a name: ``john@ example.com``). An
  ``@`` used as a word ("2 coffees @ 3 EUR", "Meet us @ the lounge") is no address: nothing
  after it is a domain.
* **Phone**: a run of number tokens (digits with ``( ) . -`` inside, separated by spaces; a
  word, ``,``, ``:`` or ``/`` ends the run) that is either ``+`` and 10 to 15 digits, or
  at least two digit groups holding 10 to 15 digits (17 after a ``00`` prefix), once
  dates (``2026 11 03``, ``03.11.2026``, ``03.11.26``), decimal amounts (``12.50``) and
  thousands (``1 000 000 000``, ``1.000.000``) are set aside; a run of years only
  (``2025 2026 2027``) is no phone either. So ``(415) 555-2671``, ``415.555.2671``,
  ``0044 20 7946 0958`` and ``4 1 5 5 5 5 2 6 7 1`` are phones, while a digits-only number
  (a loyalty number of up to 19 digits, say) is not: with no ``+`` and no separator nothing
  tells it from an account number. A number glued to letters (``C-415-555-2671``, a UUID)
  is part of a code, not a phone.

The detector errs on the side of refusing: a false refusal costs a partner a reworded
title, a false pass puts a person's contact details in the hub. Standard library only.
"""

from __future__ import annotations

import re
import string
import unicodedata

__all__ = ["has_email", "has_phone", "looks_like_contact", "visible_text"]

# Characters a reader does not see: format (Cf: zero-width space, joiners, soft hyphen, BOM,
# bidi controls, tags), controls, combining marks, and fillers that render as blanks.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Mn", "Me"})
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_LOOKALIKES = {
    "\u3002": ".",  # ideographic full stop: a label separator in IDNA
    "\u00b7": ".",
    "\u2022": ".",
    "\u2219": ".",
    "\u30fb": ".",
    "\u2212": "-",  # minus sign
    "\u3010": "[",
    "\u3011": "]",
    "\u3014": "[",
    "\u3015": "]",
    "\u2768": "(",
    "\u2769": ")",
}
_ENTITIES = re.compile(r"%40|&#0*64;|&#x0*40;|&commat;|&#0*46;|&#x0*2e;|&period;")
_ENTITY_TEXT = {"%40": "@", "&commat;": "@", "&period;": "."}
_OPEN_ESCAPE = re.compile(r"(?:%[0-9a-f]|&#x?[0-9a-f]*)$", re.IGNORECASE)

# -- email ---------------------------------------------------------------------------------
_BRACKET_AT = re.compile(r"\s*[\[({<]\s*(?:at|@)\s*[\])}>]\s*")
_BRACKET_DOT = re.compile(r"\s*[\[({<]\s*(?:dot|\.)\s*[\])}>]\s*")
# After a letter or digit only (not '_'), so that a long run of '_' is scanned once.
_WORD_AT = re.compile(r"(?<=[^\W_])[\s_.\-]+at[\s_.\-]+(?=[^\W_])")
_WORD_DOT = re.compile(r"(?<=[^\W_])[\s_.\-]+dot[\s_.\-]+(?=[^\W_])")
_SPELLED_HINT = re.compile(r"dot|[\[({<]")
_SPACED_OUT = re.compile(r"(?<!\S)\S(?: \S){2,}(?!\S)")  # three or more lone characters
_LONE_AT = re.compile(r" @ |(?<=\w)@ (?=\w)")  # "john @ x.com", "john@ x.com"
_LONE_DOT = re.compile(r"(?<=\w) \. (?=\w)")
_EMAIL = re.compile(
    # The TLD is letters (or an IDN's punycode).
    r"(?<![\w.%+'\-])[\w.%+'\-]+@(?:[\w\-]+\.)+(?:[^\W\d_]{2,}|xn--[\w\-]+)(?![\w\-])"
)

# -- phone ---------------------------------------------------------------------------------
_RUN_BREAK = re.compile(r"[^\w\s+().\-]+")  # ',', ':', '/', '@'... end a run of numbers
_NUMBER_TOKEN = re.compile(r"[+(]*\d[\d().\-]*")
_CONNECTOR_TOKEN = re.compile(r"[+().\-]+")
_GROUP = re.compile(r"\d+")
_ASCII_DIGITS = b"0123456789"
_ASCII_TOKEN_CHARS = string.ascii_letters.encode() + _ASCII_DIGITS + b"_+().-"
# Tokens that are quantities or dates whatever surrounds them: 12.50, 1.000.000, 48.8566
# (a coordinate), 03.11.26.
_AMOUNT = re.compile(r"\d{1,7}\.\d{1,2}|\d{1,3}(?:\.\d{3})+|\d{1,3}\.\d{4,8}")
_SHORT_DATE = re.compile(r"(\d{1,2})([./-])(\d{1,2})\2\d{2}")
E164_DIGITS = (10, 15)


def visible_text(value: str, *, split_digits: bool = True) -> str:
    """``value`` as a reader sees it, for detection only (never stored): NFKC, invisible
    characters dropped (or, with ``split_digits``, a ``-`` where they split two digits),
    look-alikes mapped, whitespace collapsed, case folded."""
    if not (value.isascii() and value.isprintable()):
        value = _shown(unicodedata.normalize("NFKC", value), split_digits)
    value = value.casefold()
    if " " in value:
        value = " ".join(value.split())
    if "%" in value or "&" in value:
        value = _ENTITIES.sub(_entity, value)
    return value


def _shown(text: str, split_digits: bool = True) -> str:
    out: list[str] = []
    hidden = False
    for ch in text:
        if ch.isspace():
            out.append(" ")
        elif unicodedata.category(ch) in _INVISIBLE_CATEGORIES or ch in _BLANK_LETTERS:
            hidden = True
            continue
        elif ch in _LOOKALIKES:
            out.append(_LOOKALIKES[ch])
        elif unicodedata.category(ch) == "Pd":
            out.append("-")
        else:
            if (
                split_digits
                and hidden
                and ch.isdigit()
                and out
                and out[-1].isdigit()
                and not _in_escape(out)
            ):
                out.append("-")  # "415<ZWSP>555" is a grouped number, not "415555"
            out.append(ch)
        hidden = False
    return "".join(out)


def _in_escape(out: list[str]) -> bool:
    """Whether the text so far ends inside a percent or numeric character escape ("%4",
    "&#6", "&#x4"): an invisible character there hides "%40" (an '@'), it splits no number."""
    return _OPEN_ESCAPE.search("".join(out[-8:])) is not None


def _entity(match: re.Match[str]) -> str:
    text = match.group()
    return _ENTITY_TEXT.get(text) or ("@" if text.rstrip(";").endswith(("64", "40")) else ".")


def looks_like_contact(value: str) -> bool:
    """Whether ``value`` holds a raw email address or phone number, plain or obfuscated
    (see the module's docstring for the rules). Letters and digits alone never do."""
    if value.isascii() and value.isalnum():
        return False
    text = visible_text(value)
    if has_email(text) or has_phone(text):
        return True
    if value.isascii():
        return False
    # An invisible mark between two digits reads as a group separator ("415<ZWSP>555"); the
    # text is read without it too, so that a mark inside a group cannot turn a date the
    # rules skip into digits that hide the number after it ("2<ZWSP>026-11-03 415 555 2671",
    # found by hypothesis).
    joined = visible_text(value, split_digits=False)
    return joined != text and has_phone(joined)


def has_email(text: str) -> bool:
    """Whether visible text (see :func:`visible_text`) holds an email address."""
    if "@" not in text and not ("at" in text and _SPELLED_HINT.search(text)):
        return False  # no '@', and no "[at]" nor "at" with a spelled-out dot
    text = _SPACED_OUT.sub(lambda m: m.group().replace(" ", ""), text)
    text, dot_hidden = _BRACKET_DOT.subn(".", _BRACKET_AT.sub("@", text))
    if _WORD_DOT.search(text):
        dot_hidden = 1
    if dot_hidden:
        text = _WORD_AT.sub("@", text)
    if "@" not in text:
        return False
    text = _WORD_DOT.sub(".", text)
    text = _LONE_DOT.sub(".", _LONE_AT.sub("@", text))
    return _EMAIL.search(text) is not None


def has_phone(text: str) -> bool:
    """Whether visible text (see :func:`visible_text`) holds a phone number."""
    if _digit_count(text) < E164_DIGITS[0]:  # every rule wants 10 digits or more
        return False
    if text.isascii() and not text.encode().translate(None, _ASCII_TOKEN_CHARS):
        # One token (most customer refs): a number, or a code such as a UUID. Quick, as
        # this runs for every bulk row whose ref is more than letters and digits.
        return _NUMBER_TOKEN.fullmatch(text) is not None and _phone_run([text])
    for piece in _RUN_BREAK.split(text):
        run: list[str] = []
        for token in piece.split():
            if _NUMBER_TOKEN.fullmatch(token) or _CONNECTOR_TOKEN.fullmatch(token):
                if token.lstrip("(").startswith("+") and run:  # a '+' starts a new number
                    if _phone_run(run):
                        return True
                    run = []
                run.append(token)
                continue
            if _phone_run(run):
                return True
            run = []
        if _phone_run(run):
            return True
    return False


def _digit_count(text: str) -> int:
    """How many digits ``text`` holds (cheaply: this runs for every bulk row)."""
    if text.isascii():
        return len(text) - len(text.encode().translate(None, _ASCII_DIGITS))
    return sum(map(str.isdigit, text))


def _phone_run(run: list[str]) -> bool:
    if not run:
        return False
    groups = _GROUP.findall(" ".join(run))
    if not groups:
        return False
    low, high = E164_DIGITS
    if run[0].lstrip("(").startswith("+"):
        return low <= sum(map(len, groups)) <= high
    if len(groups) < 2:
        return False  # digits only: an account or loyalty number
    groups = _without_dates(_GROUP.findall(" ".join(_without_amounts(run))))
    if _thousands(groups) or all(_is_year(group) for group in groups):
        return False  # 1 000 000 000 points; seasons 2025 2026 2027
    if groups and groups[0].startswith("00"):
        high += 2  # the international prefix written as 00
    return low <= sum(map(len, groups)) <= high


def _without_amounts(run: list[str]) -> list[str]:
    """The run without the tokens that are amounts or dates with a two-digit year."""
    return [token for token in run if not _is_amount(token.rstrip("."))]


def _is_amount(token: str) -> bool:
    if _AMOUNT.fullmatch(token):
        return True
    date = _SHORT_DATE.fullmatch(token)
    return date is not None and _day_and_month(date.group(1), date.group(3))


def _without_dates(groups: list[str]) -> list[str]:
    """The groups with every date (year-month-day, day-month-year, month-day-year) taken out."""
    kept: list[str] = []
    at = 0
    while at < len(groups):
        if _is_date(groups[at : at + 3]):
            at += 3
            continue
        kept.append(groups[at])
        at += 1
    return kept


def _is_date(groups: list[str]) -> bool:
    if len(groups) != 3:
        return False
    if _is_year(groups[0]):
        return _day_and_month(groups[1], groups[2])
    return _is_year(groups[2]) and _day_and_month(groups[0], groups[1])


def _is_year(group: str) -> bool:
    return len(group) == 4 and 1900 <= int(group) <= 2099


def _day_and_month(first: str, second: str) -> bool:
    if len(first) > 2 or len(second) > 2:
        return False
    a, b = int(first), int(second)
    return 1 <= a <= 31 and 1 <= b <= 31 and min(a, b) <= 12


def _thousands(groups: list[str]) -> bool:
    """1 000 000 000 or 12.500.000: an amount, not a number to dial."""
    return (
        len(groups) >= 2
        and 1 <= len(groups[0]) <= 3
        and all(len(group) == 3 for group in groups[1:])
    )
