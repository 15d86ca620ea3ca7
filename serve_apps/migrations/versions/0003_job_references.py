"""Which stored input images each job names, so retention can delete the ones no job names any more.

Jobs stored before this revision are read once to fill the table.

Revision ID: 0003
Revises: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def named_inputs(record_json: str) -> set[str]:
    try:
        params = json.loads(record_json).get("params") or {}
    except (ValueError, AttributeError):
        return set()  # an unreadable record is quarantined by the service; it names nothing
    images = [*(params.get("references") or []), params.get("mask")]
    return {image["name"] for image in images if isinstance(image, dict) and image.get("name")}


def upgrade() -> None:
    table = op.create_table(
        "job_references",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(80), primary_key=True),
    )
    op.create_index("ix_job_references_name", "job_references", ["name"])
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("record", sa.Text))
    connection = op.get_bind()
    rows = connection.execute(sa.select(jobs.c.id, jobs.c.record).where(jobs.c.record.like('%"name"%')))
    values = [{"job_id": job_id, "name": name} for job_id, record in rows for name in named_inputs(record)]
    if values:
        op.bulk_insert(table, values)


def downgrade() -> None:
    op.drop_table("job_references")
