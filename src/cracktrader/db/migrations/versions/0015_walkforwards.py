"""Walk-forwards (and CPCV) of the server with their reports, owned like sweeps

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> Any:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    """Create walkforwards."""
    op.create_table(
        "walkforwards",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("strategy_name", sa.String(length=200), nullable=False),
        sa.Column("request", _json(), nullable=False),
        sa.Column("combinations", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("report", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("server_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'cancelled', 'failed')", name=op.f("ck_walkforwards_status")
        ),
        sa.CheckConstraint("kind IN ('walk_forward', 'cpcv')", name=op.f("ck_walkforwards_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_walkforwards")),
    )
    with op.batch_alter_table("walkforwards", schema=None) as batch_op:
        batch_op.create_index("ix_walkforwards_user_id_created_at", ["user_id", "created_at"], unique=False)


def downgrade() -> None:
    """Drop walkforwards."""
    with op.batch_alter_table("walkforwards", schema=None) as batch_op:
        batch_op.drop_index("ix_walkforwards_user_id_created_at")
    op.drop_table("walkforwards")
