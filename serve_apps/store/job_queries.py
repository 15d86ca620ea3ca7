"""What the jobs repository answers without changing a row: a key's history, usage and jobs of a kind, the queue
ahead of a job, counts, exports, and what retention may delete. A mixin of JobsRepository (serve_apps/store/jobs.py),
which gives it `engine`, `_record` (a row read as its kind's record) and `_known_kind`.
"""

from __future__ import annotations

from sqlalchemy import func, select

from serve_apps.jobs.records import GENERATE, JobState, JobStatus, Stage
from serve_apps.store.schema import job_references, jobs

NEWEST_FIRST_BASE_MS = 10**16
IN_CLAUSE_SIZE = 500


def history_cursor(record_created_at: float, job_id: str) -> str:
    return f"{NEWEST_FIRST_BASE_MS - int(record_created_at * 1000):016d}_{job_id}"


class JobQueries:
    def history(self, key_id: str, limit: int, cursor: str | None = None) -> tuple[list[JobState], str | None]:
        """A key's generation jobs, newest first, after `cursor`; and the cursor of the next page."""
        query = select(jobs).where(jobs.c.key_id == key_id, jobs.c.kind == GENERATE)
        with self.engine.connect() as connection:
            if cursor:
                after_id = cursor.partition("_")[2]
                created_at = connection.execute(
                    select(jobs.c.created_at).where(jobs.c.id == after_id, jobs.c.key_id == key_id)
                ).scalar_one_or_none()
                if created_at is None:
                    return [], None
                query = query.where(
                    (jobs.c.created_at < created_at) | ((jobs.c.created_at == created_at) & (jobs.c.id > after_id))
                )
            rows = connection.execute(query.order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit + 1)).all()
        records = [record for record in (self._record(row) for row in rows[:limit]) if record]
        next_cursor = history_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        return records, next_cursor

    def jobs_ahead(self, record: JobState) -> int:
        """Jobs of the same kind and model submitted earlier that have not started denoising."""
        query = select(func.count()).where(
            jobs.c.kind == record.kind,
            jobs.c.model == record.model,
            jobs.c.status == JobStatus.PENDING.value,
            jobs.c.stage != Stage.DENOISING.value,
            jobs.c.created_at < record.created_at,
        )
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def usage(self, key_id: str) -> dict[str, dict]:
        """Per model: jobs with metered usage, their images, GPU-seconds and cost."""
        query = (
            select(
                jobs.c.model,
                func.count(),
                func.coalesce(func.sum(jobs.c.images), 0),
                func.sum(jobs.c.gpu_seconds),
                func.sum(jobs.c.cost_usd),
            )
            .where(jobs.c.key_id == key_id, jobs.c.gpu_seconds.is_not(None))
            .group_by(jobs.c.model)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return {
            model: {"jobs": count, "images": int(images), "gpu_seconds": float(gpu), "cost_usd": float(cost)}
            for model, count, images, gpu, cost in rows
        }

    def of_kind(self, kind: str, key_id: str) -> list[JobState]:
        """A key's jobs of one kind (finetunes: at most a quota of them), oldest first."""
        query = select(jobs).where(jobs.c.kind == kind, jobs.c.key_id == key_id).order_by(jobs.c.created_at)
        with self.engine.connect() as connection:
            return [record for record in map(self._record, connection.execute(query)) if record is not None]

    def count_unfinished(self, kind: str) -> int:
        query = select(func.count()).where(jobs.c.kind == kind, jobs.c.status == JobStatus.PENDING.value)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def count_pending(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).where(jobs.c.status == JobStatus.PENDING.value)).scalar_one()
            )

    def all_jobs(self, key_id: str | None = None):
        """Every readable record (for exports), oldest first."""
        query = select(jobs).order_by(jobs.c.created_at)
        if key_id is not None:
            query = query.where(jobs.c.key_id == key_id)
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                record = self._record(row)
                if record is not None:
                    yield record

    def expired_jobs(self, finished_before: float) -> list[str]:
        """Ids of generation jobs that ended before `finished_before` (retention; a finetune stays until deleted)."""
        query = select(jobs.c.id).where(
            jobs.c.kind == GENERATE, jobs.c.status != JobStatus.PENDING.value, jobs.c.updated_at < finished_before
        )
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def inputs_in_use(self, names: list[str]) -> set[str]:
        """Which of these stored input images some job still names."""
        used: set[str] = set()
        with self.engine.connect() as connection:
            for start in range(0, len(names), IN_CLAUSE_SIZE):
                chunk = names[start : start + IN_CLAUSE_SIZE]
                query = select(job_references.c.name).where(job_references.c.name.in_(chunk)).distinct()
                used.update(connection.execute(query).scalars())
        return used
