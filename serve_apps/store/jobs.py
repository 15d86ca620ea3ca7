"""The jobs repository: one row per job, its typed record beside the columns conditions and queries use.

A row's `kind` picks the record type it is read as; a replica reads, adopts and quarantines only the
kinds it was given, so one that does not know a newer kind leaves those jobs alone.

Every change of a running job is one conditional UPDATE on (id, status Pending, lease token):
a replica that lost its lease (the job was adopted, cancelled or finished elsewhere) changes
nothing, so two replicas never both finish a job and a late write never undoes a final status.

Heartbeats are stamped, and staleness judged, by the database's clock (`database_now()`), so replicas whose
clocks disagree still agree on which jobs are stale.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from serve_apps.jobs.finetune_records import FINETUNE, FinetuneRecord
from serve_apps.jobs.records import GENERATE, JobRecord, JobState, JobStatus, Stage
from serve_apps.store.engine import database_now
from serve_apps.store.job_queries import JobQueries
from serve_apps.store.schema import job_references, jobs
from serve_apps.store.secret_box import SecretBox, SecretNotOpened

logger = logging.getLogger("flux_serve.database")


class LeaseLost(Exception):
    """This replica no longer owns the job: another adopted, cancelled or finished it."""


class IdempotencyConflict(ValueError):
    """An Idempotency-Key reused with a different request body."""


@dataclass(frozen=True)
class Claim:
    """What a replica holds while it runs a job: the job id and its lease's fencing token."""

    job_id: str
    token: int


ALL_KINDS = {GENERATE: JobRecord, FINETUNE: FinetuneRecord}


def request_digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


