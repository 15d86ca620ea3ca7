"""A finetune's training images, from a ZIP (BFL's `file_data`) or a multipart form's files, checked as
hostile input: every refusal a `InputRejected` naming the field and saying what to change.

A ZIP is read entry by entry with a cap on what each may inflate to (its declared size is not
trusted), so a zip bomb costs at most the cap; names with folders are taken by their file name
only when they cannot climb out (`../x`, absolute paths, drive letters are refused); macOS's
`__MACOSX/` and dot files are skipped; two entries with one name are refused. Images go through
the same decoder as any input (EXIF turned upright, transparency on white, at most `max_pixels`).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from serve_apps.jobs.decoding import decode_in_pool
from serve_apps.jobs.inputs import DecodedImage, InputRejected, decode_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CAPTION_SUFFIX = ".txt"
TARGET_SUFFIX = "_target"  # edit mode: name.png is the source, name_target.png what it becomes
MAX_CAPTION_BYTES = 2000
MAX_ZIP_ENTRIES = 400


@dataclass(frozen=True)
class DataLimits:
    min_images: int
    max_images: int
    max_image_bytes: int
    max_total_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class TrainingItem:
    name: str  # the file's stem
    image: DecodedImage
    caption: str | None
    target: DecodedImage | None = None


def safe_name(raw: str, field: str) -> str | None:
    """The entry's file name, or None for what a ZIP tool adds (folders, __MACOSX, dot files)."""
    if "\\" in raw or raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise InputRejected(field, f"the ZIP entry {raw[:80]!r} has an absolute or Windows path; zip the files alone.")
    path = PurePosixPath(raw)
    if ".." in path.parts:
        raise InputRejected(field, f"the ZIP entry {raw[:80]!r} climbs out of its folder ('..'); zip the files alone.")
    if raw.endswith("/") or "__MACOSX" in path.parts or path.name.startswith("."):
        return None
    return path.name


def read_zip(data: bytes, field: str, limits: DataLimits) -> dict[str, bytes]:
    """{file name: bytes} of a ZIP, each entry read with a cap whatever its header declares."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as error:
        raise InputRejected(field, f"is not a readable ZIP file ({error}); send base64 of a .zip of your images.")
    if len(entries) > MAX_ZIP_ENTRIES:
        raise InputRejected(field, f"the ZIP has {len(entries)} entries; at most {MAX_ZIP_ENTRIES} are read.")
    files: dict[str, bytes] = {}
    total = 0
    for entry in entries:
        name = safe_name(entry.filename, field)
        if name is None:
            continue
        cap = MAX_CAPTION_BYTES if name.lower().endswith(CAPTION_SUFFIX) else limits.max_image_bytes
        try:
            with archive.open(entry) as member:
                content = member.read(cap + 1)
        except (zipfile.BadZipFile, RuntimeError, ValueError, EOFError, NotImplementedError) as error:
            raise InputRejected(field, f"the ZIP entry {name!r} cannot be read ({error}); zip it again.") from None
        if len(content) > cap:
            raise InputRejected(field, f"{name!r} inflates past {cap // 1024} KB; send smaller files.")
        total += len(content)
        if total > limits.max_total_bytes:
            raise InputRejected(field, f"the ZIP's files add up past {limits.max_total_bytes // 2**20} MB.")
        add_file(files, name, content, field)
    return files


def add_file(files: dict[str, bytes], name: str, content: bytes, field: str) -> None:
    if name.lower() in {existing.lower() for existing in files}:
        raise InputRejected(field, f"two files are named {name!r}; give each image its own name.")
    files[name] = content


def pair_up(files: dict[str, bytes], field: str, edit_mode: bool) -> list[tuple[str, bytes, str | None, bytes | None]]:
    """(stem, image, caption, target) per training item; refuses files that are neither image nor caption."""
    images, captions = {}, {}
    for name, content in files.items():
        stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            if stem in images:
                raise InputRejected(field, f"two images have the stem {stem!r}; one of them needs another name.")
            images[stem] = content
        elif suffix == CAPTION_SUFFIX:
            captions[stem] = content.decode("utf-8", errors="replace").strip() or None
        else:
            raise InputRejected(
                field, f"{name!r} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a caption (.txt); remove it."
            )
    targets = {
        stem.removesuffix(TARGET_SUFFIX): images.pop(stem) for stem in list(images) if stem.endswith(TARGET_SUFFIX)
    }
    if edit_mode:
        unpaired = sorted(set(images) ^ set(targets))
        if unpaired:
            raise InputRejected(
                field,
                f"edit mode takes pairs name.png + name{TARGET_SUFFIX}.png; no partner for: {', '.join(unpaired[:5])}.",
            )
    elif targets:
        raise InputRejected(field, f"files named *{TARGET_SUFFIX} are edit pairs: use mode 'edit' or rename them.")
    orphans = sorted(set(captions) - set(images))
    if orphans:
        raise InputRejected(field, f"captions without an image of the same stem: {', '.join(orphans[:5])}.")
    return [(stem, images[stem], captions.get(stem), targets.get(stem)) for stem in sorted(images)]


async def decode_items(files: dict[str, bytes], field: str, limits: DataLimits, edit_mode: bool) -> list[TrainingItem]:
    """Every item decoded (in the decode pool), or InputRejected for the first bad one or a bad count."""
    items = pair_up(files, field, edit_mode)
    if not limits.min_images <= len(items) <= limits.max_images:
        unit = "pairs" if edit_mode else "images"
        raise InputRejected(
            field,
            f"{len(items)} training {unit}; send {limits.min_images}..{limits.max_images} (more than 5 train better).",
        )
    decoded = []
    for stem, image, caption, target in items:
        source = await decode_in_pool(decode_image, image, f"{field}: {stem}", limits.max_pixels)
        paired = await decode_in_pool(decode_image, target, f"{field}: {stem}", limits.max_pixels) if target else None
        decoded.append(TrainingItem(stem, source, caption, paired))
    return decoded
