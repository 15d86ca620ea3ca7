"""Signed, expiring result URLs: they open without a key until they expire, like BFL's.

The signature is an HMAC-SHA256 over the path and the expiry time, with a secret every
ingress replica shares (FLUX_URL_SIGNING_KEY, or one generated once and kept in storage).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time

SIGNING_KEY_ENV = "FLUX_URL_SIGNING_KEY"


def load_signing_key(store) -> bytes:
    configured = os.environ.get(SIGNING_KEY_ENV)
    if configured:
        return configured.encode()
    return store.shared_secret("url-signing-key", lambda: secrets.token_hex(32)).encode()


class UrlSigner:
    def __init__(self, key: bytes, ttl_s: float):
        self.key = key
        self.ttl_s = ttl_s

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self.key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, path: str, now: float | None = None) -> str:
        """`path?exp=...&sig=...`, valid for ttl_s from now."""
        expires = int((now or time.time()) + self.ttl_s)
        return f"{path}?exp={expires}&sig={self._signature(path, expires)}"

    def check(self, path: str, expires: int | None, signature: str | None, now: float | None = None) -> str | None:
        """None if the URL is valid, else why not."""
        if expires is None or not signature:
            return "This image URL is not signed; use the URL from the job result."
        if not hmac.compare_digest(self._signature(path, expires).encode(), signature.encode()):
            return "This image URL's signature does not match; use the URL from the job result."
        if (now or time.time()) > expires:
            return "This image URL has expired; fetch the job again for fresh URLs."
        return None
