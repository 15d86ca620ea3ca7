"""Webhook secrets encrypted at rest (AES-256-GCM): the database holds every job's record, and a
webhook's secret is needed again only at delivery, to sign the POST, so it is kept sealed there.

The key is a shared secret every replica reads, kept beside the URL-signing key in storage
(secrets/webhook-secret-key, 0600 locally) or set in FLUX_WEBHOOK_SECRET_KEY (on clusters, from a
Kubernetes Secret, like FLUX_URL_SIGNING_KEY). A sealed value names the job it belongs to, so one
copied into another job's record does not open. Records written before this keep their plain secret
until they are next saved.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

WEBHOOK_KEY_ENV = "FLUX_WEBHOOK_SECRET_KEY"
WEBHOOK_KEY_NAME = "webhook-secret-key"
SEALED_PREFIX = "aesgcm1:"
NONCE_BYTES = 12


class SecretNotOpened(ValueError):
    """A sealed secret this key cannot open: another key sealed it, or it was changed."""


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED_PREFIX)


class SecretBox:
    def __init__(self, key: str):
        self._aead = AESGCM(hashlib.sha256(key.encode()).digest())

    def seal(self, secret: str, job_id: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, secret.encode(), job_id.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(sealed).decode()

    def open(self, value: str, job_id: str) -> str:
        """The secret; a value stored before secrets were sealed is returned as it is."""
        if not is_sealed(value):
            return value
        try:
            sealed = base64.urlsafe_b64decode(value.removeprefix(SEALED_PREFIX))
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], job_id.encode()).decode()
        except (InvalidTag, ValueError):  # ValueError: not base64 (a secret sent that merely looks sealed)
            raise SecretNotOpened(
                f"job {job_id}: its webhook secret does not open with this key (sealed with another key, or "
                f"copied from another job). Every replica must read the same key: set {WEBHOOK_KEY_ENV} alike "
                f"everywhere, or share the storage folder holding secrets/{WEBHOOK_KEY_NAME}."
            ) from None


def load_webhook_secret_box(store) -> SecretBox:
    """The box every replica shares: FLUX_WEBHOOK_SECRET_KEY, or a key made once and kept in storage."""
    configured = os.environ.get(WEBHOOK_KEY_ENV)
    if configured:
        return SecretBox(configured)
    return SecretBox(store.shared_secret(WEBHOOK_KEY_NAME, lambda: secrets.token_hex(32)))
