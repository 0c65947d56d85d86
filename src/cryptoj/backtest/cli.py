"""``cryptoj backtest`` and ``cryptoj data download`` (registered in ``cryptoj/cli.py``).

Exit codes: 0 done; 1 bad data or a failed download; 2 bad options or configuration
(every problem printed with its key path).
"""

from __future__ import annotations

import asyncio
import json
import os
import traceback
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cryptoj.backtest.data import product_from_filename
from cryptoj.errors import ConfigError, CryptojError
from cryptoj.model.candles import Timeframe

if TYPE_CHECKING:
    from cryptoj.backtest.runner import BacktestResult

__all__ = ["backtest_command", "data_app", "download_command", "parse_time_option"]

EXIT_DATA = 1
EXIT_CONFIG = 2

data_app = typer.Typer(help="Historical market data (candle downloads for backtests).", no_args_is_help=True)


def parse_time_option(value: str, key: str) -> datetime:
    """``2026-01-01``, ``2026-01-01T12:00:00Z`` (no offset = UTC) or Unix seconds, for ``--start`` / ``--end``."""
    text = value.strip()
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), tz=UTC)
        ts = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise ConfigError([(key, f"expected an ISO date/time or Unix seconds, got {value!r}")]) from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _fail(problems: list[tuple[str, str]] | str, code: int) -> typer.Exit:
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    if isinstance(problems, str):
        err.print(f"[bold red]error:[/bold red] {escape(problems)}")
    else:
        for path, message in problems:
            err.print(f"[bold red]{escape(path or 'error')}[/bold red]: {escape(message)}", emoji=False)
    return typer.Exit(code)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


# --- data download -------------------------------------------------------------------------------


