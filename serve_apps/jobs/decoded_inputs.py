"""Input images decoded once per ingress replica: the same bytes sent with job after job (one character's reference
photos, by upload id or inline) are decoded, flattened and re-encoded as PNG once, then found by their digest.

Keyed by the sha256 of the bytes as they came (a URL is still fetched each time: what it serves may change) and how
they were read (image or mask, the pixel cap), so two requests share an entry only when they sent the same bytes;
bounded by `inputs.decoded_cache_bytes` (pixels and PNG), least recently used out. The safety check still runs per
request (its verdict depends on the request's tolerance).
"""

from __future__ import annotations

import hashlib

from cachetools import LRUCache

from serve_apps.jobs.inputs import DecodedImage


def entry_bytes(decoded: DecodedImage) -> int:
    return len(decoded.png) + decoded.width * decoded.height * len(decoded.image.getbands())


def input_key(data: bytes, as_mask: bool, max_pixels: int) -> tuple[str, bool, int]:
    return hashlib.sha256(data).hexdigest(), as_mask, max_pixels


class DecodedInputs:
    def __init__(self, max_bytes: int):
        self.entries: LRUCache | None = LRUCache(maxsize=max_bytes, getsizeof=entry_bytes) if max_bytes else None

    @property
    def held_bytes(self) -> int:
        return 0 if self.entries is None else self.entries.currsize

    def get(self, key: tuple) -> DecodedImage | None:
        return None if self.entries is None else self.entries.get(key)

    def put(self, key: tuple, decoded: DecodedImage) -> None:
        if self.entries is not None and entry_bytes(decoded) <= self.entries.maxsize:
            self.entries[key] = decoded
