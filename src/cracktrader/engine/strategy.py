"""The strategy API: typed parameters plus a vectorized style and an event-driven style.

Vectorized strategies return `Signals` computed over whole arrays; the compiled kernel simulates them.
Event-driven strategies implement `on_bar(ctx)` and place orders through the `Context`; arrays they need are
returned by `indicators(bars)` and read with `ctx.indicator(name, symbol)`.
Both run unchanged on a rolling window of live candles (`engine.window`): `signals` and `indicators` are
evaluated on the last `warmup()` bars and the newest bar acted on. `cracktrader check` proves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import UnionType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from cracktrader.engine.market import Bars
from cracktrader.errors import InvalidStrategyParamsError

if TYPE_CHECKING:
    from cracktrader.engine.context import Context, Fill, OrderUpdate

Style = Literal["vectorized", "event"]


class StrategyParams(BaseModel):
    """Base class of strategy parameters: unknown keys are errors, and so are strings or booleans for numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_coercion(cls, data: Any) -> Any:
        # Pydantic's lax mode would turn "20" into 20 and true into 1: a typo must not run a different strategy.
        # Only plain scalar fields are checked; other types (dates, enums, tuples) keep pydantic's own rules.
        if not isinstance(data, Mapping):
            return data
        problems = []
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if field is None or value is None:
                continue
            expected = _scalar_types(field.annotation)
            if expected and not any(_is_exactly(value, t) for t in expected):
                names = " or ".join(sorted({"number" if t in (int, float) else t.__name__ for t in expected}))
                problems.append(f"{name}: expected {names}, got {type(value).__name__} {value!r:.60}")
        if problems:
            raise PydanticCustomError("strict_type", "; ".join(problems).replace("{", "{{").replace("}", "}}"))
        return data


_SCALARS = (bool, int, float, str)


def _scalar_types(annotation: Any) -> tuple[type, ...]:
    """The scalar types a field accepts, or () when it accepts anything else too."""
    args = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    args = tuple(a for a in args if a is not type(None))
    return args if args and all(a in _SCALARS for a in args) else ()


