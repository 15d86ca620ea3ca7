"""Outbound calls to URLs a caller gives (webhooks, later image inputs) go to public addresses only.

The host is resolved and every address it resolves to is checked, so `localhost`, a name
pointing at 10.0.0.5 and a literal 169.254.169.254 (cloud metadata) are all refused. Hosts
listed in `network.allowed_private_hosts` (names or addresses) are let through, for a
webhook receiver on the same private network.

`pin` then points the request at the address that was checked (with the original Host header and
TLS server name, so certificates are still checked against the host name): a second DNS answer,
as in DNS rebinding, cannot send the connection somewhere the check did not look.

IPv6 is judged by what a connection would reach: an address that carries an IPv4 one (IPv4-mapped
and -compatible, 6to4, NAT64 `64:ff9b::/96`, Teredo's server and client) is judged by that IPv4;
any other IPv6 address must be global unicast (`2000::/3`), outside the documentation
(`2001:db8::/32`) and local-use NAT64 (`64:ff9b:1::/48`) ranges. A refusal names the host the
caller gave, never what a name resolved to (that would tell any caller the internal DNS answers).
A host name is encoded with IDNA (punycode) for DNS, the Host header and TLS; one that cannot be
encoded (a label over 63 characters) is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

ALLOWED_SCHEMES = ("http", "https")
MAX_LABEL_CHARS = 63  # DNS: one label between dots
MAX_HOST_CHARS = 253
GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: the IPv4 address is the last 32 bits
NOT_PUBLIC_IPV6 = {
    ipaddress.ip_network("64:ff9b:1::/48"): "local-use NAT64",  # any prefix length, so no IPv4 to read back
    ipaddress.ip_network("2001:db8::/32"): "documentation",
}
REFUSAL_TAIL = (
    "this server only calls public addresses (an operator can allow a host in network.allowed_private_hosts)."
)


class BlockedUrl(ValueError):
    """A URL the server will not call; the message says why and what to do."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a connection to `address` really reaches, if it carries any."""
    if address.ipv4_mapped:
        return [address.ipv4_mapped]
    if address.teredo:
        return list(address.teredo)  # the server and the client; both must be public
    if address.sixtofour:
        return [address.sixtofour]
    if address in NAT64 or (int(address) >> 32 == 0 and int(address) > 1):  # NAT64, IPv4-compatible ::a.b.c.d
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return []


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """None for a public address, else what kind it is (loopback, private, ...)."""
    if address.version == 6:
        embedded = _embedded_ipv4(address)
        if embedded:
            return next((kind for kind in map(_kind, embedded) if kind), None)
        for network, kind in NOT_PUBLIC_IPV6.items():
            if address in network:
                return kind
    public = address.is_global and not address.is_multicast
    if public and (address.version == 4 or address in GLOBAL_UNICAST):
        return None
    for name in ("unspecified", "loopback", "link_local", "site_local", "multicast", "reserved", "private"):
        if getattr(address, f"is_{name}", False):
            return name.replace("_", "-")
    return "non-public"


def ascii_host(host: str, what: str = "URL") -> str:
    """`host` as DNS, the Host header and TLS take it: punycode for a Unicode name; BlockedUrl if it cannot be."""
    if _literal(host):
        return host
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise BlockedUrl(
                f"the {what} host {host!r} is not a valid international domain name (IDNA); check the URL."
            ) from None
    labels = host.removesuffix(".").split(".")
    if any(len(label) > MAX_LABEL_CHARS for label in labels):
        raise BlockedUrl(f"the {what} has a host label over {MAX_LABEL_CHARS} characters; DNS allows at most that.")
    if len(host) > MAX_HOST_CHARS or not all(labels):
        raise BlockedUrl(f"the {what} host {host!r} is not a valid host name; check the URL.")
    return host


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
    name = ascii_host(host, what)
    if name in allowed_private_hosts:
        return None
    addresses = _addresses(name, parts.port or (443 if parts.scheme == "https" else 80))
    for address in addresses:
        kind = _kind(address)
        if kind is not None and str(address) not in allowed_private_hosts:
            if _literal(name):  # the caller wrote the address: naming its kind tells them nothing new
                raise BlockedUrl(f"the {what} host {host!r} is a {kind} address, not a public one; {REFUSAL_TAIL}")
            # a name: never what it resolved to, which would show any caller the internal DNS answers
            raise BlockedUrl(f"the {what} host {host!r} is not a public address; {REFUSAL_TAIL}")
    return str(addresses[0])


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


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
    name = ascii_host(parts.hostname)
    host_header = (f"[{name}]" if ":" in name else name) + port
    pinned = parts._replace(netloc=f"{literal}{port}").geturl()
    return PinnedRequest(pinned, {"host": host_header}, {"sni_hostname": name})
