"""``cryptoj demo`` and ``cryptoj run``: the engine end to end, from the command line.

``cryptoj demo [--duration S] [--strategy NAME] [--seed N]`` starts the simulator
in-process on a free loopback port (seeded synthetic market, a fresh API key in a
temporary directory), runs the engine in ``sim`` mode against it over real
REST/WebSocket traffic, shows a live panel (rich; plain periodic lines with
``--no-tty`` or when stdout is not a terminal) and ends with a summary table.

``cryptoj run --config FILE [--mode sim|paper|live]`` runs the configured
strategy until SIGINT/SIGTERM (or ``--duration``). ``live`` needs a key file and
``--confirm-live`` (or ``live_confirmed = true``), reconciles first and refuses to
start when reconciliation fails.

The default demo strategy, :class:`BookReversion`, trades on book updates so that
a one-minute demo shows orders, fills, a resting take-profit order and PnL; the
bar-driven built-ins (``--strategy sma_cross`` ...) get their candles back-filled
from the simulator's REST history so their indicators are warm at once, but they
only act when a bar closes (once a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from cryptoj.config import ApiConfig, AppConfig, EngineConfig, StorageConfig, StrategyConfig, load_config
from cryptoj.errors import ConfigError, CryptojError, InvalidValue
from cryptoj.indicators import EMA
from cryptoj.logging import configure_logging
from cryptoj.model.book import OrderBook
from cryptoj.model.money import ZERO
from cryptoj.model.orders import Fill, Order, OrderStatus
from cryptoj.strategy import Param, Strategy, make_strategy
from cryptoj.trading_core import Runtime, StartupRefused, build_runtime, signals_stop
from cryptoj.venues.simulated.server import SimConfig, SimulatorServer

__all__ = ["BookReversion", "Summary", "demo_command", "run_command", "run_demo", "summarize"]

EXIT_CONFIG = 2
EXIT_REFUSED = 3
DEMO_PRODUCTS = ("BTC-USD", "ETH-USD")
BPS = Decimal("0.0001")
DEMO_BALANCES = {"USD": Decimal(10000)}
"""The demo account starts with quote only, so the equity change is the strategy's doing."""


class BookReversion(Strategy):
    """The demo strategy: buy a dip below the mid's EMA, take profit with a resting limit, stop out at market.

    Per product, on every book update: the mid feeds an EMA of ``lookback`` updates.
    Flat and the mid ``entry_bps`` below the EMA → market buy ``order_size``. Once
    filled, a limit sell rests ``take_profit_bps`` above the entry price. If the mid
    falls ``stop_bps`` below the entry, or the position is older than ``max_hold_s``,
    the limit is cancelled and the position sold at market. One order chain per
    product at a time. Small sizes; it exists to show the engine working.
    """

    name = "book_reversion"
    params = (
        Param("order_size", Decimal, Decimal("0.01"), min=Decimal(0), doc="base size per entry"),
        Param("lookback", int, 20, min=2, max=10_000, doc="EMA length, in book updates"),
        Param("entry_bps", Decimal, Decimal(1), min=Decimal(0), doc="buy when the mid is this many bps below its EMA"),
        Param("take_profit_bps", Decimal, Decimal(5), min=Decimal(0), doc="resting sell this many bps above entry"),
        Param("stop_bps", Decimal, Decimal(8), min=Decimal(0), doc="sell at market this many bps below entry"),
        Param("max_hold_s", int, 15, min=1, max=86_400, doc="sell at market after holding this long"),
    )

    def on_start(self) -> None:
        self._ema = {p: EMA(self.p.lookback) for p in self.products}
        self._busy: dict[str, str | None] = dict.fromkeys(self.products)
        self._exit: dict[str, str | None] = dict.fromkeys(self.products)
        self._entered: dict[str, datetime] = {}
        self._stopping: set[str] = set()

    def on_book(self, product: str, book: OrderBook) -> None:
        mid = book.mid()
        if mid is None:
            return
        ema = self._ema[product].update(mid)
        if ema is None or self._busy[product] is not None:
            return
        pos = self.position(product)
        info = self.product(product)
        if pos.quantity < info.base_min_size or pos.quantity == 0:
            if mid < ema * (1 - self.p.entry_bps * BPS):
                self._busy[product] = self.buy(product, self.p.order_size)
            return
        entry = pos.avg_entry_price
        too_old = product in self._entered and self.now() - self._entered[product] > timedelta(seconds=self.p.max_hold_s)
        if (mid < entry * (1 - self.p.stop_bps * BPS) or too_old) and product not in self._stopping:
            self._stopping.add(product)
            exit_id = self._exit.get(product)
            if exit_id is not None:
                self.cancel(exit_id)  # the market sell follows the cancel's confirmation
            else:
                self._sell_all(product)

    def _sell_all(self, product: str) -> None:
        info = self.product(product)
        size = info.round_size(self.position(product).quantity)
        if size >= info.base_min_size and size > 0:
            self._busy[product] = self.sell(product, size)

    def on_fill(self, fill: Fill) -> None:
        self.log.info("demo.fill", product_id=fill.product_id, side=fill.side.value, price=str(fill.price), size=str(fill.size))

    def on_order_update(self, order: Order) -> None:
        pid = order.product_id
        if pid not in self._busy or not order.is_terminal:
            return
        if order.client_order_id == self._busy[pid]:
            self._busy[pid] = None
            if order.side.value == "BUY" and order.filled_size > 0:
                self._entered[pid] = self.now()
                self._stopping.discard(pid)
                target = order.average_price * (1 + self.p.take_profit_bps * BPS)
                price = self.product(pid).round_price(target, order.side.opposite)
                size = self.product(pid).round_size(self.position(pid).quantity)
                if size > 0:
                    self._exit[pid] = self.sell(pid, size, price=price)
            elif order.side.value == "SELL":
                self._entered.pop(pid, None)
                self._stopping.discard(pid)
        elif order.client_order_id == self._exit.get(pid):
            self._exit[pid] = None
            if order.status is OrderStatus.FILLED:
                self._entered.pop(pid, None)
                self._stopping.discard(pid)
            elif pid in self._stopping:
                self._sell_all(pid)


