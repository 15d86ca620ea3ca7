"""Images a caller sends: where they come from, fetched safely, decoded and made uniform, before any model.

A source is base64 (bare or a `data:` URI), an http(s) URL, or an upload id. URLs go through
the network guard at every hop (redirects are followed by hand and each target re-checked),
each connection pinned to the address that was checked (so DNS rebinding cannot move it), with
a byte cap while streaming and one timeout for the whole download. Decoding reads the
header first and refuses a declared size over `max_pixels` before any pixel is decoded (a
decompression bomb); PIL's own MAX_IMAGE_PIXELS (89 M, an error at twice that) stays as it
is, a backstop above any sensible `max_pixels`. Every refusal is an InputRejected naming the field.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deployments.contracts import MAX_PIXELS
from serve_apps.config import InputArgs
from serve_apps.security.network import BlockedUrl, check_public_url_async, pin

UPLOAD_ID = re.compile(r"^upload_[0-9a-f]{32}\Z")
DATA_URI = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)
FORMATS = ("PNG", "JPEG", "WEBP")
REDIRECTS = (301, 302, 303, 307, 308)
UNCOMPRESSED = ("", "identity")  # Content-Encoding values read as they come; any other is refused, never decoded
WHITE = (255, 255, 255)
MAX_JPEG_SCANS = 100  # a progressive JPEG has about 10; each scan walks every coefficient again
NO_LENGTH_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RST0-7 stand alone
SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # how Pillow opens a 16-bit greyscale PNG


class InputRejected(ValueError):
    """An input image the service will not use; `field` names it, the message says what to change."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ImageSource:
    """Where one input image comes from: `kind` is 'bytes' (sent inline), 'url' or 'upload'."""

    field: str
    kind: str
    data: bytes = b""
    url: str = ""
    upload_id: str = ""


@dataclass(frozen=True)
class DecodedImage:
    """An input as stored: PNG bytes (RGB for images, L for masks), their sha256, the size, and the pixels."""

    png: bytes
    sha256: str
    width: int
    height: int
    image: Image.Image

    @property
    def name(self) -> str:
        return f"{self.sha256}.png"


