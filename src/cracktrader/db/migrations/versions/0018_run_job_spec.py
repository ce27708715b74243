"""A queued run's full request, sealed: what an executor on any machine runs

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add runs.job_spec."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("job_spec", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    """Drop runs.job_spec."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("job_spec")
