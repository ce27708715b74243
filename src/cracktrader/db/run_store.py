"""Run history: create runs, track their status, store their results and list them for the API."""

from __future__ import annotations

import asyncio
import builtins
import json
import math
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, cast

import numpy as np
from pydantic import BaseModel, ConfigDict
from sqlalchemy import CursorResult, delete, exists, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from cracktrader.db.engine import make_sessionmaker
from cracktrader.db.job_tables import JOB_KINDS
from cracktrader.db.models import (
    RUN_MODES,
    RUN_STATUSES,
    RunRecord,
    RunResultRecord,
    RunSeriesRecord,
    RunSymbolRecord,
    ServerRecord,
    SessionStateRecord,
)
from cracktrader.engine.records import STATUS_FILLED
from cracktrader.errors import CracktraderError
from cracktrader.runs.results import (
    EQUITY_DTYPE,
    HEAD_FORMAT,
    ORDER_DTYPE,
    EquityThinner,
    ResultsPage,
    RunResults,
    from_document,
    json_pieces,
    json_safe,
    page_of,
)
from cracktrader.runs.sanitize import redact

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
# A run, not the queue's place of a sweep or walk-forward (their documents live in tables of their own).
IS_RUN = or_(RunRecord.kind.is_(None), RunRecord.kind.not_in(JOB_KINDS))
INTERRUPTED_ERROR = "interrupted"
# Modes whose sessions another server resumes from their rows after a crash.
RESUMABLE_MODES = ("paper", "live")

_RUN_ID = re.compile(r"[0-9a-f]{32}")
# Rows per stored chunk (about 1.5 MB raw): a page of orders or a slice of the curve decompresses a few of them.
EQUITY_CHUNK = 65_536
ORDER_CHUNK = 16_384
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
    rerun_of: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# Results heads (small JSON, zlib) and series chunks (raw little-endian records, zlib).


def encode_document(document: Mapping[str, Any]) -> tuple[bytes, int]:
    """zlib-compressed JSON of a results head (or any JSON document) and the uncompressed size in bytes."""
    compressor = zlib.compressobj(_ZLIB_LEVEL)
    parts: builtins.list[bytes] = []
    size = 0
    for piece in json_pieces(document):
        # ensure_ascii (json's default) makes every piece ASCII, so the encode never fails and size is exact.
        raw = piece.encode("ascii")
        size += len(raw)
        parts.append(compressor.compress(raw))
    parts.append(compressor.flush())
    return b"".join(parts), size


def decode_document(blob: bytes) -> dict[str, Any]:
    """The document stored by `encode_document`."""
    document = json.loads(zlib.decompress(blob))
    if not isinstance(document, dict):
        raise ValueError("stored results are not a JSON object")
    return document


def _decode_head(blob: bytes) -> dict[str, Any]:
    """A stored head with its config sanitized again: rows written before the allowlist may hold secrets."""
    head = decode_document(blob)
    if isinstance(head.get("config"), Mapping):
        head["config"] = redact(head["config"])
    return head


def _feed(thinner: EquityThinner, first_row: int, blob: bytes) -> None:
    """Decompress a stored equity chunk and feed it to the thinner (in a worker thread)."""
    thinner.feed(first_row, decode_chunk(blob, EQUITY_DTYPE))


def encode_chunk(rows: np.ndarray) -> bytes:
    """A record array as compressed bytes (zlib releases the GIL while it works)."""
    return zlib.compress(np.ascontiguousarray(rows).tobytes(), _ZLIB_LEVEL)


def decode_chunk(blob: bytes, dtype: np.dtype[Any]) -> np.ndarray:
    """The record array stored by `encode_chunk`."""
    return np.frombuffer(zlib.decompress(blob), dtype=dtype)


def _chunks(rows: np.ndarray, size: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, rows.shape[0], size):
        yield start, rows[start : start + size]


