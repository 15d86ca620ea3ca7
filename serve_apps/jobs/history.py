"""Export job history to Parquet, one row per job, for billing and analysis."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from serve_apps.jobs.records import JobRecord
from serve_apps.store import JobsRepository

TIMING_STAGES = ("encode", "queue", "denoise", "decode", "store", "total")
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("model", pa.string()),
        ("key_id", pa.string()),
        ("status", pa.string()),
        ("created_at", pa.timestamp("ms", tz="UTC")),
        ("updated_at", pa.timestamp("ms", tz="UTC")),
        ("prompt", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("steps", pa.int32()),
        ("guidance", pa.float32()),
        ("seed", pa.int64()),
        ("num_images", pa.int32()),
        ("output_format", pa.string()),
        ("attempts", pa.int32()),
        ("error", pa.string()),
        ("batch_images", pa.int32()),
        ("batch_requests", pa.int32()),
        *[(f"{stage}_s", pa.float64()) for stage in TIMING_STAGES],
    ]
)


def job_row(record: JobRecord) -> dict:
    params = record.params
    return {
        "id": record.id,
        "model": record.model,
        "key_id": record.key_id,
        "status": record.status.value,
        "created_at": int(record.created_at * 1000),
        "updated_at": int(record.updated_at * 1000),
        **{
            name: getattr(params, name)
            for name in ("prompt", "width", "height", "steps", "guidance", "num_images", "output_format")
        },
        "seed": params.seed,
        "attempts": record.attempts,
        "error": record.error,
        "batch_images": record.batch.get("images"),
        "batch_requests": record.batch.get("requests"),
        **{f"{stage}_s": record.timings_s.get(stage) for stage in TIMING_STAGES},
    }


def export_history(db: JobsRepository, out_path: Path, key_id: str | None = None) -> int:
    """Write the jobs (of one key, or all) to `out_path` as Parquet, oldest first; returns the row count."""
    rows = [job_row(record) for record in db.all_jobs(key_id)]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out_path)
    return len(rows)
