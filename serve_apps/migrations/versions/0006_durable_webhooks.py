"""A finished job's webhook delivery is kept with its job: attempts made and when the next is due (by the
database's clock; NULL once delivered or given up), so any replica's sweeper sends a delivery whose
replica died between attempts. Jobs stored before this revision have nothing left to send.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("webhook_attempts", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("webhook_next_attempt_at", sa.Float(), nullable=True))
    op.create_index("ix_jobs_webhook_next_attempt", "jobs", ["webhook_next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_webhook_next_attempt", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("webhook_next_attempt_at")
        batch.drop_column("webhook_attempts")
