"""Retention: finished jobs older than `jobs.retention_days` go, their images first, then the record;
uploads older than that go too (a job keeps its own copy of an upload's image under refs/), and so
does every stored input image (refs/) that no remaining job names, once it is an hour old.

Images are deleted before the record, so a crash in between leaves a record without images
(retried next time), never images nobody can find. The ingress sweeper runs it; the CLI
`flux-serve retention --dry-run` shows what would go.
"""

from __future__ import annotations

import time

from serve_apps.store import JobsRepository
from serve_apps.store.storage import REFERENCE_REFRESH_S, JobStore

DAY_S = 86_400
BATCH = 500
# an input image is stored (or refreshed, when older than REFERENCE_REFRESH_S) just before its job's
# record is written: one younger than this may belong to a submit still in flight, or one refused
# after storing it (429), which goes on a later pass
REFERENCE_GRACE_S = 2 * REFERENCE_REFRESH_S


def expired(db: JobsRepository, retention_days: float, now: float | None = None) -> list[str]:
    return db.expired_jobs((time.time() if now is None else now) - retention_days * DAY_S)


def apply_retention(db: JobsRepository, store: JobStore, retention_days: float, now: float | None = None) -> int:
    """Delete expired jobs (images, then records), old uploads and unnamed input images; returns how
    many jobs went."""
    now = time.time() if now is None else now
    cutoff_s = now - retention_days * DAY_S
    job_ids = db.expired_jobs(cutoff_s)
    for start in range(0, len(job_ids), BATCH):
        batch = job_ids[start : start + BATCH]
        for job_id in batch:
            store.delete_job_files(job_id)
        db.delete(batch)
    store.delete_uploads_before(cutoff_s)
    delete_unnamed_references(db, store, now - REFERENCE_GRACE_S)
    return len(job_ids)


def delete_unnamed_references(db: JobsRepository, store: JobStore, written_before_s: float) -> int:
    """Delete stored input images no job names (their jobs expired, or the submit never made one).

    A submit on another replica may store one of them again after the database was asked and before
    its job row is written: each is deleted only if it is still older than `written_before_s` (the
    submit's write made it fresh), so the job never finds its input image gone."""
    candidates = store.references_written_before(written_before_s)
    unnamed = sorted(set(candidates) - db.inputs_in_use(candidates))
    return sum(store.delete_reference_written_before(name, written_before_s) for name in unnamed)
