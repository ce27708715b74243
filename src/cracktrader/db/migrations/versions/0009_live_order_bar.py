"""Live orders remember the bar their strategy decided them on, so a restart that decides that bar again sends
nothing twice

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add live_orders.bar_ms (null for orders no strategy bar decided: controls, exits, adopted ones)."""
    with op.batch_alter_table("live_orders") as batch:
        batch.add_column(sa.Column("bar_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Drop live_orders.bar_ms."""
    with op.batch_alter_table("live_orders") as batch:
        batch.drop_column("bar_ms")
