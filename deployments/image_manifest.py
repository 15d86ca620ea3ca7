"""A manifest inside an image file, where each format keeps text, and read back from it.

PNG: a tEXt chunk keyed `flux-serve`. JPEG: COM segments right after the start marker, added to the encoded bytes (so
the GPU's JPEG path gets them too); one segment holds 65,533 bytes, a longer manifest spans several, read back in
order. WebP: EXIF UserComment, ASCII. None touches the pixels: the text sits beside the image data.
"""

from __future__ import annotations

import io
import json

from PIL import ExifTags, Image, PngImagePlugin

from deployments.manifest import MANIFEST_KEY

JPEG_START = b"\xff\xd8"
JPEG_COMMENT = b"\xff\xfe"
JPEG_COMMENT_MAX_BYTES = 65533  # a segment's 2-byte length counts itself
EXIF_ASCII = b"ASCII\0\0\0"  # UserComment's 8-byte character code


def save_options(output_format: str, manifest: str) -> dict:
    """What PIL's `save` is given so the file carries `manifest` (JPEG's is added after, `with_jpeg_comment`)."""
    if output_format == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text(MANIFEST_KEY, manifest)
        return {"pnginfo": info}
    if output_format == "webp":
        exif = Image.Exif()
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = EXIF_ASCII + manifest.encode("ascii")
        return {"exif": exif.tobytes()}
    return {}


def with_jpeg_comment(data: bytes, text: str) -> bytes:
    """The JPEG with `text` in COM segments after its start marker; the compressed image is left as it was."""
    if not data.startswith(JPEG_START):
        raise ValueError("not a JPEG: it does not start with the FFD8 marker")
    encoded = text.encode("ascii")
    pieces = [encoded[at : at + JPEG_COMMENT_MAX_BYTES] for at in range(0, len(encoded), JPEG_COMMENT_MAX_BYTES)]
    segments = b"".join(JPEG_COMMENT + (len(piece) + 2).to_bytes(2, "big") + piece for piece in pieces)
    return JPEG_START + segments + data[len(JPEG_START) :]


def read_manifest(data: bytes) -> dict | None:
    """The manifest a flux-serve image carries, or None for an image without one."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "PNG":
            text = image.text.get(MANIFEST_KEY)
        elif image.format == "JPEG":
            text = b"".join(payload for marker, payload in image.applist if marker == "COM").decode("ascii") or None
        else:
            comment = image.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
            text = comment[len(EXIF_ASCII) :].decode("ascii") if comment and comment.startswith(EXIF_ASCII) else None
    return None if text is None else json.loads(text)