def parse_source(field: str, value: str, max_bytes: int) -> ImageSource:
    """Tell a URL, an upload id and base64 apart; decode base64 (refusing it over max_bytes first)."""
    value = value.strip()
    if UPLOAD_ID.match(value):
        return ImageSource(field, "upload", upload_id=value)
    if value.lower().startswith("data:"):
        header = DATA_URI.match(value)
        if header is None or not header.group("b64"):
            raise InputRejected(field, "a data: URI must be base64, like data:image/png;base64,iVBOR...")
        value = value[header.end() :]
    elif re.match(r"^[a-z][a-z0-9+.-]*://", value, re.I):
        scheme = value.split(":", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise InputRejected(
                field, f"{scheme}:// URLs are not fetched; send an http(s) URL, base64 or an upload id."
            )
        return ImageSource(field, "url", url=value)
    if len(value) * 3 // 4 > max_bytes:
        raise InputRejected(field, too_big(max_bytes))
    try:
        data = base64.b64decode(re.sub(r"\s+", "", value), validate=True)
    except (binascii.Error, ValueError):
        raise InputRejected(
            field, "is not base64, an http(s) URL or an upload id (upload_...); check the value you sent."
        ) from None
    return ImageSource(field, "bytes", data=data)


def too_big(max_bytes: int) -> str:
    return f"the image is larger than {max_bytes / 2**20:g} MB (inputs.max_bytes); send a smaller file."


async def fetch_image(
    url: str, field: str, limits: InputArgs, allowed_private_hosts: list[str], transport=None
) -> bytes:
    """The body of an image URL, every hop's host checked public, at most `limits.max_bytes`, within
    `limits.timeout_s` in all. `transport` is for tests."""
    try:
        return await asyncio.wait_for(_fetch(url, field, limits, allowed_private_hosts, transport), limits.timeout_s)
    except asyncio.TimeoutError:
        raise InputRejected(
            field, f"the image URL did not finish downloading in {limits.timeout_s:g} s (inputs.timeout_s)."
        ) from None


async def _fetch(url: str, field: str, limits: InputArgs, allowed_private_hosts: list[str], transport) -> bytes:
    async with httpx.AsyncClient(follow_redirects=False, transport=transport, timeout=limits.timeout_s) as client:
        for _hop in range(limits.max_redirects + 1):
            try:
                target = pin(url, await check_public_url_async(url, allowed_private_hosts, f"{field} URL"))
            except BlockedUrl as blocked:
                raise InputRejected(field, str(blocked)) from None
            except ValueError:  # urllib's own: a bad IPv6 literal, a port out of range
                raise InputRejected(field, "the image URL is malformed; check it.") from None
            try:
                # the raw bytes are counted against the cap: httpx would decode gzip (even gzip of gzip) first
                headers = {"Accept": "image/*", "Accept-Encoding": "identity", **target.headers}
                async with client.stream("GET", target.url, headers=headers, extensions=target.extensions) as response:
                    if response.status_code in REDIRECTS and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise InputRejected(field, f"the image URL answered HTTP {response.status_code}; check it.")
                    encoding = response.headers.get("content-encoding", "").strip().lower()
                    if encoding not in UNCOMPRESSED:
                        raise InputRejected(
                            field,
                            f"the server at {urlsplit(url).hostname} sent a compressed image (Content-Encoding: "
                            f"{encoding}); serve it uncompressed.",
                        )
                    return await _read_capped(response, field, limits.max_bytes)
            except (httpx.HTTPError, httpx.InvalidURL) as error:
                raise InputRejected(field, f"the image URL could not be fetched ({type(error).__name__}).") from None
    raise InputRejected(
        field, f"the image URL redirects more than {limits.max_redirects} times (inputs.max_redirects)."
    )


async def _read_capped(response: httpx.Response, field: str, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise InputRejected(field, too_big(max_bytes))
    body = bytearray()
    async for chunk in _raw(response):
        body += chunk
        if len(body) > max_bytes:
            raise InputRejected(field, too_big(max_bytes))
    return bytes(body)


async def _raw(response: httpx.Response):
    """The body as sent, never decoded, so the cap counts what is read (httpx would inflate gzip first)."""
    if response.is_stream_consumed:  # already in memory: a test transport's `content=` body
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


def _open(data: bytes, field: str, max_pixels: int) -> Image.Image:
    """The image with its pixels loaded, refused by its header if too large or not PNG/JPEG/WebP."""
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError:
        raise InputRejected(
            field, f"the image declares over {max_pixels / 1e6:g} megapixels; send a smaller one."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputRejected(field, "is not an image (send PNG, JPEG or WebP).") from None
    if image.format not in FORMATS:
        raise InputRejected(field, f"is {image.format}; send PNG, JPEG or WebP.")
    width, height = image.size
    if width * height > max_pixels:
        raise InputRejected(
            field,
            f"the image declares {width}x{height} = {width * height / 1e6:.1f} megapixels, over the "
            f"{max_pixels / 1e6:g} allowed (inputs.max_pixels); send a smaller image.",
        )
    if image.format == "JPEG" and (scans := jpeg_scans(data)) > MAX_JPEG_SCANS:  # a scan bomb: seconds per scan
        raise InputRejected(
            field,
            f"the image is a JPEG with {scans} scans (at most {MAX_JPEG_SCANS}); re-save it as a baseline JPEG or PNG.",
        )
    if image.format == "JPEG" and width * height > 4 * MAX_PIXELS:
        image.draft("RGB", (width // 2, height // 2))  # decode a large JPEG at half scale: a quarter the memory
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InputRejected(field, "the image is truncated or damaged; send the whole file.") from None


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS markers) a JPEG holds, found as libjpeg finds them: each marker segment skipped by its
    length, and after each SOS the entropy-coded data, where FF00 is a stuffed byte and FFD0-FFD7 are restarts."""
    scans, at, end = 0, 2, len(data)  # after SOI
    while at + 1 < end:
        if data[at] != 0xFF:  # stray bytes between segments: libjpeg skips to the next FF, and so do we
            at = data.find(b"\xff", at)
            if at < 0:
                break
            continue
        marker = data[at + 1]
        at += 2
        if marker == 0xFF:  # a fill byte before a marker
            at -= 1
        elif marker == 0xD9:  # EOI
            break
        elif marker not in NO_LENGTH_MARKERS:
            at += int.from_bytes(data[at : at + 2], "big")
            if marker == 0xDA:
                scans += 1
                at = _entropy_coded_end(data, at)
    return scans


def _entropy_coded_end(data: bytes, at: int) -> int:
    """Where the entropy-coded data that starts at `at` ends: at the first marker that is not a restart."""
    while (at := data.find(b"\xff", at)) >= 0 and at + 1 < len(data):
        following = data[at + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            at += 2
        elif following == 0xFF:
            at += 1
        else:
            return at
    return len(data)


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit greyscale as 8-bit L (value >> 8; converting it would clip every value over 255 to white); its tRNS
    colour key, if any, kept as alpha (LA). Any other image as it is."""
    if image.mode not in SIXTEEN_BIT_GREY:
        return image
    values = np.asarray(image)
    grey = Image.fromarray(np.clip(values >> 8, 0, 255).astype(np.uint8), "L")
    key = image.info.get("transparency")
    if not isinstance(key, int):
        return grey
    return Image.merge("LA", (grey, Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8), "L")))


def _stored(image: Image.Image) -> DecodedImage:
    if image.width * image.height > MAX_PIXELS:  # no output is larger; the model sees references at 1 MP
        scale = (MAX_PIXELS / (image.width * image.height)) ** 0.5
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()
    return DecodedImage(png, hashlib.sha256(png).hexdigest(), image.width, image.height, image)


def decode_image(data: bytes, field: str, max_pixels: int) -> DecodedImage:
    """Upright (EXIF orientation applied), RGB with any transparency (alpha or a tRNS colour key) flattened
    onto white, 16-bit greyscale scaled to 8 bits, at most 4 MP."""
    image = _eight_bit(_open(data, field, max_pixels))
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, WHITE)
        image.paste(rgba, mask=rgba.getchannel("A"))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return _stored(image)


def decode_mask(data: bytes, field: str, max_pixels: int) -> DecodedImage:
    """A one-channel mask, 255 where the image is repainted: OpenAI's convention (transparent pixels are
    edited) when the mask has any transparency, else BFL's and diffusers' (white is edited), decided on the
    8-bit image (a 16-bit mask scaled to 8 bits first)."""
    image = _eight_bit(_open(data, field, max_pixels))
    if image.has_transparency_data:
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            return _stored(ImageOps.invert(alpha))
    return _stored(image.convert("L"))
