"""A pure price-time-priority matching engine — one per product.

No I/O, no asyncio, no wall clock: every call that needs the time takes ``now``
(a timezone-aware :class:`~datetime.datetime`). The simulator server, paper
trading and backtests all fill orders through this module, so fees, increments,
min sizes, post-only, IOC/FOK, stops, brackets and partial fills live here once.

Book
    Bids and asks are :class:`sortedcontainers.SortedDict` maps ``price -> level``;
    each level is a FIFO (:class:`collections.OrderedDict`) of resting orders plus
    its aggregated size. Orders are indexed by id, so insert and cancel are
    O(log n) (O(1) inside a level).

Matching rules
    * Price-time priority; a trade happens at the **resting** (maker) order's price.
    * Market orders (base size or quote size) are IOC or FOK. A quote-sized buy
      spends at most ``quote_size`` of quote on notional (fees are on top — the
      simulator's quote size is *exclusive* of fees); a quote-sized sell sells until
      it has received at most ``quote_size`` of notional. Each fill size is rounded
      down to ``base_increment``; the walk stops at the first level where the
      remaining budget buys less than one increment.
    * Limit orders are GTC, GTD (removed by :meth:`MatchingEngine.expire`, and
      before any new order on the same engine is matched), IOC (never rests) or FOK
      (all-or-nothing: either the whole size fills in this call or nothing changes).
    * Post-only limit orders that would cross the opposite best price are rejected
      with ``INVALID_LIMIT_PRICE_POST_ONLY`` — a post-only order never takes.
    * Stop-limit orders are dormant until the **last trade price** moves through the
      stop in the stop direction (``STOP_UP``: last >= stop, ``STOP_DOWN``:
      last <= stop); then they become a limit order (with a fresh time priority).
      A stop whose condition already holds when placed is rejected with
      ``INVALID_STOP_PRICE`` (Coinbase: ``PREVIEW_STOP_PRICE_*_LAST_TRADE_PRICE``).
    * Trigger brackets (Coinbase ``trigger_bracket``) rest as a limit order at
      ``limit_price`` (take profit) and watch ``stop_trigger_price``: a SELL bracket
      triggers when last <= stop trigger, a BUY bracket when last >= stop trigger.
      On trigger the limit leg leaves the book and the remaining size is sent as a
      market (IOC) order. A BUY bracket's market leg never spends more than its
      ``max_notional`` (the exchange sets it so fills stay within the hold); what it
      cannot fill is cancelled. The stop trigger must be on the losing side of the
      limit price (SELL: stop < limit, BUY: stop > limit), else ``INVALID_LIMIT_PRICE``.
    * Self-trade prevention ("cancel resting", Coinbase-like): an incoming order
      never trades with a resting order of the same owner. Such a resting order
      that the incoming order reaches is cancelled (reason
      ``SELF_TRADE_PREVENTION``) and matching continues behind it. A failing FOK
      changes nothing, so it cancels nothing either.
    * Stops are checked after each order's matching; a triggered order's trades can
      trigger further stops (a cascade), all within the same call.

Events
    Every mutating call returns a list of events, in order: :class:`OrderUpdate`
    (an accepted order is first reported ``OPEN``; triggers and terminal states
    follow), :class:`Trade` (always before the :class:`OrderUpdate` that a fill
    causes), and, at the end of the call, one :class:`LevelChanged` per touched
    price level with its **absolute** new aggregated size (``0`` = level gone) —
    exactly what a Coinbase ``level2`` update carries.

External books
    :func:`simulate_fill_against_levels` fills an order against an L2 book (levels,
    no orders) with the same walk, rounding and fee rules — for paper trading.

Fees are ``price * size * rate``, exact in Decimal (never rounded), in quote.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Context, Decimal, localcontext
from enum import StrEnum
from itertools import count
from typing import Final, Generic, NamedTuple, TypeVar

from sortedcontainers import SortedDict, SortedList

from cryptoj.errors import InvalidValue, OrderNotFound, OrderRejected
from cryptoj.model.instruments import Product, ProductStatus
from cryptoj.model.money import ZERO, Side
from cryptoj.model.orders import OrderKind, OrderSpec, StopDirection, TimeInForce

__all__ = [
    "BookOrder",
    "DoneReason",
    "EngineEvent",
    "FillPlan",
    "Level",
    "LevelChanged",
    "LevelFill",
    "MatchingEngine",
    "OrderUpdate",
    "RejectReason",
    "SimOrderStatus",
    "Trade",
    "check_order",
    "fee_for",
    "simulate_fill_against_levels",
    "wide_context",
]


_WIDE: Final = Context(prec=60)


def wide_context() -> AbstractContextManager[Context]:
    """A 60-digit Decimal context for money arithmetic.

    Prices, sizes, notionals, fees and balances are added and multiplied in it so
    that sums stay exact (the default 28 digits could silently round a large
    balance carrying a fee's many decimals, and assets would no longer add up).
    """
    return localcontext(_WIDE)


class RejectReason:
    """Reject codes used by the simulator (Coinbase's spelling where Coinbase has one).

    Size limits use the codes of :class:`~cryptoj.model.instruments.ProductStatus`
    (``ORDER_SIZE_TOO_SMALL`` / ``ORDER_SIZE_TOO_LARGE`` for base size,
    ``QUOTE_SIZE_TOO_SMALL`` / ``QUOTE_SIZE_TOO_LARGE`` for quote size and for a
    limit order's notional ``limit_price * base_size``); Coinbase reports these as
    ``PREVIEW_INVALID_BASE_SIZE_TOO_SMALL`` and friends.
    """

    INSUFFICIENT_FUND: Final = "INSUFFICIENT_FUND"
    INVALID_LIMIT_PRICE_POST_ONLY: Final = "INVALID_LIMIT_PRICE_POST_ONLY"
    UNSUPPORTED_ORDER_CONFIGURATION: Final = "UNSUPPORTED_ORDER_CONFIGURATION"
    INVALID_PRODUCT_ID: Final = "INVALID_PRODUCT_ID"
    INVALID_LIMIT_PRICE: Final = "INVALID_LIMIT_PRICE"
    INVALID_STOP_PRICE: Final = "INVALID_STOP_PRICE"
    INVALID_END_TIME: Final = "INVALID_END_TIME"
    INVALID_SIZE_PRECISION: Final = ProductStatus.INVALID_SIZE_PRECISION
    INVALID_PRICE_PRECISION: Final = ProductStatus.INVALID_PRICE_PRECISION
    ORDER_SIZE_TOO_SMALL: Final = ProductStatus.ORDER_SIZE_TOO_SMALL
    ORDER_SIZE_TOO_LARGE: Final = ProductStatus.ORDER_SIZE_TOO_LARGE
    QUOTE_SIZE_TOO_SMALL: Final = ProductStatus.QUOTE_SIZE_TOO_SMALL
    QUOTE_SIZE_TOO_LARGE: Final = ProductStatus.QUOTE_SIZE_TOO_LARGE
    TRADING_DISABLED: Final = ProductStatus.TRADING_DISABLED
    CANCEL_ONLY: Final = ProductStatus.CANCEL_ONLY
    LIMIT_ONLY: Final = ProductStatus.LIMIT_ONLY
    POST_ONLY: Final = ProductStatus.POST_ONLY


class DoneReason:
    """Why an order left the book without filling completely."""

    USER_CANCELLED: Final = "USER_CANCELLED"
    SELF_TRADE_PREVENTION: Final = "SELF_TRADE_PREVENTION"
    IMMEDIATE_OR_CANCEL: Final = "IMMEDIATE_OR_CANCEL"  # IOC / market remainder
    FILL_OR_KILL: Final = "FILL_OR_KILL"  # FOK could not fill completely
    GTD_EXPIRED: Final = "GTD_EXPIRED"


class SimOrderStatus(StrEnum):
    """Order status as Coinbase reports it (``/orders/historical``, ``user`` channel).

    The simulator accepts or rejects synchronously, so it never reports
    ``PENDING``; ``FAILED`` is for renderers of rejected orders. An IOC / market
    order that fills only partly ends ``CANCELLED`` (with ``filled_size > 0``).
    """

    PENDING = "PENDING"
    OPEN = "OPEN"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"

    @property
    def is_done(self) -> bool:
        return self in (SimOrderStatus.FILLED, SimOrderStatus.CANCELLED, SimOrderStatus.EXPIRED, SimOrderStatus.FAILED)


class Level(NamedTuple):
    """One aggregated price level."""

    price: Decimal
    size: Decimal


# --- events ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trade:
    """A match. ``price`` is the maker's price; ``taker_side`` is the aggressor's side."""

    trade_id: str
    product_id: str
    price: Decimal
    size: Decimal
    taker_side: Side
    maker_order_id: str
    maker_owner: str
    taker_order_id: str
    taker_owner: str
    time: datetime

    @property
    def maker_side(self) -> Side:
        return self.taker_side.opposite

    @property
    def notional(self) -> Decimal:
        with wide_context():
            return self.price * self.size


@dataclass(frozen=True, slots=True)
class LevelChanged:
    """A price level's new absolute aggregated size (``0`` removes the level).

    ``side`` is the resting orders' side: BUY = bid, SELL = offer.
    """

    product_id: str
    side: Side
    price: Decimal
    new_size: Decimal
    time: datetime


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """An order's state after a change (acceptance, trigger, or done)."""

    order_id: str
    owner: str
    product_id: str
    status: SimOrderStatus
    filled_size: Decimal
    filled_value: Decimal
    remaining_size: Decimal | None
    triggered: bool
    reason: str | None
    time: datetime


EngineEvent = Trade | LevelChanged | OrderUpdate


# --- orders in the engine ----------------------------------------------------


@dataclass(slots=True, eq=False)
class BookOrder:
    """An order the engine knows: resting, dormant (untriggered stop) or being matched.

    Read it through :meth:`MatchingEngine.order`; only the engine mutates it.
    """

    order_id: str
    owner: str
    product_id: str
    side: Side
    kind: OrderKind
    time_in_force: TimeInForce
    base_size: Decimal | None
    quote_size: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    stop_direction: StopDirection | None
    stop_trigger_price: Decimal | None
    post_only: bool
    end_time: datetime | None
    max_notional: Decimal | None
    created_time: datetime
    seq: int
    client_order_id: str = ""
    filled_size: Decimal = ZERO
    filled_value: Decimal = ZERO
    status: SimOrderStatus = SimOrderStatus.OPEN
    triggered: bool = False
    resting: bool = False
    done_reason: str | None = None

    @property
    def remaining_size(self) -> Decimal | None:
        """Base size still to fill (None for a quote-sized order)."""
        if self.base_size is None:
            return None
        with wide_context():
            return self.base_size - self.filled_size

    @property
    def is_dormant(self) -> bool:
        """An untriggered stop-limit (not on the book)."""
        return self.kind is OrderKind.STOP_LIMIT and not self.triggered

    @property
    def matches_as_market(self) -> bool:
        return self.kind is OrderKind.MARKET or (self.kind is OrderKind.BRACKET and self.triggered)

    @property
    def budget(self) -> Decimal | None:
        """Quote notional still allowed (quote-sized orders, or a notional cap), else None."""
        cap = self.quote_size if self.quote_size is not None else self.max_notional
        if cap is None:
            return None
        with wide_context():
            return max(cap - self.filled_value, ZERO)


# --- the shared walk -----------------------------------------------------------

_T = TypeVar("_T")


@dataclass(slots=True)
class FillPlan(Generic[_T]):
    """The result of walking liquidity: steps ``(item, price, size)`` best first.

    A step with ``size == 0`` is a resting order of the same owner reached by the
    walk (self-trade prevention cancels it). ``complete`` is True when the order's
    whole size (or whole quote budget) is used.
    """

    steps: list[tuple[_T, Decimal, Decimal]] = field(default_factory=list)
    base: Decimal = ZERO
    notional: Decimal = ZERO
    complete: bool = False


def _crosses(side: Side, price: Decimal, limit: Decimal | None) -> bool:
    """Whether a resting ``price`` is acceptable for an incoming order of ``side`` limited at ``limit``."""
    if limit is None:
        return True
    return price <= limit if side is Side.BUY else price >= limit


def _plan(
    entries: Iterable[tuple[Decimal, Decimal, _T]],
    side: Side,
    product: Product,
    *,
    base_size: Decimal | None,
    budget: Decimal | None,
    limit_price: Decimal | None,
) -> FillPlan[_T]:
    """Walk ``entries`` ``(price, available, item)`` (best first) for an order of ``side``.

    ``base_size`` is the base size still to fill (None: quote-sized), ``budget`` the
    quote notional still allowed (None: unlimited). ``available == 0`` marks an
    entry to skip (self-trade prevention).
    """
    plan: FillPlan[_T] = FillPlan()
    base_left = base_size
    quote_left = budget
    for price, available, item in entries:
        if not _crosses(side, price, limit_price):
            break
        if available == 0:
            plan.steps.append((item, price, ZERO))
            continue
        size = available if base_left is None else min(available, base_left)
        budget_bound = False
        if quote_left is not None:
            affordable = product.round_size(quote_left / price)
            if affordable * price > quote_left:  # the quotient rounded up onto an increment
                affordable = product.round_size(affordable - product.base_increment)
            if affordable < size:
                size = affordable
                budget_bound = True
        if size > 0:
            notional = price * size
            plan.steps.append((item, price, size))
            plan.base += size
            plan.notional += notional
            if base_left is not None:
                base_left -= size
            if quote_left is not None:
                quote_left -= notional
        if base_left is not None and base_left == 0:
            plan.complete = True
            break
        if budget_bound:
            plan.complete = base_size is None
            break
    else:
        if base_size is None and quote_left is not None and quote_left == 0:
            plan.complete = True
    return plan


def fee_for(price: Decimal, size: Decimal, rate: Decimal) -> Decimal:
    """The fee in quote for a fill: ``price * size * rate``, exact (never rounded)."""
    with wide_context():
        return price * size * rate


class LevelFill(NamedTuple):
    """One fill against an external book level."""

    price: Decimal
    size: Decimal
    fee: Decimal


def simulate_fill_against_levels(
    levels: Iterable[tuple[Decimal, Decimal]],
    side: Side,
    product: Product,
    *,
    base_size: Decimal | None = None,
    quote_size: Decimal | None = None,
    limit_price: Decimal | None = None,
    fee_rate: Decimal = ZERO,
    fill_or_kill: bool = False,
) -> list[LevelFill]:
    """Fill an incoming order against an external L2 book (levels, no orders).

    ``levels`` are the *opposite* side's ``(price, size)`` best first (asks for a
    buy, bids for a sell). Give exactly one of ``base_size`` / ``quote_size``;
    ``limit_price`` bounds the walk (None: market). The same walk, size rounding
    and fee rule (``fee_rate`` = the taker rate) as the engine; with
    ``fill_or_kill`` an incomplete fill returns ``[]``. Sizes are checked against
    the product's rules (``OrderRejected`` with the reason code); unsorted or
    non-positive levels raise :class:`~cryptoj.errors.InvalidValue`.
    """
    if (base_size is None) == (quote_size is None):
        raise InvalidValue("simulate_fill_against_levels.size", (base_size, quote_size), "give exactly one of base/quote size")
    if base_size is not None:
        problem = product.size_problem(base_size)
    else:
        assert quote_size is not None
        problem = product.quote_size_problem(quote_size)
    if problem is not None:
        raise OrderRejected(problem, f"{product.product_id}: size {base_size or quote_size} breaks the product's rules")
    if limit_price is not None and (problem := product.price_problem(limit_price)) is not None:
        raise OrderRejected(problem, f"{product.product_id}: limit price {limit_price} is not on {product.price_increment}")
    if fee_rate < 0 or fee_rate >= 1:
        raise InvalidValue("simulate_fill_against_levels.fee_rate", fee_rate, "must be in [0, 1)")

    def entries() -> Iterator[tuple[Decimal, Decimal, None]]:
        previous: Decimal | None = None
        for i, (price, size) in enumerate(levels):
            if price <= 0 or size <= 0:
                raise InvalidValue(f"levels[{i}]", (price, size), "price and size must be positive")
            if previous is not None and (price <= previous if side is Side.BUY else price >= previous):
                raise InvalidValue(f"levels[{i}]", price, "levels must be strictly ordered best first")
            previous = price
            yield price, size, None

    with wide_context():
        plan = _plan(entries(), side, product, base_size=base_size, budget=quote_size, limit_price=limit_price)
        if fill_or_kill and not plan.complete:
            return []
        return [LevelFill(price, size, fee_for(price, size, fee_rate)) for _, price, size in plan.steps]


# --- validation -----------------------------------------------------------------


def check_order(
    product: Product,
    spec: OrderSpec,
    *,
    now: datetime,
    last_trade_price: Decimal | None = None,
    best_bid: Decimal | None = None,
    best_ask: Decimal | None = None,
) -> None:
    """Raise :class:`~cryptoj.errors.OrderRejected` if ``spec`` may not be placed on ``product`` now.

    Checks, in order: product id, product status flags, unsupported combinations
    (post-only stop/bracket), size and price increments and limits (a limit
    order's notional against the quote limits), GTD end time in the future, stop
    and bracket prices against the last trade, and post-only crossing the book.
    """
    cid = spec.client_order_id
    pid = product.product_id

    def reject(reason: str, message: str) -> OrderRejected:
        return OrderRejected(reason, f"{pid}: {message}", client_order_id=cid)

    if spec.product_id != pid:
        raise reject(RejectReason.INVALID_PRODUCT_ID, f"order is for {spec.product_id!r}")
    status = product.status_problem(is_market=spec.is_market, post_only=spec.post_only)
    if status is not None:
        raise reject(status, f"product status forbids this order (status flags: {status})")
    if spec.post_only and spec.kind in (OrderKind.STOP_LIMIT, OrderKind.BRACKET):
        raise reject(RejectReason.UNSUPPORTED_ORDER_CONFIGURATION, f"post_only is not supported on {spec.kind} orders")
    if spec.base_size is not None:
        if (problem := product.size_problem(spec.base_size)) is not None:
            raise reject(
                problem,
                f"base_size {spec.base_size} (increment {product.base_increment}, "
                f"min {product.base_min_size}, max {product.base_max_size})",
            )
    elif spec.quote_size is not None and (problem := product.quote_size_problem(spec.quote_size)) is not None:
        raise reject(
            problem,
            f"quote_size {spec.quote_size} (increment {product.quote_increment}, "
            f"min {product.quote_min_size}, max {product.quote_max_size})",
        )
    for name in ("limit_price", "stop_price", "stop_trigger_price"):
        price = getattr(spec, name)
        if price is not None and product.price_problem(price) is not None:
            raise reject(RejectReason.INVALID_PRICE_PRECISION, f"{name} {price} is not on increment {product.price_increment}")
    if spec.limit_price is not None and spec.base_size is not None:
        notional = spec.limit_price * spec.base_size
        if notional < product.quote_min_size:
            raise reject(RejectReason.QUOTE_SIZE_TOO_SMALL, f"notional {notional} < quote_min_size {product.quote_min_size}")
        if notional > product.quote_max_size:
            raise reject(RejectReason.QUOTE_SIZE_TOO_LARGE, f"notional {notional} > quote_max_size {product.quote_max_size}")
    if spec.time_in_force is TimeInForce.GTD and spec.end_time is not None and spec.end_time <= now:
        raise reject(RejectReason.INVALID_END_TIME, f"end_time {spec.end_time.isoformat()} is not after {now.isoformat()}")
    if spec.kind is OrderKind.STOP_LIMIT:
        assert spec.stop_price is not None
        direction = spec.stop_direction
        if last_trade_price is not None and _stop_hit(direction, spec.stop_price, last_trade_price):
            raise reject(
                RejectReason.INVALID_STOP_PRICE,
                f"stop {spec.stop_price} ({direction}) would trigger at once: last trade {last_trade_price}",
            )
    if spec.kind is OrderKind.BRACKET:
        assert spec.stop_trigger_price is not None and spec.limit_price is not None
        trigger = spec.stop_trigger_price
        wrong_side = trigger >= spec.limit_price if spec.side is Side.SELL else trigger <= spec.limit_price
        if wrong_side:
            raise reject(
                RejectReason.INVALID_LIMIT_PRICE,
                f"{spec.side} bracket needs stop_trigger_price {'<' if spec.side is Side.SELL else '>'} "
                f"limit_price (got {trigger} vs {spec.limit_price})",
            )
        if last_trade_price is not None and _stop_hit(_bracket_direction(spec.side), trigger, last_trade_price):
            raise reject(
                RejectReason.INVALID_STOP_PRICE,
                f"stop_trigger_price {trigger} would trigger at once: last trade {last_trade_price}",
            )
    if spec.post_only:
        assert spec.limit_price is not None
        opposite = best_ask if spec.side is Side.BUY else best_bid
        if opposite is not None and _crosses(spec.side, opposite, spec.limit_price):
            which = "ask" if spec.side is Side.BUY else "bid"
            raise reject(
                RejectReason.INVALID_LIMIT_PRICE_POST_ONLY,
                f"post-only {spec.side} at {spec.limit_price} would cross the best {which} {opposite}",
            )


def _stop_hit(direction: StopDirection | None, stop: Decimal, last: Decimal) -> bool:
    return last >= stop if direction is StopDirection.STOP_UP else last <= stop


def _bracket_direction(side: Side) -> StopDirection:
    """A SELL bracket (closing a long) stops out on a fall; a BUY bracket on a rise."""
    return StopDirection.STOP_DOWN if side is Side.SELL else StopDirection.STOP_UP


# --- the engine ------------------------------------------------------------------


class _Level:
    __slots__ = ("orders", "price", "size")

    def __init__(self, price: Decimal) -> None:
        self.price = price
        self.orders: OrderedDict[str, BookOrder] = OrderedDict()
        self.size = ZERO


class _Call:
    """Events of one engine call; L2 changes are coalesced and appended at the end."""

    __slots__ = ("events", "levels", "now")

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.events: list[EngineEvent] = []
        self.levels: dict[tuple[Side, Decimal], Decimal] = {}

    def finish(self, product_id: str) -> list[EngineEvent]:
        for (side, price), size in self.levels.items():
            self.events.append(LevelChanged(product_id, side, price, size, self.now))
        return self.events


class MatchingEngine:
    """The order book and matcher of one product. See the module docstring for the rules."""

    def __init__(self, product: Product, *, trade_id_factory: Callable[[], str] | None = None) -> None:
        self.product = product
        counter = count(1)
        self._next_trade_id: Callable[[], str] = trade_id_factory or (lambda: str(next(counter)))
        self._seq = count(1)
        self._bids: SortedDict = SortedDict()  # price -> _Level; best = last
        self._asks: SortedDict = SortedDict()  # price -> _Level; best = first
        self._orders: dict[str, BookOrder] = {}
        self._stops_up: SortedList = SortedList()  # (stop, seq, order_id): fire when stop <= last
        self._stops_down: SortedList = SortedList()  # (-stop, seq, order_id): fire when stop >= last
        self._gtd: SortedList = SortedList()  # (end_time, seq, order_id)
        self._last_trade_price: Decimal | None = None
        self._pending: list[EngineEvent] = []

    # -- read-only views ----------------------------------------------------

    @property
    def product_id(self) -> str:
        return self.product.product_id

    @property
    def last_trade_price(self) -> Decimal | None:
        return self._last_trade_price

    def best_bid(self) -> Level | None:
        if not self._bids:
            return None
        level: _Level = self._bids.peekitem(-1)[1]
        return Level(level.price, level.size)

    def best_ask(self) -> Level | None:
        if not self._asks:
            return None
        level: _Level = self._asks.peekitem(0)[1]
        return Level(level.price, level.size)

    def levels(self, side: Side, n: int | None = None) -> list[Level]:
        """Aggregated L2 for ``side`` (BUY = bids, SELL = asks), best first, at most ``n`` levels."""
        book = self._bids if side is Side.BUY else self._asks
        values = book.values()
        total = len(values)
        limit = total if n is None else min(n, total)
        indices = range(total - 1, total - 1 - limit, -1) if side is Side.BUY else range(limit)
        return [Level(values[i].price, values[i].size) for i in indices]

    def order(self, order_id: str) -> BookOrder | None:
        """A live order (resting or dormant stop), else None."""
        return self._orders.get(order_id)

    def live_orders(self, owner: str | None = None) -> list[BookOrder]:
        """Live orders (resting or dormant), oldest first; only ``owner``'s when given."""
        return [o for o in self._orders.values() if owner is None or o.owner == owner]

    def __len__(self) -> int:
        return len(self._orders)

    def check(self, spec: OrderSpec, now: datetime) -> None:
        """Raise :class:`~cryptoj.errors.OrderRejected` if ``spec`` may not be placed now (see :func:`check_order`)."""
        bid, ask = self.best_bid(), self.best_ask()
        check_order(
            self.product,
            spec,
            now=now,
            last_trade_price=self._last_trade_price,
            best_bid=bid.price if bid else None,
            best_ask=ask.price if ask else None,
        )

    def preview(
        self,
        side: Side,
        *,
        owner: str | None = None,
        base_size: Decimal | None = None,
        quote_size: Decimal | None = None,
        limit_price: Decimal | None = None,
    ) -> FillPlan[BookOrder]:
        """What an incoming order would fill now, without changing anything.

        ``owner``'s own resting orders are skipped (as self-trade prevention would).
        """
        with wide_context():
            return self._plan_for(side, owner, base_size, quote_size, limit_price)

    # -- mutations ----------------------------------------------------------------

    def submit(
        self,
        spec: OrderSpec,
        *,
        owner: str,
        order_id: str,
        now: datetime,
        max_notional: Decimal | None = None,
    ) -> list[EngineEvent]:
        """Validate and accept ``spec`` as order ``order_id`` of ``owner``; match it; run triggers.

        GTD orders due at ``now`` are expired first. ``max_notional`` caps the quote
        notional a buy may spend (used for a bracket's market leg and for market
        buys sized from a preview). Raises :class:`~cryptoj.errors.OrderRejected`
        (nothing changes) or :class:`~cryptoj.errors.InvalidValue` for a duplicate id.
        """
        if order_id in self._orders:
            raise InvalidValue("order_id", order_id, f"already live on {self.product_id}")
        if max_notional is not None and max_notional < 0:
            raise InvalidValue("max_notional", max_notional, "must not be negative")
        with wide_context():
            return self._submit(spec, owner, order_id, now, max_notional)

    def _submit(
        self, spec: OrderSpec, owner: str, order_id: str, now: datetime, max_notional: Decimal | None
    ) -> list[EngineEvent]:
        call = self._begin(now)
        self._expire_due(call)
        try:
            self.check(spec, now)
        except OrderRejected:
            self._pending = call.finish(self.product_id)  # expiries are reported by the next call
            raise
        order = BookOrder(
            order_id=order_id,
            owner=owner,
            product_id=self.product_id,
            side=spec.side,
            kind=spec.kind,
            time_in_force=spec.time_in_force,
            base_size=spec.base_size,
            quote_size=spec.quote_size,
            limit_price=spec.limit_price,
            stop_price=spec.stop_price,
            stop_direction=spec.stop_direction,
            stop_trigger_price=spec.stop_trigger_price,
            post_only=spec.post_only,
            end_time=spec.end_time if spec.time_in_force is TimeInForce.GTD else None,
            max_notional=max_notional,
            created_time=now,
            seq=next(self._seq),
            client_order_id=spec.client_order_id,
        )
        self._update(call, order)  # accepted: OPEN
        if order.kind is OrderKind.STOP_LIMIT:
            self._orders[order_id] = order
            self._add_stop(order)
            self._add_gtd(order)
        else:
            self._execute(call, order)
        self._run_triggers(call)
        return call.finish(self.product_id)

    def cancel(self, order_id: str, now: datetime, *, reason: str = DoneReason.USER_CANCELLED) -> list[EngineEvent]:
        """Cancel a live order; :class:`~cryptoj.errors.OrderNotFound` if it is not live here."""
        order = self._orders.get(order_id)
        if order is None:
            raise OrderNotFound(f"{self.product_id}: no live order {order_id!r}")
        with wide_context():
            call = self._begin(now)
            self._finish(call, order, SimOrderStatus.CANCELLED, reason)
            return call.finish(self.product_id)

    def expire(self, now: datetime) -> list[EngineEvent]:
        """Expire every GTD order whose ``end_time <= now``."""
        with wide_context():
            call = self._begin(now)
            self._expire_due(call)
            return call.finish(self.product_id)

    # -- internals -------------------------------------------------------------

    def _begin(self, now: datetime) -> _Call:
        """A new call; events left over from a rejected submit (its expiries) come first."""
        call = _Call(now)
        if self._pending:
            call.events.extend(self._pending)
            self._pending = []
        return call

    def _entries(self, side: Side, owner: str | None) -> Iterator[tuple[Decimal, Decimal, BookOrder]]:
        """Resting orders opposite to an incoming ``side``, in priority order (own orders marked 0)."""
        book = self._asks if side is Side.BUY else self._bids
        values = book.values()
        n = len(values)
        for i in range(n):
            level: _Level = values[i] if side is Side.BUY else values[n - 1 - i]
            for resting in level.orders.values():
                remaining = resting.remaining_size
                assert remaining is not None
                yield level.price, (ZERO if resting.owner == owner else remaining), resting

    def _plan_for(
        self,
        side: Side,
        owner: str | None,
        base_size: Decimal | None,
        budget: Decimal | None,
        limit_price: Decimal | None,
    ) -> FillPlan[BookOrder]:
        return _plan(self._entries(side, owner), side, self.product, base_size=base_size, budget=budget, limit_price=limit_price)

    def _execute(self, call: _Call, order: BookOrder) -> None:
        """Match ``order`` (not on the book) against the opposite side, then rest, fill or kill it."""
        limit = None if order.matches_as_market else order.limit_price
        plan = self._plan_for(order.side, order.owner, order.remaining_size, order.budget, limit)
        immediate = order.matches_as_market or order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK)
        if order.time_in_force is TimeInForce.FOK and not plan.complete:
            self._finish(call, order, SimOrderStatus.CANCELLED, DoneReason.FILL_OR_KILL)
            return
        for maker, price, size in plan.steps:
            if size == 0:
                self._finish(call, maker, SimOrderStatus.CANCELLED, DoneReason.SELF_TRADE_PREVENTION)
            else:
                self._trade(call, order, maker, price, size)
        remaining = order.remaining_size
        if order.filled_size > 0 and (remaining == 0 or (remaining is None and plan.complete)):
            self._finish(call, order, SimOrderStatus.FILLED, None)
        elif immediate:
            self._finish(call, order, SimOrderStatus.CANCELLED, DoneReason.IMMEDIATE_OR_CANCEL)
        else:
            self._rest(call, order)

    def _trade(self, call: _Call, taker: BookOrder, maker: BookOrder, price: Decimal, size: Decimal) -> None:
        notional = price * size
        taker.filled_size += size
        taker.filled_value += notional
        maker.filled_size += size
        maker.filled_value += notional
        book = self._bids if maker.side is Side.BUY else self._asks
        level: _Level = book[price]
        level.size -= size
        call.levels[(maker.side, price)] = level.size
        self._last_trade_price = price
        call.events.append(
            Trade(
                trade_id=self._next_trade_id(),
                product_id=self.product_id,
                price=price,
                size=size,
                taker_side=taker.side,
                maker_order_id=maker.order_id,
                maker_owner=maker.owner,
                taker_order_id=taker.order_id,
                taker_owner=taker.owner,
                time=call.now,
            )
        )
        if maker.remaining_size == 0:
            self._finish(call, maker, SimOrderStatus.FILLED, None)

    def _rest(self, call: _Call, order: BookOrder) -> None:
        book = self._bids if order.side is Side.BUY else self._asks
        price = order.limit_price
        assert price is not None
        remaining = order.remaining_size
        assert remaining is not None
        level: _Level | None = book.get(price)
        if level is None:
            level = _Level(price)
            book[price] = level
        level.orders[order.order_id] = order
        level.size += remaining
        call.levels[(order.side, price)] = level.size
        order.resting = True
        self._orders[order.order_id] = order
        self._add_gtd(order)
        if order.kind is OrderKind.BRACKET:
            self._add_stop(order)

    def _unrest(self, call: _Call, order: BookOrder) -> None:
        book = self._bids if order.side is Side.BUY else self._asks
        price = order.limit_price
        level: _Level = book[price]
        del level.orders[order.order_id]
        remaining = order.remaining_size
        assert remaining is not None
        level.size -= remaining
        if not level.orders:
            del book[price]
            level.size = ZERO
        call.levels[(order.side, level.price)] = level.size
        order.resting = False

    def _finish(self, call: _Call, order: BookOrder, status: SimOrderStatus, reason: str | None) -> None:
        """Take ``order`` out of every structure and report its final state."""
        if order.resting:
            self._unrest(call, order)
        if self._orders.pop(order.order_id, None) is not None:
            self._remove_stop(order)
            if order.end_time is not None:
                self._gtd.discard((order.end_time, order.seq, order.order_id))
        order.status = status
        order.done_reason = reason
        self._update(call, order)

    def _update(self, call: _Call, order: BookOrder) -> None:
        call.events.append(
            OrderUpdate(
                order_id=order.order_id,
                owner=order.owner,
                product_id=self.product_id,
                status=order.status,
                filled_size=order.filled_size,
                filled_value=order.filled_value,
                remaining_size=order.remaining_size,
                triggered=order.triggered,
                reason=order.done_reason,
                time=call.now,
            )
        )

    def _stop_key(self, order: BookOrder) -> tuple[SortedList, tuple[Decimal, int, str]] | None:
        if order.kind is OrderKind.STOP_LIMIT and not order.triggered:
            stop, direction = order.stop_price, order.stop_direction
        elif order.kind is OrderKind.BRACKET and not order.triggered:
            stop, direction = order.stop_trigger_price, _bracket_direction(order.side)
        else:
            return None
        assert stop is not None
        if direction is StopDirection.STOP_UP:
            return self._stops_up, (stop, order.seq, order.order_id)
        return self._stops_down, (-stop, order.seq, order.order_id)

    def _add_stop(self, order: BookOrder) -> None:
        key = self._stop_key(order)
        assert key is not None
        key[0].add(key[1])

    def _remove_stop(self, order: BookOrder) -> None:
        key = self._stop_key(order)
        if key is not None:
            key[0].discard(key[1])

    def _add_gtd(self, order: BookOrder) -> None:
        if order.end_time is not None:
            self._gtd.add((order.end_time, order.seq, order.order_id))

    def _expire_due(self, call: _Call) -> None:
        while self._gtd and self._gtd[0][0] <= call.now:
            order = self._orders[self._gtd[0][2]]
            self._finish(call, order, SimOrderStatus.EXPIRED, DoneReason.GTD_EXPIRED)

    def _next_triggered(self) -> BookOrder | None:
        last = self._last_trade_price
        if last is None:
            return None
        candidates: list[tuple[int, str]] = []
        if self._stops_up and self._stops_up[0][0] <= last:
            candidates.append((self._stops_up[0][1], self._stops_up[0][2]))
        if self._stops_down and -self._stops_down[0][0] >= last:
            candidates.append((self._stops_down[0][1], self._stops_down[0][2]))
        if not candidates:
            return None
        return self._orders[min(candidates)[1]]

    def _run_triggers(self, call: _Call) -> None:
        """Fire stops whose condition holds on the last trade price, oldest first, until none does."""
        while (order := self._next_triggered()) is not None:
            self._remove_stop(order)
            order.triggered = True
            if order.kind is OrderKind.BRACKET:
                self._unrest(call, order)  # a bracket's stop is armed only while its limit leg rests
            self._orders.pop(order.order_id)
            if order.end_time is not None:
                self._gtd.discard((order.end_time, order.seq, order.order_id))
            order.seq = next(self._seq)
            self._update(call, order)
            self._execute(call, order)