@dataclass(frozen=True, slots=True)
class _ChunkMeta:
    kind: str
    seq: int
    first_row: int
    n_rows: int
    first_fill: int
    n_fills: int


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
        server_id: str | None = None,
        rerun_of: str | None = None,
    ) -> None:
        """Record a new run; `config` must already be sanitized. Raises RunExistsError if the id is taken."""
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
            server_id=server_id,
            rerun_of=rerun_of,
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
        results: RunResults,
        status: str,
        ended_at: datetime | None,
        error: str | None = None,
    ) -> None:
        """Store the results (replacing any earlier ones), the run's status and headline numbers.

        `ended_at` None: a checkpoint of a run still going (a paper session saves one every few seconds).
        """
        _check_status(status)
        ended = _utc(ended_at, "ended_at")
        head = {**results.head, "status": status, "error": error}
        metrics_raw = head.get("performance_metrics")
        metrics = json_safe(metrics_raw) if isinstance(metrics_raw, Mapping) else None
        final_value = _finite(head.get("final_value"))
        total_return = _finite(metrics.get("total_return")) if metrics else None
        # Compressing a large curve takes CPU: keep it off the event loop (zlib releases the GIL meanwhile).
        blob, size = await asyncio.to_thread(encode_document, head)
        series = [
            ("equity", await _encode_chunks("equity", results.equity, EQUITY_CHUNK)),
            ("orders", await _encode_chunks("orders", results.orders, ORDER_CHUNK)),
        ]
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
            await session.execute(delete(RunSeriesRecord).where(RunSeriesRecord.run_id == run_id))
            await session.execute(insert(RunResultRecord).values(run_id=run_id, document=blob, size_bytes=size))
            # In the same transaction: a reader never sees the new head with the old series, or with none.
            for kind, encoded in series:
                await _insert_chunks(session, run_id, kind, encoded, seq=0, row=0, fill=0)

    async def append_series(
        self, run_id: str, *, equity: np.ndarray | None = None, orders: np.ndarray | None = None
    ) -> None:
        """Append equity points and orders to a run's stored series (a paper session calls this as it goes)."""
        for kind, rows, size in (("equity", equity, EQUITY_CHUNK), ("orders", orders, ORDER_CHUNK)):
            if rows is None or rows.shape[0] == 0:
                continue
            encoded = await _encode_chunks(kind, rows, size)
            async with self._sessions.begin() as session:
                last = (
                    await session.execute(
                        select(RunSeriesRecord.seq, RunSeriesRecord.first_row, RunSeriesRecord.n_rows)
                        .add_columns(RunSeriesRecord.first_fill, RunSeriesRecord.n_fills)
                        .where(RunSeriesRecord.run_id == run_id, RunSeriesRecord.kind == kind)
                        .order_by(RunSeriesRecord.seq.desc())
                        .limit(1)
                    )
                ).first()
                seq, row, fill = (last[0] + 1, last[1] + last[2], last[3] + last[4]) if last else (0, 0, 0)
                await _insert_chunks(session, run_id, kind, encoded, seq=seq, row=row, fill=fill)

    async def read_page(
        self,
        run_id: str,
        *,
        user_id: int | None = None,
        max_points: int | None,
        limit: int | None,
        offset: int = 0,
    ) -> ResultsPage | None:
        """One page of a run's results, reading only the chunks it shows (and the equity values it thins)."""
        from_rows = await self.session_results(run_id, user_id=user_id)
        if from_rows is not None:
            return await asyncio.to_thread(
                lambda: page_of(from_rows, max_points=max_points, limit=limit, offset=offset)
            )
        async with self._sessions() as session:
            blob = await session.scalar(self._head_query(run_id, user_id))
            if blob is None:
                return None
            metas = [
                _ChunkMeta(*row)
                for row in await session.execute(
                    select(
                        RunSeriesRecord.kind,
                        RunSeriesRecord.seq,
                        RunSeriesRecord.first_row,
                        RunSeriesRecord.n_rows,
                        RunSeriesRecord.first_fill,
                        RunSeriesRecord.n_fills,
                    )
                    .where(RunSeriesRecord.run_id == run_id)
                    .order_by(RunSeriesRecord.kind, RunSeriesRecord.seq)
                )
            ]
        head = await asyncio.to_thread(_decode_head, blob)
        if head.get("format") != HEAD_FORMAT:
            # A run stored before the columnar store: its head is the whole document.
            legacy = await asyncio.to_thread(from_document, head)
            return await asyncio.to_thread(lambda: page_of(legacy, max_points=max_points, limit=limit, offset=offset))
        equity_metas = [m for m in metas if m.kind == "equity"]
        order_metas = [m for m in metas if m.kind == "orders"]
        total = sum(m.n_rows for m in equity_metas)
        thinner = EquityThinner(total, max_points or max(total, 2))
        for meta in equity_metas:
            data = await self._chunk_data(run_id, "equity", [meta.seq])
            await asyncio.to_thread(_feed, thinner, meta.first_row, data[meta.seq])
        orders_total = sum(m.n_rows for m in order_metas)
        trades_total = sum(m.n_fills for m in order_metas)
        end = offset + limit if limit is not None else max(orders_total, 1) + offset
        order_window = [m for m in order_metas if m.first_row < end and m.first_row + m.n_rows > offset]
        fill_window = [m for m in order_metas if m.n_fills and m.first_fill < end and m.first_fill + m.n_fills > offset]
        wanted = sorted({m.seq for m in order_window} | {m.seq for m in fill_window})
        data = await self._chunk_data(run_id, "orders", wanted)

        def window() -> tuple[np.ndarray, np.ndarray]:
            empty = np.empty(0, ORDER_DTYPE)
            orders = empty
            if order_window:
                rows = np.concatenate([decode_chunk(data[m.seq], ORDER_DTYPE) for m in order_window])
                base = order_window[0].first_row
                orders = rows[offset - base : end - base] if offset >= base else rows[: end - base]
            trades = empty
            if fill_window:
                rows = np.concatenate([decode_chunk(data[m.seq], ORDER_DTYPE) for m in fill_window])
                fills = rows[rows["status"] == STATUS_FILLED]
                base = fill_window[0].first_fill
                trades = fills[offset - base : end - base]
            return orders, trades

        orders, trades = await asyncio.to_thread(window)
        return ResultsPage(
            head=head,
            equity=await asyncio.to_thread(thinner.result),
            orders=orders,
            trades=trades,
            offset=offset,
            limit=limit if limit is not None else max(orders_total, 1),
            equity_total=total,
            orders_total=orders_total,
            trades_total=trades_total,
            paged=max_points is not None or limit is not None,
        )

    async def session_results(self, run_id: str, *, user_id: int | None = None) -> RunResults | None:
        """A paper session's results computed from its rows (None for other runs): what `/results` shows of it."""
        from cracktrader.db.session_store import SessionStore
        from cracktrader.runs.persist import RunInfo, results_from_rows

        summary = await self.get(run_id, user_id=user_id)
        if summary is None or summary.mode != "paper":
            return None
        stored = await SessionStore(self._engine).load(run_id)
        if stored is None:
            return None
        info = RunInfo(run_id, summary.config, summary.symbols, summary.status, summary.error, stored.updated_at)
        return await asyncio.to_thread(results_from_rows, stored, info)

    @staticmethod
    def _head_query(run_id: str, user_id: int | None) -> Any:
        query = select(RunResultRecord.document).join(RunRecord, RunRecord.id == RunResultRecord.run_id)
        query = query.where(RunResultRecord.run_id == run_id)
        return query if user_id is None else query.where(RunRecord.user_id == user_id)

    async def read_head(self, run_id: str, *, user_id: int | None = None) -> dict[str, Any] | None:
        """A run's results head (everything but its series), or None."""
        from_rows = await self.session_results(run_id, user_id=user_id)
        if from_rows is not None:
            return from_rows.head
        async with self._sessions() as session:
            blob = await session.scalar(self._head_query(run_id, user_id))
        return None if blob is None else await asyncio.to_thread(_decode_head, blob)

    async def _chunk_data(self, run_id: str, kind: str, seqs: builtins.list[int]) -> dict[int, bytes]:
        if not seqs:
            return {}
        async with self._sessions() as session:
            rows = await session.execute(
                select(RunSeriesRecord.seq, RunSeriesRecord.data).where(
                    RunSeriesRecord.run_id == run_id, RunSeriesRecord.kind == kind, RunSeriesRecord.seq.in_(seqs)
                )
            )
            return {int(seq): bytes(blob) for seq, blob in rows}

    async def iter_series(self, run_id: str, kind: str) -> AsyncIterator[np.ndarray]:
        """A run's stored equity points or orders, one chunk at a time (for streaming exports)."""
        dtype = EQUITY_DTYPE if kind == "equity" else ORDER_DTYPE
        from_rows = await self.session_results(run_id)
        if from_rows is not None:
            yield from_rows.equity if kind == "equity" else from_rows.orders
            return
        async with self._sessions() as session:
            seqs = (
                await session.scalars(
                    select(RunSeriesRecord.seq)
                    .where(RunSeriesRecord.run_id == run_id, RunSeriesRecord.kind == kind)
                    .order_by(RunSeriesRecord.seq)
                )
            ).all()
        if not seqs:
            head = await self.read_head(run_id)
            if head is not None and head.get("format") != HEAD_FORMAT:
                # A run stored before the columnar store keeps its series inside the head.
                legacy = await asyncio.to_thread(from_document, head)
                yield legacy.equity if kind == "equity" else legacy.orders
            return
        for seq in seqs:
            data = await self._chunk_data(run_id, kind, [seq])
            if seq in data:
                yield await asyncio.to_thread(decode_chunk, data[seq], dtype)

    async def get(self, run_id: str, *, user_id: int | None = None) -> RunSummary | None:
        """The run, or None; with user_id, only if it belongs to that user."""
        query = select(RunRecord).where(RunRecord.id == run_id, IS_RUN)
        if user_id is not None:
            query = query.where(RunRecord.user_id == user_id)
        async with self._sessions() as session:
            record = await session.scalar(query)
            return None if record is None else _summary(record)

    async def get_results(self, run_id: str, *, user_id: int | None = None) -> dict[str, Any] | None:
        """The whole stored results document, or None (tools and tests; the API reads pages)."""
        page = await self.read_page(run_id, user_id=user_id, max_points=None, limit=None)
        return None if page is None else await asyncio.to_thread(page.document)

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
        conditions: builtins.list[ColumnElement[bool]] = [IS_RUN]
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
        query = delete(RunRecord).where(RunRecord.id == run_id, IS_RUN)
        if user_id is not None:
            query = query.where(RunRecord.user_id == user_id)
        async with self._sessions.begin() as session:
            # ON DELETE CASCADE removes run_symbols and run_results rows in the database itself.
            result = await session.execute(query)
            return _rowcount(result) > 0

    async def register_server(self, server_id: str, *, host: str, pid: int, now: datetime) -> None:
        """Take this server process's lease (renewed by `heartbeat`)."""
        at = _utc(now, "now")
        async with self._sessions.begin() as session:
            session.add(ServerRecord(id=server_id, host=host, pid=pid, started_at=at, heartbeat_at=at))

    async def heartbeat(self, server_id: str, *, now: datetime) -> None:
        """Renew this server's lease."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(ServerRecord).where(ServerRecord.id == server_id).values(heartbeat_at=_utc(now, "now"))
            )

    async def release_server(self, server_id: str) -> None:
        """Give up the lease at a clean shutdown."""
        async with self._sessions.begin() as session:
            await session.execute(delete(ServerRecord).where(ServerRecord.id == server_id))

    async def mark_interrupted(
        self,
        *,
        now: datetime | None = None,
        server_id: str | None = None,
        lease_ttl: timedelta = timedelta(seconds=30),
        host: str | None = None,
        is_alive: Callable[[int], bool] | None = None,
    ) -> int:
        """Fail every run still starting or running whose server is gone; returns how many.

        A server is gone when its lease lapsed (no heartbeat for `lease_ttl`), or when it ran on `host` and its
        process no longer exists. Runs recorded without a server (before leases) are always cut short. Without
        `server_id` every active run is failed (a single process that just started owns nothing yet).
        """
        ended = _utc(now, "now") or datetime.now(UTC)
        async with self._sessions.begin() as session:
            conditions: builtins.list[ColumnElement[bool]] = [
                RunRecord.status.in_(ACTIVE_STATUSES),
                # Runs of the queue are the executors' (leases, reclaim), not those of a server that starts.
                RunRecord.queue_state.is_(None),
            ]
            if server_id is not None:
                servers = (
                    await session.execute(
                        select(ServerRecord.id, ServerRecord.host, ServerRecord.pid, ServerRecord.heartbeat_at)
                    )
                ).all()
                alive = {server_id}
                for sid, server_host, pid, beat in servers:
                    dead_here = host is not None and server_host == host and is_alive is not None and not is_alive(pid)
                    if sid != server_id and not dead_here and beat is not None and ended - beat <= lease_ttl:
                        alive.add(sid)
                gone = [sid for sid, *_ in servers if sid not in alive]
                if gone:
                    await session.execute(delete(ServerRecord).where(ServerRecord.id.in_(gone)))
                conditions.append(or_(RunRecord.server_id.is_(None), RunRecord.server_id.not_in(sorted(alive))))
            # A paper or live session recorded in rows is not cut short: another server takes it over and resumes it
            # (a live one waits there for its keys); failing it here lost a live session at every restart.
            resumable = exists().where(SessionStateRecord.run_id == RunRecord.id)
            conditions.append(or_(RunRecord.mode.not_in(RESUMABLE_MODES), ~resumable))
            result = await session.execute(
                update(RunRecord).where(*conditions).values(status="failed", error=INTERRUPTED_ERROR, ended_at=ended)
            )
            return _rowcount(result)

    async def prune(self, *, now: datetime, max_age: timedelta | None = None, max_count: int | None = None) -> int:
        """Delete finished backtest and paper runs older than `max_age` or beyond the newest `max_count`.

        Live-trading records and active runs are never deleted.
        """
        conditions: builtins.list[ColumnElement[bool]] = [
            RunRecord.mode != "live",
            RunRecord.status.not_in(ACTIVE_STATUSES),
        ]
        doomed: set[str] = set()
        async with self._sessions.begin() as session:
            if max_age is not None:
                cutoff = _utc(now, "now") - max_age  # type: ignore[operator]
                query = select(RunRecord.id).where(*conditions, RunRecord.created_at < cutoff)
                doomed.update((await session.scalars(query)).all())
            if max_count is not None:
                query = (
                    select(RunRecord.id)
                    .where(*conditions, IS_RUN)
                    .order_by(RunRecord.created_at.desc(), RunRecord.id.desc())
                    .offset(max_count)
                )
                doomed.update((await session.scalars(query)).all())
            for start in range(0, len(doomed), 500):
                batch = sorted(doomed)[start : start + 500]
                await session.execute(delete(RunRecord).where(RunRecord.id.in_(batch)))
        return len(doomed)

    async def ping(self) -> float:
        """Seconds for a `SELECT 1` round trip (health checks); raises if the database is unreachable."""
        started = time.perf_counter()
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return time.perf_counter() - started


# One stored chunk: (first row within the rows encoded, rows, filled orders among them, compressed bytes).
EncodedChunk = tuple[int, int, int, bytes]


async def _encode_chunks(kind: str, rows: np.ndarray, size: int) -> builtins.list[EncodedChunk]:
    """A series' rows cut into chunks and compressed, before any transaction (zlib releases the GIL meanwhile)."""
    out: builtins.list[EncodedChunk] = []
    for start, part in _chunks(rows, size):
        fills = int(np.count_nonzero(part["status"] == STATUS_FILLED)) if kind == "orders" else 0
        out.append((start, int(part.shape[0]), fills, await asyncio.to_thread(encode_chunk, part)))
    return out


async def _insert_chunks(
    session: AsyncSession,
    run_id: str,
    kind: str,
    encoded: builtins.list[EncodedChunk],
    *,
    seq: int,
    row: int,
    fill: int,
) -> None:
    """Insert encoded chunks after the series' chunk `seq - 1` (its rows and fills so far: `row`, `fill`)."""
    for start, n_rows, fills, blob in encoded:
        await session.execute(
            insert(RunSeriesRecord).values(
                run_id=run_id,
                kind=kind,
                seq=seq,
                first_row=row + start,
                n_rows=n_rows,
                first_fill=fill,
                n_fills=fills,
                data=blob,
            )
        )
        seq, fill = seq + 1, fill + fills
