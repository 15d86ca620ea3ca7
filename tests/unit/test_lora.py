"""LoRA on the tiny emulated checkpoints: train, apply, refuse, evict, combine. No Ray."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from deployments.contracts import AdapterRef, DenoiseJob, GenerationParams, InvalidRequestError
from deployments.denoiser import Denoiser
from lora.adapter_file import AdapterMismatch, inspect_adapter
from lora.compat import check_compatible
from lora.shapes import linear_shapes
from training.dataset import DatasetError, load_examples, to_pixels
from training.lora_trainer import LoraTrainingConfig, train_lora
from training.shapes_world import SHAPES, Scene, draw

MODEL = "flux-2-klein-4b"


def write_red_dataset(folder: Path, count: int = 12) -> Path:
    """A strong visual signal: red shapes on red-orange grounds."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for index in range(count):
        scene = Scene(rng.choice(SHAPES), "red", "orange")
        draw(scene, rng).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(f"a {scene.shape}")
    return folder


@pytest.fixture(scope="module")
def red_adapter(tmp_path_factory):
    data = write_red_dataset(tmp_path_factory.mktemp("red-data"))
    config = LoraTrainingConfig(
        model=MODEL,
        data=data,
        out=tmp_path_factory.mktemp("red-lora"),
        trigger_word="redstyle",
        weights="emulated:tiny",
        steps=80,
        learning_rate=1e-2,
        tags=["style"],
        device="cpu",  # what the tests measure against, GPU or not
    )
    return train_lora(config, show_progress=False)


@pytest.fixture(scope="module")
def lora_denoiser():
    return Denoiser(MODEL, weights="emulated:tiny", max_loaded_adapters=2)


