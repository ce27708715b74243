"""The `cracktrader` command line."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from cracktrader.errors import CracktraderError

if TYPE_CHECKING:
    from cracktrader.runs.results import RunResults

app = typer.Typer(
    name="cracktrader",
    help="Fast, look-ahead-free crypto backtesting, paper and live trading.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Manage the local candle store.", no_args_is_help=True)
app.add_typer(data_app, name="data")
users_app = typer.Typer(help="Manage API users (needs the web extra).", no_args_is_help=True)
app.add_typer(users_app, name="users")
apikeys_app = typer.Typer(help="Manage API keys for programs (needs the web extra).", no_args_is_help=True)
app.add_typer(apikeys_app, name="apikeys")
credentials_app = typer.Typer(
    help="Exchange keys stored encrypted under a name (needs the web extra); secrets come from a prompt or stdin.",
    no_args_is_help=True,
)
app.add_typer(credentials_app, name="credentials")
runs_app = typer.Typer(help="Runs on a server by id: status, results, stop.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
# What `cracktrader serve` listens on by default: the commands that need a server look there unless told otherwise.
LOCAL_SERVER = "http://127.0.0.1:8000"
ServerOption = Annotated[
    str, typer.Option("--server", envvar="CRACKTRADER_SERVER", help="Server URL (default: the local server)")
]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="CRACKTRADER_API_KEY", help="API key (when the server's auth is on)")
]


def _print_version(value: bool) -> None:
    if value:
        from cracktrader import __version__

        typer.echo(f"cracktrader {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit")
    ] = False,
) -> None:
    """Fast, look-ahead-free crypto backtesting, paper and live trading."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error on stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into one-line messages instead of tracebacks."""
    try:
        yield
    except CracktraderError as exc:
        fail(exc.message, 2 if exc.status_code < 500 else 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except (OSError, ValueError) as exc:
        fail(str(exc), 1)


def parse_param(raw: str) -> tuple[str, Any]:
    """Parse `key=value`; values are JSON when they parse (numbers, booleans, null), else strings."""
    key, sep, value = raw.partition("=")
    if not sep or not key.strip():
        fail(f"--param expects key=value, got {raw!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


# The options of a backtest, shared by `backtest` and `sweep` (one definition of each).
StrategyOption = Annotated[str, typer.Option("--strategy", "-s", help="Strategy name (see `cracktrader strategies`)")]
SymbolOption = Annotated[list[str], typer.Option("--symbol", help="Symbol such as BTC/USDT; repeat for several")]
TimeframeOption = Annotated[str, typer.Option("--timeframe", "-t", help="Candle timeframe, e.g. 1h")]
ParamOption = Annotated[list[str] | None, typer.Option("--param", "-p", help="Strategy parameter key=value")]
StartOption = Annotated[str | None, typer.Option(help="Start (ISO 8601), inclusive")]
EndOption = Annotated[str | None, typer.Option(help="End (ISO 8601), exclusive")]
CashOption = Annotated[float, typer.Option(help="Initial cash")]
ExchangeOption = Annotated[str | None, typer.Option(help="Exchange id (ccxt id, or `synthetic` offline)")]
CommissionOption = Annotated[float | None, typer.Option(help="Fee rate, e.g. 0.001; default: exchange's")]
SlippageOption = Annotated[float, typer.Option("--slippage-bps", help="Slippage in basis points")]
LatencyOption = Annotated[int, typer.Option(help="Bars between a decision and its fill")]
AllowShortOption = Annotated[bool, typer.Option("--allow-short", help="Allow short positions")]
ExchangeRulesOption = Annotated[
    bool, typer.Option("--exchange-rules", help="The exchange's fees, precision, minimums and locked funds")
]
# Where `sweep` and `walkforward` evaluate their grids.
WorkersOption = Annotated[
    int | None, typer.Option(help="Threads (processes for event-driven strategies); Dask workers with --executor dask")
]
ExecutorOption = Annotated[
    str, typer.Option(help="local (this process), dask (a local Dask cluster) or tcp://host:8786 (a scheduler)")
]


@dataclass(frozen=True, slots=True)
class CostOptions:
    """The cost and fill options of a backtest as `BacktestConfig` fields."""

    initial_cash: float
    commission: float | None
    slippage_bps: float
    latency_bars: int
    allow_short: bool
    exchange_rules: bool

    def fields(self) -> dict[str, Any]:
        return {
            "initial_cash": self.initial_cash,
            "commission": self.commission,
            "slippage_bps": self.slippage_bps,
            "latency_bars": self.latency_bars,
            "allow_short": self.allow_short,
            "exchange_rules": self.exchange_rules,
        }


def validation_message(exc: Any) -> str:
    """A pydantic ValidationError as one line."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


@app.command()
def backtest(
    strategy: Annotated[
        str | None, typer.Option("--strategy", "-s", help="Strategy name (see `cracktrader strategies`)")
    ] = None,
    symbol: Annotated[
        list[str] | None, typer.Option("--symbol", help="Symbol such as BTC/USDT; repeat for several")
    ] = None,
    timeframe: TimeframeOption = "1h",
    param: ParamOption = None,
    start: StartOption = None,
    end: EndOption = None,
    cash: CashOption = 10_000.0,
    exchange: ExchangeOption = None,
    commission: CommissionOption = None,
    slippage_bps: SlippageOption = 0.0,
    latency: LatencyOption = 1,
    allow_short: AllowShortOption = False,
    exchange_rules: ExchangeRulesOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results document as JSON")] = False,
    save: Annotated[
        bool, typer.Option("--save", help="Store the run in the history the server shows (rerun it by id)")
    ] = False,
    server: Annotated[
        str | None,
        typer.Option(help="Run it on this server (POST /api/v1/runs, in its worker pool) instead of here"),
    ] = None,
    api_key: ApiKeyOption = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="With --server: wait for the results")] = True,
    from_sweep: Annotated[
        str | None,
        typer.Option(
            "--from-sweep",
            help="Run a row of this sweep (its request decides strategy, data and costs): on --server, else from "
            "the local database",
        ),
    ] = None,
    rank: Annotated[int, typer.Option(min=1, help="With --from-sweep: the row's rank by the sweep's sort")] = 1,
) -> None:
    """Run a backtest and print a summary, or the full results document with --json."""
    from pydantic import ValidationError

    from cracktrader.runs.config import BacktestConfig
    from cracktrader.settings import get_settings

    if from_sweep is not None:
        _backtest_from_sweep(from_sweep, rank, server, api_key, wait=wait, as_json=as_json, save=save)
        return
    if strategy is None or not symbol:
        fail("--strategy and --symbol are required (or --from-sweep ID)")
    with user_errors():
        try:
            config = BacktestConfig(
                strategy_name=strategy,
                strategy_params=dict(parse_param(p) for p in (param or [])),
                symbols=symbol,
                timeframe=timeframe,
                start_date=start,
                end_date=end,
                exchange=exchange or get_settings().default_exchange,
                **CostOptions(cash, commission, slippage_bps, latency, allow_short, exchange_rules).fields(),
            )
        except ValidationError as exc:
            fail(validation_message(exc))
        if server is not None:
            _backtest_on_server(server, api_key, config, wait=wait, as_json=as_json)
            return
        results = _run_with_progress(config, quiet=as_json)
    _print_results(results, as_json=as_json)
    if save:
        _save(results, config, as_json=as_json)


@app.command()
def sweep(
    strategy: StrategyOption,
    grid: Annotated[
        list[str], typer.Option("--grid", "-g", help="Swept parameter: name=start:end:step (end inclusive) or name=a,b")
    ],
    symbol: SymbolOption,
    timeframe: TimeframeOption = "1h",
    param: ParamOption = None,
    start: StartOption = None,
    end: EndOption = None,
    cash: CashOption = 10_000.0,
    exchange: ExchangeOption = None,
    commission: CommissionOption = None,
    slippage_bps: SlippageOption = 0.0,
    latency: LatencyOption = 1,
    allow_short: AllowShortOption = False,
    exchange_rules: ExchangeRulesOption = False,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", "-m", help="Metric to keep; repeat (default: the main six)")
    ] = None,
    workers: WorkersOption = None,
    executor: ExecutorOption = "local",
    cache: Annotated[bool, typer.Option(help="Keep completed chunks so a rerun resumes where it stopped")] = True,
    sort: Annotated[str, typer.Option(help="Rank rows by this metric (drawdowns: smaller first)")] = "sharpe_ratio",
    top: Annotated[int, typer.Option(help="Rows to print")] = 20,
    out: Annotated[Path | None, typer.Option(help="Write every row to results.parquet or results.csv")] = None,
) -> None:
    """Backtest every combination of a parameter grid and print the best rows."""
    from pydantic import ValidationError

    from cracktrader.sweeps.grid import parse_grid_option
    from cracktrader.sweeps.sweep import DEFAULT_METRICS
    from cracktrader.sweeps.sweep import sweep as run_sweep

    with user_errors():
        swept = dict(parse_grid_option(g) for g in grid)
        bar, update = _progress_bar("sweep")
        try:
            with bar:
                result = run_sweep(
                    strategy,
                    swept,
                    symbol,
                    timeframe,
                    start,
                    end,
                    exchange,
                    metrics=tuple(metric or DEFAULT_METRICS),
                    params=dict(parse_param(p) for p in (param or [])),
                    sort=sort,
                    workers=workers,
                    executor=executor,
                    cache=cache,
                    progress=update,
                    **CostOptions(cash, commission, slippage_bps, latency, allow_short, exchange_rules).fields(),
                )
        except ValidationError as exc:
            fail(validation_message(exc))
        if out is not None:
            result.write(out)
    _print_sweep(result, top=top, out=out)


def _print_sweep(result: Any, *, top: int, out: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.strategy}: best {min(top, len(result.rows))} of {len(result.rows)} by {result.sort}")
    table.add_column("#", justify="right")
    for name in result.param_names:
        table.add_column(name, justify="right")
    for name in result.metrics:
        table.add_column(name, justify="right")
    for rank, row in enumerate(result.best(top), 1):
        cells = [str(rank), *(str(row.params.get(n)) for n in result.param_names)]
        cells += [_fmt(row.metrics[n], pct=n in _PCT) for n in result.metrics]
        table.add_row(*cells)
    console = Console()
    console.print(table)
    if result.skipped:
        first = result.skipped[0]
        console.print(
            f"skipped {len(result.skipped)} combination(s) the strategy rejects, e.g. {first.params}: {first.reason}"
        )
    if out is not None:
        console.print(f"wrote {len(result.rows)} rows to {out}")


@app.command()
def walkforward(
    strategy: StrategyOption,
    grid: Annotated[
        list[str], typer.Option("--grid", "-g", help="Swept parameter: name=start:end:step (end inclusive) or name=a,b")
    ],
    symbol: SymbolOption,
    timeframe: TimeframeOption = "1h",
    train: Annotated[str | None, typer.Option(help="Train window: bars, or a duration such as 90d")] = None,
    test: Annotated[str | None, typer.Option(help="Test window: bars, or a duration such as 30d")] = None,
    step: Annotated[str | None, typer.Option(help="Bars (or duration) between test starts; default: --test")] = None,
    anchored: Annotated[bool, typer.Option("--anchored", help="Every train window starts at the first bar")] = False,
    partial_last: Annotated[
        bool, typer.Option("--partial-last", help="Keep a last test window cut short by the end of the data")
    ] = False,
    cpcv: Annotated[
        str | None,
        typer.Option("--cpcv", help="Combinatorial purged CV instead: N_FOLDS:N_TEST_FOLDS, e.g. 6:2"),
    ] = None,
    purge: Annotated[int, typer.Option(help="Bars dropped from training next to each test window")] = 0,
    embargo: Annotated[int, typer.Option(help="With --cpcv: further bars dropped after each test block")] = 0,
    param: ParamOption = None,
    start: StartOption = None,
    end: EndOption = None,
    cash: CashOption = 10_000.0,
    exchange: ExchangeOption = None,
    commission: CommissionOption = None,
    slippage_bps: SlippageOption = 0.0,
    latency: LatencyOption = 1,
    allow_short: AllowShortOption = False,
    exchange_rules: ExchangeRulesOption = False,
    metric: Annotated[str, typer.Option(help="Choose each train window's best combination by this metric")] = (
        "sharpe_ratio"
    ),
    workers: WorkersOption = None,
    executor: ExecutorOption = "local",
    out: Annotated[Path | None, typer.Option(help="Write the report to report.json")] = None,
) -> None:
    """Walk forward (sweep each train window, backtest its best on the next test window), or --cpcv."""
    from pydantic import ValidationError

    from cracktrader.sweeps.cpcv import cpcv as run_cpcv
    from cracktrader.sweeps.grid import parse_grid_option
    from cracktrader.sweeps.walkforward import walk_forward

    with user_errors():
        if out is not None and out.suffix != ".json":
            fail(f"--out must end in .json, got {out.name!r}")
        common: dict[str, Any] = {
            "metric": metric,
            "params": dict(parse_param(p) for p in (param or [])),
            "workers": workers,
            "executor": executor,
            **CostOptions(cash, commission, slippage_bps, latency, allow_short, exchange_rules).fields(),
        }
        swept = dict(parse_grid_option(g) for g in grid)
        args = (strategy, swept, symbol, timeframe, start, end, exchange)
        report: Any
        if cpcv is not None:
            if train is not None or test is not None or step is not None or anchored or partial_last:
                fail("--cpcv takes no --train, --test, --step, --anchored or --partial-last")
            n_folds, n_test = _parse_cpcv(cpcv)
        elif train is None or test is None:
            fail("walk-forward needs --train and --test (bars, or durations such as 90d), or use --cpcv")
        elif embargo:
            fail("--embargo applies to --cpcv only; walk-forward tests never precede training")
        bar, update = _progress_bar("cpcv splits" if cpcv is not None else "walk-forward windows")
        try:
            with bar:
                if cpcv is not None:
                    report = run_cpcv(
                        *args,
                        n_folds=n_folds,
                        n_test_folds=n_test,
                        purge=purge,
                        embargo=embargo,
                        progress=update,
                        **common,
                    )
                else:
                    assert train is not None and test is not None  # refused above without them
                    report = walk_forward(
                        *args,
                        train=train,
                        test=test,
                        step=step,
                        anchored=anchored,
                        purge=purge,
                        partial_last=partial_last,
                        progress=update,
                        **common,
                    )
        except ValidationError as exc:
            fail(validation_message(exc))
        if out is not None:
            report.write(out)
    if cpcv is not None:
        _print_cpcv(report)
    else:
        _print_walk_forward(report)
    if out is not None:
        typer.echo(f"wrote the report to {out}")


def _parse_cpcv(raw: str) -> tuple[int, int]:
    """`--cpcv 6:2` as (folds, test folds)."""
    folds, sep, tests = raw.partition(":")
    if not sep or not folds.strip().isdigit() or not tests.strip().isdigit():
        fail(f"--cpcv expects N_FOLDS:N_TEST_FOLDS such as 6:2, got {raw!r}")
    return int(folds), int(tests)


# Out-of-sample columns of the walk-forward and CPCV tables, with their short headers.
_OOS = {"total_return": "return", "sharpe_ratio": "sharpe", "max_drawdown": "max dd", "total_trades": "trades"}


def _print_walk_forward(report: Any) -> None:
    """The windows as a table, then the stitched out-of-sample result."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{report.strategy}: {len(report.windows)} walk-forward windows, best in sample by {report.metric}"
    )
    for name in ("#", "train", "test", "params", "in-sample", *_OOS.values()):
        table.add_column(name, justify="left" if name == "params" else "right")
    for w in report.windows:
        table.add_row(
            str(w.index + 1),
            f"{w.train.start}-{w.train.stop}",
            f"{w.test.start}-{w.test.stop}",
            " ".join(f"{k}={v}" for k, v in w.params.items()),
            _fmt(w.in_sample),
            *(_fmt(w.out_of_sample[n], pct=n in _PCT) for n in _OOS),
        )
    console = Console()
    console.print(table)
    first, last = report.windows[0], report.windows[-1]
    console.print(
        f"bars of {report.timeframe} from {first.train.start_date}; tested {first.test.start_date} to "
        f"{last.test.end_date}"
    )
    m = report.stitched.metrics
    console.print(
        f"stitched out-of-sample, {len(report.stitched.equity)} bars: "
        + ", ".join(f"{n} {_fmt(m[n], pct=n in _PCT)}" for n in _OOS)
    )


def _print_cpcv(report: Any) -> None:
    """The splits and the paths as tables."""
    from rich.console import Console
    from rich.table import Table

    splits = Table(title=f"{report.strategy}: {len(report.splits)} CPCV splits, best in sample by {report.metric}")
    for name in ("#", "test folds", "params", "in-sample", "test total_return"):
        splits.add_column(name, justify="left" if name in ("params", "test total_return") else "right")
    for s in report.splits:
        splits.add_row(
            str(s.index + 1),
            ",".join(str(t.fold) for t in s.tests),
            " ".join(f"{k}={v}" for k, v in s.params.items()),
            _fmt(s.in_sample),
            "  ".join(_fmt(t.metrics["total_return"], pct=True) for t in s.tests),
        )
    paths = Table(title=f"{len(report.paths)} paths, each one test of every fold")
    for name in ("#", "splits", *_OOS.values()):
        paths.add_column(name, justify="right")
    for p in report.paths:
        paths.add_row(
            str(p.index + 1),
            ",".join(str(s + 1) for s in p.splits),
            *(_fmt(p.metrics[n], pct=n in _PCT) for n in _OOS),
        )
    console = Console()
    console.print(splits)
    console.print(paths)


def _backtest_from_sweep(
    sweep_id: str, rank: int, server: str | None, api_key: str | None, *, wait: bool, as_json: bool, save: bool
) -> None:
    """Backtest a sweep's row of `rank`: the server's sweep on --server, else one in the local database."""
    if server is not None:
        config = _sweep_row_on_server(server, api_key, sweep_id, rank)
        _backtest_on_server(server, api_key, config, wait=wait, as_json=as_json)
        return
    try:
        from cracktrader.sweeps import local
    except ImportError as exc:
        fail(f"stored sweeps need the web extra: pip install 'cracktrader[web]' ({exc.name} is missing)", 1)
    with user_errors():
        config = local.row_config(sweep_id, rank)
        results = _run_with_progress(config, quiet=as_json)
    _print_results(results, as_json=as_json)
    if save:
        _save(results, config, as_json=as_json)


def _sweep_row_on_server(server: str, api_key: str | None, sweep_id: str, rank: int) -> Any:
    """The backtest request of a server's sweep row (its rank by the sweep's sort)."""
    from cracktrader.client import CrackTraderAPI, CrackTraderError
    from cracktrader.sweeps.request import SweepRequest

    try:
        with CrackTraderAPI(server, api_key=api_key) as api:
            sweep = api.get_sweep(sweep_id)
            page = api.sweep_results(sweep_id, limit=1, offset=rank - 1)
    except CrackTraderError as exc:
        fail(str(exc), 1)
    if not page.items:
        fail(f"sweep {sweep_id} has no row of rank {rank} (it has {sweep.rows}; status {sweep.status})", 1)
    return SweepRequest.model_validate(sweep.request).backtest_config(page.items[0].params)


def _backtest_on_server(server: str, api_key: str | None, config: Any, *, wait: bool, as_json: bool) -> None:
    """Start the backtest by id on a server (it never takes the server's runner slot), then wait for its results."""
    from cracktrader.client import CrackTraderAPI, CrackTraderError

    try:
        with CrackTraderAPI(server, api_key=api_key) as api:
            run_id = api.start_run(config.model_dump(exclude={"strategy_class"}), mode="backtest").run_id
            assert run_id is not None  # an accepted run always has one
            typer.echo(f"run {run_id} on {server}", err=True)
            if not wait:
                return
            api.wait_for_run(run_id, timeout=None)
            doc = api.get_run_results(run_id).model_dump(mode="json")
    except CrackTraderError as exc:
        fail(str(exc), 1)
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        print_summary(doc)


@runs_app.command("status")
def runs_status(
    run_id: Annotated[str, typer.Argument(help="The run's id")],
    server: ServerOption = LOCAL_SERVER,
    api_key: ApiKeyOption = None,
) -> None:
    """Print a run's status document (a backtest's or a session's) as JSON."""
    _on_server(server, api_key, lambda api: sys.stdout.write(api.run_status(run_id).model_dump_json() + "\n"))


@runs_app.command("results")
def runs_results(
    run_id: Annotated[str, typer.Argument(help="The run's id")],
    server: ServerOption = LOCAL_SERVER,
    api_key: ApiKeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results document as JSON")] = False,
) -> None:
    """Print a run's results so far (or final): a summary, or the document with --json."""
    doc = _on_server(server, api_key, lambda api: api.get_run_results(run_id).model_dump(mode="json"))
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        print_summary(doc)


@runs_app.command("stop")
def runs_stop(
    run_id: Annotated[str, typer.Argument(help="The run's id")],
    server: ServerOption = LOCAL_SERVER,
    api_key: ApiKeyOption = None,
    flatten: Annotated[bool, typer.Option("--flatten", help="A session also closes its positions")] = False,
) -> None:
    """Stop a run by id (a backtest within a second, a session within 2 s)."""
    result = _on_server(server, api_key, lambda api: api.stop_run(run_id, flatten=flatten))
    typer.echo(f"{result.run_id}: {result.status} ({result.message})")


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(help="The run's id (see GET /api/v1/runs)")],
    server: ServerOption = LOCAL_SERVER,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write")] = Path("report.html"),
    api_key: ApiKeyOption = None,
) -> None:
    """Write a run's results page (charts and tables) as one self-contained HTML file that opens offline."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    from cracktrader import report as builder
    from cracktrader.client import CrackTraderAPI, CrackTraderError

    console = Console(stderr=True)
    steps = ["run", "results", "candles", "breakdowns", "round trips", "write"]
    with Progress(
        TextColumn("{task.description}"), BarColumn(), console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task("report", total=len(steps))

        def step(name: str) -> None:
            bar.update(
                task, description=f"fetch {name}", completed=next(i for i, s in enumerate(steps) if name.startswith(s))
            )

        try:
            with CrackTraderAPI(server, api_key=api_key, timeout=300) as api:
                data = builder.collect(api, run_id.strip(), step)
        except CrackTraderError as exc:
            fail(str(exc), 1)
        bar.update(task, description=f"write {out}", completed=len(steps) - 1)
        page = builder.render_html(data)
        try:
            out.write_text(page, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror}", 1)
    size = out.stat().st_size
    typer.echo(f"wrote {out} ({size / 1e6:.1f} MB): run {data['run']['run_id']}, opens offline")


def _on_server(server: str, api_key: str | None, work: Callable[[Any], Any]) -> Any:
    from cracktrader.client import CrackTraderAPI, CrackTraderError

    try:
        with CrackTraderAPI(server, api_key=api_key) as api:
            return work(api)
    except CrackTraderError as exc:
        fail(str(exc), 1)


def _print_results(results: RunResults, *, as_json: bool) -> None:
    from cracktrader.runs.results import full_document, json_pieces, page_of

    if as_json:
        # Written a piece at a time: a long run's document is far larger than its columnar results.
        for piece in json_pieces(full_document(results)):
            sys.stdout.write(piece)
        sys.stdout.write("\n")
    else:
        print_summary(page_of(results, max_points=2, limit=1, offset=0).document())


def _history() -> Any:
    """The run-history helpers (they need the web extra's database drivers)."""
    try:
        from cracktrader.runs import local
    except ImportError as exc:
        fail(f"run history needs the web extra: pip install 'cracktrader[web]' ({exc.name} is missing)", 1)
    return local


def _save(results: RunResults, config: Any, *, as_json: bool, rerun_of: str | None = None) -> None:
    """Store the run in the history and say its id (on stderr with --json, so stdout stays one document)."""
    history = _history()
    with user_errors():
        run_id = history.save_run(results, config, rerun_of=rerun_of)
    typer.echo(f"saved run {run_id} (cracktrader rerun {run_id})", err=as_json)


@app.command()
def rerun(
    run_id: Annotated[str, typer.Argument(help="Id of a stored run (see GET /api/v1/runs)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the rerun's results document as JSON")] = False,
    save: Annotated[bool, typer.Option("--save/--no-save", help="Store the rerun in the history")] = True,
) -> None:
    """Run a stored backtest again with the same inputs and say whether anything changed (exit 0 either way)."""
    from cracktrader.runs.errors import RunNotFoundError

    history = _history()
    with user_errors():
        try:
            original = history.load_run(run_id.strip().lower())
        except RunNotFoundError as exc:
            fail(exc.message, 1)
        config, results = history.rerun_locally(original, lambda cfg: _run_with_progress(cfg, quiet=as_json))
    if as_json:
        _print_results(results, as_json=True)
    else:
        print_changes(results.head["rerun"])
    if save:
        _save(results, config, as_json=as_json, rerun_of=original.run_id)


def print_changes(comparison: dict[str, Any]) -> None:
    """`identical`, or a table of what changed between a run and its rerun."""
    from rich.console import Console
    from rich.table import Table

    if comparison["identical"]:
        typer.echo(f"identical to run {comparison['of']}")
        return
    table = Table(title=f"Changed since run {comparison['of']}")
    for column in ("field", "before", "after"):
        table.add_column(column, overflow="fold")
    for change in comparison["changes"]:
        table.add_row(change["field"], _fmt(change["before"]), _fmt(change["after"]))
    Console(width=200).print(table)


def _run_with_progress(config: Any, *, quiet: bool) -> RunResults:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    from cracktrader.runs.backtest import execute_backtest

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    ) as bar:
        tasks: dict[str, Any] = {}

        def on_data(symbol: str, done: int, total: int) -> None:
            if symbol not in tasks:
                tasks[symbol] = bar.add_task(f"download {symbol}", total=total)
            bar.update(tasks[symbol], completed=done, total=total)

        sim_task = bar.add_task("simulate", total=None)

        def on_sim(done: int, total: int, cash: float, value: float) -> None:
            bar.update(sim_task, completed=done, total=total)

        return execute_backtest(config, data_progress=on_data, progress=on_sim)


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2%}" if pct else f"{value:,.4f}"
    return str(value)


