"""Speed-ups on the CPU: the same images and embeddings as before, config errors that say what to change."""

from __future__ import annotations

import io
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from bench import acceleration_bench, flux_bench
from deployments.acceleration import EAGER, Acceleration, AccelerationError
from deployments.contracts import GenerationParams
from deployments.denoiser import Denoiser
from deployments.encoder import TextEncoder
from deployments.images import PIL_DEFAULT_PNG_LEVEL, ImageEncoder, encode_image, to_uint8
from serve_apps.config import AccelerationArgs, ModelArgs

MODEL = "flux-2-klein-4b"
CPU = torch.device("cpu")


def pixels_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# -- config -----------------------------------------------------------------------------------


def test_fp8_on_a_cpu_placement_is_refused_with_the_fix():
    with pytest.raises(ValidationError, match="fp8 needs a CUDA GPU.*set quantization: none"):
        ModelArgs(device="cpu", acceleration={"quantization": "fp8"})
    with pytest.raises(ValidationError, match="fp8 needs a CUDA GPU"):
        ModelArgs(num_gpus=0, acceleration={"quantization": "fp8"})
    ModelArgs(num_gpus=1, acceleration={"quantization": "fp8"})  # a GPU placement: checked at replica start


def test_gpu_only_attention_backend_on_cpu_is_refused():
    with pytest.raises(ValidationError, match="cudnn runs only on a CUDA GPU.*; use auto, flash or math"):
        ModelArgs(device="cpu", acceleration={"attention_backend": "cudnn"})
    with pytest.raises(ValidationError, match="attention_backend"):
        AccelerationArgs(attention_backend="flash3")
    with pytest.raises(ValidationError, match="quantization"):
        AccelerationArgs(quantization="int4")


def test_warmup_sizes_must_be_servable():
    with pytest.raises(ValidationError, match="multiples of 16 and at least 64, as requests' are"):
        AccelerationArgs(warmup_sizes=[[1000, 1000]])
    with pytest.raises(ValidationError, match="over 4194304 pixels"):
        AccelerationArgs(warmup_sizes=[[4096, 4096]])
    assert Acceleration.from_settings(AccelerationArgs(warmup_sizes=[[512, 512]]).model_dump()).warmup_sizes == (
        (512, 512),
    )


def test_config_becomes_the_workers_acceleration():
    acceleration = Acceleration.from_settings(AccelerationArgs(compile=True, png_compress_level=3).model_dump())
    assert acceleration == Acceleration(compile=True, png_compress_level=3)
    assert Acceleration.from_settings(AccelerationArgs().model_dump()) == Acceleration()


def test_auto_is_off_on_cpu_and_fp8_refused_at_start():
    resolved = Acceleration().resolve(CPU)
    assert (resolved.compile, resolved.fast_decode, resolved.gpu_jpeg) == (False, False, False)
    assert resolved.label == "eager"
    with pytest.raises(AccelerationError, match="fp8 needs a CUDA GPU.*Set quantization: none"):
        Acceleration(quantization="fp8").resolve(CPU)
    with pytest.raises(AccelerationError, match="efficient runs only on a CUDA GPU"):
        Acceleration(attention_backend="efficient").resolve(CPU)
    assert Acceleration(compile=True, quantization="fp8", fast_decode=True).label == "compile+fp8+fast-decode"


def test_png_level_out_of_range_teaches():
    with pytest.raises(ValueError, match="0 \\(fastest, largest\\) .. 9"):
        ImageEncoder(png_compress_level=12)


# -- text encoder -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["flux-2-klein-4b", "flux-2-klein-9b"])
def test_truncated_text_encoder_gives_identical_embeddings(model):
    full = TextEncoder(model, weights="emulated:tiny", truncate=False)
    cut = TextEncoder(model, weights="emulated:tiny")
    layers = len(full.pipeline.text_encoder.model.layers)
    assert len(cut.pipeline.text_encoder.model.layers) == max(cut.weights.text_encoder_out_layers) < layers
    assert isinstance(cut.pipeline.text_encoder.lm_head, torch.nn.Identity)
    prompts = ["a red circle on a blue background", "", "three green squares"]
    for a, b in zip(full.encode(prompts), cut.encode(prompts)):
        assert torch.equal(a.embeds, b.embeds)


