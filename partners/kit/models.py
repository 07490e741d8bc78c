"""What :class:`partners.kit.client.HubClient` returns: typed views of the hub's wire shapes
(DESIGN.md "Wire shapes"), each keeping the JSON it came from in ``raw`` (the hub may add
fields) and, where the data is a table, a ``to_pandas()`` (the ``pandas`` extra)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AudienceChanges",
    "Balance",
    "Feed",
    "OfferResults",
    "Overlap",
    "Settlement",
    "Upload",
    "frame_of",
]


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "DataFrames need the kit's pandas extra: pip install 'coalition-hub-kit[pandas]'"
        ) from exc
    return pandas


def frame_of(rows: Iterable[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
    """A DataFrame of JSON objects (nested objects flattened to ``a.b`` columns)."""
    pandas = _pandas()
    listed = list(rows)
    if not listed:
        return pandas.DataFrame(columns=columns or [])
    frame = pandas.json_normalize(listed)
    return frame[columns] if columns else frame


@dataclass(frozen=True)
class Upload:
    """A bulk upload's status; ``errors`` holds its per-row error report once fetched."""

    id: str
    status: str
    rows_read: int
    accepted: int
    refused: int
    error: str | None
    raw: dict[str, Any]
    errors: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, body: dict[str, Any], errors: list[dict[str, Any]] | None = None) -> Upload:
        return cls(
            id=str(body["id"]),
            status=str(body["status"]),
            rows_read=int(body.get("rows_read") or 0),
            accepted=int(body.get("accepted") or 0),
            refused=int(body.get("refused") or 0),
            error=body.get("error"),
            raw=body,
            errors=errors or [],
        )

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def errors_to_pandas(self) -> pd.DataFrame:
        """The error report: ``row``, ``field``, ``reason``."""
        return frame_of(self.errors, ["row", "field", "reason"])


@dataclass(frozen=True)
class Overlap:
    """An overlap answer: ``count`` is None when suppressed (below min_audience)."""

    purpose: str
    count: int | None
    suppressed: bool
    min_audience: int
    breakdown: list[dict[str, Any]]
    raw: dict[str, Any]

    @classmethod
    def of(cls, body: dict[str, Any]) -> Overlap:
        return cls(
            purpose=str(body["purpose"]),
            count=body.get("count"),
            suppressed=bool(body.get("suppressed")),
            min_audience=int(body.get("min_audience") or 0),
            breakdown=list(body.get("breakdown") or []),
            raw=body,
        )

    def to_pandas(self) -> pd.DataFrame:
        """One row per breakdown cell: a column per attribute, ``count`` and ``suppressed``
        (a single row with the total when the question had no breakdown)."""
        pandas = _pandas()
        if not self.breakdown:
            return pandas.DataFrame([{"count": self.count, "suppressed": self.suppressed}])
        rows = [
            {**cell.get("values", {}), "count": cell.get("count"), "suppressed": cell["suppressed"]}
            for cell in self.breakdown
        ]
        frame = pandas.DataFrame(rows)
        frame["count"] = frame["count"].astype("Int64")  # suppressed cells are <NA>
        return frame


@dataclass(frozen=True)
class Balance:
    points: int
    local_points: int
    coalition_points: int | None  # None: the member did not consent to sharing with you
    raw: dict[str, Any]

    @classmethod
    def of(cls, body: dict[str, Any]) -> Balance:
        return cls(
            points=int(body["points"]),
            local_points=int(body["local_points"]),
            coalition_points=body.get("coalition_points"),
            raw=body,
        )


@dataclass(frozen=True)
class Feed:
    """Feed items since a cursor, and the cursor to pass next time (keep it: it is how far
    you have read)."""

    items: list[dict[str, Any]]
    next_cursor: str | None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.items)

    def to_pandas(self) -> pd.DataFrame:
        columns = ["id", "customer_ref", "kind", "points", "occurred_at", "source_partner_id"]
        frame = frame_of(self.items)
        if frame.empty:
            return frame_of([], columns)
        frame["occurred_at"] = _pandas().to_datetime(frame["occurred_at"], utc=True)
        return frame


@dataclass(frozen=True)
class AudienceChanges:
    """People who left your audience since a cursor: pull them out, then keep
    ``next_cursor``."""

    items: list[dict[str, Any]]
    next_cursor: str | None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.items)

    def to_pandas(self) -> pd.DataFrame:
        return frame_of(self.items)


@dataclass(frozen=True)
class Settlement:
    """A closed settlement statement; lines name partners by id (and by name when read one
    by one with :meth:`HubClient.settlement`)."""

    id: int
    period_start: str
    period_end: str
    currency: str
    point_value_minor: int
    lines: list[dict[str, Any]]
    raw: dict[str, Any]

    @classmethod
    def of(cls, body: dict[str, Any]) -> Settlement:
        return cls(
            id=int(body["id"]),
            period_start=str(body["period_start"]),
            period_end=str(body["period_end"]),
            currency=str(body["currency"]),
            point_value_minor=int(body["point_value_minor"]),
            lines=list(body.get("lines") or []),
            raw=body,
        )

    def to_pandas(self) -> pd.DataFrame:
        """One row per line, with the statement's id, period and currency."""
        frame = frame_of(self.lines)
        for position, (name, value) in enumerate(
            (
                ("settlement_id", self.id),
                ("period_start", self.period_start),
                ("period_end", self.period_end),
                ("currency", self.currency),
            )
        ):
            frame.insert(position, name, value)
        return frame


@dataclass(frozen=True)
class OfferResults:
    """An offer's measured lift (``GET /v1/offers/{id}/results``), per side and arm."""

    raw: dict[str, Any]

    def to_pandas(self) -> pd.DataFrame:
        """One row per side (per segment with ``by=``), the arms' figures and the lift
        flattened to columns such as ``treated.people`` or ``lift.absolute``."""
        rows: list[dict[str, Any]] = []
        for side in self.raw["sides"]:
            segments = side.get("segments")
            shared = {k: v for k, v in side.items() if k != "segments"}
            if segments:
                rows += [{**shared, **segment} for segment in segments]
            else:
                rows.append(shared)
        return frame_of(rows)
