"""Where the API is and which key to use: flags, then env (FLUX_API_URL, FLUX_API_KEY), then the local key file."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "FLUX_API_URL"
KEY_ENV = "FLUX_API_KEY"
KEY_FILE_ENV = "FLUX_SERVE_KEY_FILE"  # the same override `flux-serve run` honours


def local_key_file() -> Path:
    return Path(os.environ.get(KEY_FILE_ENV, Path.home() / ".config" / "flux-serve" / "api-key"))


def api_url(flag: str | None = None) -> str:
    return flag or os.environ.get(URL_ENV) or DEFAULT_URL


def api_key(flag: str | None = None) -> str | None:
    """The key to send, or None (the API then answers 401 and says how to send one)."""
    if flag:
        return flag
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    key_file = local_key_file()
    if key_file.is_file():
        return key_file.read_text().strip() or None
    return None
