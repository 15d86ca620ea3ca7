"""Input images decoded once per ingress replica: the same bytes sent with job after job (one character's reference
photos, by upload id or inline) are decoded, flattened and re-encoded as PNG once, then found by their digest.

Keyed by the sha256 of the bytes as they came (a URL is still fetched each time: what it serves may change) and how
they were read (image or mask, the pixel cap), so two requests share an entry only when they sent the same bytes;
bounded by `inputs.decoded_cache_bytes` (pixels and PNG), least recently used out. The safety check still runs per
request (its verdict depends on the request's tolerance).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from serve_apps.jobs.inputs import DecodedImage


def entry_bytes(decoded: DecodedImage) -> int:
    return len(decoded.png) + decoded.width * decoded.height * len(decoded.image.getbands())


def input_key(data: bytes, as_mask: bool, max_pixels: int) -> tuple[str, bool, int]:
    return hashlib.sha256(data).hexdigest(), as_mask, max_pixels


class DecodedInputs:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple, DecodedImage] = OrderedDict()
        self.held_bytes = 0

    def get(self, key: tuple) -> DecodedImage | None:
        decoded = self.entries.get(key)
        if decoded is not None:
            self.entries.move_to_end(key)
        return decoded

    def put(self, key: tuple, decoded: DecodedImage) -> None:
        size = entry_bytes(decoded)
        if size > self.max_bytes or key in self.entries:
            return
        self.entries[key] = decoded
        self.held_bytes += size
        while self.held_bytes > self.max_bytes:
            _, oldest = self.entries.popitem(last=False)
            self.held_bytes -= entry_bytes(oldest)
