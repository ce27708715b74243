"""Strategy parameters, schemas and the registry of built-in, folder and entry-point strategies."""

from __future__ import annotations

from pathlib import Path

import pytest

from cracktrader.engine.strategy import Strategy
from cracktrader.errors import InvalidStrategyParamsError, UnknownStrategyError
from cracktrader.settings import get_settings
from cracktrader.strategies import registry
from cracktrader.strategies.builtin import SmaCross, TestStrategy
from cracktrader.strategies.registry import load_registry

USER_STRATEGY = '''
import numpy as np
from cracktrader.engine.strategy import Signals, Strategy, StrategyParams


class MyParams(StrategyParams):
    lookback: int = 5


class MyBreakout(Strategy):
    """Buys every bar (a test strategy)."""

    Params = MyParams

    def signals(self, bars):
        return Signals(entries=np.ones(len(bars), dtype=bool))
'''


@pytest.mark.parametrize("params", [{"period": 20, "threshold": 0.02}, {"period": 10, "slow": 30}, {}])
def test_test_strategy_accepts_both_parameter_sets_of_the_seeds(params: dict[str, float]) -> None:
    strat = TestStrategy(params)
    assert strat.params.model_dump()["period"] == params.get("period", 20)


def test_unknown_parameter_error_lists_accepted_parameters() -> None:
    with pytest.raises(InvalidStrategyParamsError) as err:
        SmaCross({"fats": 5})
    assert "unknown parameter 'fats'" in err.value.message
    assert set(err.value.details["accepted"]) >= {"fast", "slow", "size", "stop_loss", "take_profit"}
    assert err.value.code == "INVALID_STRATEGY_PARAMS"


def test_out_of_range_parameter_error_says_the_bound() -> None:
    with pytest.raises(InvalidStrategyParamsError) as err:
        SmaCross({"fast": 0})
    assert "fast: Input should be greater than or equal to 1" in err.value.message


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"fast": "5"}, "fast: expected number, got str '5'"),
        ({"slow": True}, "slow: expected number, got bool True"),
        ({"size": "yes"}, "size: expected number, got str 'yes'"),
        ({"stop_loss": False}, "stop_loss: expected number, got bool False"),
    ],
)
def test_strings_and_booleans_are_not_coerced_into_numbers(params: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidStrategyParamsError) as err:
        SmaCross(params)
    assert err.value.details["errors"] == [problem]


def test_numbers_of_either_json_kind_and_null_optionals_are_accepted() -> None:
    params = SmaCross({"fast": 5.0, "slow": 20, "size": 1, "stop_loss": None}).params
    assert (params.fast, params.slow, params.size, params.stop_loss) == (5, 20, 1.0, None)  # type: ignore[attr-defined]


def test_cross_field_rule_fast_below_slow_is_enforced() -> None:
    with pytest.raises(InvalidStrategyParamsError, match=r"fast \(40\) must be smaller than slow \(30\)"):
        SmaCross({"fast": 40})


def test_param_schema_is_json_schema_with_defaults_and_bounds() -> None:
    schema = SmaCross.param_schema()
    assert schema["type"] == "object"
    assert schema["properties"]["fast"]["default"] == 10
    assert schema["properties"]["fast"]["minimum"] == 1
    assert SmaCross.describe()["style"] == "vectorized"


def test_registry_lists_all_builtins() -> None:
    names = set(load_registry().strategies)
    assert names >= {
        "TestStrategy",
        "SmaCross",
        "EmaCross",
        "RsiMeanReversion",
        "BollingerReversion",
        "MacdTrend",
        "DonchianBreakout",
        "BuyAndHold",
    }


def test_unknown_strategy_error_lists_available_names() -> None:
    with pytest.raises(UnknownStrategyError) as err:
        load_registry().get("Nope")
    assert "SmaCross" in err.value.details["available"]
    assert err.value.code == "UNKNOWN_STRATEGY"


def test_folder_strategies_load_and_a_broken_file_does_not_hide_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "strats"
    folder.mkdir()
    (folder / "good.py").write_text(USER_STRATEGY)
    (folder / "broken.py").write_text("import does_not_exist_anywhere\n")
    monkeypatch.setenv("CRACKTRADER_STRATEGY_DIR", str(folder))
    get_settings.cache_clear()
    reg = load_registry()
    assert reg.get("MyBreakout").param_schema()["properties"]["lookback"]["default"] == 5
    assert reg.origins["MyBreakout"].endswith("good.py")
    (error,) = reg.load_errors
    assert error.source.endswith("broken.py")
    assert "ModuleNotFoundError" in error.error


def test_entry_point_strategy_is_registered_and_a_failing_one_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "plugin_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\nplug = plugin_strats:PluginCross\nbad = no_such_module_xyz:Thing\n"
    )
    (tmp_path / "plugin_strats.py").write_text(USER_STRATEGY.replace("MyBreakout", "PluginCross"))
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = load_registry()
    assert reg.origins["PluginCross"] == "entry point plug"
    assert [e.source for e in reg.load_errors] == ["entry point bad"]


def test_a_user_class_reusing_a_builtin_name_is_reported_not_silently_shadowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dup.py").write_text(USER_STRATEGY.replace("class MyBreakout", "class SmaCross"))
    monkeypatch.setenv("CRACKTRADER_STRATEGY_DIR", str(tmp_path))
    get_settings.cache_clear()
    reg = load_registry()
    assert reg.get("SmaCross") is SmaCross
    assert "already defined by builtin" in reg.load_errors[0].error


def test_style_is_detected_from_the_overridden_method() -> None:
    class OnBar(Strategy):
        def on_bar(self, ctx: object) -> None:
            return None

    assert OnBar.style() == "event"
    assert SmaCross.style() == "vectorized"
