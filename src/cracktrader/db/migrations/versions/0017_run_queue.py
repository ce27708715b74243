"""The runs table as the queue: kind, priority, executor leases with a fencing token

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-09 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the queue columns to runs."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("queue_state", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("priority", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("executor_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("fencing_token", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
    op.create_index("ix_runs_queue_state", "runs", ["queue_state"])
    op.create_index("ix_runs_executor_id", "runs", ["executor_id"])


def downgrade() -> None:
    """Drop the queue columns."""
    op.drop_index("ix_runs_executor_id", table_name="runs")
    op.drop_index("ix_runs_queue_state", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        for name in (
            "attempts",
            "fencing_token",
            "lease_expires_at",
            "executor_id",
            "queued_at",
            "priority",
            "kind",
            "queue_state",
        ):
            batch.drop_column(name)