def mean_rgb(image_bytes: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"), dtype=np.float32).mean(axis=(0, 1))


def params(adapters=(), seed=3) -> GenerationParams:
    return GenerationParams(
        prompt="",
        width=64,
        height=64,
        steps=4,
        guidance=None,
        seed=seed,
        num_images=2,
        output_format="png",
        adapters=tuple(adapters),
    )


def request(prompt, adapters=(), seed=3) -> DenoiseJob:
    return DenoiseJob(params(adapters, seed), prompt)


def test_training_lowers_the_loss_and_writes_a_card(red_adapter):
    first, last = np.mean(red_adapter.losses[:10]), np.mean(red_adapter.losses[-10:])
    assert last < first * 0.9, (first, last)
    card = red_adapter.card_path.read_text()
    assert (
        "base_model: black-forest-labs/FLUX.2-klein-4B" in card
        and "`redstyle`" in card
        and "license: apache-2.0" in card
    )
    info = inspect_adapter(red_adapter.adapter_path)
    assert info.metadata["base_model"] == MODEL and info.metadata["trigger_word"] == "redstyle" and info.rank == 8


def latent_distance(denoiser: Denoiser, prompt, adapters, target: torch.Tensor) -> float:
    """Mean distance of generated latents to the training images' latents.

    Measured before the VAE: the tiny checkpoint's random-weight decoder maps most latents
    to similar grey images, so pixels would hide what the adapter learned.
    """
    denoiser.adapters.activate(adapters)
    noise = torch.stack([denoiser.initial_noise(seed, 64, 64) for seed in range(4)])
    with torch.no_grad():
        latents = denoiser.pipeline(
            prompt_embeds=prompt.embeds[None].repeat(4, 1, 1).to(denoiser.dtype),  # bf16 on the wire
            latents=noise,
            width=64,
            height=64,
            num_inference_steps=4,
            guidance_scale=1.0,
            output_type="latent",
            return_dict=False,
            max_sequence_length=denoiser.weights.max_sequence_length,
            text_encoder_out_layers=denoiser.weights.text_encoder_out_layers,
        )[0]
    return float((latents - target).abs().mean())


def test_adapter_moves_generation_toward_the_signal_and_leaves_the_rest_alone(red_adapter, lora_denoiser, encoder):
    fresh = Denoiser(MODEL, weights="emulated:tiny")
    pixels = to_pixels([image for image, _ in load_examples(red_adapter.config.data)], 64)
    with torch.no_grad():
        target = fresh.pipeline.vae.encode(pixels).latent_dist.mode().mean(dim=0)
    [prompt] = encoder.encode(["redstyle, a circle"])
    red = (AdapterRef("red", str(red_adapter.adapter_path), 1.0),)
    base_distance = latent_distance(fresh, prompt, (), target)
    assert latent_distance(lora_denoiser, prompt, red, target) < 0.9 * base_distance
    assert latent_distance(lora_denoiser, prompt, (), target) == base_distance
    [before] = fresh.generate([request(prompt)])
    [without] = lora_denoiser.generate([request(prompt)])
    assert without.images == before.images, "no adapter: identical to a fresh base model"


def test_batch_never_mixes_adapter_sets(red_adapter, lora_denoiser, encoder):
    [prompt] = encoder.encode(["a square"])
    red = AdapterRef("red", str(red_adapter.adapter_path), 1.0)
    plain, adapted = lora_denoiser.generate([request(prompt), request(prompt, [red])])
    assert plain.batch_requests == adapted.batch_requests == 1
    [alone] = lora_denoiser.generate([request(prompt, [red])])
    assert alone.images == adapted.images


def test_two_adapters_combine_with_scales(red_adapter, tmp_path, encoder):
    denoiser = Denoiser(MODEL, weights="emulated:tiny", max_loaded_adapters=2)
    [prompt] = encoder.encode(["a circle"])
    red = str(red_adapter.adapter_path)
    [one] = denoiser.generate([request(prompt, [AdapterRef("red", red, 1.0)])])
    [both] = denoiser.generate([request(prompt, [AdapterRef("red", red, 1.0), AdapterRef("red2", red, 0.5)])])
    [zero] = denoiser.generate([request(prompt, [AdapterRef("red", red, 0.0)])])
    [base] = denoiser.generate([request(prompt)])
    assert both.images != one.images
    assert mean_rgb(both.images[0])[0] - mean_rgb(one.images[0])[0] > 0, "1.5x the same direction is redder"
    assert np.abs(mean_rgb(zero.images[0]) - mean_rgb(base.images[0])).max() < 1.0, "scale 0 is the base model"


def test_lru_evicts_and_reloads(red_adapter, encoder):
    denoiser = Denoiser(MODEL, weights="emulated:tiny", max_loaded_adapters=1)
    [prompt] = encoder.encode(["a triangle"])
    path = str(red_adapter.adapter_path)
    [first] = denoiser.generate([request(prompt, [AdapterRef("a", path, 1.0)])])
    denoiser.generate([request(prompt, [AdapterRef("b", path, 0.5)])])
    assert list(denoiser.adapters.loaded.values()) == ["b"]
    [again] = denoiser.generate([request(prompt, [AdapterRef("a", path, 1.0)])])
    assert denoiser.adapters.loads == 3 and again.images == first.images


def test_adapter_for_the_other_variant_is_refused_before_any_work(red_adapter, denoiser, denoiser_9b, tmp_path):
    """Decided once, at registration: a request for the other variant is refused at submit."""
    from lora.registry import AdapterError, AdapterRegistry
    from lora.sources import AdapterSources
    from serve_apps.store import Database

    shapes = {
        model: linear_shapes(dict(worker.pipeline.transformer.config))
        for model, worker in ((MODEL, denoiser), ("flux-2-klein-9b", denoiser_9b))
    }
    folder = red_adapter.adapter_path.parent
    sources = AdapterSources([str(folder.parent)], cache_dir=tmp_path / "c")
    registry = AdapterRegistry(Database.open(f"sqlite:///{tmp_path / 'db'}").adapters, lambda: shapes, sources)
    registry.register("red", str(folder), owner_key_id="0123456789ab")
    with pytest.raises(AdapterError, match="registered by another API key"):
        registry.register("red", str(folder), owner_key_id="ffffffffffff")
    registry.register("red", str(folder), owner_key_id="0123456789ab")  # its owner may update it
    kept = registry.register("red", str(folder), owner_key_id="ffffffffffff", is_admin=True)  # and an admin key
    assert kept["owner_key_id"] == "0123456789ab"
    assert [record["id"] for record in registry.resolve(MODEL, [("red", 1.0)])] == ["red"]
    with pytest.raises(AdapterError, match="made for flux-2-klein-4b; this request targets flux-2-klein-9b"):
        registry.resolve("flux-2-klein-9b", [("red", 1.0)])


def test_tensors_alone_reveal_the_wrong_size(red_adapter, denoiser_9b):
    info = inspect_adapter(red_adapter.adapter_path)
    anonymous = type(info)(info.path, info.shapes, {})
    shapes = linear_shapes(dict(denoiser_9b.pipeline.transformer.config))
    with pytest.raises(AdapterMismatch, match="does not fit flux-2-klein-9b"):
        check_compatible("red", anonymous, "flux-2-klein-9b", shapes)
    check_compatible(
        "red", info, MODEL, linear_shapes(dict(Denoiser(MODEL, weights="emulated:tiny").pipeline.transformer.config))
    )


def test_flux1_kohya_adapter_is_refused(tmp_path):
    path = tmp_path / "flux1.safetensors"
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 3072)}, str(path))
    with pytest.raises(AdapterMismatch, match="FLUX.1 or SD adapter in kohya format"):
        check_compatible("old", inspect_adapter(path), MODEL, {})