_PCT = {
    "total_return",
    "cagr",
    "max_drawdown",
    "volatility",
    "win_rate",
    "avg_trade_return",
    "exposure",
    "buy_and_hold_return",
}


def print_summary(doc: dict[str, Any]) -> None:
    """Print a results document as the summary table."""
    from rich.console import Console
    from rich.table import Table

    cfg = doc["config"]
    m = doc["performance_metrics"]
    table = Table(
        title=f"{cfg['strategy_name']} on {', '.join(cfg['symbols'])} {cfg['timeframe']} ({cfg['exchange']})",
        show_header=False,
    )
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    curve = doc["equity_curve"]
    if curve:
        table.add_row("period", f"{curve[0]['timestamp']} → {curve[-1]['timestamp']}")
        table.add_row("bars", str((doc.get("page") or {}).get("equity_points_total", len(curve))))
    table.add_row("initial cash", f"{cfg['initial_cash']:,.2f}")
    table.add_row("final value", f"{doc['final_value']:,.2f}")
    for key in (
        "total_return",
        "buy_and_hold_return",
        "cagr",
        "sharpe_ratio",
        "sortino_ratio",
        "calmar_ratio",
        "max_drawdown",
        "max_drawdown_duration",
        "volatility",
        "total_trades",
        "win_rate",
        "profit_factor",
        "expectancy",
        "avg_trade_return",
        "exposure",
        "fees_paid",
    ):
        if key == "max_drawdown_duration":
            table.add_row("max drawdown duration", _drawdown_duration(m))
            continue
        table.add_row(key, _fmt(m.get(key), key in _PCT))
    Console().print(table)


