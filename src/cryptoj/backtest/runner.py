"""The backtest runner: drives a :class:`~cryptoj.strategy.Strategy` over historical bars on a simulated clock.

:class:`Backtest` is the strategy's :class:`~cryptoj.strategy.StrategyContext`
(and the risk engine's :class:`~cryptoj.risk_management.RiskContext`) for a
run: the same strategy class, the same ``OrderSpec`` / ``Order`` / ``Fill`` /
``Portfolio`` model, the same product-rule checks as the simulator
(:func:`~cryptoj.venues.simulated.matching.check_order`) and, when a
``RiskConfig`` is given, the same :class:`~cryptoj.risk_management.RiskEngine`
pre-trade checks as live trading. Fills follow :mod:`cryptoj.backtest.fills`.

The order of events for each bar *t* (of any product, bars of several products
merged by time, ties in the order the products were given):

1. the clock is set to bar *t*'s **start**; orders working on the product are
   run through bar *t* (:class:`~cryptoj.backtest.fills.BarFillModel`): fills
   are applied to the portfolio and reported with ``on_fill`` then
   ``on_order_update`` (time = bar start), the order the trading engine uses;
2. the clock moves to bar *t*'s **end** (its close time) and the strategy gets
   ``on_bar(product, bar)`` — only now, when the bar has closed; no later bar
   is reachable from the context (``candles()`` ends at *t*);
3. orders the strategy submitted are checked (risk engine if configured,
   product rules, funds: buys and sells hold what they may spend) and accepted
   (``on_order_update`` OPEN) or rejected (REJECTED with the reason); they can
   fill from bar *t+1* on;
4. timers due at or before the bar's end fire (``on_timer(name, due time)``).

At the end ``on_stop()`` is called; orders still working are cancelled
(reason ``END_OF_DATA``); an open position is valued at the last close (not sold).

Hot loop: the bars are columns; per bar (one product) the loop stores the index twice
(the context's position and the :class:`~cryptoj.backtest.data.BarView`'s), calls
``on_bar`` with the reused view, checks the view's reference count (a strategy that
kept the bar keeps that view; the loop goes on with a fresh one) and tests three
things (an order working, an action asked, a timer due — by bar index). Nothing is
allocated per bar; the clock is derived from the index when read. Order work happens
only when an order is working. The equity curve and the metrics are computed after
the run in one pass over the closes (floats for the curve, exact Decimals for
balances, fills and the final equity).
"""

from __future__ import annotations

import gc
import heapq
import logging
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from sys import getrefcount
from typing import Any

from cryptoj.backtest.data import BarSeries, BarView, resample
from cryptoj.backtest.fills import BarFillModel, Done, FeeTier, Outcome, SyntheticBook, WorkingOrder
from cryptoj.backtest.metrics import Metrics, compute_metrics
from cryptoj.config import RiskConfig
from cryptoj.errors import ConfigError, DataError, InvalidValue, OrderRejected, RiskRejected, TradingHalted
from cryptoj.logging import get_logger
from cryptoj.model.book import OrderBook
from cryptoj.model.candles import EPOCH, Candle, Timeframe
from cryptoj.model.instruments import Product
from cryptoj.model.money import ZERO, Side
from cryptoj.model.orders import Fill, Liquidity, Order, OrderKind, OrderSpec, OrderStatus
from cryptoj.model.positions import Balance, Portfolio, Position
from cryptoj.strategy import Strategy, StrategyError, StrategyLog

__all__ = ["END_OF_DATA", "Backtest", "BacktestConfig", "BacktestResult", "default_product"]

log = get_logger(__name__)

END_OF_DATA = "END_OF_DATA"
INSUFFICIENT_FUND = "INSUFFICIENT_FUND"
_CHUNK = 1 << 16
_ACCEPTED: tuple[tuple[OrderStatus, OrderStatus], ...] = (
    (OrderStatus.NEW, OrderStatus.SUBMITTED),
    (OrderStatus.SUBMITTED, OrderStatus.OPEN),
)
_NEVER = 1 << 62


