"""flux-bench on small grids, its cost arithmetic and quality scores; the bench scripts' flags and timer. No Ray."""

import argparse
import asyncio
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image
from pydantic import ValidationError

from bench import flux_bench
from bench.cost import GpuPrice, gpu_seconds_per_image, load_config, seconds_on, usd_per_image
from bench.eta_cost import measure
from bench.harness import bench_arguments, time_repeats
from bench.quality import psnr_db, ssim
from bench.report import COLUMNS, EDIT_COLUMNS, LANGUAGE_COLUMNS, REFERENCE_COLUMNS
from deployments.memory import text_encoder_params, transformer_params
from deployments.real_size import build_real_size_pipeline
from deployments.registry import get_variant
from serve_apps.jobs.estimates import QUEUE_READ_LIMIT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_cost_arithmetic_on_known_inputs():
    # a replica holding half a GPU for 2 s while making 4 images used 0.25 GPU-s per image
    assert gpu_seconds_per_image(2.0, 0.5, 4) == pytest.approx(0.25)
    assert usd_per_image(0.25, GpuPrice(usd_per_hour=3.6)) == pytest.approx(0.00025)
    home = GpuPrice(watts=500, usd_per_kwh=0.2, amortized_usd_per_hour=0.1)
    assert home.hourly_usd == pytest.approx(0.2)
    assert usd_per_image(36.0, home) == pytest.approx(0.002)


def test_seconds_measured_on_one_gpu_are_scaled_to_another_and_memory_decides_fit():
    fast = GpuPrice(usd_per_hour=2.0, bf16_tflops=1000, memory_gb=80)
    slow = GpuPrice(usd_per_hour=0.5, bf16_tflops=250, memory_gb=24)
    assert seconds_on(0.5, fast, slow) == pytest.approx(2.0) and seconds_on(0.5, fast, fast) == 0.5
    assert seconds_on(0.5, None, slow) == 0.5  # measured on no priced GPU: priced as measured
    assert slow.fits(20_000) and not slow.fits(23_518) and fast.fits(48_733) and slow.fits(None)
    config = load_config(flux_bench.CONFIG_FILE)
    named = {
        name: config.gpu_named(name)
        for name in ("NVIDIA H100 80GB HBM3", "NVIDIA L4", "NVIDIA L40S", "NVIDIA GeForce RTX 4090")
    }
    assert named == {
        "NVIDIA H100 80GB HBM3": "H100",
        "NVIDIA L4": "L4",
        "NVIDIA L40S": None,
        "NVIDIA GeForce RTX 4090": "RTX 4090 (home)",
    }


@pytest.mark.parametrize("fields", [{}, {"usd_per_hour": 1.0, "watts": 300, "usd_per_kwh": 0.3}])
def test_a_price_is_rented_or_owned_not_both_or_neither(fields):
    with pytest.raises(ValidationError, match="either usd_per_hour"):
        GpuPrice(**fields)


def test_shipped_config_prices_the_four_gpus():
    config = load_config(flux_bench.CONFIG_FILE)
    assert {"H100", "A100-80GB", "L4", "RTX 4090 (home)"} <= set(config.gpu_prices)
    assert config.hosted_reference_usd_per_image["flux-serve target"] == 0.03


def test_ssim_and_psnr_are_perfect_only_for_the_same_image():
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    image = np.stack(
        [np.tile(ramp, (64, 1)), np.tile(ramp[:, None], (1, 64)), np.full((64, 64), 128, np.uint8)], axis=2
    )
    noisy = np.clip(image.astype(int) + rng.integers(-40, 40, image.shape), 0, 255).astype(np.uint8)
    assert ssim(image, image) == pytest.approx(1.0) and math.isinf(psnr_db(image, image))
    assert ssim(noisy, image) < 0.9 and psnr_db(noisy, image) < 30


def _valid_png(path) -> bool:
    with open(path, "rb") as file:
        if file.read(8) != PNG_SIGNATURE:
            return False
    Image.open(path).verify()
    return True


