"""Database tables: runs and their results, session rows, live orders and fills, users and their keys, strategies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ALERT_SEVERITIES",
    "LIVE_INTENTS",
    "ROLES",
    "RUN_MODES",
    "RUN_STATUSES",
    "SWEEP_STATUSES",
    "AlertRecord",
    "ApiKeyRecord",
    "Base",
    "JSONType",
    "LiveFillRecord",
    "LiveOrderRecord",
    "RefreshTokenRecord",
    "RunRecord",
    "RunResultRecord",
    "RunSeriesRecord",
    "RunSymbolRecord",
    "RunnerSlotRecord",
    "ServerRecord",
    "SessionBalanceRecord",
    "SessionCandleRecord",
    "SessionEquityRecord",
    "SessionFillRecord",
    "SessionOrderRecord",
    "SessionPositionRecord",
    "SessionStateRecord",
    "StrategyRecord",
    "SweepRecord",
    "SweepRowRecord",
    "UTCDateTime",
    "UserRecord",
    "WalkForwardRecord",
]

RUN_MODES: tuple[str, ...] = ("backtest", "paper", "live")
RUN_STATUSES: tuple[str, ...] = ("starting", "running", "completed", "failed", "stopped")
ROLES: tuple[str, ...] = ("admin", "trader", "viewer")
# Why a live order was sent: the strategy's signal, a stop-loss or take-profit the session manages, or a control.
LIVE_INTENTS: tuple[str, ...] = ("signal", "stop_loss", "take_profit", "control", "adopted")
ALERT_SEVERITIES: tuple[str, ...] = ("critical", "warning")
SWEEP_STATUSES: tuple[str, ...] = ("queued", "running", "completed", "cancelled", "failed")

# Deterministic constraint names: Alembic needs names to drop or alter constraints, and SQLite's batch mode
# (table rebuilds) can only recreate constraints that have one.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact); plain JSON (text) elsewhere. none_as_null: Python None is SQL NULL,
# not the JSON literal `null`, so "no metrics" reads back as None and `IS NULL` works.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text, so UTC is implied there)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Reject naive datetimes (their zone is a guess) and store UTC."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        # SQLite's DATETIME formatting drops the offset anyway; stripping it keeps the stored text sortable.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware UTC datetimes whatever the backend returned."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base shared by every table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class RunRecord(Base):
    """One backtest, paper or live run: what was asked, how it went and its headline numbers."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(f"mode IN ({_in(RUN_MODES)})", name="mode"),
        CheckConstraint(f"status IN ({_in(RUN_STATUSES)})", name="status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The owner (users.id). Deliberately no foreign key: users are disabled, never deleted, so ids are not reused;
    # run history must survive whatever happens to the users table, and tools record runs for ids from elsewhere.
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    strategy_name: Mapped[str] = mapped_column(String(200), index=True)
    timeframe: Mapped[str] = mapped_column(String(16))
    exchange: Mapped[str] = mapped_column(String(64))
    # The request as submitted, secrets already redacted by the caller.
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    final_value: Mapped[float | None] = mapped_column(Double)
    total_return: Mapped[float | None] = mapped_column(Double)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The server process (servers.id) running it; a run left active by a server whose lease lapsed was cut short.
    server_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # The run this one reran (same inputs); no foreign key, so deleting the original keeps the rerun's record.
    rerun_of: Mapped[str | None] = mapped_column(String(32))
    # The run queue (db/run_queue.py): NULL for runs that never went through it.
    queue_state: Mapped[str | None] = mapped_column(String(16), index=True)
    kind: Mapped[str | None] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    executor_id: Mapped[str | None] = mapped_column(String(64), index=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Bumped on every claim and requeue, so a writer holding an older token is refused.
    fencing_token: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The queued run's whole request (secrets included), sealed with the server's key and bound to the run id;
    # `config` keeps the redacted copy every reader sees. Cleared once the run ends.
    job_spec: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)

    symbol_rows: Mapped[list[RunSymbolRecord]] = relationship(
        order_by="RunSymbolRecord.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="selectin",
    )

    @property
    def symbols(self) -> list[str]:
        """The run's symbols in request order."""
        return [row.symbol for row in self.symbol_rows]


class RunSymbolRecord(Base):
    """One symbol of a run: a row per symbol so "runs trading X" is an exact, indexed match on any backend."""

    # Why a table rather than a column: a delimited string needs a LIKE on "|BTC/USDT|" with escaped wildcards
    # and no index can serve it; a JSON array needs a different containment query per backend (JSONB `@>` vs
    # SQLite `json_each`). `symbol = :s` here is exact, portable and indexed.

    __tablename__ = "run_symbols"

    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    # Keeps the request's order; symbols are not unique per run at this level (LiveConfig does not forbid repeats).
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(100), index=True)