def test_duplicate_adapter_and_wild_scale_are_bad_input():
    with pytest.raises(InvalidRequestError, match="listed twice"):
        params([AdapterRef("a", "p"), AdapterRef("a", "p")]).check()
    with pytest.raises(InvalidRequestError, match="outside -4..4"):
        params([AdapterRef("a", "p", 9.0)]).check()


def test_parquet_dataset_and_dataset_errors(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="PNG")
    pq.write_table(pa.table({"image": [buffer.getvalue()], "caption": ["a red square"]}), tmp_path / "d.parquet")
    [(image, caption)] = load_examples(tmp_path / "d.parquet")
    assert image.size == (32, 32) and caption == "a red square"
    folder = tmp_path / "no-captions"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    with pytest.raises(DatasetError, match="add a.txt"):
        load_examples(folder)


def test_sources_local_and_s3(red_adapter, tmp_path, s3_url, s3_endpoint):
    from lora.sources import AdapterSources, SourceError

    folder = red_adapter.adapter_path.parent
    assert AdapterSources([str(folder.parent)]).fetch(str(folder)) == red_adapter.adapter_path
    with pytest.raises(SourceError, match="outside the allowed folders"):
        AdapterSources([str(tmp_path)]).fetch(str(folder))
    with pytest.raises(SourceError, match="outside the allowed folders"):
        AdapterSources([str(folder)]).fetch(f"{folder}/../../../etc/passwd")
    import fsspec

    fs, root = fsspec.core.url_to_fs(s3_url, endpoint_url=s3_endpoint)
    fs.put_file(str(red_adapter.adapter_path), f"{root}/red/pytorch_lora_weights.safetensors")
    sources = AdapterSources(
        allowed_s3_prefixes=[s3_url], storage_options={"endpoint_url": s3_endpoint}, cache_dir=tmp_path / "cache"
    )
    local = sources.fetch(f"{s3_url}/red")
    assert local.read_bytes() == red_adapter.adapter_path.read_bytes()
    with pytest.raises(SourceError, match="only local paths, s3:// URLs"):
        sources.fetch("https://example.invalid/x.safetensors")