def test_small_grid_in_process_on_the_trained_default(tmp_path):
    out = flux_bench.main(
        [*"--variants flux-2-klein-4b --steps 1,8 --batch-sizes 2 --prompts 3".split(), "--out", str(tmp_path)]
    )
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert set(COLUMNS) <= set(table[0])
    assert {"usd_per_image:H100", "usd_per_1000_images:RTX 4090 (home)"} <= set(table[0])
    by_steps = {row["steps"]: row for row in table}
    assert by_steps[8]["ssim"] == pytest.approx(1.0) and by_steps[8]["reference_steps"] == 8
    assert by_steps[1]["ssim"] < 0.95
    assert by_steps[8]["shapes_adherence"] is not None and by_steps[8]["clip_score"] is None
    assert all(
        row["images"] == 6 and row["peak_memory_mb"] > 0 and row["denoise_p95_s"] >= row["denoise_p50_s"]
        for row in table
    )
    assert by_steps[8]["denoise_p50_s"] > by_steps[1]["denoise_p50_s"]
    markdown = (out / "results.md").read_text()
    assert "Scores computed: SSIM and PSNR" in markdown and "Not computed: CLIP" in markdown and "$0.03" in markdown
    assert all(
        _valid_png(out / name) for name in ("latency_vs_steps.png", "quality_vs_steps.png", "cost_per_image.png")
    )


def test_random_weights_get_timings_but_no_quality_scores(tmp_path):
    out = flux_bench.main(
        [
            *"--weights emulated:tiny --variants flux-2-klein-4b --steps 1,2 --batch-sizes 1 --prompts 2".split(),
            "--out",
            str(tmp_path),
        ]
    )
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert all(row["ssim"] is None and row["shapes_adherence"] is None and row["total_p50_s"] > 0 for row in table)
    assert "Scores computed: none" in (out / "results.md").read_text()
    assert _valid_png(out / "quality_vs_steps.png")


def _unit(value) -> bool:
    return 0.0 <= value <= 1.0


def test_edit_language_and_reference_axes_each_give_their_rows(tmp_path):
    """One held-out edit per attribute, one scene, one seed, one step: rows and ranges, not score levels
    (the shipped checkpoint is retrained from time to time)."""
    out = flux_bench.main(
        [
            *"--variants flux-2-klein-4b --steps 1 --batch-sizes 1 --prompts 1".split(),
            *"--edits --languages en,ru --references 0,1,2 --seeds 1 --held-out 1".split(),
            "--out",
            str(tmp_path),
        ]
    )
    edits = pq.read_table(out / "edits.parquet").to_pylist()
    assert all(set(row) == set(EDIT_COLUMNS) for row in edits)
    assert [(row["language"], row["attribute"]) for row in edits] == [
        (language, attribute) for language in ("en", "ru") for attribute in ("all", "background", "colour", "shape")
    ]
    assert all(
        row["edits"] == (3 if row["attribute"] == "all" else 1) and row["images"] == row["edits"] for row in edits
    )
    assert all(_unit(row["asked"]) and _unit(row["kept"]) and _unit(row["shape_iou"]) for row in edits)
    assert all(row["steps"] == 1 and row["seconds_per_image"] > 0 for row in edits)

    languages = pq.read_table(out / "languages.parquet").to_pylist()
    assert all(set(row) == set(LANGUAGE_COLUMNS) for row in languages)
    assert [row["language"] for row in languages] == ["en", "ru"] and all(row["images"] == 1 for row in languages)
    assert all(_unit(row[key]) for row in languages for key in ("colour", "background", "shape", "all"))
    english, russian = languages
    assert english["all_vs_en"] is None and russian["all_vs_en"] == pytest.approx(russian["all"] - english["all"])

    references = pq.read_table(out / "references.parquet").to_pylist()
    assert all(set(row) == set(REFERENCE_COLUMNS) for row in references)
    assert [row["references"] for row in references] == [0, 1, 2]
    for row in references:
        assert (row["width"], row["height"]) == (64, 64) and row["image_tokens"] == 16  # 64x64 / 16x16 pixels a token
        assert row["reference_tokens"] == 16 * row["references"]
        assert row["tokens_per_step"] == row["image_tokens"] + row["reference_tokens"]
        assert row["quoted_vs_none"] == pytest.approx(1 + row["references"])
        assert row["total_p95_s"] >= row["total_p50_s"] > 0 and row["vs_none"] > 0
    assert references[0]["vs_none"] == 1.0 and references[0]["added_s"] == 0.0

    markdown = (out / "results.md").read_text()
    assert "## Edits (held-out)" in markdown and "## Prompt languages" in markdown
    assert "## Reference images" in markdown and "a 1024x1024 reference adds 4096 tokens" in markdown
    assert "flux-2-klein-4b 64x64, 1 step: none" in markdown


