"""Paper sessions written as they go: owner and fencing token, candles, equity, orders, fills, positions, balances

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = (
    "session_balances",
    "session_positions",
    "session_fills",
    "session_orders",
    "session_equity",
    "session_candles",
    "session_state",
)


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f(f"fk_{table}_run_id_runs"), ondelete="CASCADE")


def _run_id() -> sa.Column[str]:
    return sa.Column("run_id", sa.String(length=32), nullable=False)


def upgrade() -> None:
    """Create the session tables."""
    op.create_table(
        "session_state",
        _run_id(),
        sa.Column("owner_server_id", sa.String(length=32), nullable=False),
        sa.Column("fencing_token", sa.Integer(), nullable=False),
        sa.Column("owner_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("start_time", sa.String(length=40), nullable=False),
        sa.Column("end_time", sa.String(length=40), nullable=True),
        sa.Column("bars", sa.Integer(), nullable=False),
        sa.Column("warmup_bars", sa.Integer(), nullable=False),
        sa.Column("last_bar_ts", sa.BigInteger(), nullable=True),
        sa.Column("sim_state", sa.Text(), nullable=True),
        sa.Column("strategy_state", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _run_fk("session_state"),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_session_state")),
    )
    with op.batch_alter_table("session_state", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_session_state_owner_server_id"), ["owner_server_id"], unique=False)
    op.create_table(
        "session_candles",
        _run_id(),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.Integer(), nullable=False),
        sa.Column("open", sa.Double(), nullable=False),
        sa.Column("high", sa.Double(), nullable=False),
        sa.Column("low", sa.Double(), nullable=False),
        sa.Column("close", sa.Double(), nullable=False),
        sa.Column("volume", sa.Double(), nullable=False),
        sa.Column("tradable", sa.Boolean(), nullable=False),
        _run_fk("session_candles"),
        sa.PrimaryKeyConstraint("run_id", "ts", "symbol", name=op.f("pk_session_candles")),
    )
    op.create_table(
        "session_equity",
        _run_id(),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("cash", sa.Double(), nullable=False),
        sa.Column("in_market", sa.Boolean(), nullable=False),
        _run_fk("session_equity"),
        sa.PrimaryKeyConstraint("run_id", "ts", name=op.f("pk_session_equity")),
    )
    op.create_table(
        "session_orders",
        _run_id(),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("created_bar", sa.Integer(), nullable=False),
        sa.Column("bar", sa.Integer(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.Integer(), nullable=False),
        sa.Column("side", sa.SmallInteger(), nullable=False),
        sa.Column("type", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("reason", sa.SmallInteger(), nullable=False),
        sa.Column("size", sa.Double(), nullable=True),
        sa.Column("price", sa.Double(), nullable=True),
        sa.Column("trigger", sa.Double(), nullable=True),
        sa.Column("fee", sa.Double(), nullable=True),
        sa.Column("pnl", sa.Double(), nullable=True),
        sa.Column("ret", sa.Double(), nullable=True),
        _run_fk("session_orders"),
        sa.PrimaryKeyConstraint("run_id", "order_id", name=op.f("pk_session_orders")),
    )
    op.create_table(
        "session_fills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _run_id(),
        sa.Column("exchange", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=100), nullable=False),
        sa.Column("trade_id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("amount", sa.Double(), nullable=False),
        sa.Column("price", sa.Double(), nullable=False),
        sa.Column("fee", sa.Double(), nullable=False),
        _run_fk("session_fills"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_fills")),
        sa.UniqueConstraint("run_id", "exchange", "symbol", "trade_id", name="uq_session_fills_trade"),
    )
    with op.batch_alter_table("session_fills", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_session_fills_run_id"), ["run_id"], unique=False)
    op.create_table(
        "session_positions",
        _run_id(),
        sa.Column("symbol", sa.String(length=100), nullable=False),
        sa.Column("size", sa.Double(), nullable=False),
        sa.Column("entry_price", sa.Double(), nullable=False),
        sa.Column("entry_cost", sa.Double(), nullable=False),
        sa.Column("market_price", sa.Double(), nullable=True),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        _run_fk("session_positions"),
        sa.PrimaryKeyConstraint("run_id", "symbol", name=op.f("pk_session_positions")),
    )
    op.create_table(
        "session_balances",
        _run_id(),
        sa.Column("currency", sa.String(length=16), nullable=False),
        sa.Column("free", sa.Double(), nullable=False),
        sa.Column("used", sa.Double(), nullable=False),
        sa.Column("total", sa.Double(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        _run_fk("session_balances"),
        sa.PrimaryKeyConstraint("run_id", "currency", name=op.f("pk_session_balances")),
    )


def downgrade() -> None:
    """Drop the session tables (sessions recorded in them can no longer resume or show their rows)."""
    with op.batch_alter_table("session_fills", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_session_fills_run_id"))
    with op.batch_alter_table("session_state", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_session_state_owner_server_id"))
    for table in _TABLES:
        op.drop_table(table)