# --- summary and panel ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run did (the demo's closing table)."""

    strategy: str
    duration_s: float
    trades: int
    orders: int
    fees: Decimal
    realised_pnl: Decimal
    total_pnl: Decimal | None
    max_drawdown: Decimal
    max_drawdown_quote: Decimal
    reconnects: int
    rejects: int
    reject_reasons: Mapping[str, int]
    strategy_errors: int
    open_orders_left: int
    quote: str


def summarize(runtime: Runtime, strategy: str, started: float) -> Summary:
    engine = runtime.engine
    stats = engine.stats
    total = None if stats.equity is None or stats.start_equity is None else stats.equity - stats.start_equity
    reasons = dict(stats.risk_rejects) | {f"venue:{k}": v for k, v in stats.venue_rejects.items()}
    return Summary(
        strategy=strategy,
        duration_s=time.monotonic() - started,
        trades=stats.fills,
        orders=stats.orders_sent,
        fees=stats.fees,
        realised_pnl=engine.portfolio.realised_pnl,
        total_pnl=total,
        max_drawdown=stats.max_drawdown,
        max_drawdown_quote=stats.max_drawdown_quote,
        reconnects=runtime.reconnects,
        rejects=stats.rejects,
        reject_reasons=reasons,
        strategy_errors=stats.strategy_errors,
        open_orders_left=len(runtime.order_manager.open_orders()),
        quote=engine.options.quote_currency,
    )


def _qty(value: Decimal | None) -> str:
    if value is None or value == 0:
        return "0"
    return f"{value.normalize():f}"


def _money(value: Decimal | None, places: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value.quantize(Decimal(1).scaleb(-places)):,}"


def summary_table(s: Summary) -> Table:
    table = Table(title=f"Summary — {s.strategy}, {s.duration_s:.0f}s", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("trades (fills)", str(s.trades))
    table.add_row("orders sent", str(s.orders))
    table.add_row(f"fees ({s.quote})", _money(s.fees, 4))
    table.add_row(f"realised PnL ({s.quote}, net of fees)", _money(s.realised_pnl, 4))
    table.add_row(f"total PnL ({s.quote}, equity change)", _money(s.total_pnl, 4))
    dd = (s.max_drawdown * 100).quantize(Decimal("0.0001"))
    table.add_row("max drawdown", f"{dd}% ({_money(s.max_drawdown_quote, 2)} {s.quote})")
    table.add_row("reconnects", str(s.reconnects))
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(s.reject_reasons.items()))
    table.add_row("rejects", f"{s.rejects}" + (f" ({reasons})" if reasons else ""))
    table.add_row("strategy errors", str(s.strategy_errors))
    table.add_row("open orders left", str(s.open_orders_left))
    return table


