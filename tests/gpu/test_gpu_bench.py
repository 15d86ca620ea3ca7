"""flux-bench --real-size on a real GPU: full-size random weights, real latency and memory."""

import pyarrow.parquet as pq
import pytest
import torch

from bench import flux_bench

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_real_size_4b_at_512(tmp_path):
    out = flux_bench.main(
        [
            "--real-size",
            "--variants",
            "flux-2-klein-4b",
            "--steps",
            "1,4",
            "--batch-sizes",
            "1",
            "--resolutions",
            "512",
            "--prompts",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    rows = pq.read_table(out / "results.parquet").to_pylist()
    # 3.9 B transformer + 4.0 B encoder in bf16 are about 15 GiB
    assert all(row["device"] == "cuda" and row["peak_gpu_memory_mb"] > 14_000 for row in rows)
    assert all(row["device_name"] and row["usd_per_image:H100"] > 0 and row["ssim"] is None for row in rows)
    assert {row["steps"]: row["denoise_p50_s"] for row in rows}[4] > {
        row["steps"]: row["denoise_p50_s"] for row in rows
    }[1]