def _drawdown_duration(m: dict[str, Any]) -> str:
    """`N bars (D days)`: the bar count alone does not say how long that was."""
    bars, days = m.get("max_drawdown_duration"), m.get("max_drawdown_duration_days")
    if bars is None:
        return "-"
    return f"{bars:,} bars" + (f" ({days:,.1f} days)" if days is not None else "")


@app.command()
def strategies(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    """List the available strategies and their parameters."""
    from rich.console import Console
    from rich.table import Table

    from cracktrader.strategies.registry import load_registry

    with user_errors():
        reg = load_registry()
    if as_json:
        out = {
            "strategies": reg.class_entries(),
            "load_errors": [e.to_dict() for e in reg.load_errors],
        }
        sys.stdout.write(json.dumps(out) + "\n")
        return
    table = Table(title="Strategies")
    for col in ("name", "style", "parameters", "description"):
        table.add_column(col)
    for name, cls in reg.strategies.items():
        params = "\n".join(f"{k}: {v}" for k, v in cls.accepted_params().items())
        table.add_row(name, cls.style(), params, cls.description)
    console = Console()
    console.print(table)
    for err in reg.load_errors:
        # Not markup: a path or an error message may hold brackets.
        console.print(f"could not load {err.message}", style="yellow", markup=False, highlight=False, soft_wrap=True)


@app.command()
def check(
    strategy: Annotated[str, typer.Argument(help="Strategy name (see `cracktrader strategies`)")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Strategy parameter key=value")] = None,
    symbol: Annotated[list[str] | None, typer.Option("--symbol", help="Symbol; repeat for several")] = None,
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="Candle timeframe, e.g. 1h")] = "1h",
    start: Annotated[str | None, typer.Option(help="Start (ISO 8601), inclusive")] = None,
    end: Annotated[str | None, typer.Option(help="End (ISO 8601), exclusive")] = None,
    exchange: Annotated[str | None, typer.Option(help="Exchange id (ccxt id, or `synthetic` offline)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the check document as JSON")] = False,
) -> None:
    """Prove a strategy safe for live trading: no look-ahead, and its live window decides as the full history.

    Exits 1 when a check fails.
    """
    from pydantic import ValidationError

    from cracktrader.runs.check import CheckRequest, run_check
    from cracktrader.settings import get_settings

    with user_errors():
        try:
            request = CheckRequest(
                strategy_params=dict(parse_param(p) for p in (param or [])),
                symbols=symbol or ["BTC/USDT"],
                timeframe=timeframe,
                start_date=start,
                end_date=end,
                exchange=exchange or get_settings().default_exchange,
            )
        except ValidationError as exc:
            fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        doc = run_check(request.backtest_config(strategy))
    if as_json:
        sys.stdout.write(doc.model_dump_json() + "\n")
    else:
        _print_check(doc)
    if not doc.passed:
        raise typer.Exit(1)


