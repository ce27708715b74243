"""Run history: create runs, track their status, store their results and list them for the API."""

from __future__ import annotations

import asyncio
import builtins
import json
import math
import re
import time
import zlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from pydantic import BaseModel, ConfigDict
from sqlalchemy import CursorResult, delete, exists, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from cracktrader.db.engine import make_sessionmaker
from cracktrader.db.models import RUN_MODES, RUN_STATUSES, RunRecord, RunResultRecord, RunSymbolRecord
from cracktrader.errors import CracktraderError

__all__ = [
    "ACTIVE_STATUSES",
    "INTERRUPTED_ERROR",
    "RunExistsError",
    "RunNotFoundError",
    "RunStore",
    "RunSummary",
    "decode_document",
    "encode_document",
    "json_safe",
]

# Runs in these states when the process starts again were cut short by a crash or a restart.
ACTIVE_STATUSES: tuple[str, ...] = ("starting", "running")
INTERRUPTED_ERROR = "interrupted"

_RUN_ID = re.compile(r"[0-9a-f]{32}")
# Elements per json.dumps call for long lists: big enough for the C encoder to dominate, small enough that the
# serialised text of one chunk (a few MB) is all that exists uncompressed at any moment.
_CHUNK = 20_000
# Level 1 compresses a 1M-point equity curve ~2x faster than the default 6 for ~8% more bytes.
_ZLIB_LEVEL = 1


class RunNotFoundError(CracktraderError):
    """No run with that id (or not one of the given user's)."""

    code: ClassVar[str] = "RUN_NOT_FOUND"
    status_code: ClassVar[int] = 404


class RunExistsError(CracktraderError):
    """A run with that id already exists."""

    code: ClassVar[str] = "RUN_EXISTS"
    status_code: ClassVar[int] = 409


class RunSummary(BaseModel):
    """A run's row without its results document (what listings and `GET /runs/{id}` show)."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: str
    user_id: int | None
    mode: str
    status: str
    strategy_name: str
    symbols: tuple[str, ...]
    timeframe: str
    exchange: str
    config: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None
    final_value: float | None
    total_return: float | None
    metrics: dict[str, Any] | None


# ---------------------------------------------------------------------------------------------------------------
# Results documents: JSON without NaN/inf, zlib-compressed while it is being serialised.


def json_safe(value: Any) -> Any:
    """Copy of a JSON-like value with NaN and ±inf floats replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _default(value: Any) -> Any:
    # numpy scalars and arrays slip into documents easily; datetimes appear in configs.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _dumps(value: Any) -> str:
    """Compact JSON; non-finite floats become null (only values that contain one pay for the extra pass)."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), default=_default)
    except ValueError as exc:
        if not str(exc).startswith("Out of range float"):
            raise
    return json.dumps(json_safe(_plain(value)), allow_nan=False, separators=(",", ":"), default=_default)


def _plain(value: Any) -> Any:
    """numpy values as Python ones, so that `json_safe` sees their floats."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, float | int | str):
        return _plain(value.tolist())
    return value


def _json_pieces(document: Mapping[str, Any]) -> Iterator[str]:
    """The document's JSON text in pieces; long top-level lists (the equity curve) are encoded in chunks."""
    yield "{"
    for i, (key, value) in enumerate(document.items()):
        yield ("," if i else "") + json.dumps(str(key)) + ":"
        if isinstance(value, list) and len(value) > _CHUNK:
            yield "["
            for start in range(0, len(value), _CHUNK):
                # Strip each chunk's brackets so the chunks join into one array.
                yield ("," if start else "") + _dumps(value[start : start + _CHUNK])[1:-1]
            yield "]"
        else:
            yield _dumps(value)
    yield "}"


def encode_document(document: Mapping[str, Any]) -> tuple[bytes, int]:
    """zlib-compressed JSON of a results document and the uncompressed size in bytes."""
    compressor = zlib.compressobj(_ZLIB_LEVEL)
    parts: builtins.list[bytes] = []
    size = 0
    for piece in _json_pieces(document):
        # ensure_ascii (json's default) makes every piece ASCII, so the encode never fails and size is exact.
        raw = piece.encode("ascii")
        size += len(raw)
        parts.append(compressor.compress(raw))
    parts.append(compressor.flush())
    return b"".join(parts), size


