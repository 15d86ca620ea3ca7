"""Caller-given URLs reach only public addresses: checked by address after resolving."""

from __future__ import annotations

import asyncio

import pytest

from serve_apps.network import BlockedUrl, check_public_url
from serve_apps.webhooks import deliver


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