def _print_check(doc: Any) -> None:
    """The check document as a table, one row per check."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"{doc.strategy} ({doc.style}) on {', '.join(doc.symbols)} {doc.timeframe} {doc.exchange}: {doc.bars:,} bars "
        f"from {doc.start} to {doc.end}; window {doc.window} bars; {doc.entries:,} entries, {doc.exits:,} exits; "
        f"{doc.seconds:.2f} s",
        markup=False,
        highlight=False,
    )
    table = Table()
    for col in ("check", "result", "compared", "differing", "first difference"):
        table.add_column(col)
    for item in doc.checks:
        first = item.first_difference
        where = "-"
        if first is not None:
            where = f"bar {first.bar} ({first.time}) {first.symbol}: {first.expected} -> {first.found}"
        table.add_row(
            item.name.replace("_", "-"),
            "[green]pass[/green]" if item.passed else "[red]FAIL[/red]",
            f"{item.compared:,}",
            f"{item.differing:,}",
            where.replace("[", r"\["),
        )
    console.print(table)
    for warning in doc.warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)


@app.command()
def trade(
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="Strategy name (see `cracktrader strategies`)")],
    symbol: Annotated[list[str], typer.Option("--symbol", help="Symbol such as BTC/USDT; repeat for several")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="Candle timeframe, e.g. 1m (1s and up)")] = "1m",
    mode: Annotated[str, typer.Option(help="paper (live trading comes with the exchange brokers)")] = "paper",
    exchange: Annotated[str, typer.Option(help="Exchange id; live candles: synthetic, else --replay-*")] = "synthetic",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Strategy parameter key=value")] = None,
    balance: Annotated[
        list[str] | None, typer.Option(help="Starting balance CUR=amount (default 10000 of the quote)")
    ] = None,
    slippage_bps: Annotated[float, typer.Option("--slippage-bps", help="Slippage in basis points")] = 0.0,
    fill_model: Annotated[str, typer.Option("--fill-model", help="bar (the backtest's) or quote (bid/ask)")] = "bar",
    exchange_rules: Annotated[
        bool, typer.Option("--exchange-rules/--no-exchange-rules", help="The exchange's fees, precision, minimums")
    ] = True,
    replay_start: Annotated[str | None, typer.Option(help="Replay stored candles from this date (ISO 8601)")] = None,
    replay_end: Annotated[str | None, typer.Option(help="... up to this date (exclusive)")] = None,
    speed: Annotated[float, typer.Option(help="Replay speed: bar time divided by this")] = 1000.0,
    bars: Annotated[int | None, typer.Option(help="Stop after this many live bars")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final results document as JSON")] = False,
    server: Annotated[
        str | None, typer.Option(help="Start the session on this server (e.g. http://127.0.0.1:8000) and watch it")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="CRACKTRADER_API_KEY", help="API key for --server (when its auth is on)")
    ] = None,
) -> None:
    """Run a paper-trading session in the foreground with a live table; Ctrl-C stops it cleanly."""
    import asyncio

    from pydantic import ValidationError

    from cracktrader.clock import SystemClock
    from cracktrader.runs.config import LiveConfig
    from cracktrader.runs.trade import prepare_paper

    paper: dict[str, Any] = {"slippage_bps": slippage_bps, "fill_model": fill_model, "exchange_rules": exchange_rules}
    if balance:
        paper["balances"] = dict(_parse_balance(b) for b in balance)
    if replay_start or replay_end:
        paper["replay"] = {"start": replay_start, "end": replay_end, "speed": speed}
    with user_errors():
        try:
            config = LiveConfig(
                strategy_name=strategy,
                strategy_params=dict(parse_param(p) for p in (param or [])),
                symbols=symbol,
                timeframe=timeframe,
                exchange=exchange,
                exchange_config={"paper": paper},
                mode=mode,
            )
        except ValidationError as exc:
            fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        if server is not None:
            _trade_on_server(server, api_key, config, bars=bars, as_json=as_json)
            return
        plan = prepare_paper(config, clock=SystemClock())
        asyncio.run(_run_trade(plan, bars=bars, quiet=as_json))
    _print_results(_session_document(plan, config, plan.session.result()), as_json=as_json)


def _trade_on_server(server: str, api_key: str | None, config: Any, *, bars: int | None, as_json: bool) -> None:
    """Start the session on a server, show its status until it ends (or `bars`, or Ctrl-C stops it), then results."""
    from rich.console import Console
    from rich.live import Live

    from cracktrader.client import CrackTraderAPI, CrackTraderError

    console = Console(stderr=True)
    try:
        with CrackTraderAPI(server, api_key=api_key) as api:
            run_id = api.start_session(
                config.strategy_name,
                symbols=config.symbols,
                timeframe=config.timeframe,
                exchange=config.exchange,
                strategy_params=config.strategy_params,
                exchange_config=config.exchange_config,
                mode=config.mode,
            ).run_id
            assert run_id is not None  # a started session always has one
            console.print(f"session {run_id} on {server}", markup=False, highlight=False)
            display: Any = nullcontext() if as_json or not console.is_terminal else Live(console=console)
            try:
                with display:
                    for status in api.watch_session(run_id, interval=0.5):
                        if display is not None and hasattr(display, "update"):
                            display.update(_status_table(status.model_dump(mode="json"), f"session {run_id}"))
                        if bars is not None and status.bars_processed >= bars:
                            break
            except KeyboardInterrupt:
                pass
            with contextlib.suppress(CrackTraderError):  # it may have ended by itself meanwhile
                api.stop_session(run_id)
            doc = api.session_results(run_id).model_dump(mode="json")
    except CrackTraderError as exc:
        fail(str(exc), 1)
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        print_summary(doc)


def _status_table(status: Mapping[str, Any], title: str) -> Any:
    """A paper session's status document (`/runs/{id}/status`, also built locally) as a table."""
    from rich.table import Table

    table = Table(title=f"{title} ({status['status']}, {status['condition']})")
    for col in ("last candle", "bars", "cash", "value", "pnl", "fills", "open orders"):
        table.add_column(col)
    table.add_row(
        str(status["last_candle_time"] or "-"),
        f"{status['bars_processed']:,}",
        f"{status['cash']:,.2f}",
        f"{status['value']:,.2f}",
        f"{status['pnl']:+,.2f}",
        f"{status['trade_count']:,}",
        f"{len(status['open_orders']):,}",
    )
    for p in status["positions"]:
        table.add_row(f"  {p['symbol']}", "", "", f"{p['size']:.8g} @ {p['entry_price']:,.2f}", "", "", "")
    return table