def test_encoder_is_left_whole_where_the_cut_would_change_embeddings(monkeypatch):
    """The cut is checked on a probe prompt at start; a transformers that still normed the last state is caught."""
    from deployments import acceleration

    real_probe = acceleration._probe
    calls = []

    def probe(text_encoder, out_layers):
        states = real_probe(text_encoder, out_layers)
        calls.append(1)
        return states if len(calls) == 1 else [state + 1 for state in states]

    monkeypatch.setattr(acceleration, "_probe", probe)
    whole = TextEncoder(MODEL, weights="emulated:tiny")
    text_encoder = whole.pipeline.text_encoder
    assert len(text_encoder.model.layers) == text_encoder.config.num_hidden_layers == 4
    assert not isinstance(text_encoder.lm_head, torch.nn.Identity)
    assert getattr(text_encoder.config, "tie_last_hidden_states", None) is None
    monkeypatch.setattr(acceleration, "_probe", real_probe)
    reference = TextEncoder(MODEL, weights="emulated:tiny", truncate=False)
    assert torch.equal(whole.encode(["a red circle"])[0].embeds, reference.encode(["a red circle"])[0].embeds)


# -- image encoding ---------------------------------------------------------------------------


def test_uint8_matches_diffusers_postprocess(denoiser):
    pixels = torch.rand(2, 3, 32, 48) * 2.4 - 1.2  # beyond [-1, 1] too: clamped alike
    expected = denoiser.pipeline.image_processor.postprocess(pixels, output_type="pil")
    for image, array in zip(expected, to_uint8(pixels)):
        assert np.array_equal(np.asarray(image), array.numpy())


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_encoding_in_a_thread_gives_identical_bytes(output_format):
    pixels = to_uint8(torch.rand(3, 3, 64, 80) * 2 - 1)
    inline, threaded = ImageEncoder(threads=0), ImageEncoder(threads=2)
    try:
        first = [inline.submit(p, output_format).result()[0] for p in pixels]
        second = [f.result()[0] for f in [threaded.submit(p, output_format) for p in pixels]]
    finally:
        threaded.close()
    assert first == second
    direct = [encode_image(Image.fromarray(p.numpy()), output_format) for p in pixels]
    assert first == direct


def test_fast_png_keeps_every_pixel():
    image = Image.fromarray(to_uint8(torch.rand(1, 3, 64, 64) * 2 - 1)[0].numpy())
    fast = encode_image(image, "png")
    before = encode_image(image, "png", png_compress_level=PIL_DEFAULT_PNG_LEVEL)
    assert np.array_equal(pixels_of(fast), pixels_of(before))


def test_denoiser_images_are_the_same_with_encoding_inline_or_threaded(encoder, denoiser_factory):
    params = GenerationParams.with_defaults(
        denoiser_factory().defaults, "a red circle", width=64, height=64, seed=3, num_images=3, output_format="png"
    )
    job = encoder.job(params)
    # one image per pass: three passes, each encoded while the next runs
    inline = denoiser_factory(max_images_per_forward=1, acceleration=Acceleration(encode_threads=0)).generate([job])[0]
    threaded = denoiser_factory(max_images_per_forward=1).generate([job])[0]
    assert inline.images == threaded.images and len(inline.images) == 3
    assert threaded.timings_s["decode"] > 0


def test_warm_up_runs_the_configured_sizes(denoiser_factory):
    warmed = denoiser_factory(acceleration=Acceleration(warmup_sizes=((64, 64), (128, 64))))
    assert warmed.warmup_s > 0
    assert denoiser_factory().warmup_s == 0.0  # auto on a CPU: compile is off, nothing to warm up


# -- compile ----------------------------------------------------------------------------------


def test_compiled_denoiser_draws_what_eager_draws(encoder):
    """Regional torch.compile on the CPU (inductor, C++): the same images within rounding."""
    eager = Denoiser(MODEL, weights="emulated:tiny", acceleration=EAGER)
    compiled = Denoiser(MODEL, weights="emulated:tiny", acceleration=Acceleration(compile=True, warmup_sizes=()))
    blocks = list(compiled.pipeline.transformer.transformer_blocks) + list(
        compiled.pipeline.transformer.single_transformer_blocks
    )
    assert all(block._compiled_call_impl is not None for block in blocks)  # regional: each block compiled
    params = GenerationParams.with_defaults(
        eager.defaults, "a red circle", width=64, height=64, steps=2, seed=5, output_format="png"
    )
    job = encoder.job(params)
    [a], [b] = eager.generate([job]), compiled.generate([job])
    difference = np.abs(pixels_of(a.images[0]).astype(int) - pixels_of(b.images[0]).astype(int))
    assert difference.max() <= 2 and difference.mean() < 0.1


