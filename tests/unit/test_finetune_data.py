"""A finetune's training files as hostile input: every bad ZIP or form is a clear InputRejected, no bomb
inflates past its cap, and a good set comes out as decoded items with their captions."""

from __future__ import annotations

import asyncio
import io
import zipfile

import pytest
from PIL import Image

from serve_apps.jobs.finetune_data import DataLimits, decode_items, read_zip
from serve_apps.jobs.inputs import InputRejected

LIMITS = DataLimits(min_images=1, max_images=50, max_image_bytes=2**20, max_total_bytes=8 * 2**20, max_pixels=4 * 2**20)


def png(colour=(200, 20, 20), size=(32, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def zipped(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def refusal(call) -> str:
    with pytest.raises(InputRejected) as rejected:
        call()
    return rejected.value.message


def items_of(files: dict[str, bytes], edit_mode: bool = False, limits: DataLimits = LIMITS):
    return asyncio.run(decode_items(files, "file_data", limits, edit_mode))


def test_a_good_zip_gives_its_images_with_their_captions_and_skips_what_zip_tools_add():
    data = zipped(
        {
            "set/a.png": png(),
            "set/a.txt": "a red TOK",
            "set/b.jpg": png((20, 200, 20)),
            "__MACOSX/set/._a.png": b"junk",
            "set/.DS_Store": b"junk",
        }
    )
    items = items_of(read_zip(data, "file_data", LIMITS))
    assert [(item.name, item.caption) for item in items] == [("a", "a red TOK"), ("b", None)]
    assert items[0].image.width == 32


def test_a_zip_bomb_is_refused_at_its_cap_whatever_its_header_declares():
    bomb = zipped({"big.png": bytes(64 * 2**20)})  # 64 MiB of zeros: 64 KB on the wire
    assert len(bomb) < 200_000
    assert "inflates past" in refusal(lambda: read_zip(bomb, "file_data", LIMITS))


@pytest.mark.parametrize("name", ["../x.png", "a/../../x.png", "/etc/x.png", "C:/x.png", "a\\..\\x.png"])
def test_entries_that_climb_out_or_are_absolute_are_refused(name):
    assert "zip the files alone" in refusal(lambda: read_zip(zipped({name: png()}), "file_data", LIMITS))


def test_a_corrupt_zip_and_non_base64_bytes_are_refused_with_what_to_send():
    assert "not a readable ZIP" in refusal(lambda: read_zip(b"PK\x03\x04 broken", "file_data", LIMITS))
    truncated = zipped({"a.png": png()})[:-30]
    assert "ZIP" in refusal(lambda: read_zip(truncated, "file_data", LIMITS))


def test_duplicate_names_non_images_orphan_captions_and_counts_are_refused():
    assert "two files are named" in refusal(
        lambda: read_zip(zipped({"x/a.png": png(), "y/A.PNG": png()}), "file_data", LIMITS)
    )
    assert "neither an image" in refusal(lambda: items_of({"a.png": png(), "run.sh": b"rm -rf /"}))
    assert "captions without an image" in refusal(lambda: items_of({"a.png": png(), "b.txt": b"lost"}))
    assert "two images have the stem" in refusal(lambda: items_of({"a.png": png(), "a.jpg": png()}))
    few = DataLimits(3, 50, 2**20, 8 * 2**20, 4 * 2**20)
    assert "send 3..50" in refusal(lambda: items_of({"a.png": png()}, limits=few))


def test_a_file_that_is_not_an_image_is_refused_naming_it():
    assert "a" in refusal(lambda: items_of({"a.png": b"not a png at all"}))


def test_edit_mode_takes_pairs_and_refuses_a_lone_half():
    items = items_of({"cat.png": png(), "cat_target.png": png((20, 20, 200))}, edit_mode=True)
    assert [(item.name, item.target is not None) for item in items] == [("cat", True)]
    assert "no partner for: dog" in refusal(lambda: items_of({"dog.png": png()}, edit_mode=True))
    assert "use mode 'edit'" in refusal(lambda: items_of({"cat.png": png(), "cat_target.png": png()}))