def panel(runtime: Runtime, strategy: str, elapsed: float, duration: float | None) -> Group:
    engine = runtime.engine
    md = runtime.market_data
    quote = engine.options.quote_currency
    prices = Table(title="Market and positions", box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    for col in ("product", "bid", "ask", "position", "entry", "uPnL", "open", "feed"):
        prices.add_column(col, justify="right" if col != "product" else "left", no_wrap=True)
    for pid in engine.products:
        ba = md.best_bid_ask(pid)
        bid = ba[0] if ba else None
        ask = ba[1] if ba else None
        pos = engine.portfolio.position(pid)
        mid = engine.mid_price(pid)
        unreal = pos.unrealised_pnl(mid) if pos is not None and mid is not None and not pos.is_flat else ZERO
        age = md.data_age(pid)
        feed = "no data" if age is None else ("STALE" if md.is_stale(pid) else f"ok {age:.1f}s")
        if not md.is_book_valid(pid):
            feed = "resync"
        prices.add_row(
            pid,
            str(bid[0]) if bid else "-",
            str(ask[0]) if ask else "-",
            _qty(pos.quantity if pos else None),
            _money(pos.avg_entry_price if pos and not pos.is_flat else None),
            _money(unreal, 2),
            str(len(engine.order_manager.open_orders(pid))),
            feed,
        )
    stats = engine.stats
    total = None if stats.equity is None or stats.start_equity is None else stats.equity - stats.start_equity
    status = Table.grid(padding=(0, 2))
    status.add_row(
        f"equity {_money(stats.equity)} {quote}",
        f"PnL {_money(total, 4)}",
        f"fees {_money(stats.fees, 4)}",
        f"fills {stats.fills}",
        f"rejects {stats.rejects}",
    )
    status.add_row(
        f"risk [bold]{runtime.risk.state.value}[/bold]",
        f"max DD {(stats.max_drawdown * 100).quantize(Decimal('0.001'))}%",
        f"market ws {'up' if runtime.market_ws.connected else 'DOWN'}",
        f"user stream {'up' if runtime.order_manager.stream_connected else 'polling'}",
        f"reconnects {runtime.reconnects}",
    )
    left = "" if duration is None else f" / {duration:.0f}s"
    title = f"cryptoj {engine.mode} — {escape(strategy)} — {elapsed:.0f}s{left}"
    return Group(Panel(status, title=title), prices)


def plain_line(runtime: Runtime, elapsed: float) -> str:
    engine = runtime.engine
    stats = engine.stats
    parts = [f"t={elapsed:.0f}s", f"risk={runtime.risk.state.value}", f"equity={_money(stats.equity)}", f"fills={stats.fills}",
             f"fees={_money(stats.fees, 4)}", f"rejects={stats.rejects}", f"open={len(engine.order_manager.open_orders())}"]
    for pid in engine.products:
        pos = engine.portfolio.position(pid)
        parts.append(f"{pid}={engine.mid_price(pid) or '-'} pos={_qty(pos.quantity if pos else None)}")
    return " ".join(parts)


async def _show(runtime: Runtime, strategy: str, duration: float | None, tty: bool, console: Console, started: float) -> None:
    if tty:
        with Live(panel(runtime, strategy, 0, duration), console=console, refresh_per_second=4, transient=False) as live:
            while True:
                await asyncio.sleep(0.25)
                live.update(panel(runtime, strategy, time.monotonic() - started, duration))
    else:
        while True:
            await asyncio.sleep(5)
            console.print(plain_line(runtime, time.monotonic() - started), highlight=False, soft_wrap=True)


async def _serve_api(stack: contextlib.AsyncExitStack, runtime: Runtime, console: Console, *, optional: bool) -> None:
    """Serve the operator API / dashboard for the run when ``api.enabled`` (see docs/operations.md).

    ``optional`` (the demo): a port that cannot be bound is reported and the run goes on without the API;
    otherwise (``cryptoj run``) it is an error, as the operator asked for the API.
    """
    if not runtime.config.api.enabled:
        return
    from cryptoj.api.engine_view import operator_api  # the API stack is only imported when it is served

    try:
        served = await stack.enter_async_context(operator_api(runtime, out=sys.stderr))
    except InvalidValue as exc:
        if not optional:
            raise
        console.print(f"[yellow]operator API not started:[/yellow] {escape(str(exc))}", highlight=False)
        return
    if served is not None:
        console.print(f"dashboard and operator API: {served.url}/ (token in {escape(served.token_path)})", highlight=False)


async def drive(
    runtime: Runtime, *, strategy: str, duration: float | None, tty: bool, console: Console, api_optional: bool = False
) -> Summary:
    """Start ``runtime`` (and its operator API when enabled), show the panel until the duration / a signal, close it."""
    started = time.monotonic()
    with signals_stop(runtime.engine):
        try:
            await runtime.start()
            async with contextlib.AsyncExitStack() as stack:
                await _serve_api(stack, runtime, console, optional=api_optional)
                shower = asyncio.get_running_loop().create_task(_show(runtime, strategy, duration, tty, console, started))
                try:
                    await runtime.engine.wait_for_stop(duration)
                finally:
                    shower.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await shower
        finally:
            await runtime.close()
    return summarize(runtime, strategy, started)


def _strategy(name: str, params: Mapping[str, Any], products: Sequence[str]) -> Strategy:
    if name in ("book_reversion", "demo"):
        return BookReversion(params, products=products)
    return make_strategy(name, params, products=products)


async def run_demo(
    *,
    duration: float = 60.0,
    strategy: str = "book_reversion",
    seed: int = 1,
    tty: bool = False,
    console: Console | None = None,
    params: Mapping[str, Any] | None = None,
    market_rate: float = 25.0,
    api_port: int | None = None,
) -> Summary:
    """The demo: simulator in-process on a free loopback port + the engine in sim mode against it.

    ``api_port`` serves the operator API and dashboard on 127.0.0.1 (0 = any free port; None = not served).
    """
    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="cryptoj-demo-") as tmp:
        state = Path(tmp)
        sim = SimulatorServer(
            SimConfig(port=0, products=list(DEMO_PRODUCTS), seed=seed, market_rate=market_rate, balances=dict(DEMO_BALANCES),
                      create_api_key=state / "sim-key.json", private_rate_limit=1000, public_rate_limit=1000)
        )
        await sim.start()
        try:
            chosen = _strategy(strategy, params or {}, DEMO_PRODUCTS)
            bar_driven = type(chosen).handles("on_bar")
            config = AppConfig(
                mode="sim",
                products=list(DEMO_PRODUCTS),
                strategy=StrategyConfig(name=strategy, params=dict(params or {})),
                storage=StorageConfig(url=f"sqlite+aiosqlite:///{state / 'demo.db'}", state_dir=state),
                engine=EngineConfig(wait_for_books_seconds=10, backfill_candles=100 if bar_driven else 0),
                api=ApiConfig(enabled=api_port is not None, port=api_port or 0),
            )
            console.print(
                f"[bold]cryptoj demo[/bold]: simulator on {sim.base_url} (seed {seed}), strategy {escape(chosen.name)} "
                f"on {', '.join(DEMO_PRODUCTS)}, {duration:.0f}s. Ctrl-C stops early.",
                highlight=False,
            )
            runtime = await build_runtime(config, strategies=[chosen], simulator=sim)
            summary = await drive(runtime, strategy=chosen.name, duration=duration, tty=tty, console=console, api_optional=True)
        finally:
            await sim.stop()
    console.print(summary_table(summary))
    return summary


