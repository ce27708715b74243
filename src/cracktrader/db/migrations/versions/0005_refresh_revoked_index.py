"""Index refresh_tokens.revoked_at (servers poll its maximum to learn of revoked logins)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 00:00:01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ix_refresh_tokens_revoked_at: max(revoked_at) becomes an index lookup instead of a table scan."""
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refresh_tokens_revoked_at"), ["revoked_at"], unique=False)


def downgrade() -> None:
    """Drop ix_refresh_tokens_revoked_at."""
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_revoked_at"))
