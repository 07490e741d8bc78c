"""The console's ``plain`` filter: stored values read as text, never as Python reprs."""

from __future__ import annotations

from jinja2 import Environment

from hub.console.display import plain, register_filters, shortened


def test_nothing_booleans_lists_and_objects_read_as_text() -> None:
    assert plain(None) == "—"
    assert plain(True) == "yes"
    assert plain(False) == "no"
    assert plain(["analytics", "joint_offers"]) == "analytics, joint_offers"
    assert plain([]) == "—"
    assert plain({}) == "—"
    assert plain({"a": 1, "b": None, "c": [True, "x"]}) == "a: 1; b: —; c: yes, x"
    assert plain(0) == "0"
    assert plain(2.5) == "2.5"


def test_known_ids_are_written_as_names_wherever_they_sit() -> None:
    names = {"id-1": "Skyways", "id-2": "Beanery"}
    assert plain("id-1", names) == "Skyways"
    assert plain({"members": ["id-1", "id-2"], "partner": "id-3"}, names) == (
        "members: Skyways, Beanery; partner: id-3"
    )


def test_a_long_value_is_cut_with_an_ellipsis_and_a_short_one_kept() -> None:
    assert shortened("short") == "short"
    cut = shortened("word " * 60)
    assert len(cut) <= 120
    assert cut.endswith("…")
    assert ("word " * 60).startswith(cut[:-1])


def test_templates_render_values_through_the_filter() -> None:
    environment = Environment(autoescape=True)
    register_filters(environment)
    template = environment.from_string("{{ v|plain }}")
    assert template.render(v={"k": ["a", None]}) == "k: a, —"