@data_app.command("download")
def download_command(
    product: Annotated[str, typer.Option("--product", help="Product id, e.g. BTC-USD")],
    start: Annotated[str, typer.Option("--start", help="First bar (ISO date/time or Unix seconds, UTC)")],
    end: Annotated[str, typer.Option("--end", help="End of the range, exclusive")],
    out: Annotated[Path, typer.Option("--out", help="Output .csv, .csv.gz or .parquet (an existing file is resumed)")],
    granularity: Annotated[str, typer.Option("--granularity", help="1m, 5m, 15m, 1h, 6h, 1d (or ONE_MINUTE, ...)")] = "1m",
    base_url: Annotated[
        str, typer.Option("--base-url", help="REST base URL (the simulator's for tests)")
    ] = "https://api.coinbase.com",
    rate: Annotated[float, typer.Option("--rate", help="Requests per second (public endpoint)")] = 10.0,
) -> None:
    """Download candles from the public candles endpoint: 300 per request, rate-limited, resumable."""
    from cryptoj.backtest.download import download_candles
    from cryptoj.venues.coinbase.rest import CoinbaseRestClient

    try:
        tf = Timeframe.parse(granularity)
        first = parse_time_option(start, "--start")
        last = parse_time_option(end, "--end")
        if rate <= 0:
            raise ConfigError([("--rate", f"must be positive, got {rate}")])
    except ConfigError as exc:
        raise _fail(exc.problems, EXIT_CONFIG) from None
    except CryptojError as exc:
        raise _fail([("--granularity", str(exc))], EXIT_CONFIG) from None
    console = Console(stderr=True)

    async def go() -> Any:
        with _progress(console) as bar:
            task = bar.add_task(f"{product} {tf.value}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            async with CoinbaseRestClient(base_url, public_rate=rate) as client:
                return await download_candles(client, product, tf, first, last, out, progress=progress)

    try:
        report = asyncio.run(go())
    except ConfigError as exc:
        raise _fail(exc.problems, EXIT_CONFIG) from None
    except CryptojError as exc:
        raise _fail(str(exc), EXIT_DATA) from None
    resumed = f", resumed at {report.resumed_from.isoformat()}" if report.resumed_from else ""
    typer.echo(
        f"{report.out}: {report.total_bars} bars ({report.new_bars} new in {report.requests} requests{resumed}); "
        f"{report.gaps} gaps, {report.missing_bars} bars missing (not filled)"
    )


# --- backtest ---------------------------------------------------------------------------------------


def _parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    problems = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(("--param", f"expected key=value, got {item!r}"))
            continue
        params[key.strip()] = value.strip()
    if problems:
        raise ConfigError(problems)
    return params


def _parse_balances(items: list[str]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for item in items:
        ccy, sep, amount = item.partition("=")
        try:
            value = Decimal(amount.strip())
        except InvalidOperation:
            value = Decimal(-1)
        if not sep or not ccy.strip() or not value.is_finite() or value < 0:
            raise ConfigError([("--balance", f"expected CURRENCY=AMOUNT (e.g. USD=10000), got {item!r}")])
        out[ccy.strip().upper()] = value
    return out


def _data_spec(item: str) -> tuple[str, Path]:
    """``PRODUCT=FILE`` or ``FILE`` (the product from the file name: ``BTC-USD-1m.csv``, ``ETH_BTC-1m.json``)."""
    product, sep, path = item.partition("=")
    if sep and not Path(item).exists():
        return product.strip().upper(), Path(path.strip())
    name = Path(item).name
    product = product_from_filename(name)
    if "-" not in product:
        raise ConfigError([("--data", f"cannot tell the product from {name!r}; write PRODUCT=FILE, e.g. BTC-USD={item}")])
    return product, Path(item)


def backtest_command(
    strategy: Annotated[str, typer.Option("--strategy", help="A built-in name (sma_cross) or path/file.py:Class")],
    data: Annotated[
        list[str], typer.Option("--data", help="Bar file (.csv/.parquet/.json) or recording (.jsonl.gz), as [PRODUCT=]FILE")
    ],
    param: Annotated[list[str] | None, typer.Option("--param", help="Strategy parameter key=value (repeat)")] = None,
    start: Annotated[str | None, typer.Option("--start", help="First bar to use (ISO or Unix seconds, UTC)")] = None,
    end: Annotated[str | None, typer.Option("--end", help="Stop before this time")] = None,
    fee_tier: Annotated[str, typer.Option("--fee-tier", help="maker,taker fee fractions")] = "0.004,0.006",
    slippage_bps: Annotated[str, typer.Option("--slippage-bps", help="Market-order slippage in basis points")] = "0",
    synthetic_book: Annotated[
        str | None,
        typer.Option("--synthetic-book", help="Market orders walk a synthetic book: levels=10,spread_bps=2,step_bps=1,depth=0.1"),
    ] = None,
    balance: Annotated[list[str] | None, typer.Option("--balance", help="Starting balance CCY=AMOUNT (repeat)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML config whose risk section (limits) applies")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write the HTML report here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics, trades and fills as JSON here")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar")] = True,
    book: Annotated[
        bool, typer.Option("--book", help="Replay one recording (.jsonl.gz) through the L2 book path instead of as bars")
    ] = False,
) -> None:
    """Backtest a strategy on historical bars: fills on the next bar, fees, metrics, HTML report."""
    from cryptoj.backtest.data import bars_from_recording, load_bars
    from cryptoj.backtest.fills import FeeTier, SyntheticBook
    from cryptoj.backtest.runner import Backtest, BacktestConfig
    from cryptoj.strategy import load_strategy

    out = Console(soft_wrap=True, highlight=False)
    try:
        cls = load_strategy(strategy)
        specs = [_data_spec(item) for item in data]
        products = [pid for pid, _ in specs]
        instance = cls(_parse_params(param or []), products=products)
        try:
            fees = FeeTier.parse(fee_tier)
        except CryptojError as exc:
            raise ConfigError([("--fee-tier", str(exc))]) from None
        try:
            slippage = Decimal(slippage_bps)
        except InvalidOperation:
            raise ConfigError([("--slippage-bps", f"not a number: {slippage_bps!r}")]) from None
        book_model = None
        if synthetic_book is not None:
            if slippage:
                raise ConfigError([("--synthetic-book", "give --slippage-bps or --synthetic-book, not both")])
            try:
                book_model = SyntheticBook.parse(synthetic_book)
            except CryptojError as exc:
                raise ConfigError([("--synthetic-book", str(exc))]) from None
        settings = BacktestConfig(
            balances=_parse_balances(balance or ["USD=10000"]),
            fees=fees,
            slippage_bps=slippage,
            synthetic_book=book_model,
            start=parse_time_option(start, "--start") if start else None,
            end=parse_time_option(end, "--end") if end else None,
        )
        if config is not None:
            from cryptoj.config import load_config

            settings.risk = load_config(config, os.environ, check_key_file=False).risk
        if specs:
            quote = specs[0][0].partition("-")[2]
            settings.quote = quote
            if balance is None:
                settings.balances = {quote: Decimal(10_000)}
    except ConfigError as exc:
        raise _fail(exc.problems, EXIT_CONFIG) from None
    try:
        if book:
            from cryptoj.backtest.book import BookBacktest

            if len(specs) != 1 or not specs[0][1].name.endswith(".jsonl.gz"):
                raise ConfigError([("--book", "give exactly one recording, as --data PRODUCT=FILE.jsonl.gz")])
            bt: Backtest = BookBacktest(instance, specs[0][1], specs[0][0], settings)
            result = bt.run()
            _print_result(out, result, report, json_out)
            return
        series = []
        for pid, path in specs:
            if path.name.endswith(".jsonl.gz"):
                series.append(bars_from_recording(path, pid, instance.timeframe))
            else:
                series.append(load_bars(path, product_id=pid))
        for s in series:
            if s.gaps:
                gaps = f"{len(s.gaps)} gaps, {s.missing_bars} bars missing (not filled)"
                out.print(f"[yellow]warning:[/yellow] {escape(s.source)}: {gaps}")
        bt = Backtest(instance, series, settings)
        total = sum(len(s) for s in bt.series)
        if progress:
            with _progress(Console(stderr=True)) as bar:
                task = bar.add_task(f"backtest {instance.name}", total=total)
                result = bt.run(progress=lambda done, _total: bar.update(task, completed=done))
        else:
            result = bt.run()
    except ConfigError as exc:
        raise _fail(exc.problems, EXIT_CONFIG) from None
    except CryptojError as exc:
        raise _fail(str(exc), EXIT_DATA) from None
    except Exception as exc:  # a bug in the strategy: say where, and stop
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise _fail(f"the strategy raised {type(exc).__name__}: {exc} ({frame.filename}:{frame.lineno})", EXIT_DATA) from None
    _print_result(out, result, report, json_out)


def _print_result(out: Console, result: BacktestResult, report: Path | None, json_out: Path | None) -> None:
    from cryptoj.backtest.report import write_report

    table = Table(title=f"{result.strategy} on {', '.join(result.products)}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.rows():
        table.add_row(name, value)
    out.print(table)
    out.print(f"{result.bars:,} bars in {result.elapsed_s:.2f}s ({result.bars_per_second:,.0f} bars/s)")
    if result.rejections:
        out.print("rejections: " + ", ".join(f"{k}={v}" for k, v in sorted(result.rejections.items())))
    if report is not None:
        write_report(result, report)
        out.print(f"report: {report}")
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
        out.print(f"json: {json_out}")