class RunResultRecord(Base):
    """The head of a run's results (everything but its long series), zlib-compressed JSON, kept apart from runs."""

    __tablename__ = "run_results"

    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    document: Mapped[bytes] = mapped_column(LargeBinary)
    # Size of the uncompressed JSON, so callers can judge a download before fetching it.
    size_bytes: Mapped[int] = mapped_column(BigInteger)


class RunSeriesRecord(Base):
    """One chunk of a run's equity points or orders, as raw little-endian records (zlib), so a page reads only
    the chunks it shows and a paper session appends chunks as it goes."""

    __tablename__ = "run_series"
    __table_args__ = (CheckConstraint("kind IN ('equity', 'orders')", name="kind"),)

    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Index of the chunk's first row in the whole series, and (orders) of its first fill among all fills.
    first_row: Mapped[int] = mapped_column(BigInteger)
    n_rows: Mapped[int] = mapped_column(Integer)
    first_fill: Mapped[int] = mapped_column(BigInteger)
    n_fills: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ServerRecord(Base):
    """A server process's lease: it heartbeats while alive, so others know which active runs are really running."""

    __tablename__ = "servers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SessionStateRecord(Base):
    """A paper session's owner (a server lease and a fencing token) and the state it resumes from after a restart.

    Every write of the session checks `fencing_token` in its transaction; a takeover increments it, so a writer
    that lost the session finds its token stale and stops without writing.
    """

    __tablename__ = "session_state"

    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    owner_server_id: Mapped[str] = mapped_column(String(32), index=True)
    fencing_token: Mapped[int] = mapped_column(Integer)
    owner_since: Mapped[datetime] = mapped_column(UTCDateTime)
    start_time: Mapped[str] = mapped_column(String(40))
    end_time: Mapped[str | None] = mapped_column(String(40))  # the results document's, set by the final write
    bars: Mapped[int] = mapped_column(Integer)  # closed bars recorded (warm-up included)
    warmup_bars: Mapped[int] = mapped_column(Integer)
    last_bar_ts: Mapped[int | None] = mapped_column(BigInteger)
    # JSON text, not a JSON column: it holds NaN (prices of market orders), which PostgreSQL's JSON rejects.
    sim_state: Mapped[str | None] = mapped_column(Text)
    strategy_state: Mapped[str | None] = mapped_column(Text)  # the strategy's `state()`, JSON
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SessionCandleRecord(Base):
    """One symbol's closed candle of a session bar (the carried close where it had none: `tradable` false)."""

    __tablename__ = "session_candles"

    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    symbol: Mapped[int] = mapped_column(Integer, primary_key=True)  # index into the run's symbols
    open: Mapped[float] = mapped_column(Double)
    high: Mapped[float] = mapped_column(Double)
    low: Mapped[float] = mapped_column(Double)
    close: Mapped[float] = mapped_column(Double)
    volume: Mapped[float] = mapped_column(Double)
    tradable: Mapped[bool] = mapped_column(Boolean)


class SessionEquityRecord(Base):
    """One equity point of a session per closed candle (the primary key forbids a duplicate timestamp)."""

    __tablename__ = "session_equity"

    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[float] = mapped_column(Double)
    cash: Mapped[float] = mapped_column(Double)
    in_market: Mapped[bool] = mapped_column(Boolean)


