"""Stored exchange credentials: per user and name, only their ciphertext and the fingerprint of its key

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create exchange_credentials."""
    op.create_table(
        "exchange_credentials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("exchange", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_credentials")),
        sa.UniqueConstraint("user_id", "name", name="uq_exchange_credentials_user_name"),
    )
    with op.batch_alter_table("exchange_credentials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exchange_credentials_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    """Drop exchange_credentials (the stored keys are gone: add them again after an upgrade)."""
    with op.batch_alter_table("exchange_credentials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exchange_credentials_user_id"))
    op.drop_table("exchange_credentials")
