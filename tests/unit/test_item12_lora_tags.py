"""A registrant's tags never lift the safety tags an adapter file declares (issue 25): `tags: []` on
POST /v1/loras keeps the file's own `person` / `nsfw`, so the policy that refuses mixing them still applies."""

from __future__ import annotations

import json
import struct

import pytest

from lora.adapter_file import METADATA_KEY
from lora.registry import AdapterError, AdapterRegistry
from lora.sources import AdapterSources
from serve_apps.store import Database

MODEL = "flux-2-klein-4b"
SHAPES = {MODEL: {"x": (4, 4)}}


def adapter_file(folder, name: str, tags) -> str:
    """A header-only safetensors LoRA for SHAPES whose metadata declares `tags`."""
    header = {
        "__metadata__": {METADATA_KEY: json.dumps({"base_model": MODEL, "tags": tags})},
        "transformer.x.lora_A.weight": {"dtype": "F32", "shape": [1, 4], "data_offsets": [0, 16]},
        "transformer.x.lora_B.weight": {"dtype": "F32", "shape": [4, 1], "data_offsets": [16, 32]},
    }
    encoded = json.dumps(header).encode()
    path = folder / f"{name}.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(32))
    return str(path)


@pytest.fixture
def registry(tmp_path) -> AdapterRegistry:
    adapters = Database.open(f"sqlite:///{tmp_path / 'jobs.db'}").adapters
    return AdapterRegistry(adapters, lambda: SHAPES, AdapterSources([str(tmp_path)], cache_dir=tmp_path / "cache"))


def test_empty_tags_keep_the_files_person_and_nsfw(registry, tmp_path):
    someone = adapter_file(tmp_path, "someone", ["person", "style"])
    spicy = adapter_file(tmp_path, "spicy", ["NSFW"])
    assert registry.register("someone", someone, tags=[])["tags"] == ["person"], "style may go, person stays"
    assert registry.register("spicy", spicy, tags=["cartoon"])["tags"] == ["cartoon", "nsfw"]
    with pytest.raises(AdapterError, match="refused by policy"):
        registry.resolve(MODEL, [("someone", 1.0), ("spicy", 1.0)])


def test_a_registrant_may_add_tags_and_the_file_speaks_when_none_are_given(registry, tmp_path):
    plain = adapter_file(tmp_path, "plain", ["style"])
    assert registry.register("plain", plain)["tags"] == ["style"]
    assert registry.register("plain", plain, tags=["Person", "style"])["tags"] == ["person", "style"]
    assert registry.register("named", adapter_file(tmp_path, "named", "person"))["tags"] == ["person"]


def test_tags_that_are_not_a_list_of_strings_are_refused_with_the_fix(registry, tmp_path):
    odd = adapter_file(tmp_path, "odd", {"person": True})
    with pytest.raises(AdapterError, match="JSON list"):
        registry.register("odd", odd, tags=[])
