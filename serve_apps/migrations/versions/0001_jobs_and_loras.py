"""Jobs and LoRA registrations.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("key_id", sa.String(12), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("lease_token", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("gpu_seconds", sa.Float),
        sa.Column("cost_usd", sa.Float),
        sa.Column("idempotency_key", sa.String(64)),
        sa.Column("body_digest", sa.String(64)),
        sa.Column("record", sa.Text, nullable=False),
        sa.UniqueConstraint("key_id", "idempotency_key", name="uq_jobs_key_idempotency"),
    )
    op.create_index("ix_jobs_key_created", "jobs", ["key_id", "created_at"])
    op.create_index("ix_jobs_status_model_created", "jobs", ["status", "model", "created_at"])
    op.create_index("ix_jobs_status_heartbeat", "jobs", ["status", "heartbeat_at"])
    op.create_table(
        "loras",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner_key_id", sa.String(12)),
        sa.Column("record", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("loras")
    op.drop_table("jobs")
