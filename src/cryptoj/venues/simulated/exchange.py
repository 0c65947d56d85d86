"""The simulated exchange: one matching engine per product, plus accounts.

Pure (no I/O, no asyncio, no wall clock — every mutating call takes ``now``).
The simulator server renders Coinbase REST/WS from what this returns; the
synthetic market trades through it like any other account.

Accounts
    An account is an owner id with, per currency, an ``available`` and a ``hold``
    balance. :meth:`SimExchange.deposit` funds one (and creates it).

Holds
    Placing an order moves its hold from available to hold:

    * BUY (quote currency): ``notional * (1 + max(maker_rate, taker_rate))`` where
      ``notional`` is ``limit_price * base_size`` for limit and stop-limit orders,
      ``quote_size`` for a quote-sized market buy, the notional a preview walk of
      the book says a base-sized market buy will cost (the engine caps the buy at
      it), and ``max(limit_price, stop_trigger_price) * base_size`` for a BUY
      bracket (whose market leg is capped at it).
    * SELL (base currency): ``base_size``; for a quote-sized market sell, the base
      size a preview walk says it needs.

    Each fill consumes the hold exactly (a buy: ``notional + fee``; a sell: the
    base size); whatever is left is returned to available when the order is done
    (filled, cancelled, expired). An order whose hold exceeds the available
    balance is rejected with ``INSUFFICIENT_FUND``.

Fees
    Each account has a :class:`FeeTier` (default 0.4% maker / 0.6% taker). The
    rates are fixed on an order when it is placed. Fees are charged in the QUOTE
    currency (a buyer pays ``notional + fee``, a seller receives ``notional - fee``)
    and paid into the exchange's fee account (:data:`FEE_ACCOUNT`), so the sum of
    every balance (available + hold) of every account, fee account included, never
    changes except by deposits and withdrawals.

Orders
    Input is :class:`~cryptoj.model.orders.OrderSpec`. Rejections raise
    :class:`~cryptoj.errors.OrderRejected` with a Coinbase-like reason code (see
    :class:`~cryptoj.venues.simulated.matching.RejectReason`); nothing is recorded.
    ``client_order_id`` is idempotent per account: placing one that the account
    already used returns the existing order (``duplicate=True``) and never places a
    second, whatever the new spec says. Unknown order ids raise
    :class:`~cryptoj.errors.OrderNotFound`.

Events
    Every mutating call returns events for the server to broadcast, in order:
    :class:`~cryptoj.venues.simulated.matching.Trade` and :class:`FillRecorded`
    (one per side of a trade), then :class:`~cryptoj.venues.simulated.matching.LevelChanged`
    (absolute aggregated size per touched level), then one :class:`OrderChanged`
    per order that changed, carrying a snapshot of its cumulative state (what the
    Coinbase ``user`` channel sends). Events of expiries that happened inside a
    call that then raised are delivered with the next call's events.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import count
from typing import Final

from cryptoj.errors import InvalidValue, OrderNotFound, OrderRejected
from cryptoj.model.instruments import Product
from cryptoj.model.money import ZERO, Side, parse_decimal
from cryptoj.model.orders import Fill, Liquidity, OrderKind, OrderSpec, TimeInForce
from cryptoj.venues.simulated.matching import (
    EngineEvent,
    LevelChanged,
    MatchingEngine,
    OrderUpdate,
    RejectReason,
    SimOrderStatus,
    Trade,
    fee_for,
    wide_context,
)

__all__ = [
    "FEE_ACCOUNT",
    "Balance",
    "CancelFailure",
    "CancelOutcome",
    "CancelResult",
    "ExchangeEvent",
    "FeeTier",
    "FillRecorded",
    "OrderChanged",
    "PlaceResult",
    "SimExchange",
    "SimFill",
    "SimOrder",
    "order_configuration",
]

FEE_ACCOUNT: Final = "exchange-fees"


class CancelFailure:
    """``failure_reason`` codes of a cancel result (Coinbase's spelling)."""

    UNKNOWN_CANCEL_ORDER: Final = "UNKNOWN_CANCEL_ORDER"  # no such order for this account
    ORDER_IS_FULLY_FILLED: Final = "ORDER_IS_FULLY_FILLED"
    DUPLICATE_CANCEL_REQUEST: Final = "DUPLICATE_CANCEL_REQUEST"  # already cancelled / expired


@dataclass(frozen=True, slots=True)
class FeeTier:
    """Maker / taker fee rates (fractions: ``0.004`` is 0.4%)."""

    maker_rate: Decimal = Decimal("0.004")
    taker_rate: Decimal = Decimal("0.006")
    pricing_tier: str = "Advanced 1"

    def __post_init__(self) -> None:
        for name in ("maker_rate", "taker_rate"):
            rate = getattr(self, name)
            if not isinstance(rate, Decimal) or not rate.is_finite() or rate < 0 or rate >= 1:
                raise InvalidValue(f"fee_tier.{name}", rate, "must be a Decimal in [0, 1)")

    @property
    def max_rate(self) -> Decimal:
        return max(self.maker_rate, self.taker_rate)


@dataclass(frozen=True, slots=True)
class Balance:
    """One currency of one account."""

    currency: str
    available: Decimal
    hold: Decimal

    @property
    def total(self) -> Decimal:
        with wide_context():
            return self.available + self.hold


@dataclass(slots=True)
class _Bal:
    available: Decimal = ZERO
    hold: Decimal = ZERO


@dataclass(slots=True)
class SimOrder:
    """The exchange's record of an order (what ``/orders/historical`` renders).

    Records handed out (by queries and in events) are snapshots: copies that do
    not change afterwards.
    """

    order_id: str
    owner: str
    spec: OrderSpec
    created_time: datetime
    hold_currency: str
    hold_amount: Decimal
    maker_rate: Decimal
    taker_rate: Decimal
    status: SimOrderStatus = SimOrderStatus.OPEN
    filled_size: Decimal = ZERO
    filled_value: Decimal = ZERO
    total_fees: Decimal = ZERO
    number_of_fills: int = 0
    last_fill_time: datetime | None = None
    done_time: datetime | None = None
    done_reason: str | None = None
    triggered: bool = False
    seq: int = 0

    @property
    def client_order_id(self) -> str:
        return self.spec.client_order_id

    @property
    def product_id(self) -> str:
        return self.spec.product_id

    @property
    def side(self) -> Side:
        return self.spec.side

    @property
    def average_filled_price(self) -> Decimal:
        """Volume-weighted fill price (``0`` before any fill, as Coinbase shows it)."""
        if self.filled_size == 0:
            return ZERO
        with wide_context():
            return self.filled_value / self.filled_size

    @property
    def leaves_quantity(self) -> Decimal:
        """Base size still open (``0`` for a done or quote-sized order)."""
        if self.status.is_done or self.spec.base_size is None:
            return ZERO
        with wide_context():
            return self.spec.base_size - self.filled_size

    @property
    def outstanding_hold_amount(self) -> Decimal:
        return self.hold_amount

    @property
    def order_type(self) -> str:
        """Coinbase ``order_type``: MARKET, LIMIT, STOP_LIMIT or BRACKET."""
        return str(self.spec.kind)

    @property
    def time_in_force(self) -> str:
        """Coinbase ``time_in_force`` spelling."""
        return _TIF_NAMES[self.spec.time_in_force]

    @property
    def trigger_status(self) -> str:
        """Coinbase ``trigger_status``: INVALID_ORDER_TYPE, STOP_PENDING or STOP_TRIGGERED."""
        if self.spec.kind not in (OrderKind.STOP_LIMIT, OrderKind.BRACKET):
            return "INVALID_ORDER_TYPE"
        return "STOP_TRIGGERED" if self.triggered else "STOP_PENDING"

    @property
    def order_configuration(self) -> dict[str, dict[str, str | bool]]:
        return order_configuration(self.spec)

    def snapshot(self) -> SimOrder:
        return copy.copy(self)


_TIF_NAMES: Final = {
    TimeInForce.GTC: "GOOD_UNTIL_CANCELLED",
    TimeInForce.GTD: "GOOD_UNTIL_DATE_TIME",
    TimeInForce.IOC: "IMMEDIATE_OR_CANCEL",
    TimeInForce.FOK: "FILL_OR_KILL",
}


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def order_configuration(spec: OrderSpec) -> dict[str, dict[str, str | bool]]:
    """Coinbase's ``order_configuration`` object for ``spec`` (numbers as strings)."""
    tif = spec.time_in_force
    body: dict[str, str | bool] = {}
    if spec.base_size is not None:
        body["base_size"] = str(spec.base_size)
    if spec.quote_size is not None:
        body["quote_size"] = str(spec.quote_size)
    if spec.limit_price is not None:
        body["limit_price"] = str(spec.limit_price)
    if spec.kind is OrderKind.MARKET:
        key = "market_market_ioc" if tif is TimeInForce.IOC else "market_market_fok"
    elif spec.kind is OrderKind.LIMIT:
        key = {
            TimeInForce.GTC: "limit_limit_gtc",
            TimeInForce.GTD: "limit_limit_gtd",
            TimeInForce.IOC: "sor_limit_ioc",
            TimeInForce.FOK: "limit_limit_fok",
        }[tif]
        if tif in (TimeInForce.GTC, TimeInForce.GTD):
            body["post_only"] = spec.post_only
    elif spec.kind is OrderKind.STOP_LIMIT:
        key = "stop_limit_stop_limit_gtd" if tif is TimeInForce.GTD else "stop_limit_stop_limit_gtc"
        body["stop_price"] = str(spec.stop_price)
        body["stop_direction"] = str(spec.stop_direction)
    else:
        key = "trigger_bracket_gtd" if tif is TimeInForce.GTD else "trigger_bracket_gtc"
        body["stop_trigger_price"] = str(spec.stop_trigger_price)
    if tif is TimeInForce.GTD and spec.end_time is not None:
        body["end_time"] = _iso(spec.end_time)
    return {key: body}


@dataclass(frozen=True, slots=True)
class SimFill:
    """One side of a trade, as ``/orders/historical/fills`` reports it. ``commission`` is in quote."""

    entry_id: str
    trade_id: str
    order_id: str
    client_order_id: str
    owner: str
    product_id: str
    side: Side
    price: Decimal
    size: Decimal
    commission: Decimal
    liquidity: Liquidity
    time: datetime
    seq: int = 0

    @property
    def size_in_quote(self) -> bool:
        return False

    @property
    def notional(self) -> Decimal:
        with wide_context():
            return self.price * self.size

    def to_fill(self) -> Fill:
        """The model's :class:`~cryptoj.model.orders.Fill` for this execution."""
        return Fill(
            trade_id=self.trade_id,
            client_order_id=self.client_order_id,
            product_id=self.product_id,
            side=self.side,
            price=self.price,
            size=self.size,
            fee=self.commission,
            time=self.time,
            liquidity=self.liquidity,
            venue_order_id=self.order_id,
        )


@dataclass(frozen=True, slots=True)
class OrderChanged:
    """An order's cumulative state after a change (``order`` is a snapshot)."""

    owner: str
    order: SimOrder


@dataclass(frozen=True, slots=True)
class FillRecorded:
    """A new fill for ``owner``."""

    owner: str
    fill: SimFill


ExchangeEvent = Trade | LevelChanged | OrderChanged | FillRecorded


@dataclass(frozen=True, slots=True)
class PlaceResult:
    """The order (snapshot), the events to broadcast, and whether it was an idempotent repeat."""

    order: SimOrder
    events: list[ExchangeEvent]
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    order_id: str
    success: bool
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class CancelResult:
    results: list[CancelOutcome]
    events: list[ExchangeEvent] = field(default_factory=list)


class SimExchange:
    """Engines for every product, accounts with holds, fees and order records."""

    def __init__(
        self,
        products: Iterable[Product] = (),
        *,
        fee_tier: FeeTier | None = None,
        seed: int = 0,
        fee_account: str = FEE_ACCOUNT,
    ) -> None:
        self.default_fee_tier = fee_tier or FeeTier()
        self.fee_account = fee_account
        self._rng = random.Random(seed)
        trade_ids = count(1)
        self._next_trade_id = lambda: str(next(trade_ids))
        self._seq = count(1)
        self._engines: dict[str, MatchingEngine] = {}
        self._accounts: dict[str, dict[str, _Bal]] = {}
        self._tiers: dict[str, FeeTier] = {}
        self._orders: dict[str, SimOrder] = {}
        self._by_client_id: dict[tuple[str, str], str] = {}
        self._owner_orders: dict[str, list[str]] = {}
        self._fills: dict[str, list[SimFill]] = {}
        self._pending: list[ExchangeEvent] = []
        for product in products:
            self.add_product(product)

    # -- products --------------------------------------------------------------

    def add_product(self, product: Product) -> MatchingEngine:
        """Add (or replace the rules of) a product; its book is kept if it exists."""
        engine = self._engines.get(product.product_id)
        if engine is None:
            engine = MatchingEngine(product, trade_id_factory=self._next_trade_id)
            self._engines[product.product_id] = engine
        else:
            engine.product = product
        return engine

    @property
    def products(self) -> list[Product]:
        return [engine.product for engine in self._engines.values()]

    def product(self, product_id: str) -> Product:
        return self.engine(product_id).product

    def engine(self, product_id: str) -> MatchingEngine:
        """The engine of ``product_id``; :class:`~cryptoj.errors.InvalidValue` if unknown."""
        engine = self._engines.get(product_id)
        if engine is None:
            raise InvalidValue("product_id", product_id, f"unknown product (known: {', '.join(sorted(self._engines))})")
        return engine

    # -- accounts ----------------------------------------------------------------

    def _account(self, owner: str) -> dict[str, _Bal]:
        account = self._accounts.get(owner)
        if account is None:
            if not owner:
                raise InvalidValue("owner", owner, "account owner id must not be empty")
            account = self._accounts[owner] = {}
            self._owner_orders[owner] = []
            self._fills[owner] = []
        return account

    def _bal(self, owner: str, currency: str) -> _Bal:
        account = self._account(owner)
        bal = account.get(currency)
        if bal is None:
            bal = account[currency] = _Bal()
        return bal

    def deposit(self, owner: str, currency: str, amount: Decimal | str | int) -> Balance:
        """Add ``amount`` (positive) to ``owner``'s available ``currency``; creates the account."""
        value = parse_decimal(amount, f"deposit {owner}.{currency}")
        if value <= 0:
            raise InvalidValue(f"deposit {owner}.{currency}", amount, "must be positive")
        bal = self._bal(owner, currency)
        with wide_context():
            bal.available += value
        return self.balance(owner, currency)

    def withdraw(self, owner: str, currency: str, amount: Decimal | str | int) -> Balance:
        """Take ``amount`` from available; ``INSUFFICIENT_FUND`` if there is not that much."""
        value = parse_decimal(amount, f"withdraw {owner}.{currency}")
        if value <= 0:
            raise InvalidValue(f"withdraw {owner}.{currency}", amount, "must be positive")
        bal = self._bal(owner, currency)
        if bal.available < value:
            raise OrderRejected(
                RejectReason.INSUFFICIENT_FUND, f"withdraw {value} {currency}: {owner} has {bal.available} available"
            )
        with wide_context():
            bal.available -= value
        return self.balance(owner, currency)

    def balance(self, owner: str, currency: str) -> Balance:
        bal = self._accounts.get(owner, {}).get(currency)
        if bal is None:
            return Balance(currency, ZERO, ZERO)
        return Balance(currency, bal.available, bal.hold)

    def balances(self, owner: str) -> dict[str, Balance]:
        """Every currency ``owner`` has touched."""
        return {cur: Balance(cur, b.available, b.hold) for cur, b in self._accounts.get(owner, {}).items()}

    def owners(self) -> list[str]:
        return list(self._accounts)

    def total_assets(self, currency: str) -> Decimal:
        """Sum of available + hold over every account (fee account included)."""
        with wide_context():
            return sum(
                (acct[currency].available + acct[currency].hold for acct in self._accounts.values() if currency in acct),
                ZERO,
            )

    def fees_collected(self, currency: str) -> Decimal:
        return self.balance(self.fee_account, currency).total

    def set_fee_tier(self, owner: str, tier: FeeTier) -> None:
        """Fee tier for ``owner``'s future orders."""
        self._account(owner)
        self._tiers[owner] = tier

    def fee_tier(self, owner: str) -> FeeTier:
        return self._tiers.get(owner, self.default_fee_tier)

    # -- orders ----------------------------------------------------------------

    def place(self, owner: str, spec: OrderSpec, now: datetime) -> PlaceResult:
        """Place ``spec`` for ``owner``. Raises :class:`~cryptoj.errors.OrderRejected` (nothing recorded)."""
        with wide_context():
            return self._place(owner, spec, now)

    def _place(self, owner: str, spec: OrderSpec, now: datetime) -> PlaceResult:
        existing_id = self._by_client_id.get((owner, spec.client_order_id))
        if existing_id is not None:
            return PlaceResult(self._orders[existing_id].snapshot(), self._take_pending(), duplicate=True)
        engine = self._engines.get(spec.product_id)
        if engine is None:
            raise OrderRejected(
                RejectReason.INVALID_PRODUCT_ID,
                f"unknown product {spec.product_id!r}",
                client_order_id=spec.client_order_id,
            )
        events = self._take_pending()
        events.extend(self._apply(engine.expire(now)))
        try:
            engine.check(spec, now)
            currency, hold, max_notional = self._hold_for(engine, owner, spec)
            available = self.balance(owner, currency).available
            if available < hold:
                raise OrderRejected(
                    RejectReason.INSUFFICIENT_FUND,
                    f"{spec.product_id} {spec.side}: needs {hold} {currency} on hold, {owner} has {available} available",
                    client_order_id=spec.client_order_id,
                )
        except OrderRejected:
            self._pending = events
            raise
        tier = self.fee_tier(owner)
        order_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        record = SimOrder(
            order_id=order_id,
            owner=owner,
            spec=spec,
            created_time=now,
            hold_currency=currency,
            hold_amount=hold,
            maker_rate=tier.maker_rate,
            taker_rate=tier.taker_rate,
            seq=next(self._seq),
        )
        bal = self._bal(owner, currency)
        bal.available -= hold
        bal.hold += hold
        self._orders[order_id] = record
        self._by_client_id[(owner, spec.client_order_id)] = order_id
        self._owner_orders[owner].append(order_id)
        events.extend(self._apply(engine.submit(spec, owner=owner, order_id=order_id, now=now, max_notional=max_notional)))
        return PlaceResult(record.snapshot(), events)

    def _hold_for(self, engine: MatchingEngine, owner: str, spec: OrderSpec) -> tuple[str, Decimal, Decimal | None]:
        """``(currency, hold amount, max_notional for the engine)`` for a new order."""
        product = engine.product
        if spec.side is Side.SELL:
            if spec.base_size is not None:
                return product.base_currency, spec.base_size, None
            plan = engine.preview(Side.SELL, owner=owner, quote_size=spec.quote_size)
            return product.base_currency, plan.base, None
        max_notional: Decimal | None = None
        if spec.kind is OrderKind.MARKET:
            if spec.quote_size is not None:
                notional = spec.quote_size
            else:
                notional = engine.preview(Side.BUY, owner=owner, base_size=spec.base_size).notional
                max_notional = notional
        else:
            assert spec.limit_price is not None and spec.base_size is not None
            price = spec.limit_price
            if spec.kind is OrderKind.BRACKET:
                assert spec.stop_trigger_price is not None
                price = max(price, spec.stop_trigger_price)
                max_notional = price * spec.base_size
            notional = price * spec.base_size
        rate = self.fee_tier(owner).max_rate
        return product.quote_currency, notional + notional * rate, max_notional

    def cancel(self, owner: str, order_ids: Iterable[str], now: datetime) -> CancelResult:
        """Cancel ``owner``'s orders; one :class:`CancelOutcome` per id, in order."""
        with wide_context():
            return self._cancel(owner, order_ids, now)

    def _cancel(self, owner: str, order_ids: Iterable[str], now: datetime) -> CancelResult:
        events = self._take_pending()
        results: list[CancelOutcome] = []
        for order_id in order_ids:
            record = self._orders.get(order_id)
            if record is None or record.owner != owner:
                results.append(CancelOutcome(order_id, False, CancelFailure.UNKNOWN_CANCEL_ORDER))
            elif record.status is SimOrderStatus.FILLED:
                results.append(CancelOutcome(order_id, False, CancelFailure.ORDER_IS_FULLY_FILLED))
            elif record.status.is_done:
                results.append(CancelOutcome(order_id, False, CancelFailure.DUPLICATE_CANCEL_REQUEST))
            else:
                events.extend(self._apply(self._engines[record.product_id].cancel(order_id, now)))
                results.append(CancelOutcome(order_id, True))
        return CancelResult(results, events)

    def cancel_all(self, owner: str, now: datetime, *, product_id: str | None = None) -> CancelResult:
        """Cancel every open order of ``owner`` (on ``product_id`` only, when given)."""
        ids = [o.order_id for o in self._open_records(owner) if product_id is None or o.product_id == product_id]
        return self.cancel(owner, ids, now)

    def expire(self, now: datetime) -> list[ExchangeEvent]:
        """Expire GTD orders due at ``now`` on every product."""
        events = self._take_pending()
        with wide_context():
            for engine in self._engines.values():
                events.extend(self._apply(engine.expire(now)))
        return events

    def prune_history(self, owner: str) -> int:
        """Forget ``owner``'s finished orders and all its fills; returns how many orders were dropped.

        For accounts whose history nobody reads (the simulator's agents), so a long
        run does not grow without bound. Open orders are kept. A forgotten order's
        ``client_order_id`` may be used again.
        """
        ids = self._owner_orders.get(owner)
        if ids is None:
            return 0
        keep: list[str] = []
        dropped = 0
        for order_id in ids:
            record = self._orders[order_id]
            if record.status.is_done:
                del self._orders[order_id]
                del self._by_client_id[(owner, record.client_order_id)]
                dropped += 1
            else:
                keep.append(order_id)
        ids[:] = keep
        self._fills[owner].clear()
        return dropped

    # -- queries -----------------------------------------------------------------

    def get_order(self, owner: str, order_id: str) -> SimOrder:
        """``owner``'s order ``order_id``; :class:`~cryptoj.errors.OrderNotFound` otherwise."""
        record = self._orders.get(order_id)
        if record is None or record.owner != owner:
            raise OrderNotFound(f"no order {order_id!r} for account {owner!r}")
        return record.snapshot()

    def find_order(self, owner: str, client_order_id: str) -> SimOrder | None:
        """``owner``'s order with ``client_order_id``, or None."""
        order_id = self._by_client_id.get((owner, client_order_id))
        return None if order_id is None else self._orders[order_id].snapshot()

    def _open_records(self, owner: str) -> list[SimOrder]:
        return [self._orders[oid] for oid in self._owner_orders.get(owner, ()) if not self._orders[oid].status.is_done]

    def list_orders(
        self,
        owner: str,
        *,
        product_ids: Iterable[str] | None = None,
        statuses: Iterable[SimOrderStatus | str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[SimOrder]:
        """``owner``'s orders, newest first; filters: products, statuses, ``start <= created_time < end``."""
        pids = None if product_ids is None else set(product_ids)
        wanted = None if statuses is None else {SimOrderStatus(s) for s in statuses}
        out: list[SimOrder] = []
        for order_id in reversed(self._owner_orders.get(owner, [])):
            record = self._orders[order_id]
            if pids is not None and record.product_id not in pids:
                continue
            if wanted is not None and record.status not in wanted:
                continue
            if start is not None and record.created_time < start:
                continue
            if end is not None and record.created_time >= end:
                continue
            out.append(record.snapshot())
        return out

    def list_fills(
        self,
        owner: str,
        *,
        order_ids: Iterable[str] | None = None,
        product_ids: Iterable[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[SimFill]:
        """``owner``'s fills, newest first; filters: orders, products, ``start <= time < end``."""
        oids = None if order_ids is None else set(order_ids)
        pids = None if product_ids is None else set(product_ids)
        out: list[SimFill] = []
        for fill in reversed(self._fills.get(owner, [])):
            if oids is not None and fill.order_id not in oids:
                continue
            if pids is not None and fill.product_id not in pids:
                continue
            if start is not None and fill.time < start:
                continue
            if end is not None and fill.time >= end:
                continue
            out.append(fill)
        return out

    # -- settlement ----------------------------------------------------------------

    def _take_pending(self) -> list[ExchangeEvent]:
        events, self._pending = self._pending, []
        return events

    def _apply(self, engine_events: list[EngineEvent]) -> list[ExchangeEvent]:
        """Settle the engine's events on the accounts; the events for the server."""
        out: list[ExchangeEvent] = []
        touched: dict[str, SimOrder] = {}
        for event in engine_events:
            if isinstance(event, Trade):
                out.append(event)
                self._settle(event, out, touched)
            elif isinstance(event, OrderUpdate):
                record = self._orders[event.order_id]
                record.triggered = event.triggered
                if event.status.is_done and not record.status.is_done:
                    record.status = event.status
                    record.done_reason = event.reason
                    record.done_time = event.time
                    self._release(record)
                touched[record.order_id] = record
            else:
                out.append(event)
        out.extend(OrderChanged(record.owner, record.snapshot()) for record in touched.values())
        return out

    def _settle(self, trade: Trade, out: list[ExchangeEvent], touched: dict[str, SimOrder]) -> None:
        product = self._engines[trade.product_id].product
        for order_id, liquidity in ((trade.maker_order_id, Liquidity.MAKER), (trade.taker_order_id, Liquidity.TAKER)):
            record = self._orders[order_id]
            rate = record.maker_rate if liquidity is Liquidity.MAKER else record.taker_rate
            notional = trade.notional
            fee = fee_for(trade.price, trade.size, rate)
            if record.side is Side.BUY:
                self._consume_hold(record, notional + fee)
                self._bal(record.owner, product.base_currency).available += trade.size
            else:
                self._consume_hold(record, trade.size)
                self._bal(record.owner, product.quote_currency).available += notional - fee
            if fee:
                self._bal(self.fee_account, product.quote_currency).available += fee
            record.filled_size += trade.size
            record.filled_value += notional
            record.total_fees += fee
            record.number_of_fills += 1
            record.last_fill_time = trade.time
            fill = SimFill(
                entry_id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                trade_id=trade.trade_id,
                order_id=order_id,
                client_order_id=record.client_order_id,
                owner=record.owner,
                product_id=trade.product_id,
                side=record.side,
                price=trade.price,
                size=trade.size,
                commission=fee,
                liquidity=liquidity,
                time=trade.time,
                seq=next(self._seq),
            )
            self._fills[record.owner].append(fill)
            out.append(FillRecorded(record.owner, fill))
            touched[order_id] = record

    def _consume_hold(self, record: SimOrder, amount: Decimal) -> None:
        if amount > record.hold_amount:
            raise AssertionError(  # pragma: no cover - holds are sized so fills always fit
                f"unreachable: order {record.order_id} fill needs {amount} {record.hold_currency}, hold is {record.hold_amount}"
            )
        bal = self._bal(record.owner, record.hold_currency)
        bal.hold -= amount
        record.hold_amount -= amount

    def _release(self, record: SimOrder) -> None:
        if record.hold_amount:
            bal = self._bal(record.owner, record.hold_currency)
            bal.hold -= record.hold_amount
            bal.available += record.hold_amount
            record.hold_amount = ZERO
