"""Runner slots shared by every server process: the run each user's slot shows

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create runner_slots."""
    op.create_table(
        "runner_slots",
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("last_run_id", sa.String(length=32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_runner_slots")),
    )


def downgrade() -> None:
    """Drop runner_slots."""
    op.drop_table("runner_slots")
