"""The runs table as a queue shared by every executor: enqueue, claim under global limits, lease, fence, reclaim."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cracktrader.db.job_tables import follow_reclaim
from cracktrader.db.models import RunRecord, RunSymbolRecord
from cracktrader.db.secret_box import SecretBox
from cracktrader.errors import CracktraderError
from cracktrader.settings import Settings

KINDS: tuple[str, ...] = ("backtest", "sweep", "walkforward", "paper", "live")
SESSION_KINDS: frozenset[str] = frozenset({"paper", "live"})
QUEUED, CLAIMED, DONE = "queued", "claimed", "done"
_CLAIM_LOCK = 0x0C7A17  # pg_advisory_xact_lock key: count-and-claim is serialized across executors
_ENQUEUE_LOCK = 0x0C7A18


class UserRunLimitError(CracktraderError):
    """The user already has as many queued plus running runs as allowed."""

    code = "TOO_MANY_RUNS"
    status_code = 429


class LeaseLostError(CracktraderError):
    """The run's lease was taken over (its fencing token is stale): this executor may no longer write it."""

    code = "LEASE_LOST"
    status_code = 409


@dataclass(frozen=True)
class Claim:
    """A run an executor holds: the token fences all its writes."""

    run_id: str
    kind: str
    token: int
    config: dict[str, Any]
    user_id: int | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # the whole request, opened from its seal


class JobSpecUnreadableError(CracktraderError):
    """A queued run's request does not open with this executor's key (CRACKTRADER_SECRET_KEY differs)."""

    code = "JOB_SPEC_UNREADABLE"
    status_code = 409


def _bound(run_id: str) -> bytes:
    return f"cracktrader run spec:{run_id}".encode()


def _group(kind: str) -> str:
    return "session" if kind in SESSION_KINDS else "backtest"


