"""Retention: finished jobs older than `jobs.retention_days` go, their images first, then the record;
uploads older than that go too (a job keeps its own copy of an upload's image under refs/).

Images are deleted before the record, so a crash in between leaves a record without images
(retried next time), never images nobody can find. The ingress sweeper runs it; the CLI
`flux-serve retention --dry-run` shows what would go.
"""

from __future__ import annotations

import time

from serve_apps.database import JobDatabase
from serve_apps.storage import JobStore

DAY_S = 86_400
BATCH = 500


def expired(db: JobDatabase, retention_days: float, now: float | None = None) -> list[str]:
    return db.expired_jobs((time.time() if now is None else now) - retention_days * DAY_S)


def apply_retention(db: JobDatabase, store: JobStore, retention_days: float, now: float | None = None) -> int:
    """Delete expired jobs (images, then records) and old uploads; returns how many jobs went."""
    cutoff_s = (time.time() if now is None else now) - retention_days * DAY_S
    job_ids = db.expired_jobs(cutoff_s)
    for start in range(0, len(job_ids), BATCH):
        batch = job_ids[start : start + BATCH]
        for job_id in batch:
            store.delete_job_files(job_id)
        db.delete(batch)
    store.delete_uploads_before(cutoff_s)
    return len(job_ids)