def test_s3_sources_are_allow_listed_size_capped_and_no_existence_oracle(red_adapter, tmp_path, s3_url, s3_endpoint):
    import fsspec

    from lora.sources import AdapterSources, SourceError

    fs, root = fsspec.core.url_to_fs(s3_url, endpoint_url=s3_endpoint)
    fs.put_file(str(red_adapter.adapter_path), f"{root}/allowed/red/pytorch_lora_weights.safetensors")
    fs.put_file(str(red_adapter.adapter_path), f"{root}/private/red.safetensors")
    fs.pipe_file(f"{root}/allowed/notes.txt", b"not an adapter")

    def sources(**settings) -> AdapterSources:
        settings.setdefault("allowed_s3_prefixes", [f"{s3_url}/allowed"])
        return AdapterSources(storage_options={"endpoint_url": s3_endpoint}, cache_dir=tmp_path / "c", **settings)

    with pytest.raises(SourceError, match="none configured") as nothing_allowed:
        sources(allowed_s3_prefixes=[]).fetch(f"{s3_url}/allowed/red")
    refusals = []
    for url in (
        f"{s3_url}/private/red.safetensors",  # exists, not allowed
        f"{s3_url}/allowed/missing.safetensors",  # allowed, missing
        f"{s3_url}/allowed/notes.txt",  # allowed, not safetensors
        f"{s3_url}/allowed/../private/red.safetensors",
    ):
        with pytest.raises(SourceError) as refused:
            sources().fetch(url)
        refusals.append(str(refused.value).replace(url, "URL"))
    assert len(set(refusals)) == 1, refusals
    assert "loras.allowed_s3_prefixes" in str(nothing_allowed.value)
    with pytest.raises(SourceError, match="over the download cap .*loras.max_download_bytes"):
        sources(max_download_bytes=100).fetch(f"{s3_url}/allowed/red")
    assert sources().fetch(f"{s3_url}/allowed/red").read_bytes() == red_adapter.adapter_path.read_bytes()


def test_hub_sources_are_allow_listed_and_size_checked_before_download(monkeypatch, tmp_path):
    import huggingface_hub

    from lora.sources import AdapterSources, SourceError

    with pytest.raises(SourceError, match="none configured .*loras.allowed_hub_orgs"):
        AdapterSources().fetch("someone/style")
    with pytest.raises(SourceError, match="allowed users or orgs: studio"):
        AdapterSources(allowed_hub_orgs=["studio"]).fetch("someone/style")
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url: type("Meta", (), {"size": 5 * 10**9}))
    monkeypatch.setattr(
        huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("downloaded a file over the cap")
    )
    with pytest.raises(SourceError, match="5,000,000,000 bytes, over the download cap"):
        AdapterSources(allowed_hub_orgs=["studio"], cache_dir=tmp_path).fetch("studio/style")


def test_a_file_that_is_not_safetensors_is_an_adapter_error(tmp_path):
    from lora.registry import AdapterError, AdapterRegistry
    from lora.sources import AdapterSources
    from serve_apps.store import Database

    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x00" * 64)
    registry = AdapterRegistry(
        Database.open(f"sqlite:///{tmp_path / 'db'}").adapters, dict, AdapterSources([str(tmp_path)])
    )
    with pytest.raises(AdapterError, match="not a readable safetensors file"):
        registry.register("fake", str(fake))


@pytest.mark.parametrize("metadata", ["[1, 2]", '"a string"', "3"])
def test_adapter_metadata_that_is_json_but_not_an_object_is_a_mismatch(tmp_path, metadata):
    import json
    import struct

    header = {
        "__metadata__": {"flux_serve": metadata},
        "x.lora_A.weight": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]},
    }
    encoded = json.dumps(header).encode()
    file = tmp_path / "odd.safetensors"
    file.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"\x00" * 4)
    with pytest.raises(AdapterMismatch, match="JSON but not an object"):
        inspect_adapter(file)
