"""Webhook deliveries kept with their job, so one outlives the replica that began it.

A job's final write makes its webhook due (`webhook_next_attempt_at`, by the database's clock). Each attempt
is claimed first with one conditional UPDATE on the attempts made, so of the replicas that see a delivery
due (its own, or any sweeper once its replica died), one sends it. A claim holds the delivery for the
attempt's whole timeout: a replica that dies mid-attempt leaves it due again afterwards, that attempt
counted. Delivered or given up, `webhook_next_attempt_at` is NULL and nothing sends it again.
"""

from __future__ import annotations

from sqlalchemy import select, update

from serve_apps.jobs.records import JobState
from serve_apps.store.engine import database_now
from serve_apps.store.jobs import JobsRepository
from serve_apps.store.schema import jobs

DUE_TOLERANCE_S = 0.05  # SQLite's clock has millisecond steps: a retry that slept its backoff is due, not a hair early
DUE_PER_SWEEP = 100


class WebhookDeliveries:
    def __init__(self, jobs_repository: JobsRepository):
        """On the jobs repository's engine; its record types and secret box read and seal the records."""
        self.jobs = jobs_repository
        self.engine = jobs_repository.engine

    def due(self, max_attempts: int, limit: int = DUE_PER_SWEEP) -> list[str]:
        """Ids of the jobs whose webhook is due now, of the kinds this replica runs, longest waiting first."""
        query = (
            select(jobs.c.id)
            .where(
                jobs.c.webhook_next_attempt_at <= database_now(),
                jobs.c.webhook_attempts < max_attempts,
                jobs.c.kind.in_(list(self.jobs.record_types)),
            )
            .order_by(jobs.c.webhook_next_attempt_at)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def attempts_made(self, job_id: str) -> int | None:
        """How many attempts a pending delivery has had; None when there is none to make."""
        query = select(jobs.c.webhook_attempts).where(jobs.c.id == job_id, jobs.c.webhook_next_attempt_at.is_not(None))
        with self.engine.connect() as connection:
            return connection.execute(query).scalar_one_or_none()

    def claim(self, job_id: str, attempt: int, max_attempts: int, hold_s: float) -> bool:
        """Take attempt number `attempt` if it is the next and due; False when another replica took it or the
        delivery ended. Held `hold_s` (due again after that, should this replica die); the last one is not
        held, as nothing may follow it."""
        next_attempt_at = database_now() + hold_s if attempt < max_attempts else None
        statement = (
            update(jobs)
            .where(
                jobs.c.id == job_id,
                jobs.c.webhook_attempts == attempt - 1,
                jobs.c.webhook_next_attempt_at <= database_now() + DUE_TOLERANCE_S,
            )
            .values(webhook_attempts=attempt, webhook_next_attempt_at=next_attempt_at)
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    def record(self, record: JobState, attempt: int, retry_in_s: float | None) -> bool:
        """Keep the record with this attempt in its deliveries, and the next one due in `retry_in_s` (None:
        delivered or given up). False, and nothing written, if a later attempt was claimed meanwhile."""
        next_attempt_at = None if retry_in_s is None else database_now() + retry_in_s
        statement = (
            update(jobs)
            .where(jobs.c.id == record.id, jobs.c.webhook_attempts == attempt)
            .values(record=self.jobs.record_json(record), webhook_next_attempt_at=next_attempt_at)
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1
