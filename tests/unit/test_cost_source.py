"""The price quote's seconds per megapixel-step and the GPU prices come from one place (deployments/costs.py), which
the service and the bench both read, and the seconds are what the committed H100 run measured."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench import flux_bench
from bench.cost import load_config
from bench.report import build_rows, markdown, quoted_gpu_s_per_megapixel_step
from bench.runners import Cell, CellRun, Sample
from deployments.costs import GPUS, H100_RUN, RTX_4090_HOME, owned_usd_per_busy_hour, seconds_on, usd_per_gpu_hour
from deployments.registry import VARIANTS, get_variant
from deployments.weights import describe_weights
from serve_apps.config import PricingArgs

MODEL = "flux-2-klein-4b"
ROUNDING = 0.05  # the figures keep two digits of what was measured


def test_the_bench_and_the_service_quote_the_same_seconds_per_megapixel_step():
    for name, spec in VARIANTS.items():
        measured_on = PricingArgs(gpu_type=spec.cost.measured_on).gpu_s_per_megapixel_step[name]
        assert quoted_gpu_s_per_megapixel_step(name) == measured_on == spec.cost.gpu_s_per_megapixel_step, name
        assert spec.cost.measured_on in GPUS and spec.cost.source, f"{name}: where its figure comes from"


def test_the_quote_on_another_gpu_scales_the_measured_seconds_by_bf16_peak():
    """H100 seconds priced at an RTX 4090's hourly rate would quote a 4090 six times too cheap."""
    on_4090 = PricingArgs(gpu_type="rtx-4090").gpu_s_per_megapixel_step[MODEL]
    cost = get_variant(MODEL).cost
    assert on_4090 == pytest.approx(seconds_on(cost, "rtx-4090"), abs=1e-4)
    assert on_4090 == pytest.approx(cost.gpu_s_per_megapixel_step * 989 / 165, abs=1e-3)


@pytest.mark.parametrize("variant", ["flux-2-klein-4b", "flux-2-klein-9b"])
def test_the_figures_are_what_the_committed_h100_run_measured(variant):
    """The distilled default (1024x1024, 4 steps, batch 1): the whole request's GPU-seconds per megapixel-step."""
    [row] = [
        row
        for row in pq.read_table(H100_RUN).to_pylist()
        if (row["variant"], row["width"], row["height"], row["steps"], row["batch_size"]) == (variant, 1024, 1024, 4, 1)
    ]
    assert "H100" in row["device_name"] and row["weights"] == "emulated:real"
    measured = row["gpu_seconds_per_image"] / (1.0 * 4)
    assert get_variant(variant).cost.gpu_s_per_megapixel_step == pytest.approx(measured, rel=ROUNDING)


def test_the_bench_prices_each_gpu_as_the_one_table_does():
    bench = load_config(flux_bench.CONFIG_FILE).gpu_prices
    assert {gpu.bench_name: gpu.usd_per_hour for gpu in GPUS.values()} == {
        name: price.hourly_usd for name, price in bench.items()
    }
    for gpu in GPUS.values():
        assert bench[gpu.bench_name].bf16_tflops == gpu.bf16_tflops and gpu.source


def test_the_service_prices_each_gpu_as_the_one_table_does():
    assert PricingArgs().usd_per_gpu_hour == usd_per_gpu_hour()


def test_the_owned_card_is_its_power_plus_its_price_over_its_busy_hours():
    # 450 W x 0.30 USD/kWh = 0.135; 1,800 USD / (3 x 8,760 h x 50 %) = 0.137
    assert owned_usd_per_busy_hour(**RTX_4090_HOME) == pytest.approx(0.135 + 0.137, abs=1e-3)
    assert GPUS["rtx-4090"].usd_per_hour == 0.27


def run_of(cell: Cell, gpu_seconds_per_request: float) -> CellRun:
    images = [np.zeros((1, 1, 3), np.uint8)] * cell.batch_size
    timings = {stage: 0.1 for stage in ("encode", "queue", "denoise", "decode", "total")}
    return CellRun(cell, [Sample("p", images, timings, gpu_seconds_per_request)], 1.0, 1.0, None)


def test_the_bench_prints_the_measured_figure_beside_the_quoted_one():
    config = load_config(flux_bench.CONFIG_FILE)
    distilled = describe_weights(get_variant(MODEL), "emulated:real").defaults  # 4 steps, no CFG
    guided = describe_weights(get_variant(MODEL), "emulated").defaults  # the offline model: CFG, 2 passes a step
    assert not distilled.runs_cfg and guided.runs_cfg and guided.guidance > 1
    cell = Cell(MODEL, steps=4, batch_size=2, width=1024, height=1024)
    for defaults, passes in ((distilled, 1), (guided, 2)):
        [row] = build_rows(
            [run_of(cell, 1.5)],
            config,
            defaults={MODEL: defaults},
            mode="in-process",
            weights="emulated",
            device="cpu",
            device_name="cpu",
            gpu_fraction=1.0,
            clip=None,
            score_quality=False,
        )
        # 1.5 s for two 1 MP images of 4 steps
        assert row["gpu_s_per_megapixel_step"] == pytest.approx(1.5 / (2 * 4 * passes))
        assert row["quoted_gpu_s_per_megapixel_step"] == get_variant(MODEL).cost.gpu_s_per_megapixel_step
    table = markdown([row], config, {}, "", "flux-bench")
    assert "| 0.094 (0.19) |" in table and "CPU-seconds of this machine (not a GPU's)" in table
