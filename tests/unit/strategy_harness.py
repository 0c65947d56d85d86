"""A small, deterministic StrategyContext for unit-testing strategies without an engine.

It keeps a real :class:`~cryptoj.model.positions.Portfolio` and real :class:`Order` objects.
After every callback it processes what the strategy submitted, the way the engine does
(asynchronously after the callback returns): market orders fill at once at the last price
with ``fee_rate`` (or are REJECTED for insufficient funds), limit/stop/bracket orders rest
until the test calls :meth:`Harness.fill`. Order updates and fills are delivered back to the
strategy, and whatever those callbacks submit is processed in turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptoj.model.book import BookSide, OrderBook
from cryptoj.model.candles import Candle, Timeframe
from cryptoj.model.events import MarketTrade
from cryptoj.model.instruments import Product
from cryptoj.model.money import ZERO, Side
from cryptoj.model.orders import Fill, Liquidity, Order, OrderKind, OrderSpec, OrderStatus
from cryptoj.model.positions import Balance, Portfolio, Position
from cryptoj.strategy import Strategy

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def make_product(pid: str, *, base_min: str = "0.0001", base_inc: str = "0.00000001", quote_min: str = "1") -> Product:
    base, quote = pid.split("-")
    return Product(
        product_id=pid,
        base_currency=base,
        quote_currency=quote,
        base_increment=Decimal(base_inc),
        quote_increment=Decimal("0.01"),
        price_increment=Decimal("0.01"),
        base_min_size=Decimal(base_min),
        base_max_size=Decimal("10000"),
        quote_min_size=Decimal(quote_min),
        quote_max_size=Decimal("10000000"),
    )


@dataclass
class RecordingLog:
    records: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def _log(self, level: str, event: str, **kw: Any) -> None:
        self.records.append((level, event, kw))

    def debug(self, event: str, /, **kw: Any) -> None:
        self._log("debug", event, **kw)

    def info(self, event: str, /, **kw: Any) -> None:
        self._log("info", event, **kw)

    def warning(self, event: str, /, **kw: Any) -> None:
        self._log("warning", event, **kw)

    def error(self, event: str, /, **kw: Any) -> None:
        self._log("error", event, **kw)

    def events(self) -> list[str]:
        return [e for _, e, _ in self.records]


class Harness:
    """Implements :class:`cryptoj.strategy.StrategyContext` over a Portfolio; drives one strategy."""

    def __init__(
        self,
        products: Sequence[Product],
        balances: dict[str, Decimal],
        *,
        quote: str = "USD",
        fee_rate: Decimal = Decimal("0.005"),
        start: datetime = T0,
    ) -> None:
        self.products = {p.product_id: p for p in products}
        self.portfolio = Portfolio(balances)
        self.quote = quote
        self.fee_rate = fee_rate
        self.clock = start
        self.log = RecordingLog()
        self.specs: list[OrderSpec] = []
        self.orders: dict[str, Order] = {}
        self.cancels: list[str] = []
        self.timers: dict[str, timedelta | None] = {}
        self.prices: dict[str, Decimal] = {}
        self.books: dict[str, OrderBook] = {}
        self.history: dict[tuple[str, Timeframe], list[Candle]] = {}
        self.reject_next: set[str] = set()
        self.auto_fill = True  # market orders fill at once; False: they rest until fill()
        self._queue: list[OrderSpec] = []
        self._ids = 0
        self._trades = 0
        self.strategy: Strategy | None = None

    # -- StrategyContext ----------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock

    def new_client_order_id(self) -> str:
        self._ids += 1
        return f"coid-{self._ids}"

    def submit(self, spec: OrderSpec) -> str:
        self.specs.append(spec)
        self._queue.append(spec)
        return spec.client_order_id

    def cancel(self, client_order_id: str) -> None:
        self.cancels.append(client_order_id)
        order = self.orders.get(client_order_id)
        if order is not None and not order.is_terminal:
            order.transition(OrderStatus.CANCELLED)
            self._deliver_update(order)

    def position(self, product_id: str) -> Position | None:
        return self.portfolio.position(product_id)

    def balance(self, currency: str) -> Balance:
        return self.portfolio.balance(currency)

    def equity(self) -> Decimal:
        return self.portfolio.equity(self.prices, self.quote)

    def candles(self, product_id: str, timeframe: Timeframe, n: int) -> Sequence[Candle]:
        return self.history.get((product_id, timeframe), [])[-n:]

    def product(self, product_id: str) -> Product:
        return self.products[product_id]

    def book(self, product_id: str) -> OrderBook | None:
        return self.books.get(product_id)

    def open_orders(self, product_id: str | None = None) -> Sequence[Order]:
        return [o for o in self.orders.values() if o.is_active and (product_id is None or o.product_id == product_id)]

    def set_timer(self, name: str, interval: timedelta | None) -> None:
        self.timers[name] = interval

    # -- driving --------------------------------------------------------------------------------

    def start(self, strategy: Strategy) -> Strategy:
        self.strategy = strategy
        strategy.bind(self)
        strategy.on_start()
        self.process()
        return strategy

    @property
    def s(self) -> Strategy:
        assert self.strategy is not None
        return self.strategy

    def bar(
        self,
        product_id: str,
        close: Decimal | str | int,
        *,
        volume: Decimal | str | int = 1,
        spread: Decimal | str | None = None,
        timeframe: Timeframe | None = None,
    ) -> Candle:
        """A closed bar at the clock; the clock then advances by one bar. ``spread`` (fraction) sets a book too."""
        tf = timeframe or self.s.timeframe
        c = Decimal(close)
        candle = Candle(self.clock, c, c, c, c, Decimal(volume))
        self.prices[product_id] = c
        self.history.setdefault((product_id, tf), []).append(candle)
        if spread is not None:
            half = c * Decimal(spread) / 2
            book = OrderBook(product_id)
            book.apply_snapshot([(c - half, Decimal(5))], [(c + half, Decimal(5))])
            self.books[product_id] = book
        self.s.on_bar(product_id, candle)
        self.process()
        return candle

    def advance(self, bars: int = 1, timeframe: Timeframe | None = None) -> None:
        self.clock += (timeframe or self.s.timeframe).delta * bars

    def trade(self, product_id: str, price: Decimal, size: Decimal = Decimal(1)) -> None:
        self.s.on_trade(product_id, MarketTrade("t", product_id, price, size, Side.BUY, self.clock))
        self.process()

    def book_update(self, product_id: str, bid: Decimal, ask: Decimal) -> None:
        book = self.books.setdefault(product_id, OrderBook(product_id))
        book.apply_snapshot([(bid, Decimal(1))], [(ask, Decimal(1))])
        self.s.on_book(product_id, book)
        self.process()

    def process(self) -> None:
        while self._queue:
            spec = self._queue.pop(0)
            order = Order(spec, created_at=self.clock)
            self.orders[spec.client_order_id] = order
            if spec.client_order_id in self.reject_next:
                order.transition(OrderStatus.REJECTED, reason="RISK_TEST")
                self._deliver_update(order)
                continue
            order.transition(OrderStatus.SUBMITTED)
            order.transition(OrderStatus.OPEN)
            if spec.kind is OrderKind.MARKET and self.auto_fill:
                self._fill_market(order, self.prices[spec.product_id])
            else:
                self._deliver_update(order)

    def _fill_market(self, order: Order, price: Decimal) -> None:
        spec = order.spec
        product = self.products[spec.product_id]
        if spec.base_size is not None:
            size = product.round_size(spec.base_size)
        else:
            assert spec.quote_size is not None
            size = product.round_size(spec.quote_size / (price * (1 + self.fee_rate)))
        if not self._affordable(order, price, size):
            order.transition(OrderStatus.REJECTED, reason="INSUFFICIENT_FUND")
            self._deliver_update(order)
            return
        self._apply(order, price, size)

    def _affordable(self, order: Order, price: Decimal, size: Decimal) -> bool:
        product = self.products[order.product_id]
        if size <= 0:
            return False
        if order.side is Side.BUY:
            return self.portfolio.balance(product.quote_currency).available >= price * size * (1 + self.fee_rate)
        return self.portfolio.balance(product.base_currency).available >= size

    def _apply(self, order: Order, price: Decimal, size: Decimal) -> None:
        self._trades += 1
        fill = Fill(
            trade_id=f"trade-{self._trades}",
            client_order_id=order.client_order_id,
            product_id=order.product_id,
            side=order.side,
            price=price,
            size=size,
            fee=price * size * self.fee_rate,
            time=self.clock,
            liquidity=Liquidity.TAKER,
        )
        order.apply_fill(fill)
        if order.status is not OrderStatus.FILLED:
            order.transition(OrderStatus.FILLED)
        self.portfolio.apply_fill(fill, self.products[order.product_id])
        self.s.on_fill(fill)
        self._deliver_update(order)

    def fill(self, client_order_id: str, price: Decimal | None = None) -> Order:
        """Fill a resting order completely (at its limit price unless ``price`` is given)."""
        order = self.orders[client_order_id]
        if order.spec.kind is OrderKind.MARKET:
            self._fill_market(order, price or self.prices[order.product_id])
        else:
            assert order.spec.base_size is not None
            self._apply(order, price or order.spec.limit_price or self.prices[order.product_id], order.spec.base_size)
        self.process()
        return order

    def _deliver_update(self, order: Order) -> None:
        self.s.on_order_update(order)

    # -- inspection -------------------------------------------------------------------------------

    def specs_for(self, product_id: str) -> list[OrderSpec]:
        return [s for s in self.specs if s.product_id == product_id]

    def quantity(self, product_id: str) -> Decimal:
        pos = self.portfolio.position(product_id)
        return ZERO if pos is None else pos.quantity


__all__ = ["T0", "BookSide", "Harness", "RecordingLog", "make_product"]
