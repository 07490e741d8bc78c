"""How the console writes a stored value for a person: the templates' one ``plain`` filter.

Audit details, offer filters and other JSON columns hold ``None``, booleans, lists and nested
objects. Jinja would print them as Python reprs (``None``, ``['a']``, ``{'k': 1}``, ``True``),
which read as a bug and leak the implementation; every page goes through :func:`plain` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Environment

NOTHING = "—"
# Longer values are cut on the page; the whole value stays one click (or hover) away.
SHORT = 120


def plain(value: Any, names: Mapping[str, str] | None = None) -> str:
    """``value`` as readable text: nothing as a dash, yes/no, lists joined with commas,
    objects as ``key: value`` pairs. Ids found in ``names`` are written as those names."""
    if value is None:
        return NOTHING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        if names is not None and value in names:
            return names[value]
        return value if value else '""'
    if isinstance(value, Mapping):
        if not value:
            return NOTHING
        return "; ".join(f"{plain(k, names)}: {plain(v, names)}" for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        if not value:
            return NOTHING
        return ", ".join(plain(item, names) for item in value)
    return str(value)


def shortened(text: str, limit: int = SHORT) -> str:
    """``text`` cut to about ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def register_filters(environment: Environment) -> None:
    environment.filters["plain"] = plain
    environment.filters["shortened"] = shortened