class SessionOrderRecord(Base):
    """A session order's latest state (open until it fills, is rejected or cancelled). NULL floats are NaN."""

    __tablename__ = "session_orders"

    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    order_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_bar: Mapped[int] = mapped_column(Integer)
    bar: Mapped[int] = mapped_column(Integer)  # -1 while open
    created_ts: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[int] = mapped_column(BigInteger)  # -1 while open
    symbol: Mapped[int] = mapped_column(Integer)
    side: Mapped[int] = mapped_column(SmallInteger)
    type: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[int] = mapped_column(SmallInteger)
    reason: Mapped[int] = mapped_column(SmallInteger)
    size: Mapped[float | None] = mapped_column(Double)
    price: Mapped[float | None] = mapped_column(Double)
    trigger: Mapped[float | None] = mapped_column(Double)
    fee: Mapped[float | None] = mapped_column(Double)
    pnl: Mapped[float | None] = mapped_column(Double)
    ret: Mapped[float | None] = mapped_column(Double)


class SessionFillRecord(Base):
    """One fill of a session, recorded once: unique on (run, exchange, symbol, trade id)."""

    __tablename__ = "session_fills"
    __table_args__ = (UniqueConstraint("run_id", "exchange", "symbol", "trade_id", name="uq_session_fills_trade"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    exchange: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(100))
    trade_id: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[int] = mapped_column(BigInteger)
    side: Mapped[str] = mapped_column(String(4))
    amount: Mapped[float] = mapped_column(Double)
    price: Mapped[float] = mapped_column(Double)
    fee: Mapped[float] = mapped_column(Double)


class SessionPositionRecord(Base):
    """A session's latest position in one symbol."""

    __tablename__ = "session_positions"

    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(100), primary_key=True)
    size: Mapped[float] = mapped_column(Double)
    entry_price: Mapped[float] = mapped_column(Double)
    entry_cost: Mapped[float] = mapped_column(Double)
    market_price: Mapped[float | None] = mapped_column(Double)
    ts: Mapped[int] = mapped_column(BigInteger)


class SessionBalanceRecord(Base):
    """A session's latest balance of one currency."""

    __tablename__ = "session_balances"

    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(16), primary_key=True)
    free: Mapped[float] = mapped_column(Double)
    used: Mapped[float] = mapped_column(Double)
    total: Mapped[float] = mapped_column(Double)
    ts: Mapped[int] = mapped_column(BigInteger)


class LiveOrderRecord(Base):
    """A live session's order, written `pending_new` before it is sent, then its latest state.

    Numbers are exact text, never floats: amount, price and stop as the decimal the order was given, filled
    quantity and cost as exact fractions ("0.1", "1/3"), fees as JSON {currency: exact text}.
    """

    __tablename__ = "live_orders"
    __table_args__ = (
        CheckConstraint(f"intent IN ({_in(LIVE_INTENTS)})", name="intent"),
        # Reconciliation reads a session's orders that are not final yet.
        Index("ix_live_orders_run_id_status", "run_id", "status"),
    )

    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    exchange: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(100))
    side: Mapped[str] = mapped_column(String(4))
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24))
    amount: Mapped[str] = mapped_column(Text)
    price: Mapped[str | None] = mapped_column(Text)
    stop: Mapped[str | None] = mapped_column(Text)
    exchange_order_id: Mapped[str | None] = mapped_column(String(100))
    filled_qty: Mapped[str] = mapped_column(Text)
    filled_cost: Mapped[str] = mapped_column(Text)
    fees: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    intent: Mapped[str] = mapped_column(String(16))
    # Levels the session manages itself (not resting on the venue), so they hold across a restart.
    stop_loss: Mapped[float | None] = mapped_column(Double)
    take_profit: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[int] = mapped_column(BigInteger)  # ms, the session's clock
    updated_at: Mapped[int] = mapped_column(BigInteger)
    # End of the watch of a `rejected_unconfirmed` order (ms); NULL otherwise.
    watch_until: Mapped[int | None] = mapped_column(BigInteger)
    # Open time (ms) of the bar the strategy decided the order on; NULL for controls, exits and adopted orders.
    bar_ms: Mapped[int | None] = mapped_column(BigInteger)


