"""Acting on the console over plain HTTP: sign in, read the CSRF token, post forms."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import httpx

from tests.conftest import Hub, run_cli

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def create_console_user(hub: Hub, username: str, password: str = PASSWORD) -> None:
    result = run_cli(hub, "admin", "users", "create", username, "--password", password)
    assert result.exit_code == 0, result.output


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


class Console:
    """A browser-like HTTP client of the console (cookies kept, redirects not followed)."""

    def __init__(self, hub: Hub) -> None:
        self.http = httpx.Client(base_url=hub.url, follow_redirects=False, timeout=30)
        self.csrf = ""

    def close(self) -> None:
        self.http.close()

    def sign_in(self, username: str, password: str = PASSWORD) -> httpx.Response:
        form = self.http.get("/admin/sign-in")
        return self.http.post(
            "/admin/sign-in",
            data={"_csrf": csrf_of(form.text), "username": username, "password": password},
        )

    def signed_in(self, username: str, password: str = PASSWORD) -> Console:
        response = self.sign_in(username, password)
        assert response.status_code == 303, response.text
        self.csrf = csrf_of(self.http.get("/admin").text)
        return self

    def post(self, path: str, data: dict[str, Any], **kw: Any) -> httpx.Response:
        return self.http.post(path, data={"_csrf": self.csrf, **data}, **kw)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def visible_text(html: str) -> str:
    """What a person reads on the page: text nodes only, no attributes (titles, links)."""
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


# Python reprs of None, booleans, lists and dicts: never on a page.
PYTHON_REPR = re.compile(r"\bNone\b|\bTrue\b|\bFalse\b|\[\s*'|\{\s*'|'\s*\]|'\s*:")
