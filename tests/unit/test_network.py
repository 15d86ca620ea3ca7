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
    with pytest.raises(BlockedUrl, match=f"a {kind} address; this server only calls public addresses"):
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
