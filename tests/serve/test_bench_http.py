"""flux-bench against the shared service over HTTP, at two concurrency levels."""

import pyarrow.parquet as pq
import pytest

from bench import flux_bench
from tests.serve.conftest import API_KEY

pytestmark = pytest.mark.serve


def test_bench_over_http_records_stages_and_metered_gpu_seconds(base_url, tmp_path):
    out = flux_bench.main(
        [
            "--url",
            base_url,
            "--key",
            API_KEY,
            "--variants",
            "flux-2-klein-4b",
            "--steps",
            "1,2",
            "--batch-sizes",
            "1",
            "--resolutions",
            "64",
            "--concurrency",
            "1,3",
            "--prompts",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert {(row["steps"], row["concurrency"]) for row in rows} == {(1, 1), (2, 1), (1, 3), (2, 3)}
    for row in rows:
        assert row["mode"] == "http" and row["requests"] == max(2, row["concurrency"])
        assert row["denoise_p50_s"] > 0 and row["queue_p50_s"] >= 0 and row["total_p50_s"] >= row["denoise_p50_s"]
        assert row["gpu_seconds_per_image"] > 0 and row["peak_memory_mb"] is None
    assert {row["ssim"] for row in rows if row["steps"] == 2} == {1.0}