# -- benchmark CLI ----------------------------------------------------------------------------


def test_bench_cli_takes_the_speedup_flags():
    args = flux_bench.parse_args(
        ["--compile", "on", "--quantization", "none", "--attention-backend", "math", "--fast-decode", "off"]
        + ["--gpu-jpeg", "off", "--png-compress-level", "6", "--output-format", "jpeg"]
    )
    acceleration = flux_bench.acceleration(args)
    assert acceleration.compile is True and acceleration.attention_backend == "math"
    assert acceleration.png_compress_level == 6 and acceleration.warmup_sizes == ()
    assert {cell.output_format for cell in flux_bench.grid(args, {name: (64, 64) for name in args.variants})} == {
        "jpeg"
    }


def test_gpu_suite_dry_run_commands_parse(tmp_path):
    """Every flux-bench command bench/gpu_suite.sh runs is one the CLI accepts (checked here, on the CPU)."""
    suite = Path(__file__).parents[2] / "bench" / "gpu_suite.sh"
    printed = subprocess.run(
        ["bash", str(suite), "--dry-run", "--out", str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    commands = [shlex.split(line) for line in printed if "bench.flux_bench" in line]
    assert len(commands) == 8  # 2 variants x (eager, +compile, +FP8, +fast decode/encode)
    setups = set()
    for command in commands:
        args = flux_bench.parse_args(command[command.index("bench.flux_bench") + 1 :])
        assert args.weights == "emulated:real" and args.steps == [4] and args.resolutions == [(512, 512), (1024, 1024)]
        setups.add(flux_bench.acceleration(args).label)
    assert setups == {"eager", "compile", "compile+fp8", "compile+fp8+fast-decode"}
    assert any("bench.acceleration_bench summarize" in line for line in printed)


def test_gpu_suite_daily_loop_runs_issue_28s_gpu_figures_only(tmp_path):
    suite = Path(__file__).parents[2] / "bench" / "gpu_suite.sh"
    printed = subprocess.run(
        ["bash", str(suite), "--daily-loop", "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [line.split(" -m ")[1].split()[0] for line in printed] == [
        "bench.determinism",
        "bench.reference_cache",
        "bench.reference_cache",
    ]
    assert all("--weights emulated:real --device cuda --size 1024" in line for line in printed)
    assert "--model flux-2-klein-9b-kv" in printed[1]


def test_suite_summary_table(tmp_path):
    for setup, total_s in (("eager", 0.8), ("compile", 0.5)):
        folder = tmp_path / MODEL / setup
        folder.mkdir(parents=True)
        row = {"variant": MODEL, "width": 1024, "height": 1024, "steps": 4, "denoise_p50_s": total_s / 2}
        row |= {"decode_p50_s": 0.1, "encode_p50_s": 0.05, "total_p50_s": total_s, "peak_gpu_memory_mb": 20480.0}
        pq.write_table(pa.Table.from_pylist([row]), folder / "results.parquet")
    table = acceleration_bench.summarize(tmp_path)
    assert "| compile | 62.5 | 0.250 |" in table and "| 1.60x | 20.0 |" in table
    assert (tmp_path / "speedups.md").read_text() == table


def test_fp8_lets_9b_fit_a_24_gb_card_beside_nothing(tmp_path):
    """The planner counts the blocks' linear weights at one byte: 9B is ~13 GB with its VAE, ~22 GB in bf16."""
    from serve_apps.builder import ConfigError, validate_args
    from serve_apps.config import AppArgs

    def args(quantization: str) -> AppArgs:
        model = ModelArgs(
            weights="black-forest-labs/FLUX.2-klein-9B", num_gpus=0.6, acceleration={"quantization": quantization}
        )
        return validate_args(AppArgs(storage_url=str(tmp_path), gpu_memory_gb=24, models={"flux-2-klein-9b": model}))

    assert args("fp8").models["flux-2-klein-9b"].acceleration.quantization == "fp8"
    with pytest.raises(ConfigError, match="flux-2-klein-9b needs 21.8 GB but num_gpus 0.6 of a 24 GB GPU"):
        args("none")
