"""Outbound calls to URLs a caller gives (webhooks, later image inputs) go to public addresses only.

The host is resolved and every address it resolves to is checked, so `localhost`, a name
pointing at 10.0.0.5 and a literal 169.254.169.254 (cloud metadata) are all refused. Hosts
listed in `network.allowed_private_hosts` (names or addresses) are let through, for a
webhook receiver on the same private network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

ALLOWED_SCHEMES = ("http", "https")


class BlockedUrl(ValueError):
    """A URL the server will not call; the message says why and what to do."""


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    for name in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    return "non-public"


def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise BlockedUrl(f"the host {host!r} does not resolve; check the URL.") from None
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        addresses.append(address.ipv4_mapped or address if address.version == 6 else address)
    return addresses


def check_public_url(url: str, allowed_private_hosts: list[str], what: str = "URL") -> None:
    """Raise BlockedUrl unless `url` is http(s) and every address of its host is public (or allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ALLOWED_SCHEMES:
        raise BlockedUrl(f"the {what} must be http:// or https://, not {parts.scheme or 'schemeless'}.")
    host = parts.hostname
    if not host:
        raise BlockedUrl(f"the {what} has no host.")
    if host in allowed_private_hosts:
        return
    for address in _addresses(host, parts.port or (443 if parts.scheme == "https" else 80)):
        if not address.is_global and str(address) not in allowed_private_hosts:
            raise BlockedUrl(
                f"the {what} host {host!r} resolves to {address}, a {_kind(address)} address; this server only "
                "calls public addresses (an operator can allow a host in network.allowed_private_hosts)."
            )


async def check_public_url_async(url: str, allowed_private_hosts: list[str], what: str = "URL") -> None:
    """The same, with the DNS lookup off the event loop."""
    await asyncio.to_thread(check_public_url, url, allowed_private_hosts, what)