def decode_document(blob: bytes) -> dict[str, Any]:
    """The results document stored by `encode_document`."""
    document = json.loads(zlib.decompress(blob))
    if not isinstance(document, dict):
        raise ValueError("stored results are not a JSON object")
    return document


def _finite(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, NaN, inf, non-numeric)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------------------------


def _utc(value: datetime | None, name: str) -> datetime | None:
    """The datetime in UTC; naive datetimes are rejected because their zone would be a guess."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")
    return value.astimezone(UTC)


def _check_status(status: str) -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}; got {status!r}")


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _summary(record: RunRecord) -> RunSummary:
    return RunSummary.model_validate(record)


class RunStore:
    """Runs and their results in the database; every method is one short transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions: async_sessionmaker[AsyncSession] = make_sessionmaker(engine)

    @property
    def engine(self) -> AsyncEngine:
        """The engine the store runs on."""
        return self._engine

    async def create(
        self,
        *,
        run_id: str,
        mode: str,
        status: str,
        config: dict[str, Any],
        strategy_name: str,
        symbols: builtins.list[str],
        timeframe: str,
        exchange: str,
        user_id: int | None = None,
        created_at: datetime | None = None,
    ) -> None:
        """Record a new run; `config` must already be redacted. Raises RunExistsError if the id is taken."""
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"run_id must be 32 lowercase hex characters, got {run_id!r}")
        if mode not in RUN_MODES:
            raise ValueError(f"mode must be one of {', '.join(RUN_MODES)}; got {mode!r}")
        _check_status(status)
        record = RunRecord(
            id=run_id,
            user_id=user_id,
            mode=mode,
            status=status,
            strategy_name=strategy_name,
            timeframe=timeframe,
            exchange=exchange,
            config=json_safe(config),
            created_at=_utc(created_at, "created_at") or datetime.now(UTC),
            symbol_rows=[RunSymbolRecord(position=i, symbol=s) for i, s in enumerate(symbols)],
        )
        try:
            async with self._sessions.begin() as session:
                session.add(record)
        except IntegrityError as exc:
            # Inputs are validated above, so the only constraint left to violate is the primary key.
            raise RunExistsError(f"run {run_id} already exists", details={"run_id": run_id}) from exc

    async def update_status(
        self,
        run_id: str,
        *,
        status: str,
        started_at: datetime | None = None,
        ended_at: datetime | None = None,
        error: str | None = None,
    ) -> None:
        """Set the status; started_at, ended_at and error change only when given. Raises RunNotFoundError."""
        _check_status(status)
        values: dict[str, Any] = {"status": status}
        if started_at is not None:
            values["started_at"] = _utc(started_at, "started_at")
        if ended_at is not None:
            values["ended_at"] = _utc(ended_at, "ended_at")
        if error is not None:
            values["error"] = error
        async with self._sessions.begin() as session:
            result = await session.execute(update(RunRecord).where(RunRecord.id == run_id).values(**values))
            if _rowcount(result) == 0:
                raise RunNotFoundError(f"run {run_id} not found", details={"run_id": run_id})

    async def save_results(
        self,
        run_id: str,
        *,
        document: dict[str, Any],
        status: str,
        ended_at: datetime,
        error: str | None = None,
    ) -> None:
        """Store the results document (replacing any earlier one) and the run's final status and headline numbers."""
        _check_status(status)
        ended = _utc(ended_at, "ended_at")
        metrics_raw = document.get("performance_metrics")
        metrics = json_safe(_plain(metrics_raw)) if isinstance(metrics_raw, Mapping) else None
        final_value = _finite(document.get("final_value"))
        total_return = _finite(metrics.get("total_return")) if metrics else None
        # Serialising and compressing a large curve takes seconds of CPU: keep it off the event loop.
        blob, size = await asyncio.to_thread(encode_document, document)
        async with self._sessions.begin() as session:
            # Write first: SQLite then takes the write lock up front (waiting up to busy_timeout) instead of
            # failing when a read transaction tries to upgrade.
            result = await session.execute(
                update(RunRecord)
                .where(RunRecord.id == run_id)
                .values(
                    status=status,
                    ended_at=ended,
                    error=error,
                    final_value=final_value,
                    total_return=total_return,
                    metrics=metrics,
                )
            )
            if _rowcount(result) == 0:
                raise RunNotFoundError(f"run {run_id} not found", details={"run_id": run_id})
            await session.execute(delete(RunResultRecord).where(RunResultRecord.run_id == run_id))
            await session.execute(insert(RunResultRecord).values(run_id=run_id, document=blob, size_bytes=size))

    async def get(self, run_id: str, *, user_id: int | None = None) -> RunSummary | None:
        """The run, or None; with user_id, only if it belongs to that user."""
        query = select(RunRecord).where(RunRecord.id == run_id)
        if user_id is not None:
            query = query.where(RunRecord.user_id == user_id)
        async with self._sessions() as session:
            record = await session.scalar(query)
            return None if record is None else _summary(record)

    async def get_results(self, run_id: str, *, user_id: int | None = None) -> dict[str, Any] | None:
        """The stored results document, or None when the run (of that user) or its results do not exist."""
        query = select(RunResultRecord.document).join(RunRecord, RunRecord.id == RunResultRecord.run_id)
        query = query.where(RunResultRecord.run_id == run_id)
        if user_id is not None:
            query = query.where(RunRecord.user_id == user_id)
        async with self._sessions() as session:
            blob = await session.scalar(query)
        if blob is None:
            return None
        return await asyncio.to_thread(decode_document, blob)

    async def list(
        self,
        *,
        status: str | None = None,
        mode: str | None = None,
        strategy: str | None = None,
        symbol: str | None = None,
        user_id: int | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[builtins.list[RunSummary], int]:
        """One page of runs, newest first, and how many match in total. `symbol` matches whole symbols only."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        conditions: builtins.list[ColumnElement[bool]] = []
        if status is not None:
            conditions.append(RunRecord.status == status)
        if mode is not None:
            conditions.append(RunRecord.mode == mode)
        if strategy is not None:
            conditions.append(RunRecord.strategy_name == strategy)
        if symbol is not None:
            conditions.append(exists().where(RunSymbolRecord.run_id == RunRecord.id, RunSymbolRecord.symbol == symbol))
        if user_id is not None:
            conditions.append(RunRecord.user_id == user_id)
        count_query = select(func.count()).select_from(RunRecord).where(*conditions)
        async with self._sessions() as session:
            total = int(await session.scalar(count_query) or 0)
            # Past the end there is nothing to fetch; skipping the query also keeps absurd offsets (beyond a
            # 64-bit integer) from ever reaching the database.
            limit = min(limit, total - offset) if offset < total else 0
            if limit == 0:
                return [], total
            # The id breaks ties so pages never overlap when runs share a created_at.
            page_query = (
                select(RunRecord)
                .where(*conditions)
                .order_by(RunRecord.created_at.desc(), RunRecord.id.desc())
                .limit(limit)
                .offset(offset)
            )
            records = (await session.scalars(page_query)).all()
            return [_summary(r) for r in records], total

    async def delete(self, run_id: str, *, user_id: int | None = None) -> bool:
        """Delete the run with its symbols and results; False when there was no such run (of that user)."""
        query = delete(RunRecord).where(RunRecord.id == run_id)
        if user_id is not None:
            query = query.where(RunRecord.user_id == user_id)
        async with self._sessions.begin() as session:
            # ON DELETE CASCADE removes run_symbols and run_results rows in the database itself.
            result = await session.execute(query)
            return _rowcount(result) > 0

    async def mark_interrupted(self, *, now: datetime | None = None) -> int:
        """Fail every run still starting or running (at start-up, these were cut short); returns how many."""
        ended = _utc(now, "now") or datetime.now(UTC)
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(RunRecord)
                .where(RunRecord.status.in_(ACTIVE_STATUSES))
                .values(status="failed", error=INTERRUPTED_ERROR, ended_at=ended)
            )
            return _rowcount(result)

    async def ping(self) -> float:
        """Seconds for a `SELECT 1` round trip (health checks); raises if the database is unreachable."""
        started = time.perf_counter()
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return time.perf_counter() - started
