"""Paper trading: public market data from the exchange, fills from our own matching engine.

No API key and no private endpoint is ever used. The venue keeps a
:class:`~cryptoj.venues.simulated.exchange.SimExchange` (the simulator's accounts,
holds, fees and one :class:`~cryptoj.venues.simulated.matching.MatchingEngine` per
product) and **mirrors the live L2 book into it**:

* A *book* account holds one resting limit order per live price level (the top
  ``depth`` levels a side), sized at the level's live size. Whenever the live size of
  a level changes (the stream says so, as Coinbase ``level2`` updates do), the mirror
  order at that price is replaced by one of the new size; a level that leaves the top
  ``depth`` or the book is cancelled.
* The *paper* account is ours. A market order walks the mirrored levels (taker fee);
  a limit order that crosses takes what it can and rests the rest; a resting order
  fills (maker fee, at its own price) when the live book moves through it, because
  the new mirror level at a crossing price trades against it. Liquidity we take stays
  taken until the live size of that level changes again.
* Public trades are replayed on the mirror (one base increment from a *tape* account at the
  trade's price and side), so stop orders trigger on the market's prints.
* Orders are first checked against the **real** product rules (increments, min/max
  sizes, status flags, post-only against the live best bid/ask) with
  :func:`~cryptoj.venues.simulated.matching.check_order`; the mirror's own products
  are relaxed (no minimum sizes) so that every live level can be mirrored.

What this model does not capture (documented in ``docs/integration-patterns.md``):
queue position (a resting order is assumed to be first at its price, so it fills as
soon as the book crosses it, not when public trades reach it), latency between our
order and the market, and our own impact beyond the levels we took.

The venue publishes the state of our orders as
:class:`~cryptoj.model.events.UserOrderUpdate` through :meth:`PaperVenue.user_updates`
(an async iterator, like every subscription in this code base).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

import structlog

from cryptoj.errors import InvalidValue, OrderNotFound, OrderRejected
from cryptoj.market_data import BookReady, BookResync, BookUpdated, MarketDataService
from cryptoj.model.book import OrderBook
from cryptoj.model.events import UserOrderUpdate
from cryptoj.model.instruments import Product
from cryptoj.model.money import ZERO, Side
from cryptoj.model.orders import Fill, OrderKind, OrderSpec, TimeInForce
from cryptoj.streams import QueueStream
from cryptoj.venues.base import (
    Balance,
    CancelResult,
    OrderAck,
    UserStreamConnected,
    UserStreamItem,
    Venue,
    VenueOrder,
)
from cryptoj.venues.base import FeeTier as VenueFeeTier
from cryptoj.venues.coinbase.protocol import OrderConfiguration, map_order_status, order_configuration_name
from cryptoj.venues.simulated.exchange import (
    ExchangeEvent,
    FeeTier,
    FillRecorded,
    OrderChanged,
    SimExchange,
    SimOrder,
)
from cryptoj.venues.simulated.matching import check_order

__all__ = ["BOOK_ACCOUNT", "PAPER_ACCOUNT", "TAPE_ACCOUNT", "PaperExchange", "PaperVenue", "relaxed_product"]

log = structlog.get_logger(__name__)

PAPER_ACCOUNT: Final = "paper"
BOOK_ACCOUNT: Final = "paper-book"
TAPE_ACCOUNT: Final = "paper-tape"
_HUGE: Final = Decimal("1e30")
_ZERO_FEES: Final = FeeTier(maker_rate=ZERO, taker_rate=ZERO, pricing_tier="mirror")


def relaxed_product(product: Product) -> Product:
    """``product`` without minimum/maximum sizes or status flags: what the mirror book trades on."""
    return replace(
        product,
        base_min_size=ZERO,
        base_max_size=_HUGE,
        quote_min_size=ZERO,
        quote_max_size=_HUGE,
        trading_disabled=False,
        cancel_only=False,
        limit_only=False,
        post_only=False,
        status="online",
    )


@dataclass(frozen=True, slots=True)
class _MirrorLevel:
    live_size: Decimal
    order_id: str | None


class PaperExchange:
    """The synchronous core of paper trading (no I/O): mirrored books, our account, our orders.

    ``products`` are the real products (their rules are enforced on our orders);
    ``balances`` fund the paper account. Every call takes ``now``.
    """

    def __init__(
        self,
        products: Mapping[str, Product],
        balances: Mapping[str, Decimal],
        *,
        fee_tier: FeeTier | None = None,
        depth: int = 50,
        seed: int = 0,
    ) -> None:
        if not products:
            raise InvalidValue("paper.products", products, "at least one product is required")
        if depth < 1:
            raise InvalidValue("paper.depth", depth, "must be >= 1")
        self.products = dict(products)
        self.depth = depth
        self.fee = fee_tier or FeeTier()
        self.exchange = SimExchange([relaxed_product(p) for p in self.products.values()], fee_tier=self.fee, seed=seed)
        self.exchange.set_fee_tier(BOOK_ACCOUNT, _ZERO_FEES)
        self.exchange.set_fee_tier(TAPE_ACCOUNT, _ZERO_FEES)
        self.exchange.set_fee_tier(PAPER_ACCOUNT, self.fee)
        currencies = {c for p in self.products.values() for c in (p.base_currency, p.quote_currency)}
        for currency in sorted(currencies):
            self.exchange.deposit(BOOK_ACCOUNT, currency, _HUGE)
            self.exchange.deposit(TAPE_ACCOUNT, currency, _HUGE)
        for currency, amount in balances.items():
            if amount < 0:
                raise InvalidValue(f"paper.balances.{currency}", amount, "must not be negative")
            if amount > 0:
                self.exchange.deposit(PAPER_ACCOUNT, currency, amount)
            else:
                self.exchange.balance(PAPER_ACCOUNT, currency)
        self._mirror: dict[str, dict[tuple[Side, Decimal], _MirrorLevel]] = {pid: {} for pid in self.products}
        self._mirror_seq = 0
        self._tape_seq = 0
        self._live_best: dict[str, tuple[Decimal | None, Decimal | None]] = {}
        self._last_trade: dict[str, Decimal] = {}
        self.fills: list[Fill] = []
        self.mirror_replacements = 0

    # -- the mirrored book -------------------------------------------------------

    def _product(self, product_id: str) -> Product:
        product = self.products.get(product_id)
        if product is None:
            raise InvalidValue("product_id", product_id, f"not a paper product (have {sorted(self.products)})")
        return product

    def sync_book(self, product_id: str, book: OrderBook | None, now: datetime) -> list[ExchangeEvent]:
        """Bring the mirror of ``product_id`` in line with the live ``book`` (None: the book is invalid → empty mirror).

        Only levels whose *live* size changed since the last sync are touched, so
        liquidity our orders took stays taken until the market changes that level.
        """
        product = self._product(product_id)
        mirror = self._mirror[product_id]
        target: dict[tuple[Side, Decimal], Decimal] = {}
        if book is not None:
            bids, asks = book.depth(self.depth)
            for price, size in bids:
                target[(Side.BUY, price)] = size
            for price, size in asks:
                target[(Side.SELL, price)] = size
            best_bid = bids[0][0] if bids else None
            best_ask = asks[0][0] if asks else None
            self._live_best[product_id] = (best_bid, best_ask)
        else:
            self._live_best.pop(product_id, None)
        events: list[ExchangeEvent] = []
        stale = [key for key, lvl in mirror.items() if target.get(key) != lvl.live_size]
        for key in stale:
            lvl = mirror.pop(key)
            if lvl.order_id is not None:
                events.extend(self._cancel_mirror(lvl.order_id, now))
        added = [(key, size) for key, size in target.items() if key not in mirror]
        # asks from the best (lowest) up, then bids from the best (highest) down: a level that
        # crosses one of OUR resting orders trades with it at our price, as the live market would
        added.sort(key=lambda item: (item[0][0] is Side.BUY, item[0][1] if item[0][0] is Side.SELL else -item[0][1]))
        for (side, price), size in added:
            order_id = self._place_mirror(product, side, price, size, now, events)
            mirror[(side, price)] = _MirrorLevel(size, order_id)
        return events

    def _cancel_mirror(self, order_id: str, now: datetime) -> list[ExchangeEvent]:
        result = self.exchange.cancel(BOOK_ACCOUNT, [order_id], now)
        return list(result.events)

    def _place_mirror(
        self, product: Product, side: Side, price: Decimal, size: Decimal, now: datetime, events: list[ExchangeEvent]
    ) -> str | None:
        size = product.round_size(size)
        if size <= 0 or price <= 0:
            return None
        self._mirror_seq += 1
        self.mirror_replacements += 1
        spec = OrderSpec(
            client_order_id=f"mirror-{self._mirror_seq}",
            product_id=product.product_id,
            side=side,
            kind=OrderKind.LIMIT,
            base_size=size,
            limit_price=price,
            time_in_force=TimeInForce.GTC,
        )
        try:
            result = self.exchange.place(BOOK_ACCOUNT, spec, now)
        except OrderRejected as exc:  # an off-increment live price: skip the level, say so
            log.warning("paper_mirror_level_skipped", product_id=product.product_id, price=str(price), reason=exc.reason)
            return None
        events.extend(result.events)
        return None if result.order.status.is_done else result.order.order_id

    def on_trade(self, product_id: str, price: Decimal, taker_side: Side | None = None, now: datetime | None = None
                 ) -> list[ExchangeEvent]:
        """A public trade printed at ``price``: remember it and replay it on the mirrored book.

        With ``taker_side`` and ``now``, a *tape* account sends one base increment as an IOC limit at
        ``price`` on that side, so the print happens inside our matching engine too: stop orders and
        bracket stops trigger on it, and a resting order of ours at that price can be filled by it
        (price-time priority against the mirrored level). Returns the engine's events.
        """
        product = self._product(product_id)
        self._last_trade[product_id] = price
        if taker_side is None or now is None or not self._mirror[product_id]:
            return []
        self._tape_seq += 1
        spec = OrderSpec(
            client_order_id=f"tape-{self._tape_seq}",
            product_id=product_id,
            side=taker_side,
            kind=OrderKind.LIMIT,
            base_size=product.base_increment,
            limit_price=price,
            time_in_force=TimeInForce.IOC,
        )
        try:
            return list(self.exchange.place(TAPE_ACCOUNT, spec, now).events)
        except OrderRejected as exc:  # an off-increment print: nothing to replay
            log.debug("paper_tape_print_skipped", product_id=product_id, price=str(price), reason=exc.reason)
            return []

    def mirrored_levels(self, product_id: str) -> int:
        return sum(1 for lvl in self._mirror[self._product(product_id).product_id].values() if lvl.order_id is not None)

    # -- our orders ----------------------------------------------------------------

    def place(self, spec: OrderSpec, now: datetime) -> tuple[SimOrder, list[ExchangeEvent]]:
        """Check ``spec`` against the real product rules, then place it. Raises :class:`OrderRejected`."""
        product = self.products.get(spec.product_id)
        if product is None:
            raise OrderRejected(
                "INVALID_PRODUCT_ID", f"unknown product {spec.product_id!r}", client_order_id=spec.client_order_id
            )
        existing = self.exchange.find_order(PAPER_ACCOUNT, spec.client_order_id)
        if existing is not None:
            return existing, []
        best_bid, best_ask = self._live_best.get(spec.product_id, (None, None))
        check_order(
            product, spec, now=now, last_trade_price=self._last_trade.get(spec.product_id), best_bid=best_bid, best_ask=best_ask
        )
        if spec.is_market and best_bid is None and best_ask is None:
            raise OrderRejected(
                "NO_LIQUIDITY",
                f"{spec.product_id}: no valid live book to fill a market order",
                client_order_id=spec.client_order_id,
            )
        result = self.exchange.place(PAPER_ACCOUNT, spec, now)
        self._collect_fills(result.events)
        return self.exchange.get_order(PAPER_ACCOUNT, result.order.order_id), result.events

    def cancel(self, order_ids: Sequence[str], now: datetime) -> tuple[list[CancelResult], list[ExchangeEvent]]:
        result = self.exchange.cancel(PAPER_ACCOUNT, order_ids, now)
        out = [CancelResult(r.order_id, r.success, r.failure_reason) for r in result.results]
        return out, list(result.events)

    def expire(self, now: datetime) -> list[ExchangeEvent]:
        return self.exchange.expire(now)

    def _collect_fills(self, events: Iterable[ExchangeEvent]) -> None:
        for event in events:
            if isinstance(event, FillRecorded) and event.owner == PAPER_ACCOUNT:
                self.fills.append(event.fill.to_fill())

    def record(self, events: Iterable[ExchangeEvent]) -> list[UserOrderUpdate]:
        """Collect our fills from ``events`` and turn our order changes into user-channel updates."""
        events = list(events)
        self._collect_fills(events)
        return [_user_update(e.order) for e in events if isinstance(e, OrderChanged) and e.owner == PAPER_ACCOUNT]

    def balances(self) -> dict[str, Balance]:
        return {
            c: Balance(currency=c, available=b.available, hold=b.hold, uuid=f"paper-{c}", name=f"{c} wallet", type="paper")
            for c, b in self.exchange.balances(PAPER_ACCOUNT).items()
        }


def _user_update(o: SimOrder) -> UserOrderUpdate:
    return UserOrderUpdate(
        order_id=o.order_id,
        client_order_id=o.client_order_id,
        product_id=o.product_id,
        side=o.side,
        status=map_order_status(o.status.value, o.filled_size),
        venue_status=o.status.value,
        cumulative_quantity=o.filled_size,
        leaves_quantity=o.leaves_quantity,
        avg_price=o.average_filled_price,
        total_fees=o.total_fees,
        order_type=o.order_type,
        limit_price=o.spec.limit_price,
        stop_price=o.spec.stop_price,
        number_of_fills=o.number_of_fills,
        filled_value=o.filled_value,
        creation_time=o.created_time,
    )


def venue_order(o: SimOrder) -> VenueOrder:
    """Our :class:`~cryptoj.venues.base.VenueOrder` view of a paper order."""
    spec = o.spec
    return VenueOrder(
        order_id=o.order_id,
        client_order_id=o.client_order_id,
        product_id=o.product_id,
        side=o.side,
        status=map_order_status(o.status.value, o.filled_size),
        venue_status=o.status.value,
        configuration=OrderConfiguration(
            name=order_configuration_name(spec),
            kind=spec.kind,
            time_in_force=spec.time_in_force,
            base_size=spec.base_size,
            quote_size=spec.quote_size,
            limit_price=spec.limit_price,
            stop_price=spec.stop_price,
            stop_direction=spec.stop_direction,
            stop_trigger_price=spec.stop_trigger_price,
            post_only=spec.post_only,
            end_time=spec.end_time,
        ),
        filled_size=o.filled_size,
        average_filled_price=o.average_filled_price if o.filled_size > 0 else None,
        total_fees=o.total_fees,
        filled_value=o.filled_value,
        number_of_fills=o.number_of_fills,
        created_time=o.created_time,
        last_fill_time=o.last_fill_time,
        order_type=o.order_type,
        time_in_force=o.time_in_force,
        outstanding_hold_amount=o.outstanding_hold_amount,
        size_in_quote=spec.quote_size is not None,
    )


class PaperVenue(Venue):
    """The paper venue: :class:`PaperExchange` fed by a :class:`~cryptoj.market_data.MarketDataService`.

    The market data service (its WebSocket pointed at Coinbase or at the simulator's
    public ``/ws``) must carry ``level2`` (and ``market_trades`` for stop orders) for
    every product. ``clock`` gives aware UTC time.
    """

    name = "paper"

    def __init__(
        self,
        products: Mapping[str, Product],
        market_data: MarketDataService,
        balances: Mapping[str, Decimal],
        *,
        fee_tier: FeeTier | None = None,
        depth: int = 50,
        seed: int = 0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        queue_size: int = 10_000,
    ) -> None:
        self.core = PaperExchange(products, balances, fee_tier=fee_tier, depth=depth, seed=seed)
        self.market_data = market_data
        self._clock = clock
        self._queue_size = queue_size
        self._streams: set[QueueStream[UserStreamItem]] = set()
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Mirror the books that are valid now and follow the market data from here on."""
        if self._task is not None:
            return
        from cryptoj.model.events import MarketTrade

        products = list(self.core.products)
        sub = self.market_data.subscribe([BookUpdated, BookReady, BookResync, MarketTrade], products)
        for pid in products:
            self._sync(pid)
        self._task = asyncio.get_running_loop().create_task(self._follow(sub), name="paper-venue-follow")

    async def _follow(self, sub: AsyncIterator[object]) -> None:
        from cryptoj.model.events import MarketTrade

        async for event in sub:
            if isinstance(event, BookUpdated | BookReady | BookResync):
                self._sync(event.product_id)
            elif isinstance(event, MarketTrade):
                now = self._clock()
                events = self.core.on_trade(event.product_id, event.price, event.side, now)
                self._publish(self.core.record(events))

    def _sync(self, product_id: str) -> None:
        now = self._clock()
        events = self.core.sync_book(product_id, self.market_data.book(product_id), now)
        events.extend(self.core.expire(now))
        self._publish(self.core.record(events))

    def _publish(self, updates: list[UserOrderUpdate]) -> None:
        for update in updates:
            for stream in list(self._streams):
                stream.push(update)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream in list(self._streams):
            stream.close()

    # -- execution -----------------------------------------------------------------

    async def products(self) -> list[Product]:
        return list(self.core.products.values())

    async def fee_tier(self) -> VenueFeeTier:
        return VenueFeeTier(pricing_tier=self.core.fee.pricing_tier, taker_fee_rate=self.core.fee.taker_rate,
                            maker_fee_rate=self.core.fee.maker_rate)

    async def create_order(self, spec: OrderSpec) -> OrderAck:
        order, events = self.core.place(spec, self._clock())
        self._publish([_user_update(e.order) for e in events if isinstance(e, OrderChanged) and e.owner == PAPER_ACCOUNT])
        return OrderAck(order.order_id, order.client_order_id, order.product_id, order.side)

    async def cancel_orders(self, order_ids: Sequence[str]) -> list[CancelResult]:
        results, events = self.core.cancel(order_ids, self._clock())
        self._publish(self.core.record(events))
        return results

    async def find_order(self, client_order_id: str, *, product_id: str | None = None) -> VenueOrder | None:
        order = self.core.exchange.find_order(PAPER_ACCOUNT, client_order_id)
        return None if order is None else venue_order(order)

    async def get_order(self, order_id: str) -> VenueOrder:
        try:
            return venue_order(self.core.exchange.get_order(PAPER_ACCOUNT, order_id))
        except OrderNotFound:
            raise OrderNotFound(f"paper venue: no order {order_id}") from None

    async def open_orders(self, product_id: str | None = None) -> list[VenueOrder]:
        pids = None if product_id is None else [product_id]
        orders = self.core.exchange.list_orders(PAPER_ACCOUNT, product_ids=pids, statuses=["OPEN"])
        return [venue_order(o) for o in reversed(orders)]

    async def fills(
        self, since: datetime | None = None, order_id: str | None = None, product_id: str | None = None
    ) -> list[Fill]:
        return [
            f for f in self.core.fills
            if (since is None or f.time >= since)
            and (order_id is None or f.venue_order_id == order_id)
            and (product_id is None or f.product_id == product_id)
        ]

    async def balances(self) -> dict[str, Balance]:
        return self.core.balances()

    def user_updates(self) -> QueueStream[UserStreamItem]:
        """Our order updates as an async iterator (ends on :meth:`close`; or close it / use ``async with``).

        It starts with ``UserStreamConnected`` (the paper venue is in-process: it never disconnects). When
        ``queue_size`` items are waiting the oldest is dropped (a consumer that far behind re-syncs from
        :meth:`open_orders`).
        """
        stream: QueueStream[UserStreamItem] = QueueStream(
            self._streams.discard, maxsize=self._queue_size, initial=[UserStreamConnected(reconnect=False)]
        )
        self._streams.add(stream)
        return stream

    @property
    def user_stream_connected(self) -> bool:
        return True