def _parse_balance(raw: str) -> tuple[str, float]:
    currency, sep, amount = raw.partition("=")
    try:
        return currency.strip().upper(), float(amount)
    except ValueError:
        fail(f"--balance expects CUR=amount such as USDT=10000, got {raw!r}")
    if not sep:
        fail(f"--balance expects CUR=amount such as USDT=10000, got {raw!r}")


async def _run_trade(plan: Any, *, bars: int | None, quiet: bool) -> None:
    """Drive the session, redrawing the table after every bar, until Ctrl-C, `bars` or the replay's end."""
    import asyncio
    import signal

    from rich.console import Console
    from rich.live import Live

    from cracktrader.runs.session import run_session

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    console = Console(stderr=True)
    # The table is built when the display refreshes (4 times a second), not on every bar of a fast replay.
    display: Any = (
        nullcontext()
        if quiet or not console.is_terminal
        else Live(get_renderable=lambda: _session_table(plan), console=console, refresh_per_second=4)
    )
    with display:
        await run_session(plan.session, plan.feed, history=plan.history, stop=stop, max_bars=bars)


def _session_table(plan: Any) -> Any:
    """The table of a session running here: its status document, as the server builds it."""
    from cracktrader.clock import SystemClock
    from cracktrader.runs.sessions import LiveRun

    session = plan.session
    status = LiveRun("local", None, {}, plan, SystemClock()).snapshot()
    return _status_table(status, f"paper: {session.strategy.name} on {', '.join(session.symbols)} {plan.timeframe}")


