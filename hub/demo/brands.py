"""The demo coalition's four brands and the shape of their customer bases.

Non-competing brands, as in a real coalition. Each draws its customers from one shared
population; a person's *segment* (frequent traveller, city dweller, other) makes some brands
more likely than others, which is what gives the pairs their different overlaps: airline and
hotel share many customers, coffee and bank card a fair number, airline and coffee few.
"""

from __future__ import annotations

from dataclasses import dataclass

SEGMENTS = ("traveller", "urban", "other")
SEGMENT_SHARES = (0.28, 0.42, 0.30)
TIERS = ("basic", "silver", "gold", "platinum")
CITIES = (
    "london",
    "paris",
    "berlin",
    "madrid",
    "rome",
    "amsterdam",
    "lisbon",
    "dublin",
    "vienna",
    "brussels",
    "milan",
    "munich",
    "barcelona",
    "copenhagen",
    "stockholm",
)
# Big cities hold more people (roughly Zipf).
CITY_SHARES = tuple(1 / (rank + 1) ** 0.8 for rank in range(len(CITIES)))
# Share of the population with a phone number on file somewhere (each brand holds some of them).
PHONE_SHARE = 0.45


@dataclass(frozen=True)
class Brand:
    key: str  # short name used in event ids and the JSON output
    name: str
    category: str
    ref_prefix: str  # the brand's own pseudonymous customer references: "<prefix>-0001234"
    segment_weights: tuple[float, float, float]  # how likely each segment is a customer
    phone_share: float  # of its customers with a phone, how many it holds the number of
    tier_shares: tuple[float, float, float, float]
    consent_rates: tuple[float, float, float]  # analytics, joint_offers, rewards_sharing
    extra_name: str  # one brand-specific segment attribute
    extra_values: tuple[str, ...]
    extra_shares: tuple[float, ...]
    earn_points: tuple[int, int]  # points per earn, low and high


AIRLINE = Brand(
    key="airline",
    name="Skyway Airlines",
    category="airline",
    ref_prefix="SKY",
    segment_weights=(4.0, 0.8, 0.25),
    phone_share=0.8,
    tier_shares=(0.55, 0.27, 0.13, 0.05),
    consent_rates=(0.87, 0.62, 0.55),
    extra_name="cabin",
    extra_values=("economy", "premium", "business", "first"),
    extra_shares=(0.70, 0.17, 0.11, 0.02),
    earn_points=(500, 5000),
)
HOTEL = Brand(
    key="hotel",
    name="Harbor Hotels",
    category="hotel",
    ref_prefix="HBR",
    segment_weights=(3.5, 0.9, 0.3),
    phone_share=0.6,
    tier_shares=(0.58, 0.25, 0.13, 0.04),
    consent_rates=(0.85, 0.60, 0.52),
    extra_name="stay",
    extra_values=("business", "leisure", "mixed"),
    extra_shares=(0.45, 0.35, 0.20),
    earn_points=(200, 3000),
)
COFFEE = Brand(
    key="coffee",
    name="Bean & Co Coffee",
    category="coffee",
    ref_prefix="BEAN",
    segment_weights=(0.6, 2.2, 0.7),
    phone_share=0.3,
    tier_shares=(0.70, 0.20, 0.08, 0.02),
    consent_rates=(0.83, 0.58, 0.45),
    extra_name="daypart",
    extra_values=("morning", "midday", "evening"),
    extra_shares=(0.55, 0.30, 0.15),
    earn_points=(10, 120),
)
BANK = Brand(
    key="bank",
    name="Meridian Card",
    category="bank_card",
    ref_prefix="MRD",
    segment_weights=(1.3, 1.6, 0.8),
    phone_share=0.9,
    tier_shares=(0.50, 0.30, 0.15, 0.05),
    consent_rates=(0.86, 0.60, 0.50),
    extra_name="card",
    extra_values=("classic", "gold", "platinum", "infinite"),
    extra_shares=(0.55, 0.28, 0.13, 0.04),
    earn_points=(20, 600),
)
BRANDS = (AIRLINE, HOTEL, COFFEE, BANK)


@dataclass(frozen=True)
class PartnershipPlan:
    a: Brand
    b: Brand
    purposes: tuple[str, ...]
    min_audience: int = 50


PARTNERSHIPS = (
    PartnershipPlan(AIRLINE, HOTEL, ("analytics", "joint_offers", "rewards_sharing")),
    PartnershipPlan(COFFEE, BANK, ("analytics", "rewards_sharing")),
    PartnershipPlan(AIRLINE, BANK, ("analytics", "joint_offers")),
)
OFFER_TITLE = "Fly & Stay: 2,000 bonus points"
OFFER_DESCRIPTION = (
    "Fly with Skyway Airlines and stay at Harbor Hotels within 90 days: 2,000 bonus points, "
    "funded half by each brand."
)
OFFER_POINTS = {AIRLINE.key: 1000, HOTEL.key: 1000}
OFFER_DAYS = 90
OFFER_HOLDOUT = 0.1  # a tenth of the matched groups held out: the control the lift is measured on