def default_product(product_id: str, series: BarSeries | None = None) -> Product:
    """Rules for a product when none are given: base increment 1e-8, price increment from the data's decimals.

    The price (and quote) increment is the smallest step the data's prices use
    (``0.01`` for prices with two decimals); min sizes are one increment and a
    quote minimum of 1. Pass real rules (``BacktestConfig.products``) when they matter.
    """
    base, sep, quote = product_id.partition("-")
    if not sep or not base or not quote:
        raise InvalidValue("product_id", product_id, "expected BASE-QUOTE, e.g. BTC-USD")
    places = 2
    if series is not None:
        for col in (series.open, series.close):
            for value in col[:2000]:
                exponent = value.as_tuple().exponent
                if isinstance(exponent, int):
                    places = max(places, -exponent)
    increment = Decimal(1).scaleb(-places)
    return Product(
        product_id=product_id,
        base_currency=base,
        quote_currency=quote,
        base_increment=Decimal("0.00000001"),
        quote_increment=increment,
        price_increment=increment,
        base_min_size=Decimal("0.00000001"),
        base_max_size=Decimal("1000000000"),
        quote_min_size=Decimal("1"),
        quote_max_size=Decimal("1000000000000"),
    )


@dataclass(slots=True)
class BacktestConfig:
    """How a run is set up. ``balances`` are the starting ``available`` amounts."""

    balances: Mapping[str, Decimal] = field(default_factory=lambda: {"USD": Decimal(10_000)})
    quote: str = "USD"
    fees: FeeTier = field(default_factory=FeeTier)
    slippage_bps: Decimal = ZERO
    synthetic_book: SyntheticBook | None = None
    products: Mapping[str, Product] = field(default_factory=dict)
    risk: RiskConfig | None = None
    strategy_log_level: int = logging.WARNING
    start: datetime | None = None
    end: datetime | None = None


@dataclass(slots=True)
class BacktestResult:
    """Everything a run produced (the report and the JSON are made from it)."""

    strategy: str
    params: dict[str, Any]
    products: list[str]
    metrics: Metrics
    fills: list[Fill]
    orders: list[Order]
    curve_times: list[int]
    curve_equity: list[float]
    series: list[BarSeries]
    rejections: Counter[str]
    bars: int
    elapsed_s: float
    cancelled_at_end: int = 0
    cpu_s: float = 0.0  # CPU time of this process over the same span as elapsed_s (steadier on a shared machine)

    def _curve_json(self) -> dict[str, Any]:
        """The equity curve (Unix seconds, quote value); above 100,000 points reduced keeping each bucket's extremes."""
        from cryptoj.backtest.report import downsample

        times, values = downsample(self.curve_times, self.curve_equity, CURVE_JSON_POINTS)
        return {"times": times, "equity": values, "downsampled": len(times) < len(self.curve_times)}

    @property
    def bars_per_second(self) -> float:
        return self.bars / self.elapsed_s if self.elapsed_s > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "params": {k: _jsonable(v) for k, v in self.params.items()},
            "products": self.products,
            "bars": self.bars,
            "elapsed_s": self.elapsed_s,
            "bars_per_second": self.bars_per_second,
            "rejections": dict(self.rejections),
            "cancelled_at_end": self.cancelled_at_end,
            "gaps": {s.product_id: {"count": len(s.gaps), "missing_bars": s.missing_bars} for s in self.series},
            "metrics": self.metrics.to_json(),
            "equity_curve": self._curve_json(),
            "fills": [
                {
                    "trade_id": f.trade_id,
                    "client_order_id": f.client_order_id,
                    "product_id": f.product_id,
                    "side": f.side.value,
                    "price": str(f.price),
                    "size": str(f.size),
                    "fee": str(f.fee),
                    "time": f.time.isoformat(),
                    "liquidity": f.liquidity.value,
                }
                for f in self.fills
            ],
        }


CURVE_JSON_POINTS = 100_000


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    return str(value)


class _StrategyLog:
    """The strategy's logger in a backtest: forwards at ``level`` and above (INFO lines per trade would dominate a run)."""

    def __init__(self, name: str, level: int) -> None:
        self._log = get_logger(f"cryptoj.strategy.{name}").bind(strategy=name, mode="backtest")
        self._level = level

    def debug(self, event: str, /, **kw: Any) -> None:
        if self._level <= logging.DEBUG:
            self._log.debug(event, **kw)

    def info(self, event: str, /, **kw: Any) -> None:
        if self._level <= logging.INFO:
            self._log.info(event, **kw)

    def warning(self, event: str, /, **kw: Any) -> None:
        if self._level <= logging.WARNING:
            self._log.warning(event, **kw)

    def error(self, event: str, /, **kw: Any) -> None:
        if self._level <= logging.ERROR:
            self._log.error(event, **kw)


