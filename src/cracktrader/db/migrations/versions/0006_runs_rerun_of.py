"""runs.rerun_of: the run a rerun reproduces

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable runs.rerun_of (no foreign key: the original may be deleted or pruned later)."""
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rerun_of", sa.String(length=32), nullable=True))


def downgrade() -> None:
    """Drop runs.rerun_of."""
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("rerun_of")