def _is_exactly(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


@dataclass(slots=True)
class Signals:
    """Per-bar decisions for one symbol, taken at the bar's close.

    `stop_loss` and `take_profit` are fractions of the entry price (0.02 = 2%); `size` is the
    fraction of available cash an entry uses (default 1.0: all in).
    """

    entries: np.ndarray
    exits: np.ndarray | None = None
    short_entries: np.ndarray | None = None
    short_exits: np.ndarray | None = None
    stop_loss: float | np.ndarray | None = None
    take_profit: float | np.ndarray | None = None
    size: float | np.ndarray | None = None


class Strategy:
    """Base class of every strategy; subclass and override `signals` or `on_bar`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        if "description" not in cls.__dict__:
            cls.description = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        if "init" in cls.__dict__:
            # init(data) saw the whole history indexed by absolute bar numbers, which no live window has.
            raise TypeError(
                f"{cls.__name__}.init(data) is no longer supported: return the arrays it computed from "
                "indicators(self, bars) (one symbol's bars, as in signals) and read them in on_bar with "
                "ctx.indicator(name, symbol) or ctx.indicator(name, symbol, ago=1); see docs/strategies.md"
            )

    def __init__(self, params: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self.params = self.validate_params({**(params or {}), **kwargs})

    @classmethod
    def validate_params(cls, raw: Mapping[str, Any]) -> StrategyParams:
        """Validate raw parameters; the error lists what was wrong and what is accepted."""
        try:
            return cls.Params.model_validate(dict(raw))
        except ValidationError as exc:
            problems = [_describe_error(e) for e in exc.errors()]
            accepted = cls.accepted_params()
            raise InvalidStrategyParamsError(
                f"Invalid parameters for strategy {cls.name}: {'; '.join(problems)}. "
                f"Accepted parameters: {', '.join(accepted) or 'none'}",
                details={
                    "strategy": cls.name,
                    "errors": problems,
                    "accepted": accepted,
                    "schema": cls.param_schema(),
                },
            ) from None

    @classmethod
    def param_schema(cls) -> dict[str, Any]:
        """JSON Schema of the parameters (for the API and the dashboard's forms)."""
        return cls.Params.model_json_schema()

    @classmethod
    def accepted_params(cls) -> dict[str, str]:
        """Human-readable summary of each parameter: type, default and bounds."""
        out: dict[str, str] = {}
        props = cls.param_schema().get("properties", {})
        for key, spec in props.items():
            parts = [str(spec.get("type", _any_of_types(spec)))]
            if "default" in spec:
                parts.append(f"default {spec['default']}")
            for bound, sym in (
                ("minimum", ">="),
                ("exclusiveMinimum", ">"),
                ("maximum", "<="),
                ("exclusiveMaximum", "<"),
            ):
                if bound in spec:
                    parts.append(f"{sym}{spec[bound]}")
            out[key] = ", ".join(parts)
        return out

    @classmethod
    def style(cls) -> Style:
        """'vectorized' when the class overrides `signals`, else 'event'."""
        return "vectorized" if cls.signals is not Strategy.signals else "event"

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, description, style, default parameter values and their JSON Schema, as the API lists classes."""
        defaults = {k: v for k, v in cls.Params().model_dump().items()} if _has_defaults(cls.Params) else {}
        return {
            "name": cls.name,
            "description": cls.description,
            "style": cls.style(),
            "parameters": defaults,
            "parameters_schema": cls.param_schema(),
        }

    def warmup(self) -> int:
        """Bars of history (the current one included) the decision at a bar depends on: the live window.

        It must be exact: on the last `warmup()` bars the strategy must decide what it decides on the whole
        history. Recursive indicators (EMA, RSI, MACD) need the `indicators.*_warmup` helpers.
        """
        return 0

    @classmethod
    def wants_events(cls) -> bool:
        """Whether the strategy overrides `on_fill` or `on_order` (the runtime skips the events otherwise)."""
        return cls.on_fill is not Strategy.on_fill or cls.on_order is not Strategy.on_order

    # Vectorized style -------------------------------------------------------------------------
    def signals(self, bars: Bars) -> Signals:
        """Entry and exit decisions for every bar of one symbol."""
        raise NotImplementedError

    def plot(self, bars: Bars) -> Mapping[str, np.ndarray]:
        """Series to draw over one symbol's candles (name to one value per bar); nothing by default."""
        return {}

    # Event-driven style -----------------------------------------------------------------------
    def indicators(self, bars: Bars) -> Mapping[str, np.ndarray]:
        """Causal arrays over one symbol's bars (same length), read in `on_bar` with `ctx.indicator`."""
        return {}

    def on_bar(self, ctx: Context) -> None:
        """React to the close of the current bar; orders placed here fill from the next bar on."""
        raise NotImplementedError

    def on_fill(self, ctx: Context, fill: Fill) -> None:
        """Called when an order fills (before the next `on_bar`)."""

    def on_order(self, ctx: Context, update: OrderUpdate) -> None:
        """Called when an order is accepted, filled, cancelled or rejected (with its reason)."""

    # Sessions that survive a restart ----------------------------------------------------------------
    def state(self) -> Any:
        """What the strategy keeps between bars beyond the window (JSON), saved by a paper session after each bar.

        None (the default): nothing to keep. After a restart the session makes a new instance, calls `restore`
        with the last saved value, then replays the missed candles to it.
        """
        return None

    def restore(self, state: Any) -> None:
        """Take back what `state()` returned (called once on the new instance, before any bar)."""


def _describe_error(err: Any) -> str:
    if err.get("type") == "strict_type":
        return str(err.get("msg"))  # already names each field
    loc = ".".join(str(p) for p in err.get("loc", ())) or "params"
    if err.get("type") == "extra_forbidden":
        return f"unknown parameter '{loc}'"
    return f"{loc}: {err.get('msg', 'invalid')}"


def _any_of_types(spec: dict[str, Any]) -> str:
    return "|".join(str(s.get("type", "?")) for s in spec.get("anyOf", [])) or "any"


def _has_defaults(model: type[BaseModel]) -> bool:
    return all(not f.is_required() for f in model.model_fields.values())