def _tiny_clip(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from deployments.tokenizer import train_tokenizer

    tokenizer = train_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def test_clip_score_when_a_local_clip_model_is_configured(tmp_path):
    _tiny_clip(tmp_path / "clip")
    config = yaml.safe_load(flux_bench.CONFIG_FILE.read_text())
    config["clip_model_path"] = str(tmp_path / "clip")
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(config))
    out = flux_bench.main(
        [
            *"--variants flux-2-klein-4b --steps 1,2 --batch-sizes 1 --resolutions 64 --prompts 2".split(),
            "--config",
            str(tmp_path / "bench.yaml"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert all(0 <= row["clip_score"] <= 100 for row in rows)
    assert "CLIP score from" in (out / "results.md").read_text()


def _bench_script_args(argv: list[str]) -> argparse.Namespace:
    """The flags every bench script shares (each adds its own on top)."""
    return argparse.ArgumentParser(parents=[bench_arguments()]).parse_args(argv)


FLUX_BENCH_REFUSALS = [
    (["--concurrency", "1,4"], "--concurrency needs --url"),
    (["--url", "http://127.0.0.1:9"], "--url needs --key"),
    (["--steps", "0,2"], "at least 1"),
    (["--resolutions", "64xbig"], "is not a resolution"),
    (["--resolutions", "100"], "--resolutions: 100 is not allowed; use a multiple of 16"),
    (["--steps", "1,80"], "--steps: 80 is outside 1..50"),
    (["--batch-sizes", "100"], "--batch-sizes: 100 is outside 1..12"),
    (["--variants", "flux-2-klein-4b,foo"], "Unknown model 'foo'"),
    (["--prompts", "0"], "at least 1"),
    (["--gpu-fraction", "0"], "more than 0 and at most 1"),
    (["--references", "0,9"], "reference counts from 0 to 8"),
    (["--languages", "en,de"], "prompt languages are en, ru"),
    (["--edits", "--weights", "emulated:tiny"], "score the shapes world's pictures"),
    (["--references", "0,1", "--url", "http://127.0.0.1:9", "--key", "k"], "--references: in-process only"),
    (["--held-out", "0"], "at least 1"),
]
BENCH_SCRIPT_REFUSALS = [
    (["--size", "100"], "--size: 100 is not allowed; use a multiple of 16"),
    (["--size", "big"], "not a whole number of pixels"),
    (["--model", "foo"], "Unknown model 'foo'"),
    (["--repeats", "0"], "at least 1"),
]


@pytest.mark.parametrize(
    "parse, argv, message",
    [(flux_bench.parse_args, *case) for case in FLUX_BENCH_REFUSALS]
    + [(_bench_script_args, *case) for case in BENCH_SCRIPT_REFUSALS],
)
def test_bad_arguments_say_what_to_change(parse, argv, message, capsys):
    """flux-bench's and the bench scripts' flags, refused before any model loads."""
    with pytest.raises(SystemExit):
        parse(argv)
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_real_size_refuses_without_a_gpu(capsys):
    with pytest.raises(SystemExit):
        flux_bench.parse_args(["--real-size"])
    assert "needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["flux-2-klein-4b", "flux-2-klein-9b"])
def test_real_size_pipeline_has_the_real_architecture(name):
    """Built on the meta device: the real parameter counts without allocating them."""
    variant = get_variant(name)
    pipeline = build_real_size_pipeline(variant, torch.device("meta"), torch.bfloat16)
    transformer = sum(p.numel() for p in pipeline.transformer.parameters())
    encoder = sum(p.numel() for p in pipeline.text_encoder.model.parameters())
    assert transformer == transformer_params(variant) and encoder == text_encoder_params(variant.text_encoder)
    assert pipeline.transformer.dtype == torch.bfloat16
    assert pipeline.transformer.config.joint_attention_dim == variant.text_encoder.embedding_dim


def test_timer_warms_up_and_prepares_untimed_and_keeps_every_repeat():
    calls = []
    timings = time_repeats(lambda: calls.append("run") or len(calls), repeats=3, before=lambda: calls.append("before"))
    assert calls == ["run", "before", "run", "before", "run", "before", "run"]
    assert len(timings.seconds) == 3 and timings.result == 7 and timings.best_s <= timings.median_s


def test_the_eta_cost_bench_times_real_reads_and_refusals_past_the_read_limit():
    """bench.eta_cost on a real SQLite queue deeper than the estimator reads: each row is timed, and a submit with
    an unmeetable deadline is refused (the bench raises if one was admitted instead)."""
    rows = asyncio.run(measure([0, QUEUE_READ_LIMIT + 10], repeats=2))
    assert [depth for depth, _, _ in rows] == [0, QUEUE_READ_LIMIT + 10]
    assert all(0 < plain_s < 5 and 0 < refused_s < 5 for _, plain_s, refused_s in rows)
