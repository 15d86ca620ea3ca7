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


def read_keys_file(keys_file: Path) -> list[dict]:
    """Entries of a keys file: `<sha256 hex> <name> <created>` per line, `#` comments."""
    entries = []
    if keys_file.exists():
        for line in keys_file.read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            if fields:
                entries.append(
                    {
                        "hash": fields[0].lower(),
                        "name": fields[1] if len(fields) > 1 else "",
                        "created": fields[2] if len(fields) > 2 else "",
                    }
                )
    return entries


def write_keys_file(keys_file: Path, entries: list[dict]) -> None:
    keys_file.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# flux-serve API keys: SHA-256 of each key, a name, when it was made. Keys themselves are never stored."]
    lines += [f"{entry['hash']} {entry['name']} {entry['created']}".rstrip() for entry in entries]
    keys_file.write_text("\n".join(lines) + "\n")
    keys_file.chmod(0o600)


ADMIN, USER = "admin", "user"


class ApiKeys:
    """Valid keys: FLUX_API_KEYS (the operator's: admin), the keys file (re-read when it changes:
    users), and the database's keys table (`flux-serve keys create`), looked up on every request
    so a revocation reaches every replica at once."""

    def __init__(self, key_hashes: set[str], keys_file: str | None = None, stored_keys=None):
        """`stored_keys` is the database's KeysRepository (None: only the static keys)."""
        self.env_hashes = key_hashes
        self.stored_keys = stored_keys
        self.keys_file = Path(keys_file) if keys_file else None
        self._file_mtime: float | None = None
        self._file_hashes: set[str] = set()
        self._reload_if_changed()

    @classmethod
    def from_environment(cls, keys_file: str | None = None, stored_keys=None) -> ApiKeys:
        hashes = {hash_key(key.strip()) for key in os.environ.get(KEYS_ENV, "").split(",") if key.strip()}
        return cls(hashes, keys_file, stored_keys)

    def _reload_if_changed(self) -> None:
        if self.keys_file is None:
            return
        mtime = self.keys_file.stat().st_mtime if self.keys_file.exists() else None
        if mtime != self._file_mtime:
            self._file_mtime = mtime
            self._file_hashes = {entry["hash"] for entry in read_keys_file(self.keys_file)}

    @property
    def key_hashes(self) -> set[str]:
        self._reload_if_changed()
        return self.env_hashes | self._file_hashes

    def configured(self) -> bool:
        return bool(self.key_hashes) or (self.stored_keys is not None and self.stored_keys.has_keys())

    def role(self, key: str | None) -> str | None:
        """ADMIN, USER, or None for an unknown key (constant-time comparison with the static keys)."""
        if not key:
            return None
        candidate = hash_key(key)
        in_env = in_file = False
        for known in self.env_hashes:
            in_env |= hmac.compare_digest(candidate, known)
        for known in self.key_hashes - self.env_hashes:
            in_file |= hmac.compare_digest(candidate, known)
        if in_env:
            return ADMIN
        if in_file:
            return USER
        return self.stored_keys.key_role(candidate) if self.stored_keys is not None else None

    def is_admin(self, headers) -> bool:
        """Whether the request's key is an admin key (it sees where the server keeps files)."""
        return self.role(key_from_headers(headers)) == ADMIN

    def identify(self, key: str | None) -> str | None:
        """The key's id if it is valid, else None."""
        return key_id(hash_key(key)) if self.role(key) else None


def key_from_headers(headers) -> str | None:
    """BFL's `x-key`, or `Authorization: Bearer` as the openai client sends it."""
    if headers.get("x-key"):
        return headers["x-key"].strip()
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None
