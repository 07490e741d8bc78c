"""Webhook URL policy: https only (http to loopback where configured), never a private address.

Checked when a URL is registered; the webhook sender (rewards issue) must check again before
every delivery, so that a name which later resolves into a private range (DNS rebinding) is still
refused: no server-side request forgery. A name that does not resolve at registration is
accepted for that later check.
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
        for candidate in (address, *_embedded_ipv4(address)):
            kind = _not_public_unicast(candidate)
            if kind is not None:
                raise _refuse(url, f"it resolves to {kind} address ({address})")
    return url


def _not_public_unicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What makes ``address`` unfit to receive a webhook, or None for a public unicast one.

    ``is_global`` alone lets multicast through (224.0.1.1 and ff0e::1 are "global"): a POST
    there reaches whatever listens on the group, so every non-unicast kind is named here."""
    checks = (
        ("an unspecified", address.is_unspecified),
        ("a multicast", address.is_multicast),
        ("a link-local", address.is_link_local),
        ("a reserved or broadcast", address.is_reserved),
        ("a non-public", not address.is_global),
    )
    return next((kind for kind, matches in checks if matches), None)


NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo:
        found.append(address.teredo[1])
    if any(address in net for net in NAT64):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found
