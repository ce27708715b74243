"""`Annotated` dependency aliases for the routers; with auth on they hand out views scoped to the caller."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import Depends, Request

from cracktrader.auth.errors import ForbiddenError, NotAuthenticatedError
from cracktrader.auth.principal import Principal
from cracktrader.db.strategy_store import LOCAL_OWNER, StrategyStore
from cracktrader.runs.config import BacktestConfig, LiveConfig
from cracktrader.runs.manager import RunManager
from cracktrader.runs.results import RunResults
from cracktrader.runs.state import PRIVATE_STATUS_BLANKS, RunState, lifecycle_only
from cracktrader.strategies.registry import StrategyRegistry, load_registry
from cracktrader.web.config import WebSettings
from cracktrader.web.runs.encoder import PageEncoder

if TYPE_CHECKING:
    from cracktrader.db.run_store import RunStore
    from cracktrader.web.auth.deps import AuthState


def _principal(request: Request) -> Principal | None:
    """The caller the API router's auth dependency resolved; None when auth is off."""
    auth: AuthState = request.app.state.auth
    if not auth.enabled:
        return None
    principal = getattr(request.state, "principal", None)
    if principal is None:
        # Every route using these dependencies sits behind the auth dependency; fail closed if one does not.
        raise NotAuthenticatedError("Authentication required")
    return cast(Principal, principal)


async def _owner(auth: AuthState, store: Any, run_id: str) -> int | None:
    if run_id not in auth.run_owners and store is not None:
        summary = await store.get(run_id)
        auth.remember_owner(run_id, summary.user_id if summary is not None else None)
    return auth.run_owners.get(run_id)


_STATE_FIELDS = frozenset(f.name for f in dataclasses.fields(RunState))


async def sees_run(app: Any, principal: Principal | None, run_id: str | None) -> bool:
    """Whether the caller may see a run's numbers and events: auth off, admins, and the run's owner."""
    if principal is None or principal.is_admin or run_id is None:
        return True
    return await _owner(app.state.auth, app.state.run_store, run_id) == principal.user_id


class ScopedManager:
    """The run manager as one non-admin user sees it: their own current run in full, anyone else's as lifecycle."""

    def __init__(self, manager: RunManager, principal: Principal, auth: AuthState, owned: set[str]) -> None:
        self._manager = manager
        self._principal = principal
        self._auth = auth
        self._owned = owned

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)

    def _owns(self, run_id: str | None) -> bool:
        return run_id is not None and run_id in self._owned

    @property
    def state(self) -> RunState:
        """The real state for the owner; for others only lifecycle and progress (no money, orders or trades)."""
        st = self._manager.state
        if st.run_id is None or self._owns(st.run_id):
            return st
        return dataclasses.replace(
            st,
            **{k: v for k, v in PRIVATE_STATUS_BLANKS.items() if k in _STATE_FIELDS},
            config=None,
            initial_cash=None,
            recent_orders=deque(maxlen=1),
            recent_trades=deque(maxlen=1),
            equity_samples=[],
        )

    def status(self) -> dict[str, Any]:
        """`/status`, with another user's run reduced to its lifecycle."""
        snapshot = self._manager.status()
        return snapshot if snapshot["run_id"] is None or self._owns(snapshot["run_id"]) else lifecycle_only(snapshot)

    def results_run_id(self) -> str | None:
        """The run `/results` shows the caller: their current or last run in this process, if any."""
        for run_id in (self._manager.state.run_id, self._manager.results_run_id()):
            if self._owns(run_id):
                return run_id
        return None

    def memory_results(self, run_id: str) -> RunResults | None:
        """Results held in memory, only if they are the caller's."""
        return self._manager.memory_results(run_id) if self._owns(run_id) else None

    async def start_backtest(
        self, config: BacktestConfig, *, user_id: int | None = None, rerun_of: Any = None
    ) -> dict[str, Any]:
        """Start a backtest (or a rerun of `rerun_of`, a StoredRun) owned by the caller."""
        result = await self._manager.start_backtest(config, user_id=self._principal.user_id, rerun_of=rerun_of)
        self._auth.remember_owner(result["run_id"], self._principal.user_id)
        return result

    async def start_live(self, config: LiveConfig, *, user_id: int | None = None) -> dict[str, Any]:
        """Paper needs `trade` (checked by the router); real money also needs `live`."""
        if config.mode == "live" and "live" not in self._principal.scopes:
            raise ForbiddenError("Live trading needs the 'live' scope", details={"required_scope": "live"})
        return await self._manager.start_live(config, user_id=self._principal.user_id)

    async def stop(self) -> dict[str, Any]:
        """Only the owner (or an admin) may stop a run."""
        st = self._manager.state
        if st.active and not self._owns(st.run_id) and not self._principal.is_admin:
            raise ForbiddenError("The active run belongs to another user")
        return await self._manager.stop()


