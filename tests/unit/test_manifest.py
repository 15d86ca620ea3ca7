"""Image manifests: carried in PNG, JPEG and WebP files without touching a pixel, and digests that stay put."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from deployments import digests
from deployments.contracts import AdapterRef, GenerationParams, ReferenceImage
from deployments.digests import file_sha256, folder_sha256
from deployments.image_manifest import read_manifest
from deployments.images import encode_image
from deployments.manifest import Manifest, Provenance
from deployments.registry import spec_of
from deployments.weights import settings_to_weights


def sample_manifest(prompt: str = "a red circle") -> Manifest:
    params = GenerationParams(
        prompt=prompt,
        width=64,
        height=48,
        steps=4,
        guidance=4.0,
        seed=41,
        num_images=3,
        output_format="png",
        adapters=(AdapterRef("style", "/loras/style.safetensors", 0.8),),
        references=(ReferenceImage("ab" * 32, "refs/x.png", 64, 48),),
    )
    weights = settings_to_weights(spec_of("flux-2-klein-4b"), "emulated:real", {}, "test")
    provenance = Provenance("flux-2-klein-4b", "flux-2-klein-4b", "emulated:real", weights, "cpu", "float32")
    return provenance.manifest(params, {"/loras/style.safetensors": "cd" * 32}, ("compile",))


def pixels() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_the_manifest_round_trips_through_each_format_and_leaves_the_pixels_as_they_were(output_format):
    manifest = sample_manifest('ünïcode prompt, "quoted" and 🎨').for_image(2)
    with_manifest = encode_image(pixels(), output_format, manifest=manifest.to_json())
    without = encode_image(pixels(), output_format)
    assert read_manifest(with_manifest) == json.loads(manifest.to_json())
    assert read_manifest(without) is None
    decoded = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in (with_manifest, without)]
    assert np.array_equal(*decoded), "the manifest must not change a pixel"


def test_a_manifest_longer_than_one_jpeg_comment_spans_several_and_reads_back_whole():
    manifest = sample_manifest("🎨" * 10_000)  # JSON escapes each as 12 ASCII bytes: about 120 KB
    data = encode_image(pixels(), "jpeg", manifest=manifest.to_json())
    assert len(manifest.to_json()) > 65533
    assert read_manifest(data)["prompt"] == "🎨" * 10_000


def test_each_image_has_its_own_seed_and_the_job_manifest_holds_what_decided_the_images():
    manifest = sample_manifest()
    assert (manifest.seed, manifest.image) == (41, None)
    assert [(manifest.for_image(i).seed, manifest.for_image(i).image) for i in range(3)] == [(41, 0), (42, 1), (43, 2)]
    shown = json.loads(manifest.to_json())
    assert shown["loras"] == [{"id": "style", "sha256": "cd" * 32, "scale": 0.8}]
    assert shown["references"] == ["ab" * 32] and shown["mask"] is None
    assert shown["negative_prompt"] == "" and shown["guidance"] == 4.0 and shown["speedups"] == ["compile"]
    assert shown["weights"] == "emulated:real" and shown["weights_sha256"] is None, "built in memory: no files"
    assert set(shown["versions"]) == {"torch", "diffusers", "flux-serve"}
    assert shown["device"] == "cpu" and shown["dtype"] == "float32"
    assert "created" not in manifest.to_json() and manifest.to_json() == sample_manifest().to_json(), "nothing varies"
    assert manifest.to_json().isascii()


def test_a_local_checkpoint_is_named_by_its_folder_never_by_its_path(tmp_path):
    from deployments.manifest import shown_weights

    assert shown_weights("emulated:tiny") == "emulated:tiny"
    assert shown_weights("black-forest-labs/FLUX.2-klein-4B") == "black-forest-labs/FLUX.2-klein-4B"
    assert shown_weights(str(tmp_path)) == f"local:{tmp_path.name}"


def test_digests_are_stable_and_follow_the_content_not_the_place(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    (checkpoint / "transformer").mkdir(parents=True)
    (checkpoint / "model_index.json").write_text("{}")
    (checkpoint / "transformer" / "weights.safetensors").write_bytes(b"\x01" * 1000)
    (checkpoint / ".cache").mkdir()
    (checkpoint / ".cache" / "lock").write_text("ignored")
    first = folder_sha256(checkpoint)
    assert folder_sha256(checkpoint) == first
    assert folder_sha256(shutil.copytree(checkpoint, tmp_path / "elsewhere")) == first, "a copy is the same weights"
    (tmp_path / "elsewhere" / "transformer" / "weights.safetensors").write_bytes(b"\x02" * 1000)
    assert folder_sha256(tmp_path / "elsewhere") != first, "another file content is other weights"
    weights_file = checkpoint / "transformer" / "weights.safetensors"
    assert file_sha256(weights_file) == hashlib.sha256(b"\x01" * 1000).hexdigest()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no files"):
        folder_sha256(tmp_path / "empty")


def test_a_loaded_loras_file_digest_is_what_the_manifest_names(tmp_path):
    from deployments.denoiser import AdapterCache

    class Pipeline:
        def load_lora_weights(self, path, adapter_name):
            self.loaded = path

        def enable_lora(self):
            pass

        def set_adapters(self, names, scales):
            pass

    lora_file = tmp_path / "style.safetensors"
    lora_file.write_bytes(b"lora weights")
    adapters = AdapterCache(Pipeline(), 2, adapter_files=lambda adapter: lora_file)
    adapter = AdapterRef("style", "s3://bucket/style.safetensors", 0.8)
    adapters.activate((adapter,))
    assert adapters.sha256 == {adapter.source: hashlib.sha256(b"lora weights").hexdigest()}
    weights = settings_to_weights(spec_of("flux-2-klein-4b"), "emulated:real", {}, "test")
    provenance = Provenance("flux-2-klein-4b", "flux-2-klein-4b", "emulated:real", weights, "cpu", "float32")
    params = GenerationParams(prompt="p", width=64, height=64, steps=4, guidance=None, seed=1, adapters=(adapter,))
    manifest = provenance.manifest(params, adapters.sha256)
    assert [(lora.id, lora.sha256, lora.scale) for lora in manifest.loras] == [
        ("style", hashlib.sha256(b"lora weights").hexdigest(), 0.8)
    ]


def test_a_file_hashed_once_on_a_node_is_not_hashed_again_by_the_next_replica(tmp_path, monkeypatch):
    monkeypatch.setenv(digests.DIGEST_CACHE_ENV, str(tmp_path / "cache" / "file-digests.json"))
    weights_file = tmp_path / "weights.safetensors"
    weights_file.write_bytes(b"\x03" * 5000)
    expected = hashlib.sha256(b"\x03" * 5000).hexdigest()
    assert file_sha256(weights_file) == expected
    monkeypatch.setattr(digests, "_known", {})  # a new replica process: nothing in memory

    def no_reading(*_args, **_kwargs):
        raise AssertionError("hashed again")

    with monkeypatch.context() as patched:
        patched.setattr(digests.hashlib, "sha256", no_reading)
        assert file_sha256(weights_file) == expected, "read from the node's digest file"
    weights_file.write_bytes(b"\x04" * 5001)
    assert file_sha256(weights_file) == hashlib.sha256(b"\x04" * 5001).hexdigest(), "a changed file is hashed anew"
    monkeypatch.setenv(digests.DIGEST_CACHE_ENV, str(weights_file / "not-a-folder" / "digests.json"))
    monkeypatch.setattr(digests, "_known", {})
    assert file_sha256(weights_file) == hashlib.sha256(b"\x04" * 5001).hexdigest(), (
        "an unwritable cache only costs time"
    )