class RunQueue:
    """Queue operations on one engine; every method is one transaction."""

    def __init__(self, engine: AsyncEngine, settings: Settings, box: SecretBox | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.box = box  # seals each run's request: it may hold exchange keys, and the table is not a vault
        self._pg = engine.dialect.name == "postgresql"

    def _seal(self, run_id: str, spec: Mapping[str, Any] | None) -> bytes | None:
        if spec is None:
            return None
        if self.box is None:
            raise ValueError("a run queue that stores requests needs a SecretBox")
        return self.box.seal(json.dumps(spec, allow_nan=False).encode(), _bound(run_id))

    def _open(self, run_id: str, sealed: bytes | None) -> dict[str, Any]:
        if sealed is None:
            return {}
        if self.box is None:
            raise ValueError("a run queue that reads requests needs a SecretBox")
        try:
            spec: dict[str, Any] = json.loads(self.box.open(sealed, _bound(run_id)))
        except CracktraderError:
            raise JobSpecUnreadableError(
                f"Run {run_id}'s request does not open with this executor's key: give every server and worker "
                "the same CRACKTRADER_SECRET_KEY",
                details={"run_id": run_id},
            ) from None
        return spec

    async def _serialize(self, conn: AsyncConnection, key: int) -> None:
        # PostgreSQL: an advisory lock held to commit; SQLite: a write first takes the single writer's lock.
        if self._pg:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        else:
            await conn.execute(text("UPDATE runs SET priority = priority WHERE 0"))

    async def enqueue(
        self,
        *,
        user_id: int | None,
        kind: str,
        strategy_name: str,
        config: dict[str, Any],
        now: datetime,
        priority: int = 0,
        timeframe: str = "",
        exchange: str = "",
        symbols: tuple[str, ...] | list[str] = (),
        spec: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Queue a run (`config`: its redacted copy; `spec`: the whole request, sealed); over the user's limit of
        queued plus running runs raises UserRunLimitError (429)."""
        if kind not in KINDS:
            raise ValueError(kind)
        run_id = run_id or uuid.uuid4().hex
        sealed = self._seal(run_id, spec)
        mode = kind if kind in SESSION_KINDS else "backtest"
        async with self.engine.begin() as conn:
            await self._serialize(conn, _ENQUEUE_LOCK)
            if user_id is not None:
                held = (
                    await conn.execute(
                        select(func.count())
                        .select_from(RunRecord)
                        .where(RunRecord.user_id == user_id, RunRecord.queue_state.in_((QUEUED, CLAIMED)))
                    )
                ).scalar_one()
                limit = self.settings.max_runs_per_user
                if held >= limit:
                    raise UserRunLimitError(
                        f"You already have {held} queued or running runs (limit {limit}).",
                        details={"limit": limit, "active": held},
                    )
            await conn.execute(
                insert(RunRecord).values(
                    id=run_id,
                    user_id=user_id,
                    mode=mode,
                    status="starting",
                    strategy_name=strategy_name,
                    timeframe=timeframe,
                    exchange=exchange,
                    config=config,
                    created_at=now,
                    queue_state=QUEUED,
                    kind=kind,
                    priority=priority,
                    queued_at=now,
                    fencing_token=0,
                    attempts=0,
                    job_spec=sealed,
                )
            )
            if symbols:
                await conn.execute(
                    insert(RunSymbolRecord),
                    [{"run_id": run_id, "position": i, "symbol": s} for i, s in enumerate(symbols)],
                )
        return run_id

    async def claim(self, executor_id: str, kinds: tuple[str, ...], now: datetime) -> Claim | None:
        """Take the next queued run of `kinds` (priority, then FIFO) unless the global limits are reached."""
        async with self.engine.begin() as conn:
            await self._serialize(conn, _CLAIM_LOCK)
            running = dict(
                (
                    await conn.execute(
                        select(RunRecord.kind, func.count())
                        .where(RunRecord.queue_state == CLAIMED)
                        .group_by(RunRecord.kind)
                    )
                ).all()
            )
            used = {"backtest": 0, "session": 0}
            for kind, n in running.items():
                used[_group(kind or "backtest")] += n
            caps = {"backtest": self.settings.max_concurrent_backtests, "session": self.settings.max_live_sessions}
            allowed = [k for k in kinds if used[_group(k)] < caps[_group(k)]]
            if not allowed:
                return None
            query = (
                select(
                    RunRecord.id,
                    RunRecord.kind,
                    RunRecord.fencing_token,
                    RunRecord.config,
                    RunRecord.user_id,
                    RunRecord.job_spec,
                )
                .where(RunRecord.queue_state == QUEUED, RunRecord.kind.in_(allowed))
                .order_by(RunRecord.priority.desc(), RunRecord.queued_at, RunRecord.id)
                .limit(1)
            )
            if self._pg:
                query = query.with_for_update(skip_locked=True)
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            token = row.fencing_token + 1
            await conn.execute(
                update(RunRecord)
                .where(RunRecord.id == row.id)
                .values(
                    queue_state=CLAIMED,
                    status="running",
                    executor_id=executor_id,
                    fencing_token=token,
                    lease_expires_at=now + timedelta(seconds=self.settings.run_lease_ttl_s),
                    started_at=now,
                    attempts=RunRecord.attempts + 1,
                )
            )
            spec = self._open(row.id, row.job_spec) if row.job_spec is not None else {}
            return Claim(row.id, row.kind, token, dict(row.config), row.user_id, spec)

    async def heartbeat(self, executor_id: str, now: datetime) -> dict[str, int]:
        """Extend the leases of the executor's runs; returns the run ids (with tokens) it still holds."""
        lease = now + timedelta(seconds=self.settings.run_lease_ttl_s)
        async with self.engine.begin() as conn:
            held = (
                await conn.execute(
                    update(RunRecord)
                    .where(RunRecord.executor_id == executor_id, RunRecord.queue_state == CLAIMED)
                    .values(lease_expires_at=lease)
                    .returning(RunRecord.id, RunRecord.fencing_token)
                )
            ).all()
        return {run_id: token for run_id, token in held}

    async def _fenced(self, run_id: str, token: int, values: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(RunRecord)
                .where(RunRecord.id == run_id, RunRecord.fencing_token == token, RunRecord.queue_state == CLAIMED)
                .values(**values)
            )
        if result.rowcount != 1:
            raise LeaseLostError(f"Run {run_id} is no longer held with token {token}.", details={"run_id": run_id})

    async def finish(
        self,
        run_id: str,
        token: int,
        status: Literal["completed", "failed", "stopped"],
        now: datetime,
        error: str | None = None,
    ) -> None:
        """Record the end of a held run (`error` None keeps the one its run saved); a stale token raises
        LeaseLostError."""
        values: dict[str, Any] = {
            "queue_state": DONE,
            "status": status,
            "ended_at": now,
            "executor_id": None,
            "lease_expires_at": None,
            "job_spec": None,
        }
        if error is not None:
            values["error"] = error
        await self._fenced(run_id, token, values)

    async def cancel_queued(self, run_id: str, now: datetime, *, user_id: int | None = None) -> bool:
        """Stop a run no executor has claimed yet; False when it is not (or no longer) queued."""
        query = update(RunRecord).where(RunRecord.id == run_id, RunRecord.queue_state == QUEUED)
        if user_id is not None:
            query = query.where(RunRecord.user_id == user_id)
        async with self.engine.begin() as conn:
            result = await conn.execute(query.values(queue_state=DONE, status="stopped", ended_at=now, job_spec=None))
        return bool(result.rowcount == 1)

    async def release(self, run_id: str, token: int) -> None:
        """Hand a held run back to the queue (drain); its old token is refused afterwards."""
        await self._fenced(
            run_id,
            token,
            {
                "queue_state": QUEUED,
                "status": "starting",
                "executor_id": None,
                "lease_expires_at": None,
                "fencing_token": token + 1,
            },
        )

    async def reclaim_expired(self, now: datetime, policy: Literal["requeue", "fail"] | None = None) -> list[str]:
        """Runs whose lease lapsed: sessions re-queued, backtests (sweeps, walk-forwards) re-queued or failed per
        policy; nothing else."""
        policy = policy or self.settings.expired_backtest_policy
        async with self.engine.begin() as conn:
            query = select(RunRecord.id, RunRecord.kind, RunRecord.fencing_token).where(
                RunRecord.queue_state == CLAIMED, RunRecord.lease_expires_at < now
            )
            if self._pg:
                query = query.with_for_update(skip_locked=True)
            else:
                await self._serialize(conn, _CLAIM_LOCK)
            rows = (await conn.execute(query)).all()
            for run_id, kind, token in rows:
                if kind in SESSION_KINDS or policy == "requeue":
                    values: dict[str, Any] = {"queue_state": QUEUED, "status": "starting"}
                else:
                    values = {
                        "queue_state": DONE,
                        "status": "failed",
                        "ended_at": now,
                        "error": "The executor running it stopped renewing its lease.",
                        "job_spec": None,
                    }
                await conn.execute(
                    update(RunRecord)
                    .where(RunRecord.id == run_id, RunRecord.fencing_token == token)
                    .values(executor_id=None, lease_expires_at=None, fencing_token=token + 1, **values)
                )
                await follow_reclaim(conn, kind, run_id, failed=values["queue_state"] == DONE, now=now)
        return [row[0] for row in rows]
