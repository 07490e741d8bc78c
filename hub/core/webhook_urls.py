"""Webhook URL policy: https only (http to loopback where configured), never a private address.

Checked when a URL is registered and again before every delivery, so a name that later
resolves into a private range (DNS rebinding) is still refused: no server-side request forgery.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from hub.core.errors import InvalidInput

FIELD = "webhook_url"


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return []  # not resolvable now; delivery checks again
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _refuse(url: str, reason: str) -> InvalidInput:
    return InvalidInput(
        f"webhook_url {url!r} is not allowed: {reason}.",
        errors=[{"index": 0, "field": FIELD, "reason": reason}],
        fix="Give a public https:// URL of your webhook receiver.",
    )


def check_webhook_url(url: str, *, allow_loopback_http: bool) -> str:
    """Return ``url`` if it may receive webhooks, or raise :class:`InvalidInput`."""
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise _refuse(url, "it must be an absolute https:// URL")
    if parts.username or parts.password:
        raise _refuse(url, "it must not carry credentials")
    addresses = _addresses(parts.hostname)
    loopback = bool(addresses) and all(a.is_loopback for a in addresses)
    if parts.scheme == "http" and not (allow_loopback_http and loopback):
        raise _refuse(url, "it must use https")
    if loopback:
        if not allow_loopback_http:
            raise _refuse(url, "it points to this machine")
        return url
    for address in addresses:
        if not address.is_global:
            raise _refuse(url, f"it resolves to a non-public address ({address})")
    return url