def _session_document(plan: Any, config: Any, result: Any) -> Any:
    """The session's results in the one results-document shape."""
    import uuid

    from cracktrader.data.candles import ms_to_iso
    from cracktrader.runs.config import redact
    from cracktrader.runs.results import from_backtest

    ts = result.timestamp
    return from_backtest(
        result,
        run_id=uuid.uuid4().hex,
        config={
            **redact(config.model_dump()),
            "initial_cash": result.settings.initial_cash,
            "maker_fee": result.settings.maker_fee,
            "taker_fee": result.settings.taker_fee,
            "slippage": result.settings.slippage,
            "warmup_bars": plan.session.warmup_bars,
        },
        start_time=ms_to_iso(int(ts[0])),
        end_time=ms_to_iso(int(ts[-1])),
        status="stopped",
    )


def _progress_bar(description: str) -> tuple[Any, Callable[[int, int], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


@data_app.command("download")
def data_download(
    symbol: Annotated[list[str], typer.Option("--symbol", help="Symbol; repeat for several")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t")] = "1h",
    start: Annotated[str | None, typer.Option(help="Start (ISO 8601)")] = None,
    end: Annotated[str | None, typer.Option(help="End (ISO 8601), exclusive; default now")] = None,
    exchange: Annotated[str | None, typer.Option(help="Exchange id")] = None,
) -> None:
    """Download candles into the store (only the missing ranges)."""
    import time

    from cracktrader.data import service
    from cracktrader.data.candles import to_ms
    from cracktrader.data.timeframes import parse_timeframe
    from cracktrader.settings import get_settings

    settings = get_settings()
    with user_errors():
        tf = parse_timeframe(timeframe)
        end_ms = to_ms(end) or tf.floor(int(time.time() * 1000))
        start_ms = to_ms(start) or end_ms - settings.default_lookback_bars * tf.ms
        ex = exchange or settings.default_exchange
        for sym in symbol:
            bar, update = _progress_bar(f"download {ex} {sym} {timeframe}")
            with bar:
                info = service.download(ex, sym, tf, start_ms, end_ms, progress=update, settings=settings)
            typer.echo(_info_line(info))


def _info_line(info: Any) -> str:
    from cracktrader.data.candles import ms_to_iso

    if not info.count:
        return f"{info.exchange} {info.symbol} {info.timeframe}: empty"
    return (
        f"{info.exchange} {info.symbol} {info.timeframe}: {info.count} candles "
        f"{ms_to_iso(info.first)} → {ms_to_iso(info.last)}, {len(info.gaps)} gaps"
    )


@data_app.command("import")
def data_import(
    path: Annotated[Path, typer.Argument(help="CSV with timestamp,open,high,low,close,volume")],
    symbol: Annotated[str, typer.Option("--symbol")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t")],
    exchange: Annotated[str, typer.Option(help="Exchange name to file the data under")] = "csv",
) -> None:
    """Import candles from a CSV file into the store."""
    from cracktrader.data import service
    from cracktrader.data.timeframes import parse_timeframe

    with user_errors():
        info = service.import_csv(path, exchange, symbol, parse_timeframe(timeframe))
    typer.echo(_info_line(info))


@data_app.command("export")
def data_export(
    path: Annotated[Path, typer.Argument(help="Destination CSV")],
    symbol: Annotated[str, typer.Option("--symbol")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t")],
    exchange: Annotated[str | None, typer.Option(help="Exchange id")] = None,
    start: Annotated[str | None, typer.Option(help="Start (ISO 8601)")] = None,
    end: Annotated[str | None, typer.Option(help="End (ISO 8601), exclusive")] = None,
    iso: Annotated[bool, typer.Option("--iso", help="Write ISO 8601 timestamps instead of ms")] = False,
) -> None:
    """Export stored candles to CSV."""
    from cracktrader.data import service
    from cracktrader.data.candles import to_ms
    from cracktrader.data.timeframes import parse_timeframe
    from cracktrader.settings import get_settings

    with user_errors():
        ex = exchange or get_settings().default_exchange
        n = service.export_csv(path, ex, symbol, parse_timeframe(timeframe), to_ms(start), to_ms(end), iso=iso)
    typer.echo(f"wrote {n} candles to {path}")


@data_app.command("list")
def data_list() -> None:
    """List stored datasets with their range, count and gaps."""
    from cracktrader.data import service

    with user_errors():
        infos = service.open_store().list()
    if not infos:
        typer.echo("no stored candles")
    for info in infos:
        typer.echo(_info_line(info))


def _gap_text(info: Any) -> str:
    from cracktrader.data.candles import ms_to_iso

    if info.largest_gap is None:
        return "no gaps"
    start, end, bars = info.largest_gap
    return (
        f"{len(info.gaps)} gaps, {info.missing_bars} missing bars, "
        f"largest {bars} bars from {ms_to_iso(start)} to {ms_to_iso(end)}"
    )


def _info_dict(info: Any) -> dict[str, Any]:
    from cracktrader.data.candles import ms_to_iso

    largest = info.largest_gap
    return {
        "exchange": info.exchange,
        "symbol": info.symbol,
        "timeframe": info.timeframe,
        "first": ms_to_iso(info.first) if info.first is not None else None,
        "last": ms_to_iso(info.last) if info.last is not None else None,
        "count": info.count,
        "gaps": len(info.gaps),
        "missing_bars": info.missing_bars,
        # [start, end): the open time of the first missing bar, and of the bar after the last missing one.
        "largest_gap": (
            None
            if largest is None
            else {"start": ms_to_iso(largest[0]), "end": ms_to_iso(largest[1]), "bars": largest[2]}
        ),
        "path": str(info.path),
        "size_bytes": info.size_bytes,
    }


@data_app.command("info")
def data_info(
    exchange: Annotated[str | None, typer.Option(help="Only this exchange")] = None,
    symbol: Annotated[str | None, typer.Option(help="Only this symbol")] = None,
    timeframe: Annotated[str | None, typer.Option("--timeframe", "-t", help="Only this timeframe")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list")] = False,
) -> None:
    """First and last stored bar, count and gaps (missing bars, the largest gap) of stored candles."""
    from cracktrader.data import service
    from cracktrader.data.timeframes import parse_timeframe

    with user_errors():
        tf = parse_timeframe(timeframe).name if timeframe else None
        infos = [
            info
            for info in service.open_store().list()
            if (exchange is None or info.exchange.lower() == exchange.lower())
            and (symbol is None or info.symbol.upper() == symbol.upper())
            and (tf is None or info.timeframe == tf)
        ]
    if not infos and (exchange or symbol or timeframe):
        wanted = " ".join(x for x in (exchange, symbol, tf) if x)
        fail(f"no stored candles for {wanted}; see `cracktrader data list`")
    if as_json:
        typer.echo(json.dumps([_info_dict(info) for info in infos], indent=2))
        return
    if not infos:
        typer.echo("no stored candles")
    for info in infos:
        if not info.count:
            typer.echo(f"{info.exchange} {info.symbol} {info.timeframe}: empty")
            continue
        d = _info_dict(info)
        typer.echo(
            f"{info.exchange} {info.symbol} {info.timeframe}: first {d['first']}, last {d['last']}, "
            f"{info.count} candles, {_gap_text(info)}"
        )


@data_app.command("clear")
def data_clear(
    exchange: Annotated[str | None, typer.Option(help="Only this exchange")] = None,
    symbol: Annotated[str | None, typer.Option(help="Only this symbol")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Only this timeframe")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Delete stored candles."""
    from cracktrader.data import service

    if not yes and not typer.confirm("Delete the selected stored candles?"):
        fail("aborted", 1)
    with user_errors():
        n = service.open_store().clear(exchange=exchange, symbol=symbol, timeframe=timeframe)
    typer.echo(f"removed {n} datasets")


def _read_password(*, confirm: bool = True) -> str:
    """The password from a hidden prompt, or the first line of stdin when it is not a terminal (never argv)."""
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    if not password:
        fail("empty password")
    return password


def _auth_call(work: Callable[[Any], Any]) -> Any:
    """Migrate the configured database, then run `work(store)` with an AuthStore on it."""
    from cracktrader.auth.store import AuthStore

    return _db_call(lambda engine: work(AuthStore(engine)))


def _revoking_call(work: Callable[[Any], Any]) -> Any:
    """`_auth_call` for a revocation: afterwards, tell running servers at once (the poll is the safety net)."""

    async def revoke(store: Any) -> Any:
        result = await work(store)
        from cracktrader.auth.shared import announce_revocation
        from cracktrader.web.config import get_web_settings

        web = get_web_settings()
        try:
            await announce_revocation(redis_url=web.redis_url, redis_prefix=web.redis_prefix, engine=store.engine)
        except Exception as exc:  # the change is committed; servers still see it at their next poll
            typer.echo(f"warning: could not notify running servers ({type(exc).__name__}); they poll", err=True)
        return result

    return _auth_call(revoke)


def _db_call(work: Callable[[Any], Any]) -> Any:
    """Migrate the configured database, then run `work(engine)` on an engine of it."""
    import asyncio

    try:
        from cracktrader.db.engine import make_engine
        from cracktrader.db.migrate import upgrade
    except ImportError as exc:
        fail(f"user management needs the web extra: pip install 'cracktrader[web]' ({exc.name} is missing)", 1)
    from cracktrader.settings import get_settings

    url = get_settings().database_url
    upgrade(url)

    async def main() -> Any:
        engine = make_engine(url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    with user_errors():
        return asyncio.run(main())


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="User name (case-insensitive)")],
    role: Annotated[str, typer.Option(help="admin, trader or viewer")] = "trader",
) -> None:
    """Create a user; the password comes from a prompt or stdin."""
    from cracktrader.auth import service

    password = _read_password()
    user = _auth_call(lambda store: service.create_user(store=store, username=username, password=password, role=role))
    typer.echo(f"created user {user.username} (id {user.id}, role {user.role})")


@users_app.command("list")
def users_list() -> None:
    """List users with their role and status."""
    users = _auth_call(lambda store: store.list_users())
    if not users:
        typer.echo("no users")
    for user in users:
        state = "active" if user.is_active else "disabled"
        typer.echo(f"{user.id}\t{user.username}\t{user.role}\t{state}")


@users_app.command("disable")
def users_disable(
    username: Annotated[str, typer.Argument()],
    enable: Annotated[bool, typer.Option("--enable", help="Re-enable instead")] = False,
) -> None:
    """Disable a user (within a second their logins end and their API keys stop working) or re-enable one."""
    from cracktrader.auth import service

    user = _revoking_call(lambda store: service.set_user_active(store=store, username=username, active=enable))
    typer.echo(f"{'enabled' if enable else 'disabled'} user {user.username}")


@users_app.command("reset-password")
def users_reset_password(username: Annotated[str, typer.Argument()]) -> None:
    """Set a new password (prompt or stdin) and end the user's logins (a running server within a second)."""
    from cracktrader.auth import service

    password = _read_password()
    user = _revoking_call(lambda store: service.reset_password(store=store, username=username, password=password))
    typer.echo(f"password reset for {user.username}")


@apikeys_app.command("create")
def apikeys_create(
    user: Annotated[str, typer.Option("--user", "-u", help="Owner's user name")],
    name: Annotated[str, typer.Option("--name", "-n", help="A label for the key")],
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="read, trade or live; repeat (default read)")
    ] = None,
) -> None:
    """Create an API key; it is printed once and cannot be shown again."""
    from cracktrader.auth import service

    key, row = _auth_call(
        lambda store: service.create_api_key_for(store=store, username=user, name=name, scopes=scope or ["read"])
    )
    scopes = " ".join(sorted(row.scopes))
    typer.echo(f"created API key {row.id} ({row.prefix}, scopes: {scopes}); store it now:", err=True)
    typer.echo(key)


@apikeys_app.command("list")
def apikeys_list(user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's")] = None) -> None:
    """List API keys (prefixes and scopes; secrets are never stored)."""

    async def work(store: Any) -> Any:
        user_id = None
        if user is not None:
            row = await store.get_user_by_username(user)
            if row is None:
                fail(f"no user named {user!r}")
            user_id = row.id
        return await store.list_api_keys(user_id=user_id)

    rows = _auth_call(work)
    if not rows:
        typer.echo("no API keys")
    for row in rows:
        state = "revoked" if row.revoked_at else "active"
        typer.echo(f"{row.id}\t{row.prefix}\t{row.owner_username}\t{row.name}\t{' '.join(sorted(row.scopes))}\t{state}")


@apikeys_app.command("revoke")
def apikeys_revoke(key_id: Annotated[int, typer.Argument(help="Key id (see `cracktrader apikeys list`)")]) -> None:
    """Revoke an API key (a running server refuses it within a second, open streams included)."""
    from cracktrader.auth import service

    row = _revoking_call(lambda store: service.revoke_api_key(store=store, key_id=key_id))
    typer.echo(f"revoked API key {row.id} ({row.prefix})")


CredentialName = Annotated[str, typer.Argument(help="The credentials' name")]
ExchangeCheck = Annotated[str | None, typer.Option("--exchange", "-e", help="Check that they are this exchange's")]
OwnerOption = Annotated[
    str | None, typer.Option("--user", "-u", help="Owner's user name (default: the local operator, auth off)")
]


def _credentials_call(user: str | None, work: Callable[[Any, int], Any]) -> Any:
    """Run `work(store, owner id)` with a CredentialStore on the configured database (migrated first)."""
    from cracktrader.settings import get_settings

    try:
        from cracktrader.db.credential_store import LOCAL_OWNER, CredentialStore
        from cracktrader.db.secret_box import SecretBox
    except ImportError as exc:
        fail(f"stored credentials need the web extra: pip install 'cracktrader[web]' ({exc.name} is missing)", 1)

    from cracktrader.auth.store import AuthStore

    async def with_owner(engine: Any) -> Any:
        owner = LOCAL_OWNER
        if user is not None:
            row = await AuthStore(engine).get_user_by_username(user)
            if row is None:
                fail(f"no user named {user!r}")
            owner = row.id
        return await work(CredentialStore(engine, SecretBox.from_settings(get_settings())), owner)

    return _db_call(with_owner)


def _read_secrets(fields: list[str]) -> dict[str, str]:
    """The credential fields from hidden prompts, or from stdin (a JSON object, or `field=value` lines); never argv."""
    if not sys.stdin.isatty():
        text = sys.stdin.read()
        if text.lstrip().startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError:
                fail("stdin is not a JSON object of credential fields")
            if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
                fail('stdin must be a JSON object of strings, e.g. {"apiKey": "...", "secret": "..."}')
            return {str(k): v for k, v in parsed.items()}
        values: dict[str, str] = {}
        for line in text.splitlines():
            if line.strip():
                key, sep, value = line.partition("=")
                if not sep:
                    fail("stdin lines must be field=value (e.g. apiKey=...), or one JSON object")
                values[key.strip()] = value
        return values
    return {f: typer.prompt(f, hide_input=True) for f in fields}


def _checked_secrets(exchange: str) -> Any:
    """The secrets for `exchange`, read and checked against its required fields and the API's bounds."""
    from pydantic import ValidationError

    from cracktrader.exchanges.credentials import credentials_for, required_fields
    from cracktrader.web.credentials.schemas import CredentialSecrets

    with user_errors():
        fields = required_fields(exchange)
    raw = _read_secrets(fields)
    try:
        secrets = CredentialSecrets.model_validate(raw)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))
    with user_errors():
        return credentials_for(exchange, secrets.fields())


def _check_name(name: str) -> None:
    import re

    from cracktrader.web.credentials.schemas import NAME_PATTERN, NAME_RULE

    if not re.fullmatch(NAME_PATTERN, name):
        fail(f"credential names are {NAME_RULE}")


@credentials_app.command("add")
def credentials_add(
    name: CredentialName,
    exchange: Annotated[str, typer.Option("--exchange", "-e", help="ccxt exchange id, e.g. binance")],
    user: OwnerOption = None,
) -> None:
    """Store an exchange's keys under NAME; each field it needs is asked for (hidden) or read from stdin."""
    _check_name(name)
    creds = _checked_secrets(exchange.strip().lower())
    row = _credentials_call(user, lambda store, owner: store.add(owner, name, creds))
    typer.echo(f"stored credentials {row.name} ({row.exchange})")


@credentials_app.command("list")
def credentials_list(user: OwnerOption = None) -> None:
    """List stored credentials: name, exchange, created, last used (never a secret)."""
    rows = _credentials_call(user, lambda store, owner: store.list(owner))
    if not rows:
        typer.echo("no stored credentials")
    for row in rows:
        used = row.last_used_at.isoformat() if row.last_used_at else "never used"
        typer.echo(f"{row.name}\t{row.exchange}\t{row.created_at.isoformat()}\t{used}")


@credentials_app.command("rotate")
def credentials_rotate(
    name: CredentialName,
    exchange: ExchangeCheck = None,
    user: OwnerOption = None,
) -> None:
    """Replace the secrets stored under NAME (prompt or stdin); the name and the exchange stay."""
    current = _credentials_call(user, lambda store, owner: store.get(owner, name))
    if exchange is not None and exchange.strip().lower() != current.exchange:
        fail(f"credentials {name} are for {current.exchange}, not {exchange}")
    creds = _checked_secrets(current.exchange)
    row = _credentials_call(user, lambda store, owner: store.rotate(owner, name, creds))
    typer.echo(f"rotated credentials {row.name} ({row.exchange})")


@credentials_app.command("test")
def credentials_test(
    name: CredentialName,
    exchange: ExchangeCheck = None,
    sandbox: Annotated[bool, typer.Option("--sandbox", help="Test against the exchange's sandbox")] = False,
    user: OwnerOption = None,
) -> None:
    """Read the balance through the stored credentials: `ok`, or the exchange's error code (exit status 1)."""
    from cracktrader.exchanges.credentials import check_balance
    from cracktrader.settings import get_settings

    async def work(store: Any, owner: int) -> Any:
        creds = await store.resolve(owner, name)
        if exchange is not None and exchange.strip().lower() != creds.exchange:
            fail(f"credentials {name} are for {creds.exchange}, not {exchange}")
        return await check_balance(creds, get_settings(), sandbox=sandbox)

    result = _credentials_call(user, work)
    if not result.ok:
        fail(f"{result.code}: {result.message}", 1)
    typer.echo(f"ok: {result.message}")


@credentials_app.command("delete")
def credentials_delete(
    name: CredentialName,
    exchange: ExchangeCheck = None,
    user: OwnerOption = None,
) -> None:
    """Delete the credentials stored under NAME."""

    async def work(store: Any, owner: int) -> None:
        current = await store.get(owner, name)
        if exchange is not None and exchange.strip().lower() != current.exchange:
            fail(f"credentials {name} are for {current.exchange}, not {exchange}")
        await store.delete(owner, name)

    _credentials_call(user, work)
    typer.echo(f"deleted credentials {name}")


# The top-level modules of the `web` extra that the server imports.
WEB_EXTRA_MODULES = ("uvicorn", "fastapi", "sqlalchemy", "aiosqlite", "alembic", "jwt", "pwdlib", "prometheus_client")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default CRACKTRADER_API_HOST or 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CRACKTRADER_API_PORT or 8000)")] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="critical|error|warning|info|debug")] = None,
    workers: Annotated[
        int | None, typer.Option(help="API processes on the port (more than 1 needs PostgreSQL DATABASE_URL)")
    ] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow a non-loopback bind without auth")] = False,
    no_executor: Annotated[
        bool,
        typer.Option(
            "--no-executor",
            help="Queue backtests started by id (POST /runs) for `cracktrader worker` processes instead of "
            "executing them here (turns the run queue on; needs PostgreSQL)",
        ),
    ] = False,
) -> None:
    """Run the web API, WebSocket streams and dashboard (needs the `web` extra)."""
    if no_executor:
        # The factory reads its settings from the environment.
        os.environ["CRACKTRADER_RUN_QUEUE"] = "true"
        os.environ["CRACKTRADER_EXECUTOR"] = "false"
    try:
        # Imported up front: the server imports most of them only once it runs, as a long traceback.
        for module in WEB_EXTRA_MODULES:
            importlib.import_module(module)
        from cracktrader.web.server.main import ServerConfigError, run_server
    except ImportError as exc:
        fail(f"the web server needs the web extra: pip install 'cracktrader[web]' ({exc.name} is missing)", 1)
    try:
        run_server(host=host, port=port, log_level=log_level, workers=workers, insecure=insecure or None)
    except ServerConfigError as exc:
        fail(str(exc))


@app.command()
def worker(
    executors: Annotated[
        int | None,
        typer.Option(min=1, max=256, help="Runs executed at once (default CRACKTRADER_MAX_CONCURRENT_BACKTESTS)"),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="critical|error|warning|info|debug")] = "info",
) -> None:
    """Execute queued backtests, sweeps and walk-forwards from the shared database until SIGTERM or Ctrl-C (then drain).

    Start it on any machine that reaches the database (DATABASE_URL, PostgreSQL) and the notices channel
    (CRACKTRADER_REDIS_URL, else PostgreSQL itself), with the same CRACKTRADER_SECRET_KEY as the servers.
    """
    import asyncio
    import logging
    import signal

    from cracktrader.runs.executor_process import WorkerConfigError, WorkerOptions, check_worker_database, run_worker
    from cracktrader.settings import get_settings
    from cracktrader.web.config import WebSettings

    settings = get_settings()
    try:
        check_worker_database(settings.database_url)
    except WorkerConfigError as exc:
        fail(str(exc))
    web = WebSettings()
    options = WorkerOptions(
        alerts=_worker_alerts,
        redis_url=web.redis_url,
        redis_prefix=web.redis_prefix,
        queue_size=web.ws_queue_size,
        event_log_days=web.event_log_days,
        executors=executors,
    )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> list[str]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        return await run_worker(settings, options, stop)

    done = asyncio.run(main())
    typer.echo(f"worker stopped after {len(done)} run(s)")


def _worker_alerts(settings: Any, engine: Any, bus: Any) -> Any:
    """The worker sessions' alerts: stored and delivered as the API server's are."""
    from cracktrader.db.alert_store import AlertStore
    from cracktrader.web.alerts.service import AlertService

    return AlertService.from_settings(settings, AlertStore(engine), bus)


def main() -> None:
    """Console entry point: run the command, flush, and exit without interpreter teardown.

    Tearing down numba, pyarrow and ccxt modules took 0.25-0.4 s after the output was already printed
    (benchmarks/bench_cli.py); every file the commands write is closed before they return.
    """
    code: int | str | None = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code
    sys.stdout.flush()
    sys.stderr.flush()
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        sys.stderr.flush()
        code = 1
    os._exit(code or 0)