class LiveFillRecord(Base):
    """One fill of a live order, recorded once: unique on (run, exchange, symbol, trade id), whoever reports it."""

    __tablename__ = "live_fills"
    __table_args__ = (
        # The constraint, not a check in code, is what counts a fill once when two code paths race.
        UniqueConstraint("run_id", "exchange", "symbol", "trade_id", name="uq_live_fills_trade"),
        ForeignKeyConstraint(
            ["run_id", "client_order_id"],
            ["live_orders.run_id", "live_orders.client_order_id"],
            ondelete="CASCADE",
        ),
        # Reconciliation pages trades from the last known fill of each symbol.
        Index("ix_live_fills_run_id_symbol_timestamp", "run_id", "symbol", "timestamp"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"))
    exchange: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(100))
    trade_id: Mapped[str] = mapped_column(String(64))
    client_order_id: Mapped[str] = mapped_column(String(36))
    exchange_order_id: Mapped[str | None] = mapped_column(String(100))
    qty: Mapped[str] = mapped_column(Text)
    price: Mapped[str] = mapped_column(Text)
    fee: Mapped[str] = mapped_column(Text)
    fee_currency: Mapped[str | None] = mapped_column(String(16))
    timestamp: Mapped[int] = mapped_column(BigInteger)  # ms, the venue's


class AlertRecord(Base):
    """One alert of a run, owned by the run's owner (copied when raised, so listing needs no join)."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(f"severity IN ({_in(ALERT_SEVERITIES)})", name="severity"),
        # Listing: an owner's alerts newest first, optionally of one run.
        Index("ix_alerts_user_id_created_at", "user_id", "created_at"),
        Index("ix_alerts_run_id_created_at", "run_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # No foreign key, as runs.user_id has none: an alert is a record of what happened and outlives run retention.
    run_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IdempotencyKeyRecord(Base):
    """A start request's `Idempotency-Key` of one user: the first request's body hash and its answer, so a retry
    with the same key gets the same run instead of a second one (across every server process sharing the database).
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0: no authentication
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the route and the canonical JSON body
    run_id: Mapped[str | None] = mapped_column(String(32))  # None while the first request is being answered
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RunEventRecord(Base):
    """One event of a run, sweep or walk-forward, numbered from 1 per run: the log every process's streams read."""

    __tablename__ = "run_events"
    __table_args__ = (Index("ix_run_events_created_at", "created_at"),)

    # The run's (or sweep's, walk-forward's) id. No foreign key: those live in three tables.
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)  # the event's JSON text, as the streams send it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuthRateLimitRecord(Base):
    """A rate-limit allowance shared by server processes on PostgreSQL (without Redis): GCRA's theoretical arrival
    time of the key's next request, in seconds since the epoch on the database's clock. Keys are API key and user
    ids, so the table stays as small as the number of principals.
    """

    __tablename__ = "auth_rate_limits"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    tat: Mapped[float] = mapped_column(Double)


class AuthLoginFailureRecord(Base):
    """Failed logins counted against an address, a user name or the pair, shared by server processes on
    PostgreSQL (without Redis); times in seconds since the epoch on the database's clock (LoginPolicy's rules).
    """

    __tablename__ = "auth_login_failures"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure: Mapped[float] = mapped_column(Double)
    locked_until: Mapped[float] = mapped_column(Double)