# --- CLI commands -------------------------------------------------------------------


def _is_tty(no_tty: bool) -> bool:
    return not no_tty and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def _quiet_logs(ctx: typer.Context | None) -> None:
    """Unless ``--log-level`` was given, log only warnings: the panel is the demo's output."""
    parent = ctx.parent if ctx is not None else None
    if parent is None:
        return
    source = parent.get_parameter_source("log_level")
    if source is None or source.name == "DEFAULT":
        configure_logging("WARNING", json=bool(parent.params.get("log_json", False)))


def demo_command(
    ctx: typer.Context,
    duration: Annotated[float, typer.Option("--duration", min=1, help="Seconds to run.")] = 60.0,
    strategy: Annotated[
        str, typer.Option("--strategy", help="book_reversion (default: trades on book updates), a built-in, or file.py:Class.")
    ] = "book_reversion",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated market.")] = 1,
    no_tty: Annotated[bool, typer.Option("--no-tty", help="Plain periodic lines instead of the live panel.")] = False,
    api_port: Annotated[
        int, typer.Option("--api-port", min=0, max=65535, help="Operator API / dashboard port on 127.0.0.1 (0 = any free port).")
    ] = 8080,
    no_api: Annotated[bool, typer.Option("--no-api", help="Do not serve the operator API / dashboard.")] = False,
) -> None:
    """Run the engine against an in-process simulator with a live panel, then print a summary. Exits 0."""
    _quiet_logs(ctx)
    console = Console(soft_wrap=True)
    err = Console(stderr=True)
    try:
        asyncio.run(
            run_demo(duration=duration, strategy=strategy, seed=seed, tty=_is_tty(no_tty), console=console,
                     api_port=None if no_api else api_port)
        )
    except ConfigError as exc:
        for path, message in exc.problems:
            err.print(f"[bold red]{escape(path or '(config)')}[/bold red]: {escape(message)}")
        raise typer.Exit(EXIT_CONFIG) from None
    except CryptojError as exc:
        err.print(f"[bold red]demo failed:[/bold red] {escape(str(exc))}")
        raise typer.Exit(1) from None


