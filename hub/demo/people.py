"""Synthetic people and the brands' customer bases, hashed with the partner kit.

One shared population; each brand draws its customers from it (weighted by segment, so the
overlaps differ by pair as in a real coalition), with consents at realistic rates and segment
attributes (tier, city, one brand-specific). Everything is drawn from one seeded generator:
the same seed and size give the same people.

Raw identifiers exist only transiently, one at a time, inside :func:`_hash_people`: each is
built, normalised and hashed with the kit (as a brand does on its side), and dropped. Nothing
here keeps, prints or logs a raw value; the addresses are under the reserved ``example.*``
domains and the numbers in a fictional range, so none belongs to a real person.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hub.demo.brands import BRANDS, CITIES, CITY_SHARES, PHONE_SHARE, SEGMENT_SHARES, Brand
from partners.identifiers.models import CONSENT_BITS
from partners.kit import digest, normalize

FIRST_NAMES = (
    "ada", "alan", "alice", "amir", "anna", "ben", "carla", "chen", "clara", "david",
    "elena", "emma", "farah", "felix", "grace", "hugo", "ines", "ivan", "jana", "jonas",
    "julia", "kai", "lara", "leo", "lina", "luca", "maria", "marek", "mia", "nina",
    "noah", "olga", "omar", "paul", "rosa", "sami", "sara", "tom", "vera", "yusuf",
)  # fmt: skip
LAST_NAMES = (
    "almeida", "berg", "costa", "dubois", "eriksen", "fischer", "garcia", "hansen", "ivanova",
    "jansen", "kowalski", "lambert", "moreau", "novak", "oconnor", "petrov", "quinn", "rossi",
    "schmidt", "silva", "smith", "taylor", "umar", "vidal", "weber", "xu", "young", "zeller",
)  # fmt: skip
DOMAINS = ("example.com", "example.org", "example.net")  # reserved: nobody's real address
PHONE_PREFIX = "+447700"  # then 7 digits: a fictional UK range, E.164 (13 digits)
POPULATION_PER_CUSTOMER = 2.5  # the shared population, per customer of one brand


@dataclass(frozen=True)
class CustomerBase:
    """One brand's customers: person indices (sorted) and what the brand knows of each."""

    brand: Brand
    people: NDArray[np.int64]
    holds_phone: NDArray[np.bool_]
    consents: NDArray[np.uint8]  # CONSENT_BITS mask
    tier: NDArray[np.int8]
    extra: NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.people)

    @property
    def records(self) -> int:
        return len(self.people) + int(self.holds_phone.sum())


@dataclass
class Population:
    size: int
    city: NDArray[np.int8]
    bases: dict[str, CustomerBase]
    # SHA-256 digests of each person's normalised email and phone (None: not a customer of any
    # brand, or no phone). Digests only: the raw values were never kept.
    email: list[bytes | None]
    phone: list[bytes | None]


def _draw(rng: np.random.Generator, weights: NDArray[np.float64], k: int) -> NDArray[np.int64]:
    """``k`` distinct people, each drawn with probability proportional to ``weights``
    (Gumbel top-k: one vectorised pass instead of ``k`` sequential draws)."""
    keys = rng.exponential(size=len(weights)) / weights
    chosen = np.argpartition(keys, k - 1)[:k]
    return np.sort(chosen).astype(np.int64)


def _shares(values: tuple[float, ...]) -> NDArray[np.float64]:
    array: NDArray[np.float64] = np.asarray(values, dtype=np.float64)
    return array / float(array.sum())


def _customer_base(
    rng: np.random.Generator,
    brand: Brand,
    segment: NDArray[np.int8],
    has_phone: NDArray[np.bool_],
    customers: int,
) -> CustomerBase:
    weights = np.asarray(brand.segment_weights, dtype=np.float64)[segment]
    people = _draw(rng, weights, customers)
    k = len(people)
    analytics, joint, sharing = brand.consent_rates
    consents = (
        (rng.random(k) < analytics) * CONSENT_BITS["analytics"]
        + (rng.random(k) < joint) * CONSENT_BITS["joint_offers"]
        + (rng.random(k) < sharing) * CONSENT_BITS["rewards_sharing"]
    ).astype(np.uint8)
    return CustomerBase(
        brand=brand,
        people=people,
        holds_phone=has_phone[people] & (rng.random(k) < brand.phone_share),
        consents=consents,
        tier=rng.choice(4, size=k, p=_shares(brand.tier_shares)).astype(np.int8),
        extra=rng.choice(len(brand.extra_values), size=k, p=_shares(brand.extra_shares)).astype(
            np.int8
        ),
    )


def build_population(
    customers: int, seed: int, on_progress: Callable[[int], None] = lambda _: None
) -> Population:
    """The shared population and every brand's customer base, hashed (see the module doc)."""
    rng = np.random.default_rng(seed)
    size = int(customers * POPULATION_PER_CUSTOMER)
    segment = rng.choice(3, size=size, p=_shares(SEGMENT_SHARES)).astype(np.int8)
    city = rng.choice(len(CITIES), size=size, p=_shares(CITY_SHARES)).astype(np.int8)
    has_phone = rng.random(size) < PHONE_SHARE
    first = rng.integers(0, len(FIRST_NAMES), size=size)
    last = rng.integers(0, len(LAST_NAMES), size=size)
    domain = rng.integers(0, len(DOMAINS), size=size)
    bases = {b.key: _customer_base(rng, b, segment, has_phone, customers) for b in BRANDS}
    customer = np.zeros(size, dtype=np.bool_)
    phone_held = np.zeros(size, dtype=np.bool_)
    for base in bases.values():
        customer[base.people] = True
        phone_held[base.people[base.holds_phone]] = True
    email, phone = _hash_people(
        np.flatnonzero(customer), phone_held, (first, last, domain), on_progress
    )
    return Population(size=size, city=city, bases=bases, email=email, phone=phone)


def _hash_people(
    people: NDArray[np.int64],
    phone_held: NDArray[np.bool_],
    names: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]],
    on_progress: Callable[[int], None],
) -> tuple[list[bytes | None], list[bytes | None]]:
    """Each customer's email (and phone, where a brand holds it) built, normalised and hashed
    with the kit, one at a time; only the digests are returned."""
    size = len(phone_held)
    email: list[bytes | None] = [None] * size
    phone: list[bytes | None] = [None] * size
    first, last, domain = (a.tolist() for a in names)
    held = phone_held.tolist()
    step = 20_000
    for start in range(0, len(people), step):
        chunk = people[start : start + step].tolist()
        for p in chunk:
            raw = f"{FIRST_NAMES[first[p]]}.{LAST_NAMES[last[p]]}.{p}@{DOMAINS[domain[p]]}"
            email[p] = digest(normalize("email", raw))
            if held[p]:
                phone[p] = digest(normalize("phone", f"{PHONE_PREFIX}{p:07d}"))
        on_progress(len(chunk))
    return email, phone