class UserRecord(Base):
    """A person (or service account) that logs in: Argon2 password hash, role, and whether it may log in."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(f"role IN ({_in(ROLES)})", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Stored lower-cased so "Alice" and "alice" are one account.
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKeyRecord(Base):
    """A program's key `<prefix>.<secret>`: found by its unique prefix, checked against the secret's SHA-256."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    # SHA-256 is enough: the secret is 256 random bits, so there is nothing to brute-force (Argon2 is for passwords).
    secret_hash: Mapped[str] = mapped_column(String(64))
    # Space-separated subset of "read trade live".
    scopes: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RefreshTokenRecord(Base):
    """One opaque refresh token (its SHA-256); a family is one login's chain of rotations."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set when rotated; presenting a used token again means it was stolen, so the whole family is revoked.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Indexed: servers poll max(revoked_at) twice a second to learn of logins ended by other processes.
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class StrategyRecord(Base):
    """A user's named preset: a base strategy class and its parameters (seed 004's stored strategy)."""

    __tablename__ = "strategies"
    __table_args__ = (UniqueConstraint("owner_id", "name_key", name="uq_strategies_owner_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # users.id, or 0 for the local operator of an auth-off server. Not NULL: unique constraints treat NULLs as
    # distinct, which would let the local operator store two presets with one name. No foreign key, as for runs.
    owner_id: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(200))
    # Case-folded name: "My RSI" and "my rsi" would be one name to `strategy_name` in a run request.
    name_key: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    # The strategy class the preset runs; None for a preset stored without one (seed 004 shows none).
    base_strategy: Mapped[str | None] = mapped_column(String(200))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    is_active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ExchangeCredentialRecord(Base):
    """A user's exchange keys under a name: only their ciphertext, and the fingerprint of the key it needs."""

    __tablename__ = "exchange_credentials"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_exchange_credentials_user_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # users.id, or 0 for the local operator of an auth-off server (as strategies' owner_id; no foreign key).
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(64))
    exchange: Mapped[str] = mapped_column(String(64))
    # AES-GCM: a 12-byte nonce then the sealed JSON of the fields, bound to (user_id, name, exchange).
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    # The key check value of the key that sealed it: rows a lost key left unreadable are found without decrypting.
    key_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SweepRecord(Base):
    """A parameter sweep of the server: its request, owner, counts and how it ended."""

    __tablename__ = "sweeps"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(SWEEP_STATUSES)})", name="status"),
        # Listing: an owner's sweeps newest first.
        Index("ix_sweeps_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # No foreign key, as runs.user_id has none.
    user_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    strategy_name: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    sort: Mapped[str] = mapped_column(String(64))
    combinations: Mapped[int] = mapped_column(Integer)
    evaluated: Mapped[int] = mapped_column(Integer)
    skipped_count: Mapped[int] = mapped_column(Integer)
    # The first few skipped combinations with their reasons (bounded: reasons repeat).
    skipped: Mapped[list[Any]] = mapped_column(JSONType)
    row_count: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    server_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WalkForwardRecord(Base):
    """A walk-forward (or CPCV) of the server: its request, owner, progress and, once completed, its report."""

    __tablename__ = "walkforwards"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(SWEEP_STATUSES)})", name="status"),
        CheckConstraint("kind IN ('walk_forward', 'cpcv')", name="kind"),
        # Listing: an owner's walk-forwards newest first.
        Index("ix_walkforwards_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # No foreign key, as runs.user_id has none.
    user_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    strategy_name: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    combinations: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)
    # The WalkForwardReport or CpcvReport as JSON, once completed.
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    server_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SweepRowRecord(Base):
    """One evaluated combination of a sweep, with its rank by the sweep's sort (1: best)."""

    __tablename__ = "sweep_rows"
    __table_args__ = (Index("ix_sweep_rows_sweep_id_rank", "sweep_id", "rank", unique=True),)

    sweep_id: Mapped[str] = mapped_column(String(32), ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    rank: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType)


class RunnerSlotRecord(Base):
    """A user's runner slot (seed 003's "the runner") shared by every server process: the run it shows."""

    __tablename__ = "runner_slots"

    # str(user id), or "local" for the auth-off operator.
    owner: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(String(32))
    # The run it showed before a reset (`/results` still shows it).
    last_run_id: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
