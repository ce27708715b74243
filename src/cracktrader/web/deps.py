"""`Annotated` dependency aliases for the routers; with auth on they hand out views scoped to the caller."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import Depends, Request

from cracktrader.auth.errors import NotAuthenticatedError
from cracktrader.auth.principal import Principal
from cracktrader.db.run_queue import RunQueue
from cracktrader.db.strategy_store import LOCAL_OWNER, StrategyStore
from cracktrader.runs.registry import RunRegistry
from cracktrader.runs.results import RunResults
from cracktrader.settings import Settings
from cracktrader.strategies.registry import StrategyRegistry, load_registry
from cracktrader.sweeps.runner import SweepRegistry
from cracktrader.sweeps.walkforward_runner import WalkForwardRegistry
from cracktrader.web.config import WebSettings
from cracktrader.web.runs.encoder import PageEncoder

if TYPE_CHECKING:
    from cracktrader.db.run_store import RunStore
    from cracktrader.runs.slots import Slot
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


async def sees_run(app: Any, principal: Principal | None, run_id: str | None) -> bool:
    """Whether the caller may see a run's numbers and events: auth off, admins, and the run's owner."""
    if principal is None or principal.is_admin or run_id is None:
        return True
    return await _owner(app.state.auth, app.state.run_store, run_id) == principal.user_id


class RunsView:
    """The registry as one caller sees it: their slot, and the runs they may read (all of them for admins)."""

    def __init__(self, registry: RunRegistry, principal: Principal | None) -> None:
        self.registry = registry
        self.principal = principal
        self.slot = registry.slot(principal.user_id if principal is not None else None)
        self.owner = principal.owner_filter if principal is not None else None

    async def loaded_slot(self) -> Slot:
        """The caller's slot, its pointer read from the database on its first use here (shared slots)."""
        shared = self.registry.shared_slots
        if shared is not None:
            await shared.ensure(self.slot)
        return self.slot

    def results_run_id(self) -> str | None:
        """The run `/results` shows the caller: their slot's current or last run."""
        return self.slot.results_run_id()

    def memory_results(self, run_id: str) -> RunResults | None:
        """Results held in memory, only of a run the caller may read."""
        known, user = self.registry.owner_of(run_id)
        if known and self.owner is not None and user != self.owner:
            return None
        return self.registry.memory_results(run_id)

    def find(self, run_id: str) -> Any:
        """A run of this server the caller may read (404 otherwise)."""
        return self.registry.find(run_id, owner=self.owner)


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


def get_registry(request: Request) -> RunRegistry:
    registry: RunRegistry = request.app.state.manager
    return registry


def get_runs_view(request: Request) -> RunsView:
    """The caller's view of the runs (their slot; with auth off, the local operator's)."""
    return RunsView(request.app.state.manager, _principal(request))


@dataclasses.dataclass(frozen=True, slots=True)
class StrategyContext:
    """What the stored-strategy services need: the store, whose presets, and the strategy classes."""

    store: StrategyStore
    owner_id: int
    registry: StrategyRegistry


def caller_owner_id(request: Request) -> int:
    """Whose stored things (presets, credentials) the caller sees: their user id, or the local operator's."""
    principal = _principal(request)
    return principal.user_id if principal is not None and principal.user_id is not None else LOCAL_OWNER


async def get_strategy_context(request: Request) -> StrategyContext:
    """The caller's presets (every user, admins included, sees only their own) and the current classes."""
    owner_id = caller_owner_id(request)
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


@dataclasses.dataclass(frozen=True, slots=True)
class SweepsView:
    """The server's sweeps as one caller sees them: whose new sweeps are, and whose they may read."""

    registry: SweepRegistry
    user_id: int | None  # the owner of the sweeps the caller starts
    owner: int | None  # whose sweeps the caller reads (None: everyone's, for admins and auth off)


def _starter_and_owner(request: Request) -> tuple[int | None, int | None]:
    """Who owns what the caller starts, and whose jobs the caller reads (None: everyone's)."""
    principal = _principal(request)
    if principal is None:
        return None, None
    return principal.user_id, principal.owner_filter


def get_sweeps_view(request: Request) -> SweepsView:
    user_id, owner = _starter_and_owner(request)
    return SweepsView(registry=request.app.state.sweeps, user_id=user_id, owner=owner)


@dataclasses.dataclass(frozen=True, slots=True)
class WalkForwardsView:
    """The server's walk-forwards as one caller sees them (as SweepsView)."""

    registry: WalkForwardRegistry
    user_id: int | None
    owner: int | None


def get_walkforwards_view(request: Request) -> WalkForwardsView:
    user_id, owner = _starter_and_owner(request)
    return WalkForwardsView(registry=request.app.state.walkforwards, user_id=user_id, owner=owner)


RegistryDep = Annotated[RunRegistry, Depends(get_registry)]
SweepsDep = Annotated[SweepsView, Depends(get_sweeps_view)]
WalkForwardsDep = Annotated[WalkForwardsView, Depends(get_walkforwards_view)]
RunsDep = Annotated[RunsView, Depends(get_runs_view)]
WebSettingsDep = Annotated[WebSettings, Depends(get_web_settings)]
RunStoreDep = Annotated["RunStore", Depends(get_run_store)]
EncoderDep = Annotated[PageEncoder, Depends(get_page_encoder)]
StrategiesDep = Annotated[StrategyContext, Depends(get_strategy_context)]


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with (data folder, strategy folder, limits)."""
    settings: Settings = request.app.state.settings
    return settings


AppSettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_run_queue(request: Request) -> RunQueue | None:
    """The run queue backtests by id go into (None: they run in this process's pool)."""
    queue: RunQueue | None = getattr(request.app.state, "run_queue", None)
    return queue


RunQueueDep = Annotated[RunQueue | None, Depends(get_run_queue)]


def caller_user_id(request: Request) -> int | None:
    """Who the caller is: their user id, or None with auth off."""
    principal = _principal(request)
    return principal.user_id if principal is not None else None


def caller_user_filter(request: Request) -> int | None:
    """Whose things the caller sees: their user id, or None for everyone (admins, and auth off)."""
    principal = _principal(request)
    return principal.owner_filter if principal is not None else None


def require_admin(request: Request) -> None:
    """403 FORBIDDEN unless the caller is an admin (everyone is, with auth off)."""
    principal = _principal(request)
    if principal is not None and not principal.is_admin:
        from cracktrader.auth.errors import ForbiddenError

        raise ForbiddenError("Only admins may read this", details={"required_role": "admin"})