class JobsRepository(JobQueries):
    def __init__(
        self,
        engine: Engine,
        record_types: Mapping[str, type[JobState]] | None = None,
        secret_box: SecretBox | None = None,
    ):
        """`record_types` maps each kind this replica runs to its record type (default: every kind, ALL_KINDS);
        `secret_box` seals webhook secrets at rest (`load_webhook_secret_box(store)`; without it a new
        secret is written as sent, and one sealed earlier is read and written back sealed)."""
        self.engine = engine
        self.secret_box = secret_box
        self.record_types = dict(record_types or ALL_KINDS)
        self._known_kind = jobs.c.kind.in_(list(self.record_types))

    # -- columns kept beside the record, for conditions and queries -----------------------

    @staticmethod
    def _columns(record: JobState) -> dict:
        return {
            "status": record.status.value,
            "stage": record.stage.value,
            "owner": record.owner,
            "attempts": record.attempts,
            "heartbeat_at": database_now(),  # any write by the lease holder is a sign of life
            "updated_at": record.updated_at,
            "images": record.output_count(),
            "gpu_seconds": record.usage.gpu_seconds if record.usage else None,
            "cost_usd": record.usage.cost_usd if record.usage else None,
            "record": record.model_dump_json(),
        }

    def _row(self, record: JobState) -> dict:
        """The columns, with the record's webhook secret sealed when this repository has a box; the final
        status makes a webhook not yet tried due (sent by store/webhooks.py's WebhookDeliveries)."""
        columns = self._columns(record)
        if self._to_seal(record):
            columns["record"] = self.record_json(record)
        if record.is_final and record.webhook is not None and not record.webhook.deliveries:
            columns["webhook_next_attempt_at"] = database_now()
        return columns

    def _to_seal(self, record: JobState) -> bool:
        webhook = record.webhook
        return self.secret_box is not None and webhook is not None and bool(webhook.secret)

    def record_json(self, record: JobState) -> str:
        """The record as stored: its webhook secret sealed when this repository has a box."""
        if not self._to_seal(record):
            return record.model_dump_json()
        webhook = record.webhook
        sealed = webhook.model_copy(update={"secret": self.secret_box.seal(webhook.secret, record.id)})
        return record.model_copy(update={"webhook": sealed}).model_dump_json()

    def _open_webhook_secret(self, record: JobState) -> None:
        """A sealed secret opened in place. Without a box, or with another key, it stays sealed, so
        saving the record again loses nothing (a repository without a box writes it back as read)."""
        webhook = record.webhook
        if self.secret_box is None or webhook is None or not webhook.secret:
            return
        try:
            webhook.secret = self.secret_box.open(webhook.secret, record.id)
        except SecretNotOpened as error:
            logger.error("%s", error)

    def _record(self, row) -> JobState | None:
        """The row's record as its kind's type; None if unreadable or of a kind this replica does not run."""
        record_type = self.record_types.get(row.kind)
        if record_type is None:
            return None
        try:
            record = record_type.model_validate_json(row.record)
        except ValidationError:
            return None
        record.status, record.stage, record.owner = JobStatus(row.status), Stage(row.stage), row.owner
        record.attempts, record.heartbeat_at, record.updated_at = row.attempts, row.heartbeat_at, row.updated_at
        self._open_webhook_secret(record)
        return record

    # -- create ---------------------------------------------------------------------------

    def create(
        self, record: JobState, idempotency_key: str | None = None, body_digest: str | None = None
    ) -> tuple[JobState, Claim | None]:
        """Insert a new job and take its lease; with an Idempotency-Key already used by this key,
        return the first job instead (and no claim), or IdempotencyConflict for another body."""
        key_digest = request_digest(idempotency_key) if idempotency_key else None
        values = {
            "id": record.id,
            "kind": record.kind,
            "key_id": record.key_id,
            "model": record.model,
            "created_at": record.created_at,
            "lease_token": 1,
            "idempotency_key": key_digest,
            "body_digest": body_digest,
            **self._row(record),
        }
        named = [{"job_id": record.id, "name": name} for name in record.input_names()]
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(jobs).values(**values))
                if named:
                    connection.execute(insert(job_references), named)
        except IntegrityError:
            first = None if key_digest is None else self.idempotent_replay(record.key_id, idempotency_key, body_digest)
            if first is None:
                raise  # not this key's Idempotency-Key: another constraint
            return first, None
        return record, Claim(record.id, 1)

    def idempotent_replay(self, key_id: str, idempotency_key: str, body_digest: str | None) -> JobState | None:
        """The job this key already submitted with this Idempotency-Key (None: the key is new), or
        IdempotencyConflict when it came with another body."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(jobs).where(jobs.c.key_id == key_id, jobs.c.idempotency_key == request_digest(idempotency_key))
            ).one_or_none()
        if row is None:
            return None
        if row.body_digest != body_digest:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request body; use a new key for a new request."
            )
        return self._record(row)

    # -- reads ----------------------------------------------------------------------------

    def load(self, job_id: str) -> JobState | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(jobs).where(jobs.c.id == job_id)).one_or_none()
        return None if row is None else self._record(row)

    @staticmethod
    def _stale(stale_after_s: float):
        """A Pending job whose owner has not beaten for `stale_after_s` by the database's clock."""
        return (jobs.c.status == JobStatus.PENDING.value) & (jobs.c.heartbeat_at < database_now() - stale_after_s)

    def stale_jobs(self, stale_after_s: float, job_id: str | None = None) -> list[tuple[str, int]]:
        """(id, lease token) of the stale jobs (or of `job_id` alone, if it is stale)."""
        query = select(jobs.c.id, jobs.c.lease_token).where(self._stale(stale_after_s), self._known_kind)
        if job_id is not None:
            query = query.where(jobs.c.id == job_id)
        with self.engine.connect() as connection:
            return [(row.id, row.lease_token) for row in connection.execute(query)]

    # -- conditional writes ----------------------------------------------------------------

    def save(self, claim: Claim, record: JobState) -> None:
        """Write the record if this claim still holds the lease of a Pending job; else LeaseLost."""
        record.updated_at = time.time()
        statement = (
            update(jobs)
            .where(
                jobs.c.id == claim.job_id, jobs.c.lease_token == claim.token, jobs.c.status == JobStatus.PENDING.value
            )
            .values(**self._row(record))
        )
        with self.engine.begin() as connection:
            if connection.execute(statement).rowcount != 1:
                raise LeaseLost(claim.job_id)

    def release(self, claim: Claim) -> bool:
        """Give the lease up at a stop: the heartbeat is made old, so the next sweep of any replica adopts the
        job at once instead of after stale_after_s. False when the claim no longer held it."""
        statement = (
            update(jobs)
            .where(
                jobs.c.id == claim.job_id, jobs.c.lease_token == claim.token, jobs.c.status == JobStatus.PENDING.value
            )
            .values(heartbeat_at=0.0)
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    def heartbeat(self, claim: Claim) -> bool:
        """Renew the lease only; LeaseLost once another replica took the job or it ended. True when a
        cancel was asked for (the runner publishes it again on the live channel, which may have lost it)."""
        statement = (
            update(jobs)
            .where(
                jobs.c.id == claim.job_id, jobs.c.lease_token == claim.token, jobs.c.status == JobStatus.PENDING.value
            )
            .values(heartbeat_at=database_now())
            .returning(jobs.c.cancel_requested_at)
        )
        with self.engine.begin() as connection:
            rows = connection.execute(statement).all()
        if len(rows) != 1:
            raise LeaseLost(claim.job_id)
        return rows[0].cancel_requested_at is not None

    def request_cancel(self, job_id: str) -> bool:
        """Remember that a cancel of this unfinished job was asked for (the first time counts); no lease
        needed. False if the job is unknown or already final."""
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PENDING.value)
            .values(cancel_requested_at=func.coalesce(jobs.c.cancel_requested_at, time.time()))
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    def cancel_requested(self, job_id: str) -> bool:
        with self.engine.connect() as connection:
            at = connection.execute(select(jobs.c.cancel_requested_at).where(jobs.c.id == job_id)).scalar_one_or_none()
        return at is not None

    def adopt(self, job_id: str, token: int, owner: str, stale_after_s: float) -> Claim | None:
        """Take the lease of a job still stale atomically: one replica wins, the others get None."""
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.lease_token == token, self._stale(stale_after_s))
            .values(owner=owner, lease_token=token + 1, heartbeat_at=database_now(), stage=Stage.QUEUED.value)
        )
        with self.engine.begin() as connection:
            won = connection.execute(statement).rowcount == 1
        return Claim(job_id, token + 1) if won else None

    def cancel_if_queued(self, job_id: str, reason: str) -> JobState | None:
        """End a job that has not started encoding yet, whoever owns it; None if it had started or ended."""
        record = self.load(job_id)
        if record is None or record.is_final or record.stage != Stage.QUEUED:
            return None
        record.status, record.stage, record.error = JobStatus.CANCELLED, Stage.DONE, reason
        record.updated_at = time.time()
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PENDING.value, jobs.c.stage == Stage.QUEUED.value)
            .values(**self._row(record), lease_token=jobs.c.lease_token + 1)
        )
        with self.engine.begin() as connection:
            return record if connection.execute(statement).rowcount == 1 else None

    def quarantine_unreadable(self) -> list[str]:
        """Pending rows whose record cannot be read end Error, so no sweep is blocked by them."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(jobs).where(jobs.c.status == JobStatus.PENDING.value, self._known_kind)
            ).all()
        bad = [row.id for row in rows if self._record(row) is None]
        for job_id in bad:
            logger.error("job %s: unreadable record quarantined", job_id)
            with self.engine.begin() as connection:
                connection.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(status=JobStatus.ERROR.value, stage=Stage.DONE.value, lease_token=jobs.c.lease_token + 1)
                )
        return bad

    def delete(self, job_ids: list[str]) -> None:
        """Delete finished jobs (a Pending one among them is kept) and the input images they name."""
        finished = (jobs.c.id.in_(job_ids), jobs.c.status != JobStatus.PENDING.value)
        with self.engine.begin() as connection:
            connection.execute(
                delete(job_references).where(job_references.c.job_id.in_(select(jobs.c.id).where(*finished)))
            )
            connection.execute(delete(jobs).where(*finished))