async def run_configured(
    config: AppConfig,
    *,
    mode: str,
    confirm_live: bool,
    duration: float | None,
    tty: bool,
    console: Console,
    strategy_spec: str | None = None,
) -> Summary:
    """``cryptoj run``: the configured strategy in ``mode``; a simulator in-process for sim without ``engine.sim_url``."""
    name = strategy_spec or config.strategy.name
    chosen = _strategy(name, config.strategy.params, config.products)
    sim: SimulatorServer | None = None
    if mode == "sim" and config.engine.sim_url is None:
        config.storage.state_dir.mkdir(parents=True, exist_ok=True)
        key_file = config.storage.state_dir / "sim-key.json"
        sim = SimulatorServer(SimConfig(port=0, products=list(config.products), create_api_key=key_file,
                                        private_rate_limit=1000, public_rate_limit=1000))
        await sim.start()
    try:
        runtime = await build_runtime(config, mode=mode, strategies=[chosen], simulator=sim, confirm_live=confirm_live)
        summary = await drive(runtime, strategy=chosen.name, duration=duration, tty=tty, console=console)
    finally:
        if sim is not None:
            await sim.stop()
    console.print(summary_table(summary))
    return summary


def run_command(
    config_file: Annotated[Path, typer.Option("--config", help="TOML config file.", dir_okay=False)],
    mode: Annotated[str | None, typer.Option("--mode", help="sim, paper or live (default: the config's mode).")] = None,
    confirm_live: Annotated[bool, typer.Option("--confirm-live", help="Required (or live_confirmed = true) for live.")] = False,
    duration: Annotated[float | None, typer.Option("--duration", min=1, help="Stop after this many seconds.")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="Override strategy.name (built-in or file.py:Class).")] = (
        None
    ),
    no_tty: Annotated[bool, typer.Option("--no-tty", help="Plain periodic lines instead of the live panel.")] = False,
) -> None:
    """Run the configured strategy until SIGINT/SIGTERM (exit 0). Live needs a key file and --confirm-live."""
    console = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    try:
        config = load_config(config_file, os.environ)
        chosen_mode = mode or config.mode
        if chosen_mode not in ("sim", "paper", "live"):
            raise ConfigError([("--mode", f"must be sim, paper or live, got {chosen_mode!r}")])
        asyncio.run(
            run_configured(config, mode=chosen_mode, confirm_live=confirm_live, duration=duration, tty=_is_tty(no_tty),
                           console=console, strategy_spec=strategy)
        )
    except ConfigError as exc:
        err.print(f"[bold red]{escape(str(config_file))}: configuration problem(s)[/bold red]")
        for path, message in exc.problems:
            err.print(f"  [bold]{escape(path or '(file)')}[/bold]: {escape(message)}")
        raise typer.Exit(EXIT_CONFIG) from None
    except StartupRefused as exc:
        err.print(f"[bold red]{escape(str(exc))}[/bold red]")
        raise typer.Exit(EXIT_REFUSED) from None
    except CryptojError as exc:
        err.print(f"[bold red]run failed:[/bold red] {escape(str(exc))}")
        raise typer.Exit(1) from None
