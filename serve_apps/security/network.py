"""Outbound calls to URLs a caller gives (webhooks, later image inputs) go to public addresses only.

The host is resolved and every address it resolves to is checked, so `localhost`, a name
pointing at 10.0.0.5 and a literal 169.254.169.254 (cloud metadata) are all refused. Hosts
listed in `network.allowed_private_hosts` (names or addresses) are let through, for a
webhook receiver on the same private network.

`pin` then points the request at the address that was checked (with the original Host header and
TLS server name, so certificates are still checked against the host name): a second DNS answer,
as in DNS rebinding, cannot send the connection somewhere the check did not look.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
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


def check_public_url(url: str, allowed_private_hosts: list[str], what: str = "URL") -> str | None:
    """Raise BlockedUrl unless `url` is http(s) and every address of its host is public (or allowed).

    Returns the checked address to connect to, or None for a host named in allowed_private_hosts."""
    parts = urlsplit(url)
    if parts.scheme not in ALLOWED_SCHEMES:
        raise BlockedUrl(f"the {what} must be http:// or https://, not {parts.scheme or 'schemeless'}.")
    host = parts.hostname
    if not host:
        raise BlockedUrl(f"the {what} has no host.")
    if host in allowed_private_hosts:
        return None
    addresses = _addresses(host, parts.port or (443 if parts.scheme == "https" else 80))
    for address in addresses:
        if not address.is_global and str(address) not in allowed_private_hosts:
            raise BlockedUrl(
                f"the {what} host {host!r} resolves to {address}, a {_kind(address)} address; this server only "
                "calls public addresses (an operator can allow a host in network.allowed_private_hosts)."
            )
    return str(addresses[0])


async def check_public_url_async(url: str, allowed_private_hosts: list[str], what: str = "URL") -> str | None:
    """The same, with the DNS lookup off the event loop."""
    return await asyncio.to_thread(check_public_url, url, allowed_private_hosts, what)


@dataclass(frozen=True)
class PinnedRequest:
    """What to pass to httpx: the URL with the checked address as its host, the Host header, the TLS name."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, str]


def pin(url: str, address: str | None) -> PinnedRequest:
    """`url` sent to `address` (as returned by check_public_url); unchanged when there is none to pin."""
    parts = urlsplit(url)
    if address is None:
        return PinnedRequest(url, {}, {})
    port = f":{parts.port}" if parts.port else ""
    literal = f"[{address}]" if ":" in address else address
    host_header = (f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname) + port
    pinned = parts._replace(netloc=f"{literal}{port}").geturl()
    return PinnedRequest(pinned, {"host": host_header}, {"sni_hostname": parts.hostname})
