"""API keys: plain keys from FLUX_API_KEYS, or a keys file holding only their SHA-256 hashes.

Only hashes are kept in memory; a key is identified by a short prefix of its hash, which is
what job records store, so a key never appears in storage or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

KEYS_ENV = "FLUX_API_KEYS"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key_hash: str) -> str:
    return key_hash[:12]


class ApiKeys:
    def __init__(self, key_hashes: set[str]):
        self.key_hashes = key_hashes

    @classmethod
    def from_environment(cls, keys_file: str | None = None) -> ApiKeys:
        hashes = {hash_key(key.strip()) for key in os.environ.get(KEYS_ENV, "").split(",") if key.strip()}
        if keys_file and Path(keys_file).exists():
            for line in Path(keys_file).read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    hashes.add(line.split()[0].removeprefix("sha256:").lower())
        return cls(hashes)

    def identify(self, key: str | None) -> str | None:
        """The key's id if it is valid, else None (constant-time comparison)."""
        if not key:
            return None
        candidate = hash_key(key)
        matched = False
        for known in self.key_hashes:
            matched |= hmac.compare_digest(candidate, known)
        return key_id(candidate) if matched else None


def key_from_headers(headers) -> str | None:
    """BFL's `x-key`, or `Authorization: Bearer` as the openai client sends it."""
    if headers.get("x-key"):
        return headers["x-key"].strip()
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None
