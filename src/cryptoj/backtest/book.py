"""Book-level backtests: a ``cryptoj record`` file replayed through the live L2 path.

:class:`BookBacktest` feeds every recorded frame, in order, to a real
:class:`~cryptoj.market_data.MarketDataService` (the parser, sequence checks, L2
book and candle aggregation the live engine uses) on a clock that is the frames'
receive time. The strategy gets ``on_book`` (the service's book), ``on_trade`` and
``on_bar`` (candles the service closes from the trades), and the same context as a
bar backtest (:class:`~cryptoj.backtest.runner.Backtest`, of which this is a subclass).

Fill model (one product per run; market and limit orders):

* An order submitted while the strategy handles frame *k* **arrives after frame k**,
  before frame *k+1* is applied: it sees exactly the book the strategy saw (zero latency).
* On arrival its marketable part walks the recorded book as a taker through
  :func:`~cryptoj.venues.simulated.matching.simulate_fill_against_levels` (the matching
  engine's walk, size rounding and fee rule): a market order takes what the book
  holds and the rest is cancelled; a limit order takes the levels up to its price;
  FOK fills completely or not at all; a post-only order that would take is refused
  (``INVALID_LIMIT_PRICE_POST_ONLY``). Our orders do not change the recorded book.
* The rest of a GTC/GTD limit order rests. It fills, as a maker at its limit price,
  from public trades that print **through** it (a buy when a trade prints below the
  limit), at most each trade's size. A trade exactly at the limit does not fill it:
  the queue position in front of us is unknown. GTD orders expire at ``end_time``.
* Stop-limit and bracket orders are refused (``UNSUPPORTED_ORDER_CONFIGURATION``)
  in book runs: use a bar backtest for them.
* The equity curve and the metrics are marked at the close of each bar of the
  strategy's timeframe built from the recording's trades.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from cryptoj.backtest.data import bars_from_recording
from cryptoj.backtest.runner import Backtest, BacktestConfig, BacktestResult
from cryptoj.errors import OrderRejected
from cryptoj.market_data import BookUpdated, CandleClosed, MarketDataConfig, MarketDataService
from cryptoj.model.candles import EPOCH
from cryptoj.model.events import MarketTrade
from cryptoj.model.money import ZERO, Side
from cryptoj.model.orders import Liquidity, Order, OrderKind, OrderSpec, OrderStatus, TimeInForce
from cryptoj.recorder import iter_recording
from cryptoj.strategy import Strategy
from cryptoj.venues.coinbase.protocol import parse_envelope
from cryptoj.venues.simulated.matching import RejectReason, fee_for, simulate_fill_against_levels
from cryptoj.websocket_handler import WsConnected, WsFrame, scan_sequence_num

__all__ = ["BookBacktest"]


class BookBacktest(Backtest):
    """Replay ``recording`` for ``product_id`` through the L2 path and run ``strategy`` on it (see the module doc)."""

    def __init__(self, strategy: Strategy, recording: Path | str, product_id: str, config: BacktestConfig | None = None) -> None:
        self.recording = Path(recording)
        series = bars_from_recording(self.recording, product_id, strategy.timeframe, include_last=True)
        super().__init__(strategy, series, config)
        self.product_id = product_id
        self._now_ns = series.times[0] * 1_000_000_000
        self.service = MarketDataService(
            MarketDataConfig(products=(product_id,), candle_timeframes=(strategy.timeframe,), stale_after_s=1e9),
            parse=parse_envelope,
            clock=lambda: self._now_ns / 1e9,
            wall_clock=self.now,
        )
        self.frames = 0
        self._closed_bars = 0

    def now(self) -> datetime:
        return EPOCH + timedelta(microseconds=self._now_ns // 1000)

    def _last_price(self, k: int) -> Decimal | None:
        book = self.service.book(self.product_id)
        mid = book.mid() if book is not None and book.valid else None
        return mid if mid is not None else self.service.last_price(self.product_id)

    def _unsupported(self, spec: OrderSpec) -> str | None:
        if spec.kind in (OrderKind.STOP_LIMIT, OrderKind.BRACKET):
            return f"{spec.kind.value} orders are not executed by book-level backtests (use a bar backtest)"
        return None

    # -- the run ----------------------------------------------------------------------------

    def run(self, progress: Callable[[int, int], None] | None = None) -> BacktestResult:
        """Replay every frame; ``progress(frames, 0)`` every 65,536 frames (the total is not known up front)."""
        self._start_run()
        started = time.perf_counter()
        initial = self._initial_equity()
        strategy = self.strategy
        strategy.on_start()
        self._drain()
        pid = self.product_id
        sub = self.service.subscribe([BookUpdated, MarketTrade, CandleClosed], [pid])
        on_book = strategy.on_book if strategy.handles("on_book") else None
        on_trade = strategy.on_trade if strategy.handles("on_trade") else None
        on_bar = strategy.on_bar
        service = self.service
        connection = 0
        gc.freeze()
        try:
            for ts_ns, payload in iter_recording(self.recording):
                self._now_ns = ts_ns
                self._now_ts = ts_ns // 1_000_000_000
                if self._working[0]:
                    self._arrivals()
                if isinstance(payload, int):
                    connection = payload
                    self.service.process_item(WsConnected(connection, reconnect=connection > 1))
                    continue
                self.frames += 1
                self.service.process_item(WsFrame(payload, ts_ns, connection, scan_sequence_num(payload)))
                while (event := sub.get_nowait()) is not None:
                    kind = type(event)
                    if kind is MarketTrade:
                        assert isinstance(event, MarketTrade)
                        if self._working[0]:
                            self._public_trade(event)
                        if on_trade is not None:
                            on_trade(pid, event)
                    elif kind is BookUpdated:
                        book = service.book(pid)  # None while the book is invalid
                        if on_book is not None and book is not None:
                            on_book(pid, book)
                    elif kind is CandleClosed:
                        assert isinstance(event, CandleClosed)
                        self._closed_bars += 1
                        self._pos[0] = min(self._closed_bars, len(self.series)) - 1
                        self._event = self._closed_bars
                        on_bar(pid, event.candle)
                    if self._actions:
                        self._drain()
                if self._next_timer <= self._now_ts:
                    self._fire_timers()
                if progress is not None and self.frames % 65_536 == 0:
                    progress(self.frames, 0)
        finally:
            gc.unfreeze()
        if progress is not None:
            progress(self.frames, self.frames)
        strategy.on_stop()
        self._drain()
        cancelled = self._cancel_remaining()
        return self._result(initial, time.perf_counter() - started, cancelled)

    # -- fills --------------------------------------------------------------------------------

    def _arrivals(self) -> None:
        """Orders submitted since the last frame meet the book as it stands now."""
        book = self.service.book(self.product_id)
        now = self.now()
        product = self.products[self.product_id]
        taker = self.config.fees.taker
        for wo in list(self._working[0]):
            if wo.arrived:
                continue
            wo.arrived = True
            spec = wo.spec
            order = self._orders[spec.client_order_id]
            if spec.time_in_force is TimeInForce.GTD and spec.end_time is not None and spec.end_time <= now:
                self._end(order, OrderStatus.EXPIRED)
                continue
            levels = [] if book is None or not book.valid else (book.asks() if spec.side is Side.BUY else book.bids())
            limit = spec.limit_price
            if spec.post_only and levels and limit is not None:
                best = levels[0][0]
                if (best <= limit) if spec.side is Side.BUY else (best >= limit):
                    self.rejections[RejectReason.INVALID_LIMIT_PRICE_POST_ONLY] += 1
                    self._end(order, OrderStatus.CANCELLED)
                    continue
            remaining = order.remaining_size
            try:
                steps = simulate_fill_against_levels(
                    levels,
                    spec.side,
                    product,
                    base_size=remaining if spec.base_size is not None else None,
                    quote_size=spec.quote_size,
                    limit_price=limit,
                    fee_rate=taker,
                    fill_or_kill=spec.time_in_force is TimeInForce.FOK,
                )
            except OrderRejected as exc:
                self.rejections[exc.reason] += 1
                self._end(order, OrderStatus.CANCELLED)
                continue
            self._release(spec.client_order_id)
            for step in steps:
                fill = self._apply_fill(order, step.price, step.size, step.fee, Liquidity.TAKER, now)
                if fill is None:
                    break
                if spec.base_size is None:
                    continue  # quote-sized: done below
                self._notify(order, fill)
            rests = spec.kind is OrderKind.LIMIT and spec.time_in_force in (TimeInForce.GTC, TimeInForce.GTD)
            if order.status is OrderStatus.FILLED:
                self._remove_working(spec.client_order_id)
            elif spec.base_size is None:
                self._remove_working(spec.client_order_id)
                if order.fills:
                    order.transition(OrderStatus.FILLED, at=now)
                    self._notify(order, *order.fills.values())
                else:
                    self._end(order, OrderStatus.CANCELLED)
            elif rests and self._hold_rest(order):
                continue
            else:
                self._end(order, OrderStatus.CANCELLED)

    def _hold_rest(self, order: Order) -> bool:
        """Hold what the resting part of a limit order may spend; False (order cancelled) when it does not fit."""
        spec = order.spec
        remaining = order.remaining_size or ZERO
        product = self.products[spec.product_id]
        if spec.side is Side.SELL:
            hold = (product.base_currency, remaining)
        else:
            assert spec.limit_price is not None
            hold = (product.quote_currency, spec.limit_price * remaining * (1 + self.config.fees.taker))
        try:
            self.portfolio.hold(*hold)
        except ValueError:
            self.rejections["INSUFFICIENT_FUND"] += 1
            return False
        self._holds[spec.client_order_id] = hold
        return True

    def _end(self, order: Order, status: OrderStatus) -> None:
        self._remove_working(order.client_order_id)
        self._release(order.client_order_id)
        order.transition(status, at=self.now())
        self._notify(order)

    def _public_trade(self, trade: MarketTrade) -> None:
        """Resting limit orders fill from trades that print through their price (as makers, at their price)."""
        now = self.now()
        maker = self.config.fees.maker
        for wo in list(self._working[0]):
            spec = wo.spec
            if not wo.arrived or spec.limit_price is None:
                continue
            order = self._orders[spec.client_order_id]
            if spec.time_in_force is TimeInForce.GTD and spec.end_time is not None and spec.end_time <= now:
                self._end(order, OrderStatus.EXPIRED)
                continue
            through = trade.price < spec.limit_price if spec.side is Side.BUY else trade.price > spec.limit_price
            if not through:
                continue
            remaining = order.remaining_size or ZERO
            size = self.products[spec.product_id].round_size(min(remaining, trade.size))
            if size <= 0:
                continue
            self._release(spec.client_order_id)
            fill = self._apply_fill(order, spec.limit_price, size, fee_for(spec.limit_price, size, maker), Liquidity.MAKER, now)
            if fill is None:
                self._end(order, OrderStatus.CANCELLED)
                continue
            if order.status is OrderStatus.FILLED:
                self._remove_working(spec.client_order_id)
            elif not self._hold_rest(order):
                self._remove_working(spec.client_order_id)
                order.transition(OrderStatus.CANCELLED, at=now)
            self._notify(order, fill)
