"""What ETAs are computed from, read from the jobs table: a model's unfinished generation jobs in submit order, and
its last Ready ones. Both ride the (status, model, created_at) index; reads only, so they live apart from the jobs
repository's writes."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy import Engine, func, select

from serve_apps.jobs.records import GENERATE, JobRecord, JobStatus, Stage
from serve_apps.store.schema import jobs


def _record(row) -> JobRecord | None:
    """The row's record with its stage as the column says; None if unreadable (the sweeper quarantines those)."""
    try:
        record = JobRecord.model_validate_json(row.record)
    except ValidationError:
        return None
    record.stage = Stage(row.stage)
    return record


class JobStats:
    def __init__(self, engine: Engine):
        self.engine = engine

    def _read(self, query) -> list[JobRecord]:
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [record for record in map(_record, rows) if record is not None]

    def unfinished(self, model: str, limit: int) -> tuple[list[JobRecord], int]:
        """Up to `limit` Pending generation jobs of the model, oldest first, and how many more there are."""
        where = [jobs.c.status == JobStatus.PENDING.value, jobs.c.model == model, jobs.c.kind == GENERATE]
        records = self._read(select(jobs).where(*where).order_by(jobs.c.created_at).limit(limit))
        if len(records) < limit:
            return records, 0
        with self.engine.connect() as connection:
            total = int(connection.execute(select(func.count()).where(*where)).scalar_one())
        return records, max(0, total - len(records))

    def recent_ready(self, model: str, limit: int) -> list[JobRecord]:
        """The model's last `limit` Ready generation jobs, newest first."""
        where = (jobs.c.status == JobStatus.READY.value, jobs.c.model == model, jobs.c.kind == GENERATE)
        return self._read(select(jobs).where(*where).order_by(jobs.c.created_at.desc()).limit(limit))
