"""Live sessions' orders (written pending_new before sending) and their fills (each once), numbers as exact text

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f(f"fk_{table}_run_id_runs"), ondelete="CASCADE")


def upgrade() -> None:
    """Create live_orders and live_fills."""
    op.create_table(
        "live_orders",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("client_order_id", sa.String(length=36), nullable=False),
        sa.Column("exchange", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=100), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        sa.Column("price", sa.Text(), nullable=True),
        sa.Column("stop", sa.Text(), nullable=True),
        sa.Column("exchange_order_id", sa.String(length=100), nullable=True),
        sa.Column("filled_qty", sa.Text(), nullable=False),
        sa.Column("filled_cost", sa.Text(), nullable=False),
        sa.Column("fees", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("intent", sa.String(length=16), nullable=False),
        sa.Column("stop_loss", sa.Double(), nullable=True),
        sa.Column("take_profit", sa.Double(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("watch_until", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "intent IN ('signal', 'stop_loss', 'take_profit', 'control', 'adopted')", name=op.f("ck_live_orders_intent")
        ),
        _run_fk("live_orders"),
        sa.PrimaryKeyConstraint("run_id", "client_order_id", name=op.f("pk_live_orders")),
    )
    with op.batch_alter_table("live_orders", schema=None) as batch_op:
        batch_op.create_index("ix_live_orders_run_id_status", ["run_id", "status"], unique=False)
    op.create_table(
        "live_fills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("exchange", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=100), nullable=False),
        sa.Column("trade_id", sa.String(length=64), nullable=False),
        sa.Column("client_order_id", sa.String(length=36), nullable=False),
        sa.Column("exchange_order_id", sa.String(length=100), nullable=True),
        sa.Column("qty", sa.Text(), nullable=False),
        sa.Column("price", sa.Text(), nullable=False),
        sa.Column("fee", sa.Text(), nullable=False),
        sa.Column("fee_currency", sa.String(length=16), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "client_order_id"],
            ["live_orders.run_id", "live_orders.client_order_id"],
            name=op.f("fk_live_fills_run_id_live_orders"),
            ondelete="CASCADE",
        ),
        _run_fk("live_fills"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_live_fills")),
        # What counts a fill once, even when two code paths record it at the same moment.
        sa.UniqueConstraint("run_id", "exchange", "symbol", "trade_id", name="uq_live_fills_trade"),
    )
    with op.batch_alter_table("live_fills", schema=None) as batch_op:
        batch_op.create_index("ix_live_fills_run_id_symbol_timestamp", ["run_id", "symbol", "timestamp"], unique=False)


def downgrade() -> None:
    """Drop the live tables (live sessions recorded in them lose their orders and fills)."""
    with op.batch_alter_table("live_fills", schema=None) as batch_op:
        batch_op.drop_index("ix_live_fills_run_id_symbol_timestamp")
    op.drop_table("live_fills")
    with op.batch_alter_table("live_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_live_orders_run_id_status")
    op.drop_table("live_orders")
