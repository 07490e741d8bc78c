"""Fixed corpora for the contact-details detector (partners/kit/contact.py).

REFUSED: raw and obfuscated email addresses and phone numbers, each of which must be refused
wherever free text enters the hub. PASSED: look-alikes that must pass -- loyalty numbers,
tier names, offer texts using "@" as a word, spaced dates, amounts, codes. Non-ASCII
characters are written as escapes so that what a line holds is visible.
"""

from __future__ import annotations

ZWSP, ZWNJ, ZWJ, WJ, SHY, BOM = "\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff"
FW_AT, SMALL_AT, FW_DOT, FW_PLUS = "\uff20", "\ufe6b", "\uff0e", "\uff0b"


def full_width(text: str) -> str:
    """ASCII letters, digits and signs as their full-width forms (U+FF01..U+FF5E)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def split_by(text: str, mark: str) -> str:
    return mark.join(text)


EMAILS_REFUSED = (
    # plain, anywhere in the text
    "john@example.com",
    "John.Doe+promo@mail.example.co.uk",
    "jane_doe@example.org",
    "  jane@example.org  ",
    "contact: jane@example.org",
    "Write to jane@example.org for details",
    "Gold tier (jane.doe@example.fr)",
    "x@y.io",
    "mailto:jane@example.org",
    "<jane@example.org>",
    "jane@example.xn--p1ai",
    "jane@ example.org",
    # look-alikes of @ and of the dot
    f"john{FW_AT}example.com",
    f"john{SMALL_AT}example.com",
    f"john{FW_AT}example{FW_DOT}com",
    "john@example\u3002com",
    full_width("john@example.com"),
    full_width("JANE.DOE@EXAMPLE.ORG"),
    "john%40example.com",
    "john&#64;example.com",
    "john&#x40;example&#46;com",
    "john&commat;example.com",
    # bracketed and word forms
    "john[at]example.com",
    "john [at] example [dot] com",
    "john(at)example(dot)com",
    "john (at) example (dot) co (dot) uk",
    "john{at}example{dot}com",
    "john <at> example <dot> com",
    "john [ at ] example [ dot ] com",
    "john[@]example.com",
    "john(@)example.com",
    "JOHN [AT] EXAMPLE [DOT] COM",
    "john at example dot com",
    "John AT example DOT com",
    "jane.doe at mail dot example dot org",
    "john at example[dot]com",
    "john_at_example_dot_com",
    "john-at-example-dot-com",
    "john.at.example.dot.com",
    f"john {FW_AT} example {FW_DOT} com",
    "write to john (at) example (dot) com today",
    # spaced
    "j o h n @ e x a m p l e . c o m",
    "j a n e @ e x a m p l e . o r g",
    "john @ example . com",
    "john @ example.com",
    "J O H N @ E X A M P L E . C O M",
    "j o h n at e x a m p l e dot c o m",
    "j o h n [at] e x a m p l e [dot] c o m",
    # zero-width and other invisible characters inside
    f"jo{ZWSP}hn@example.com",
    f"john@{ZWSP}example.com",
    f"john{ZWSP}@{ZWSP}example{ZWSP}.{ZWSP}com",
    split_by("john@example.com", ZWSP),
    split_by("john@example.com", ZWNJ),
    split_by("john@example.com", ZWJ),
    split_by("john@example.com", WJ),
    split_by("john@example.com", SHY),
    f"{BOM}john@example.com",
    f"jo{SHY}hn@exam{SHY}ple.com",
    "john@exam\u034fple.com",  # combining grapheme joiner
    "john@exa\ufe0fmple.com",  # variation selector
    f"john{FW_AT}{ZWSP}example.com",
    f"j{ZWJ}o{ZWNJ}h{ZWSP}n [at] example [dot] com",
    "john\u00a0@\u00a0example\u00a0.\u00a0com",  # no-break spaces
    "j\u3000o\u3000h\u3000n\u3000@\u3000e\u3000x\u3000a\u3000m\u3000p\u3000l\u3000e\u3000.\u3000c\u3000o\u3000m",
)

PHONES_REFUSED = (
    # '+' and 10 to 15 digits, with or without separators
    "+14155552671",
    "+1 415 555 2671",
    "+1 (415) 555-2671",
    "+1-415-555-2671",
    "+1.415.555.2671",
    "+44 20 7946 0958",
    "+44 (0)20 7946 0958",
    "+33 6 12 34 56 78",
    "+33612345678",
    "+49 30 12345678",
    "+86 138 0013 8000",
    "(+44) 20 7946 0958",
    "+ 44 20 7946 0958",
    "call +44 20 7946 0958 today",
    # digit groups with separators
    "(415) 555-2671",
    "(415)555-2671",
    "415.555.2671",
    "415-555-2671",
    "415 555 2671",
    "0044 20 7946 0958",
    "001 415 555 2671",
    "020 7946 0958",
    "06 12 34 56 78",
    "06.12.34.56.78",
    "06-12-34-56-78",
    "0612 345 678",
    "030 1234 5678",
    "Tel: 415-555-2671",
    "+33 (0)6 12 34 56 78",
    "1-800-555-0199",
    "07911 123456",
    "Call (415) 555-2671 for a table",
    "- 415 555 2671",
    "415 - 555 - 2671",
    "2026-11-03 415 555 2671",
    # spaced out
    "4 1 5 5 5 5 2 6 7 1",
    "+ 4 4 2 0 7 9 4 6 0 9 5 8",
    "0 6 1 2 3 4 5 6 7 8",
    # look-alike digits, plus, dashes
    full_width("+44 20 7946 0958"),
    full_width("(415) 555-2671"),
    full_width("4155552671").join(("+1 ", "")),
    f"{FW_PLUS}14155552671",
    "415\u2013555\u20132671",  # en dashes
    "415\u2010555\u20102671",  # hyphens
    "415\u2212555\u22122671",  # minus signs
    "\U0001d7d2\U0001d7cf\U0001d7d3-555-2671",  # mathematical bold digits
    "+\u0664\u0664 20 7946 0958",  # Arabic-Indic digits
    "415\u00b7555\u00b72671",  # middle dots
    # zero-width and other invisible characters between the digits
    f"415{ZWSP}555{ZWSP}2671",
    split_by("4155552671", ZWSP),
    split_by("4155552671", ZWNJ),
    split_by("4155552671", ZWJ),
    split_by("4155552671", SHY),
    split_by("4155552671", BOM),
    split_by("+14155552671", WJ),
    f"+1{ZWSP}415{ZWSP}555{ZWSP}2671",
    f"(415){ZWSP}555{SHY}2671",
    "415\u00a0555\u00a02671",  # no-break spaces
)

REFUSED = (*EMAILS_REFUSED, *PHONES_REFUSED)

LOYALTY_NUMBERS = (
    "1",
    "42",
    "123456",
    "00012345",
    "123456789",
    "4155552671",
    "14155552671",
    "441234567890",
    "0044207946095",
    "00442079460958",
    "123456789012345",
    "1234567890123456",
    "12345678901234567",
    "123456789012345678",
    "1234567890123456789",
    "9999999999999999999",
    "0000000000000000001",
    "6011000990139424",
    "3530111333300000",
    "7001234567890123456",
    "\ufeff1234567890",  # a BOM before a CSV's first cell
    "\uff14\uff11\uff15\uff15\uff15\uff15\uff12\uff16\uff17\uff11",  # full-width digits only
)

PASSED = (
    *LOYALTY_NUMBERS,
    # customer references and codes
    "C000123",
    "cust-9",
    "GOLD-000123",
    "MM-1234567",
    "AB-1234-5678-90",
    "C-415-555-2671",
    "123e4567-e89b-12d3-a456-426614174000",
    "a1234567-1234-5678-1234-5678abcdef01",
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    "user_42",
    "Ünïcode1",
    "ref 2026/11/03-17",
    # tier names and attribute values
    "gold",
    "Platinum Elite",
    "tier-2",
    "Gold @ Lounge",
    "@gold",
    "vip@",
    "1.000.000 - 2.000.000 points",
    "Valid 03.11.26 - 31.12.26",
    "Île-de-France",
    "FR-75",
    "2026",
    # offer texts using "@" as a word
    "Meet us @ the lounge",
    "2 coffees @ 3 EUR",
    "2 coffees @ 3.50 EUR",
    "Happy hour @ Bar 7, 17:00-19:00",
    "Double points @ Café Lumière",
    "Fly & stay: 2,000 bonus points @ any hotel",
    "Latte @ 2.90",
    "Breakfast @ 7",
    "Book at booking.com and earn 500 points",
    "Stay at our hotel. Earn points at the lounge",
    "Meet at the gate; dot your i's",
    "See www.example.com for terms",
    "Terms: example.com/offers",
    "Earn 3x points at partner stores",
    "Follow @joes.coffee on Instagram",
    "1,000 points",
    "+500 points",
    "Earn +2000 points on your next stay",
    "2+2 nights",
    "Win 1 000 000 000 points",
    "12.500.000 miles",
    "Coffee 3.50, tea 2.50",
    "Prices 12.50 14.50 16.50 18.50",
    "Open 10:00-22:00",
    "Save 20% on 2 nights",
    "Flight AF 1234 + hotel",
    "Room 1204, floor 12",
    "Order #123456789",
    "Seasons 2024 2025 2026",
    "Seat 12A, gate B42",
    "Gold since 2019",
    "Earn 2 000 points per 100 EUR",
    "Valid until 31 Dec 2026",
    "Members only: 20 % off",
    # spaced dates and times
    "2026 11 03",
    "03 11 2026",
    "11 03 2026",
    "2026-11-03",
    "03.11.2026",
    "03/11/2026",
    "2026-11-03 10:30",
    "2026-11-03T10:30:00Z",
    "Valid 03.11.2026 - 31.12.2026",
    "Valid 2026-11-03 - 2026-12-31",
    "From 03.11 - 31.12.2026",
    "03 11 2026 to 31 12 2026",
    "2 0 2 6 1 1 0 3",
    "Nov 3 2026, 10:30",
    # short numbers with separators
    "555-2671",
    "12 34 56",
    "1-2-3",
    "v1.2.3",
    "4.5 stars",
    "Points x2 from 03/11 to 31/12",
    "48.8566 2.3522",
)