class ScopedRunStore:
    """The run store limited to one user's runs."""

    def __init__(self, store: Any, user_id: int | None) -> None:
        self._store = store
        self._user_id = user_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get(self, run_id: str, *, user_id: int | None = None) -> Any:
        """The run if it is the user's."""
        return await self._store.get(run_id, user_id=self._user_id)

    async def read_page(self, run_id: str, **paging: Any) -> Any:
        """A page of the run's results if it is the user's."""
        return await self._store.read_page(run_id, **{**paging, "user_id": self._user_id})

    def iter_series(self, run_id: str, kind: str) -> Any:
        """The run's stored series; callers check ownership with `get` first."""
        return self._store.iter_series(run_id, kind)

    async def list(self, **filters: Any) -> Any:
        """The user's runs."""
        return await self._store.list(**{**filters, "user_id": self._user_id})

    async def delete(self, run_id: str, *, user_id: int | None = None) -> bool:
        """Delete the run if it is the user's."""
        return bool(await self._store.delete(run_id, user_id=self._user_id))


async def get_manager(request: Request) -> RunManager:
    manager: RunManager = request.app.state.manager
    principal = _principal(request)
    if principal is None:
        return manager
    auth: AuthState = request.app.state.auth
    owned: set[str] = set()
    last = manager.last_results
    for run_id in {manager.state.run_id, last.run_id if last is not None else None}:
        if run_id is None:
            continue
        if await sees_run(request.app, principal, run_id):
            owned.add(run_id)
    # Duck-typed stand-in: the routers only use RunManager's public surface, which ScopedManager forwards.
    return cast(RunManager, ScopedManager(manager, principal, auth, owned))


@dataclasses.dataclass(frozen=True, slots=True)
class StrategyContext:
    """What the stored-strategy services need: the store, whose presets, and the strategy classes."""

    store: StrategyStore
    owner_id: int
    registry: StrategyRegistry


async def get_strategy_context(request: Request) -> StrategyContext:
    """The caller's presets (every user, admins included, sees only their own) and the current classes."""
    principal = _principal(request)
    owner_id = principal.user_id if principal is not None and principal.user_id is not None else LOCAL_OWNER
    # Re-read each time: files in the strategy folder may have been added since the last request.
    registry = await asyncio.to_thread(load_registry, request.app.state.settings)
    return StrategyContext(store=request.app.state.strategy_store, owner_id=owner_id, registry=registry)


def get_web_settings(request: Request) -> WebSettings:
    return request.app.state.web_settings


def get_page_encoder(request: Request) -> PageEncoder:
    encoder: PageEncoder = request.app.state.page_encoder
    return encoder


def get_run_store(request: Request) -> Any:
    store = request.app.state.run_store
    principal = _principal(request)
    if principal is None or principal.owner_filter is None or store is None:
        return store
    return ScopedRunStore(store, principal.owner_filter)


ManagerDep = Annotated[RunManager, Depends(get_manager)]
WebSettingsDep = Annotated[WebSettings, Depends(get_web_settings)]
RunStoreDep = Annotated["RunStore", Depends(get_run_store)]
EncoderDep = Annotated[PageEncoder, Depends(get_page_encoder)]
StrategiesDep = Annotated[StrategyContext, Depends(get_strategy_context)]
