"""The tables of the job database. Changes go through a migration in serve_apps/migrations/versions."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(32), nullable=False, server_default="generate"),
    Column("key_id", String(12), nullable=False),
    Column("model", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("owner", String(32), nullable=False),
    Column("lease_token", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("images", Integer, nullable=False),
    Column("gpu_seconds", Float),
    Column("cost_usd", Float),
    Column("idempotency_key", String(64)),
    Column("body_digest", String(64)),
    Column("record", Text, nullable=False),
    Column("cancel_requested_at", Float),  # a cancel outlives the live channel: the heartbeat reads it
    # a finished job's webhook outlives its replica: attempts made, and when the next is due (NULL: none is)
    Column("webhook_attempts", Integer, nullable=False, server_default="0"),
    Column("webhook_next_attempt_at", Float),
    UniqueConstraint("key_id", "idempotency_key", name="uq_jobs_key_idempotency"),
    Index("ix_jobs_key_created", "key_id", "created_at"),
    Index("ix_jobs_status_model_created", "status", "model", "created_at"),
    Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
    Index("ix_jobs_webhook_next_attempt", "webhook_next_attempt_at"),
)

# which stored input images (refs/<sha256>.png, shared by content) each job names, so retention
# deletes an input image once no remaining job names it
job_references = Table(
    "job_references",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("name", String(80), primary_key=True),
    Index("ix_job_references_name", "name"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
)

loras = Table(
    "loras",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner_key_id", String(12)),
    Column("record", JSON, nullable=False),
)
