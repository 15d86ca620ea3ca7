"""Caller-given URLs reach only public addresses: checked by address after resolving."""

from __future__ import annotations

import asyncio

import pytest

from serve_apps.jobs.webhooks import deliver
from serve_apps.security.network import BlockedUrl, check_public_url


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.5/hook", "private"),
        ("http://192.168.1.1/hook", "private"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://100.64.0.1/hook", "non-public"),  # carrier-grade NAT
    ],
)
def test_private_addresses_are_refused_with_the_reason(url, kind):
    if "localhost" in url:  # a name: refused without saying what it resolved to
        kind = "not a public address; this server only calls public addresses"
    else:
        kind = f"a {kind} address, not a public one; this server only calls public addresses"
    with pytest.raises(BlockedUrl, match=kind):
        check_public_url(url, [], "webhook_url")


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a00:5", "private"),  # NAT64 of 10.0.0.5
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("64:ff9b:1::a00:5", "local-use NAT64"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", "link-local"),  # 6to4 of 169.254.169.254
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        ("::10.0.0.5", "private"),
        ("::ffff:10.0.0.5", "private"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),  # Teredo, client 10.0.0.1 (obfuscated)
        ("2001:0:a00:1::", "private"),  # Teredo, server 10.0.0.1
        ("fec0::1", "site-local"),
        ("fc00::1", "private"),  # unique local
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("4000::1", "reserved"),  # outside 2000::/3
    ],
)
def test_ipv6_ranges_that_reach_a_private_ipv4_or_are_not_global_unicast_are_refused(address, kind):
    with pytest.raises(BlockedUrl) as caught:
        check_public_url(f"http://[{address}]/hook", [], "webhook_url")
    assert f"a {kind} address" in str(caught.value)


@pytest.mark.parametrize(
    "address",
    [
        "2606:4700:4700::1111",  # global unicast
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
        "::ffff:8.8.8.8",
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo: server 65.54.227.120, client 8.8.8.8
    ],
)
def test_ipv6_that_reaches_a_public_address_passes(address):
    assert check_public_url(f"http://[{address}]/hook", [], "webhook_url")


def test_a_name_that_resolves_inside_is_refused_without_saying_what_it_resolved_to(monkeypatch):
    import socket

    def internal_dns(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", port))]

    monkeypatch.setattr(socket, "getaddrinfo", internal_dns)
    with pytest.raises(BlockedUrl) as caught:
        check_public_url("http://db.internal.example/hook", [], "webhook_url")
    message = str(caught.value)
    assert "'db.internal.example' is not a public address" in message
    assert "10.20.30.40" not in message and "private" not in message.split(";")[0]
    check_public_url("http://db.internal.example/hook", ["10.20.30.40"], "webhook_url")  # still allowable
    check_public_url("http://db.internal.example/hook", ["db.internal.example"], "webhook_url")


def test_an_idn_host_is_resolved_and_pinned_in_punycode(monkeypatch):
    import socket

    from serve_apps.security.network import pin

    asked: list[str] = []

    def dns(host, port, *args, **kwargs):
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    url = "https://bücher.example/x.png"
    pinned = pin(url, check_public_url(url, [], "input_image URL"))
    assert asked == ["xn--bcher-kva.example"]
    assert pinned.headers == {"host": "xn--bcher-kva.example"}
    assert pinned.extensions == {"sni_hostname": "xn--bcher-kva.example"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://" + "a" * 64 + ".example.com/hook", "host label over 63 characters"),
        ("http://" + "ü" * 64 + ".example/hook", "host label over 63 characters|not a valid international"),
        ("http://a..example.com/hook", "not a valid host name"),
    ],
)
def test_a_host_dns_cannot_take_is_refused_not_a_crash(url, message):
    with pytest.raises(BlockedUrl, match=message):
        check_public_url(url, [], "webhook_url")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://127.0.0.1/"])
def test_other_schemes_are_refused(url):
    with pytest.raises(BlockedUrl, match="must be http:// or https://"):
        check_public_url(url, [], "webhook_url")


def test_a_public_address_passes_and_an_allowed_private_host_passes():
    check_public_url("https://93.184.215.14/hook", [])
    check_public_url("http://127.0.0.1:9/hook", ["127.0.0.1"])
    check_public_url("http://localhost:9/hook", ["localhost"])


def test_a_webhook_to_loopback_is_never_sent_and_not_retried():
    attempts: list[dict] = []

    async def record(attempt):
        attempts.append(attempt)

    delivered = asyncio.run(deliver("http://127.0.0.1:9/x", {}, None, "j", 3, 0.01, 1, [], on_attempt=record))
    assert not delivered and len(attempts) == 1
    assert "loopback address" in attempts[0]["error"]


def test_pin_sends_to_the_checked_address_with_the_host_name_kept():
    from serve_apps.security.network import pin

    pinned = pin("https://hooks.example.com:8443/a?b=1", "93.184.215.14")
    assert pinned.url == "https://93.184.215.14:8443/a?b=1"
    assert pinned.headers == {"host": "hooks.example.com:8443"}
    assert pinned.extensions == {"sni_hostname": "hooks.example.com"}, "TLS checks the certificate for the name"
    assert pin("http://hooks.example.com/a", "2606:2800:21f:cb07:6820:80da:af6b:8b2c").url.startswith("http://[2606:")
    assert pin("http://receiver.lan/a", None).url == "http://receiver.lan/a"


def test_a_webhook_goes_to_the_address_that_was_checked_not_a_second_dns_answer(monkeypatch):
    """DNS rebinding: the name resolves to an allowed address for the check, then elsewhere."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append({"host": self.headers["Host"]})
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    real_getaddrinfo = socket.getaddrinfo
    answers = iter(["127.0.0.1", "192.0.2.1", "192.0.2.1"])

    def rebinding_dns(host, port, *args, **kwargs):
        if host == "rebind.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    url = f"http://rebind.test:{server.server_port}/hook"
    try:
        delivered = asyncio.run(deliver(url, {"id": "j"}, "s3cret", "j", 1, 0.01, 2, ["127.0.0.1"]))
    finally:
        server.shutdown()
    assert delivered
    assert received[0]["host"] == f"rebind.test:{server.server_port}"


def test_bfl_signature_is_sent_beside_standard_webhooks():
    import hashlib
    import hmac

    from serve_apps.jobs.webhooks import signed_headers

    body = b'{"id": "j", "status": "Ready"}'
    headers = signed_headers("s3cret", "j", body, timestamp=1700000000)
    assert headers["x-bfl-signature"] == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["webhook-signature"].startswith("v1,")
    assert "x-bfl-signature" not in signed_headers(None, "j", body)


def test_a_webhook_url_with_a_label_over_63_characters_is_refused_at_submit_not_a_crash():
    """What submit checks: the URL as the request model keeps it (pydantic punycodes, but lets the label through);
    the BlockedUrl becomes a 422 on webhook_url."""
    from serve_apps.api.protocol import GenerateRequest

    for host in ("a" * 64 + ".example.com", "ü" * 64 + ".example"):
        request = GenerateRequest(prompt="a cat", webhook_url=f"https://{host}/hook")
        with pytest.raises(BlockedUrl, match="the webhook_url has a host label over 63 characters"):
            check_public_url(request.webhook_url, [], "webhook_url")