def _utc(ts: int) -> datetime:
    return EPOCH + timedelta(seconds=ts)


class Backtest:
    """One run of ``strategy`` over ``data`` (one :class:`BarSeries` per product). Call :meth:`run` once."""

    def __init__(self, strategy: Strategy, data: BarSeries | Sequence[BarSeries], config: BacktestConfig | None = None) -> None:
        self.config = config or BacktestConfig()
        self.strategy = strategy
        series = [data] if isinstance(data, BarSeries) else list(data)
        if not series:
            raise DataError("backtest: no data")
        ids = [s.product_id for s in series]
        if len(set(ids)) != len(ids):
            raise ConfigError([("backtest.data", f"two data sets for one product: {ids}")])
        tf = strategy.timeframe
        step = tf.seconds
        prepared = []
        for s in series:
            if self.config.start is not None or self.config.end is not None:
                s = s.between(self.config.start, self.config.end)
            if s.step != step:
                if step < s.step or step % s.step:
                    raise ConfigError(
                        [("backtest.data", f"{s.product_id}: {s.step}s bars cannot make the strategy's {tf.value} bars")]
                    )
                s = resample(s, step)
            if not len(s):
                raise DataError(f"{s.product_id}: no bars between the given start and end")
            prepared.append(s)
        self.series = prepared
        self.timeframe: Timeframe = tf
        self.products: dict[str, Product] = {
            s.product_id: self.config.products.get(s.product_id) or default_product(s.product_id, s) for s in prepared
        }
        self._index = {s.product_id: k for k, s in enumerate(prepared)}
        # the closes as exact integers (in the price increment's decimals), made once, read by integer indicators
        self._units = [s.close_units(self._places(self.products[s.product_id])) for s in prepared]
        fees, slippage, book = self.config.fees, self.config.slippage_bps, self.config.synthetic_book
        self._models = {pid: BarFillModel(p, fees, slippage_bps=slippage, book=book) for pid, p in self.products.items()}
        known = {self.config.quote} | {p.base_currency for p in self.products.values()}
        for pid, p in self.products.items():
            if p.quote_currency != self.config.quote:
                raise ConfigError([("backtest.quote", f"{pid} is quoted in {p.quote_currency}, the run in {self.config.quote}")])
        for currency, amount in self.config.balances.items():
            if amount and currency not in known:
                raise ConfigError([(f"backtest.balances.{currency}", f"no product prices {currency} in {self.config.quote}")])
        self.portfolio = Portfolio(self.config.balances)
        self._taker_factor = 1 + self.config.fees.taker  # a buy holds its worst-case cost with the taker fee
        self.log: StrategyLog = _StrategyLog(strategy.name, self.config.strategy_log_level)
        self._pos = [-1] * len(prepared)  # current bar index per product (-1: no bar yet)
        # the clock, Unix seconds; None (single-product bar loop): the end of the current bar
        self._clock: int | None = min(s.times[0] for s in prepared)
        self._now_dt: tuple[int, datetime] = (-1, EPOCH)  # the clock as a datetime, made once per clock value
        self._orders: dict[str, Order] = {}
        self._working: list[list[WorkingOrder]] = [[] for _ in prepared]
        self._holds: dict[str, tuple[str, Decimal]] = {}
        # submits (specs) and cancels (ids), in the order asked; None: a timer changed (the loop looks again)
        self._actions: list[OrderSpec | str | None] = []
        self._fills: list[Fill] = []
        self._fill_events: list[int] = []
        self._event = -1
        self._coid = 0
        self._trade = 0
        self._timers: dict[str, tuple[int, int]] = {}  # name -> (interval s, next due ts)
        self._next_timer = _NEVER
        self.rejections: Counter[str] = Counter()
        self._ran = False
        self._on_fill = strategy.on_fill if strategy.handles("on_fill") else None
        self._on_order_update = strategy.on_order_update
        self.risk = None
        if self.config.risk is not None:
            from cryptoj.risk_management import RiskEngine

            self.risk = RiskEngine(self.config.risk, self, self.now)

    @property
    def _now_ts(self) -> int:
        ts = self._clock
        if ts is None:
            s = self.series[0]
            return s.times[self._pos[0]] + s.step
        return ts

    @_now_ts.setter
    def _now_ts(self, value: int) -> None:
        self._clock = value

    # -- StrategyContext -----------------------------------------------------------------

    def now(self) -> datetime:
        ts = self._now_ts
        cached = self._now_dt
        if cached[0] != ts:
            cached = self._now_dt = (ts, _utc(ts))
        return cached[1]

    def new_client_order_id(self) -> str:
        self._coid += 1
        return f"bt-{self._coid:08d}"

    def submit(self, spec: OrderSpec) -> str:
        if spec.client_order_id in self._orders:
            raise StrategyError(f"client_order_id {spec.client_order_id} was already used")
        self._orders[spec.client_order_id] = Order(spec, created_at=self.now())
        self._actions.append(spec)
        return spec.client_order_id

    def cancel(self, client_order_id: str) -> None:
        if client_order_id not in self._orders:
            raise StrategyError(f"cancel: no order {client_order_id} in this backtest")
        self._actions.append(client_order_id)

    def position(self, product_id: str) -> Position | None:
        return self.portfolio.position(product_id)

    def balance(self, currency: str) -> Balance:
        return self.portfolio.balance(currency)

    def equity(self) -> Decimal:
        return self.portfolio.equity(self._prices(), self.config.quote)

    def _prices(self) -> dict[str, Decimal]:
        out = {}
        for k, s in enumerate(self.series):
            i = self._pos[k]
            out[s.product_id] = s.close[i] if i >= 0 else s.open[0]
        return out

    def candles(self, product_id: str, timeframe: Timeframe, n: int) -> Sequence[Candle]:
        k = self._product_index(product_id)
        s = self.series[k]
        end = self._pos[k] + 1  # bars up to and including the current (closed) one
        if timeframe.seconds == s.step:
            return [s.candle(i) for i in range(max(0, end - n), end)]
        if timeframe.seconds < s.step or timeframe.seconds % s.step:
            raise StrategyError(f"candles({product_id!r}, {timeframe.value}): the backtest runs on {s.step}s bars")
        per = timeframe.seconds // s.step
        part = s.between(None, _utc(s.times[end - 1] + s.step)) if end > 0 else None
        if part is None or not len(part):
            return []
        part = part.between(_utc(part.times[max(0, len(part) - (n + 1) * per)]), None)
        try:
            bigger = resample(part, timeframe.seconds)
        except DataError:
            return []
        return [bigger.candle(i) for i in range(max(0, len(bigger) - n), len(bigger))]

    def product(self, product_id: str) -> Product:
        product = self.products.get(product_id)
        if product is None:
            raise StrategyError(f"product {product_id!r} is not in this backtest ({', '.join(self.products)})")
        return product

    def book(self, product_id: str) -> OrderBook | None:
        return None

    def open_orders(self, product_id: str | None = None) -> Sequence[Order]:
        return [o for o in self._orders.values() if o.is_active and (product_id is None or o.product_id == product_id)]

    def set_timer(self, name: str, interval: timedelta | None) -> None:
        if interval is None:
            self._timers.pop(name, None)
        else:
            seconds = int(interval.total_seconds())
            if seconds <= 0:
                raise StrategyError(f"set_timer({name!r}): a backtest timer needs at least 1 second, got {interval}")
            self._timers[name] = (seconds, self._now_ts + seconds)
        self._next_timer = min((due for _, due in self._timers.values()), default=_NEVER)
        self._actions.append(None)

    # -- RiskContext ------------------------------------------------------------------------

    def mid_price(self, product_id: str) -> Decimal | None:
        k = self._index.get(product_id)
        if k is None or self._pos[k] < 0:
            return None
        return self.series[k].close[self._pos[k]]

    def data_age(self, product_id: str) -> float | None:
        k = self._index.get(product_id)
        if k is None or self._pos[k] < 0:
            return None
        s = self.series[k]
        return float(self._now_ts - (s.times[self._pos[k]] + s.step))

    def position_size(self, product_id: str) -> Decimal:
        pos = self.portfolio.position(product_id)
        return pos.quantity if pos is not None else ZERO

    def fee_rate(self, product_id: str) -> Decimal:
        return self.config.fees.taker

    def product_ids(self) -> Sequence[str]:
        return list(self.products)

    # -- the run ------------------------------------------------------------------------------

    def _product_index(self, product_id: str) -> int:
        k = self._index.get(product_id)
        if k is None:
            raise StrategyError(f"product {product_id!r} is not in this backtest ({', '.join(self.products)})")
        return k

    def run(self, progress: Callable[[int, int], None] | None = None) -> BacktestResult:
        """Run every bar; ``progress(done, total)`` is called every 65,536 bars and at the end."""
        self._start_run()
        strategy = self.strategy
        started = time.perf_counter()
        cpu_started = time.process_time()
        initial = self._initial_equity()
        strategy.on_start()
        self._drain()
        # The bar columns are hundreds of thousands of long-lived objects: move them out of the
        # cyclic collector's way for the run (gc.freeze), or every collection rescans them all.
        gc.freeze()
        try:
            if len(self.series) == 1:
                self._run_one(progress)
            else:
                self._run_merged(progress)
        finally:
            gc.unfreeze()
        strategy.on_stop()
        self._drain()
        cancelled = self._cancel_remaining()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        result = self._result(initial, elapsed, cancelled)
        result.cpu_s = cpu
        return result

    def _start_run(self) -> None:
        if self._ran:
            raise StrategyError("a Backtest runs once; make a new one")
        self._ran = True
        self.strategy.bind(self)

    def _run_one(self, progress: Callable[[int, int], None] | None) -> None:
        s = self.series[0]
        pid = s.product_id
        on_bar = self.strategy.on_bar  # takes a BarLike: the BarView
        working = self._working[0]
        actions = self._actions
        pos = self._pos
        view = BarView(s, 0, self._units[0])
        refs = getrefcount(view)
        n = len(s)
        timer_at = self._timer_index()
        self._clock = None  # now() is the end of the current bar
        for first in range(0, n, _CHUNK):
            last = min(n, first + _CHUNK)
            for i in range(first, last):
                if working:
                    self._event = i
                    self._bar_orders(0, i)
                    self._clock = None
                    timer_at = self._timer_index()
                pos[0] = i
                view.index = i
                on_bar(pid, view)
                if getrefcount(view) != refs:  # the strategy kept the bar: that view stays on it
                    view = view.fresh()
                if actions or i >= timer_at:
                    self._event = i
                    self._drain()
                    if self._next_timer <= self._now_ts:
                        self._fire_timers()
                    timer_at = self._timer_index()
            if progress is not None:
                progress(last, n)

    def _timer_index(self) -> int:
        """Single-product runs: the index of the first bar at whose end a timer is due (len: none)."""
        s = self.series[0]
        if self._next_timer >= _NEVER:
            return len(s.times)
        return bisect_left(s.times, self._next_timer - s.step)

    @staticmethod
    def _places(product: Product) -> int:
        exponent = product.price_increment.normalize().as_tuple().exponent
        return max(0, -exponent) if isinstance(exponent, int) else 2

    def _merged(self) -> list[tuple[int, int, int]]:
        return list(heapq.merge(*[[(t, k, i) for i, t in enumerate(s.times)] for k, s in enumerate(self.series)]))

    def _run_merged(self, progress: Callable[[int, int], None] | None) -> None:
        on_bar = self.strategy.on_bar  # takes a BarLike: a BarView per product
        series = self.series
        ids = [s.product_id for s in series]
        views = [BarView(s, 0, self._units[k]) for k, s in enumerate(series)]
        view = views[0]
        refs = getrefcount(view)
        working = self._working
        pos = self._pos
        events = self._merged()
        n = len(events)
        for ev, (t, k, i) in enumerate(events):
            s = series[k]
            self._event = ev
            if working[k]:
                self._bar_orders(k, i)
            end = t + s.step
            self._now_ts = end
            pos[k] = i
            view = views[k]
            view.index = i
            on_bar(ids[k], view)
            if getrefcount(view) != refs:  # the strategy kept the bar: that view stays on it
                views[k] = view.fresh()
            if self._actions:
                self._drain()
            if self._next_timer <= end:
                self._fire_timers()
            if progress is not None and (ev + 1) % _CHUNK == 0:
                progress(ev + 1, n)
        if progress is not None:
            progress(n, n)

    # -- orders ---------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Handle what the strategy asked for in its last callback (and what that triggers)."""
        actions = self._actions
        while actions:
            action = actions.pop(0)
            if action is None:
                continue
            if isinstance(action, str):
                self._cancel(action, "USER_CANCELLED")
            else:
                self._accept(action)

    def _notify(self, order: Order, *fills: Fill) -> None:
        """Tell the strategy: ``on_fill`` for each new fill, then ``on_order_update`` (the engine's order)."""
        if self._on_fill is not None:
            for fill in fills:
                self._on_fill(fill)
        self._on_order_update(order)

    def _reject(self, order: Order, reason: str, message: str) -> None:
        self.rejections[reason] += 1
        order.transition(OrderStatus.REJECTED, at=self.now(), reason=reason)
        log.debug("backtest_order_rejected", client_order_id=order.client_order_id, reason=reason, detail=message)
        self._notify(order)

    def _accept(self, spec: OrderSpec) -> None:
        order = self._orders[spec.client_order_id]
        k = self._index.get(spec.product_id)
        if k is None:
            self._reject(order, "INVALID_PRODUCT_ID", f"{spec.product_id} is not in this backtest")
            return
        last = self._last_price(k)
        unsupported = self._unsupported(spec)
        if unsupported is not None:
            self._reject(order, "UNSUPPORTED_ORDER_CONFIGURATION", unsupported)
            return
        now = self.now()
        try:
            if self.risk is not None:
                self.risk.on_equity(self.equity(), now)
                self.risk.check(spec)
            self._models[spec.product_id].check(spec, now, last)
        except RiskRejected as exc:
            self._reject(order, exc.reason, str(exc))
            return
        except TradingHalted as exc:
            self._reject(order, "TRADING_HALTED", str(exc))
            return
        except OrderRejected as exc:
            self._reject(order, exc.reason, str(exc))
            return
        hold = self._hold_for(spec, last)
        if hold is not None:
            currency, amount = hold
            try:
                self.portfolio.hold(currency, amount)
            except InvalidValue as exc:
                self._reject(order, INSUFFICIENT_FUND, str(exc))
                return
            self._holds[spec.client_order_id] = hold
        # NEW -> SUBMITTED -> OPEN, as Order.transition records them (an order is NEW until accepted here)
        assert order.status is OrderStatus.NEW
        order.history += _ACCEPTED
        order.status = OrderStatus.OPEN
        order.updated_at = now
        self._working[k].append(WorkingOrder(spec))
        self._on_order_update(order)  # _notify without fills

    def _last_price(self, k: int) -> Decimal | None:
        """The price orders of product ``k`` are checked and held against: the last close."""
        return self.series[k].close[self._pos[k]] if self._pos[k] >= 0 else None

    def _unsupported(self, spec: OrderSpec) -> str | None:
        """Why this run cannot execute ``spec`` (None: it can). Bar runs execute every order kind."""
        return None

    def _hold_for(self, spec: OrderSpec, last: Decimal | None) -> tuple[str, Decimal] | None:
        """What an accepted order reserves: a sell its base size; a buy its worst-case quote cost with the taker fee."""
        product = self.products[spec.product_id]
        taker = self._taker_factor
        if spec.side is Side.SELL:
            return (product.base_currency, spec.base_size) if spec.base_size is not None else None
        if spec.quote_size is not None:
            return product.quote_currency, spec.quote_size * taker
        assert spec.base_size is not None
        price = spec.limit_price if spec.kind is not OrderKind.MARKET else last
        if spec.kind is OrderKind.BRACKET and spec.stop_trigger_price is not None:
            price = max(spec.stop_trigger_price, spec.limit_price or ZERO)
        if price is None:
            return None
        if spec.kind is OrderKind.MARKET or spec.kind is OrderKind.BRACKET:
            price = self._models[spec.product_id].market_price(Side.BUY, price)
        return product.quote_currency, price * spec.base_size * taker

    def _release(self, coid: str) -> None:
        hold = self._holds.pop(coid, None)
        if hold is not None:
            self.portfolio.release(*hold)

    def _remove_working(self, coid: str) -> None:
        k = self._index[self._orders[coid].product_id]
        self._working[k][:] = [w for w in self._working[k] if w.spec.client_order_id != coid]

    def _cancel(self, coid: str, reason: str) -> bool:
        order = self._orders[coid]
        if not order.is_active:
            return False
        self._remove_working(coid)
        self._release(coid)
        order.transition(OrderStatus.CANCELLED, at=self.now())
        log.debug("backtest_order_cancelled", client_order_id=coid, reason=reason)
        self._notify(order)
        return True

    def _bar_orders(self, k: int, i: int) -> None:
        s = self.series[k]
        self._clock = s.times[i]  # the bar's start (the _now_ts setter, without its call)
        start = self.now()
        model = self._models[s.product_id]
        o, h, lo, c = s.open[i], s.high[i], s.low[i], s.close[i]
        depth = s.volume[i - 1] if i > 0 else s.volume[i]  # the last bar the strategy saw sizes a synthetic book
        working = self._working[k]
        for wo in list(working):
            outcome = model.evaluate(wo, start, o, h, lo, c, depth)
            if outcome is not None:
                for j, other in enumerate(working):  # by identity (a callback may have changed the list)
                    if other is wo:
                        del working[j]
                        break
                self._finish(wo, outcome, start)
        if self._actions:
            self._drain()

    def _finish(self, wo: WorkingOrder, outcome: Outcome, at: datetime) -> None:
        coid = wo.spec.client_order_id
        order = self._orders[coid]
        if outcome.fill is None:
            self._release(coid)
            status = OrderStatus.EXPIRED if outcome.done is Done.EXPIRED else OrderStatus.CANCELLED
            if outcome.done is Done.REJECTED:
                self.rejections[outcome.reason or "REJECTED"] += 1
            order.transition(status, at=at)
            self._notify(order)
            return
        # the order's hold is released with its first fill (one balance update, not two)
        hold = self._holds.pop(coid, None)
        fill = self._apply_fill(order, *outcome.fill, at, hold)
        fills: list[Fill] = [] if fill is None else [fill]
        if fill is not None and outcome.more:
            for f in outcome.more:
                fill = self._apply_fill(order, f.price, f.size, f.fee, f.liquidity, at)
                if fill is None:
                    break
                fills.append(fill)
        if not fills:
            order.transition(OrderStatus.CANCELLED, at=at)
            self._notify(order)
            return
        if order.spec.base_size is None:  # quote-sized: the venue reports it done
            order.transition(OrderStatus.FILLED, at=at)
        elif order.status is not OrderStatus.FILLED:  # the synthetic book (or the funds) ran out: the rest is cancelled
            order.transition(OrderStatus.CANCELLED, at=at)
        self._notify(order, *fills)

    def _apply_fill(
        self,
        order: Order,
        price: Decimal,
        size: Decimal,
        fee: Decimal,
        liquidity: Liquidity,
        at: datetime,
        hold: tuple[str, Decimal] | None = None,
    ) -> Fill | None:
        """Book one fill to the portfolio and the order; None (counted as INSUFFICIENT_FUND) when it cannot be paid.

        ``hold`` (the order's reservation, in the currency the fill spends) is released first, whatever happens.
        """
        self._trade += 1
        coid = order.client_order_id
        spec = order.spec
        # trade_id, client_order_id, product_id, side, price, size, fee, time, liquidity, venue_order_id
        fill = Fill(f"bt-t{self._trade:08d}", coid, spec.product_id, spec.side, price, size, fee, at, liquidity, coid)
        try:
            if hold is None:
                self.portfolio.apply_fill(fill, self.products[fill.product_id])
            else:
                product = self.products[fill.product_id]
                spends = product.quote_currency if spec.side is Side.BUY else product.base_currency
                if hold[0] != spends:  # not the currency the fill spends: released on its own
                    self.portfolio.release(*hold)
                    self.portfolio.apply_fill(fill, product)
                else:
                    self.portfolio.apply_fill(fill, product, release=hold[1])
        except InvalidValue as exc:
            self.rejections[INSUFFICIENT_FUND] += 1
            log.debug("backtest_fill_unfunded", client_order_id=coid, detail=str(exc))
            return None
        if order.spec.base_size is None:
            order.fills[fill.trade_id] = fill
        else:
            order.apply_fill(fill)
        self._fills.append(fill)
        self._fill_events.append(self._event)
        return fill

    def _fire_timers(self) -> None:
        now = self._now_ts
        while self._next_timer <= now:
            name, (interval, due) = min(self._timers.items(), key=lambda kv: (kv[1][1], kv[0]))
            self._timers[name] = (interval, due + interval)
            self._next_timer = min(d for _, d in self._timers.values())
            self.strategy.on_timer(name, _utc(due))
            self._drain()

    def _cancel_remaining(self) -> int:
        count = 0
        for order in list(self._orders.values()):
            if order.is_active and self._cancel(order.client_order_id, END_OF_DATA):
                count += 1
        return count

    # -- results ------------------------------------------------------------------------------------

    def _initial_equity(self) -> Decimal:
        prices = {s.product_id: s.open[0] for s in self.series}
        return self.portfolio.equity(prices, self.config.quote)

    def _curve(self, initial: Decimal) -> tuple[list[int], list[float], int]:
        """Equity after each bar (floats, batch), and how many bars ended with a position."""
        quote = self.config.quote
        bases = [self.products[s.product_id].base_currency for s in self.series]
        start_balances = {c: float(v) for c, v in self.config.balances.items()}
        cash = start_balances.get(quote, 0.0)
        qty = [start_balances.get(b, 0.0) for b in bases]
        fills, events = self._fills, self._fill_events
        nf = len(fills)
        ptr = 0
        first_t = min(s.times[0] for s in self.series)
        times = [first_t]
        equity = [float(initial)]
        exposed = 0
        index = self._index
        if len(self.series) == 1:
            s = self.series[0]
            closes = [float(x) for x in s.close]
            step = s.step
            q = qty[0]
            for i, t in enumerate(s.times):
                while ptr < nf and events[ptr] == i:
                    f = fills[ptr]
                    notional = float(f.price * f.size)
                    if f.side is Side.BUY:
                        cash -= notional + float(f.fee)
                        q += float(f.size)
                    else:
                        cash += notional - float(f.fee)
                        q -= float(f.size)
                    ptr += 1
                times.append(t + step)
                equity.append(cash + q * closes[i])
                if q > 1e-12:
                    exposed += 1
            return times, equity, exposed
        last = [float(s.open[0]) for s in self.series]
        held = [False] * len(self.series)
        for ev, (t, k, i) in enumerate(self._merged()):
            while ptr < nf and events[ptr] == ev:
                f = fills[ptr]
                j = index[f.product_id]
                notional = float(f.price * f.size)
                if f.side is Side.BUY:
                    cash -= notional + float(f.fee)
                    qty[j] += float(f.size)
                else:
                    cash += notional - float(f.fee)
                    qty[j] -= float(f.size)
                ptr += 1
            s = self.series[k]
            last[k] = float(s.close[i])
            times.append(t + s.step)
            equity.append(cash + sum(a * b for a, b in zip(qty, last, strict=True)))
            held[k] = qty[k] > 1e-12
            if held[k]:
                exposed += 1
        return times, equity, exposed

    def _result(self, initial: Decimal, elapsed: float, cancelled: int) -> BacktestResult:
        final = self.equity()
        times, equity, exposed = self._curve(initial)
        bars = sum(len(s) for s in self.series)
        metrics = compute_metrics(
            initial_equity=initial,
            final_equity=final,
            times=times,
            equity=equity,
            fills=self._fills,
            bars=bars,
            exposed_bars=exposed,
        )
        return BacktestResult(
            strategy=self.strategy.name,
            params=self.strategy.p.as_dict(),
            products=list(self.products),
            metrics=metrics,
            fills=list(self._fills),
            orders=list(self._orders.values()),
            curve_times=times,
            curve_equity=equity,
            series=self.series,
            rejections=self.rejections,
            bars=bars,
            elapsed_s=elapsed,
            cancelled_at_end=cancelled,
        )
