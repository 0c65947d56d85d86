"""The order manager: submit / cancel / replace, tracking, fills, reconciliation.

:class:`OrderManager` sits between the engine and a :class:`~cryptoj.venues.base.Venue`.
What it guarantees, and how:

Write-ahead
    Every order gets a ``client_order_id`` (ours, :meth:`OrderManager.new_client_order_id`)
    and its intent is made durable **before** it is sent: appended to the storage's
    order-intent journal (:meth:`Storage.write_intent`, one synchronous file append; the
    order's row and its ``order.new`` journal entry follow in the transaction of its next
    change, normally the ack), or — when the storage has no intent journal (PostgreSQL,
    in-memory SQLite) — saved to the database with status NEW plus a journal entry.
    A process that dies in between leaves the intent in the journal; the next
    :meth:`Storage.open` stores it as NEW and the startup reconciliation settles it.
    Every later state change and every fill is saved and journaled (one transaction each).

One id per order, never a second
    A create whose outcome is unknown (timeout, connection reset after sending, 5xx,
    an unparseable answer) moves the order to IN_FLIGHT_UNKNOWN. It is resolved by
    looking the order up at the venue by ``client_order_id`` and, if absent, re-sending
    with the **same** id (the venue answers a reused id with the order it has). After
    ``execution.resolve_attempts`` tries the order stays IN_FLIGHT_UNKNOWN (it counts as
    active everywhere) and the poll loop keeps resolving it.

Fills are counted once
    The ``user`` channel carries cumulative state. When an update's
    ``cumulative_quantity`` is above what we hold, the new executions are fetched
    from REST ``/orders/historical/fills`` for that order and applied by trade id
    (storage has a unique ``(venue, trade_id)`` key and :meth:`Order.apply_fill` ignores a
    known trade id). A snapshot after a reconnect therefore never creates a fill by
    itself: at most it shows that fills were missed, and those are fetched the same
    way. After every reconnect, and every ``fill_check_interval_seconds``, all fills
    since the newest stored one (minus ``fill_lookback_seconds``) are confirmed against
    REST. While the user stream is down, active orders are polled over REST every
    ``poll_interval_seconds``. Size, average price and fees are always derived from the
    fills, so they are exact.

Startup reconciliation (:meth:`OrderManager.reconcile`)
    Stored active orders are compared with the venue (by venue id, or by
    ``client_order_id`` when the ack was never recorded), fills since the last stored
    one are fetched, venue open orders storage does not know are adopted as EXTERNAL
    (or cancelled: ``execution.external_orders``), and balances are snapshotted.
    Anything that cannot be reconciled is a problem in the :class:`ReconciliationReport`;
    a report with problems persists the trading state HALTED (storage + journal; a HALTED
    record already there, e.g. a kill switch's, is left as it is), calls
    the ``on_halt`` hook and makes :meth:`OrderManager.submit` raise ``TradingHalted``
    until a later reconciliation succeeds. It fails closed.

Error handling (what the caller sees)
    * ``RiskRejected(reason)`` — the order breaks a product rule after rounding
      (``ORDER_SIZE_TOO_SMALL``, ``TRADING_DISABLED``...) or the ``pre_trade`` hook refused
      it; the order is stored REJECTED with that reason; nothing was sent.
    * ``TradingHalted`` — from the ``pre_trade`` hook, or the last reconciliation failed;
      stored REJECTED, nothing sent.
    * ``OrderRejected(reason)`` — the venue refused the order (stored REJECTED with the
      venue's reason code); also raised by :meth:`OrderManager.replace` when the original
      could not be cancelled (reason ``REPLACE_NOT_CANCELLED``).
    * ``RateLimited`` / ``VenueUnavailable`` / ``AuthenticationFailed`` on a create — the
      request was not processed (after the REST client's own backoff and retries); the
      order is stored REJECTED with reason ``RATE_LIMITED`` / ``VENUE_UNAVAILABLE`` /
      ``AUTHENTICATION_FAILED``. Never a duplicate: a create is only ever retried with
      the same id.
    * ``AmbiguousOutcome`` is never raised by :meth:`submit`: it is resolved as above, and
      :meth:`submit` returns the order (possibly still IN_FLIGHT_UNKNOWN).
    * ``OrderNotFound`` — :meth:`cancel` / :meth:`replace` of an id this manager does not know.
    * Venue errors while cancelling leave the order CANCEL_PENDING and are raised; the
      poll loop and the next reconciliation settle it.
    * Stream and poll loops never die on a venue or data error: each is logged with the
      ``client_order_id`` and counted in :attr:`OrderManager.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from cryptoj.config import ExecutionConfig
from cryptoj.errors import (
    AmbiguousOutcome,
    AuthenticationFailed,
    CryptojError,
    DataError,
    InvalidValue,
    MalformedMessage,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    RiskRejected,
    TradingHalted,
    VenueError,
    VenueUnavailable,
)
from cryptoj.logging import get_logger
from cryptoj.model.events import UserOrderUpdate
from cryptoj.model.instruments import Product
from cryptoj.model.money import ZERO, Side
from cryptoj.model.orders import Fill, Order, OrderKind, OrderSpec, OrderStatus
from cryptoj.model.positions import Position
from cryptoj.storage import BalanceSnapshot, Storage
from cryptoj.storage.codec import spec_to_json
from cryptoj.streams import QueueStream
from cryptoj.venues.base import Balance, UserStreamConnected, UserStreamDown, Venue, VenueOrder

__all__ = [
    "DailyStats",
    "OrderManager",
    "OrderUpdate",
    "ProductDayStats",
    "ReconciliationReport",
]

log = get_logger(__name__)

_S = OrderStatus
_UNSENT: Final = frozenset({_S.NEW, _S.SUBMITTED, _S.IN_FLIGHT_UNKNOWN})
_CANCELLABLE: Final = frozenset({_S.SUBMITTED, _S.OPEN, _S.PARTIALLY_FILLED, _S.CANCEL_PENDING, _S.IN_FLIGHT_UNKNOWN})
_MAX_BACKOFF: Final = 5.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


_ORDER_FIELDS: Final = (
    "spec", "status", "venue_order_id", "reject_reason", "external", "created_at", "updated_at", "fills", "history",
)
if tuple(f.name for f in dataclasses.fields(Order)) != _ORDER_FIELDS:  # _copy below must copy every field
    raise RuntimeError(f"order_execution._copy is out of date with Order's fields {[f.name for f in dataclasses.fields(Order)]}")
_new_order = object.__new__


def _copy(order: Order) -> Order:
    """A snapshot of ``order`` that later changes do not touch.

    Field by field rather than ``dataclasses.replace`` (about 10x faster): the risk engine's
    pre-trade checks take a snapshot of every open order, on every order.
    """
    copy: Order = _new_order(Order)
    copy.spec = order.spec  # frozen
    copy.status = order.status
    copy.venue_order_id = order.venue_order_id
    copy.reject_reason = order.reject_reason
    copy.external = order.external
    copy.created_at = order.created_at
    copy.updated_at = order.updated_at
    copy.fills = dict(order.fills)  # Fill is frozen
    copy.history = list(order.history)
    return copy


def _reason_of(exc: VenueError) -> str:
    if isinstance(exc, RateLimited):
        return "RATE_LIMITED"
    if isinstance(exc, AuthenticationFailed):
        return "AUTHENTICATION_FAILED"
    if isinstance(exc, VenueUnavailable):
        return "VENUE_UNAVAILABLE"
    return type(exc).__name__.upper()


# --- results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """An order changed: a snapshot of it, and the new fill when the change was a fill."""

    order: Order
    fill: Fill | None = None


@dataclass(slots=True)
class ReconciliationReport:
    """What a reconciliation found and did. ``ok`` is False when anything disagreed."""

    started_at: datetime
    problems: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    cancelled_external: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    fills_recovered: int = 0
    venue_open_orders: int = 0
    balances: dict[str, Balance] = field(default_factory=dict)
    balance_changes: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    """Currency → (total at the previous stored snapshot, total now); informational, not a problem."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = "reconciliation ok" if self.ok else f"reconciliation FAILED ({len(self.problems)} problem(s))"
        parts = [
            head,
            f"updated={len(self.updated)}",
            f"adopted={len(self.adopted)}",
            f"cancelled_external={len(self.cancelled_external)}",
            f"abandoned={len(self.abandoned)}",
            f"resent={len(self.resent)}",
            f"fills_recovered={self.fills_recovered}",
        ]
        text = ", ".join(parts)
        if self.problems:
            text += "\n  " + "\n  ".join(self.problems)
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "started_at": self.started_at.isoformat(),
            "problems": list(self.problems),
            "updated": list(self.updated),
            "adopted": list(self.adopted),
            "cancelled_external": list(self.cancelled_external),
            "abandoned": list(self.abandoned),
            "resent": list(self.resent),
            "fills_recovered": self.fills_recovered,
            "venue_open_orders": self.venue_open_orders,
            "balances": {c: {"available": str(b.available), "hold": str(b.hold)} for c, b in self.balances.items()},
            "balance_changes": {c: [str(before), str(after)] for c, (before, after) in self.balance_changes.items()},
        }


@dataclass(slots=True)
class ProductDayStats:
    """One product's (or the total's) trading on one UTC day. Money is in the quote currency."""

    trades: int = 0
    volume: Decimal = ZERO
    fees: Decimal = ZERO
    realised_pnl: Decimal = ZERO
    wins: int = 0
    losses: int = 0

    @property
    def win_rate(self) -> Decimal | None:
        """Winning closing fills / closing fills (None when nothing was closed)."""
        closed = self.wins + self.losses
        return None if closed == 0 else Decimal(self.wins) / Decimal(closed)

    def add(self, other: ProductDayStats) -> None:
        self.trades += other.trades
        self.volume += other.volume
        self.fees += other.fees
        self.realised_pnl += other.realised_pnl
        self.wins += other.wins
        self.losses += other.losses


@dataclass(slots=True)
class DailyStats:
    """Trades, volume, fees, realised PnL (net of fees) and win rate per product and in total.

    A *trade* is one fill. Realised PnL uses the average-cost convention of
    :class:`~cryptoj.model.positions.Position` over the whole stored fill history, so a
    position opened yesterday and closed today realises today. A closing (sell) fill of a
    tracked long position is a *win* when it realised more than zero after its fee.
    The total adds products up; it is only meaningful when they share a quote currency.
    """

    day: date
    products: dict[str, ProductDayStats] = field(default_factory=dict)
    total: ProductDayStats = field(default_factory=ProductDayStats)


@dataclass(slots=True)
class _Batch:
    """State changes collected by :meth:`OrderManager._batched`."""

    orders: dict[str, Order] = field(default_factory=dict)
    journal: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    published: list[tuple[Order, Fill | None]] = field(default_factory=list)


# --- the manager --------------------------------------------------------------------------


class OrderManager:
    """Orders through one venue, persisted in one storage (see the module doc).

    ``products`` maps product ids to their rules (or is a lookup function); when None
    they are loaded from the venue in :meth:`start`. ``pre_trade`` is the risk engine's
    ``check``: it raises ``RiskRejected`` / ``TradingHalted`` to refuse an order.
    ``checkpoint`` is called with a point name (``"after_write_ahead"``, ``"after_send"``,
    ``"after_unknown"``) on the submit path — crash tests use it to kill the process there.
    """

    def __init__(
        self,
        venue: Venue,
        storage: Storage,
        *,
        products: Mapping[str, Product] | Callable[[str], Product | None] | None = None,
        pre_trade: Callable[[OrderSpec], None] | None = None,
        clock: Callable[[], datetime] = _utc_now,
        config: ExecutionConfig | None = None,
        on_halt: Callable[[ReconciliationReport], Awaitable[None] | None] | None = None,
        checkpoint: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.venue = venue
        self.storage = storage
        self.config = config or ExecutionConfig()
        self._products: dict[str, Product] = {}
        self._lookup: Callable[[str], Product | None] | None = None
        if callable(products):
            self._lookup = products
        elif products is not None:
            self._products = dict(products)
        self._load_products = products is None
        self._pre_trade = pre_trade
        self._clock = clock
        self._on_halt = on_halt
        self._checkpoint = checkpoint
        self._sleep = sleep
        self._orders: dict[str, Order] = {}
        self._by_venue_id: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._streams: set[QueueStream[OrderUpdate]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stream_up = False
        self._started = False
        self._closed = False
        self._fill_gaps: set[str] = set()
        self._intent_only: dict[str, dict[str, Any]] = {}  # written ahead to the intent journal, no row yet: coid -> spec
        self._batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(f"om_batch_{id(self)}", default=None)
        self.halted_reason: str | None = None
        self.last_reconciliation: ReconciliationReport | None = None
        self.stats: dict[str, int] = {
            "submitted": 0,
            "rejected": 0,
            "ambiguous": 0,
            "resolved": 0,
            "resent": 0,
            "fills": 0,
            "duplicate_fills": 0,
            "cancels": 0,
            "stream_updates": 0,
            "stream_snapshots": 0,
            "stream_downs": 0,
            "resyncs": 0,
            "polls": 0,
            "errors": 0,
        }

    def __repr__(self) -> str:
        return f"OrderManager(venue={self.venue.name!r}, orders={len(self._orders)})"

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, *, background: bool = True) -> ReconciliationReport | None:
        """Start the venue, load stored active orders, reconcile (``reconcile_on_start``), start the loops.

        ``background=False`` starts no loops (the stream, polling and fill checks):
        the caller drives :meth:`process_update`, :meth:`poll` and :meth:`sync_fills`.
        Returns the startup reconciliation report (None when it is switched off).
        """
        if self._started:
            raise InvalidValue("order_manager", "started", "start() was already called")
        self._started = True
        await self.venue.start()
        if self._load_products:
            self._products = {p.product_id: p for p in await self.venue.products()}
        for order in await self.storage.open_orders():
            self._remember(order)
        report: ReconciliationReport | None = None
        if self.config.reconcile_on_start:
            report = await self.reconcile()
        if background:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._stream_loop(), name="om-user-stream"))
            self._tasks.append(loop.create_task(self._poll_loop(), name="om-poll"))
            self._tasks.append(loop.create_task(self._fill_check_loop(), name="om-fill-check"))
        return report

    async def close(self) -> None:
        """Stop the loops, end every :meth:`updates` iteration, close the venue (storage stays open)."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for stream in list(self._streams):
            stream.close()
        await self.venue.close()

    async def __aenter__(self) -> OrderManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- queries ---------------------------------------------------------------------------

    @staticmethod
    def new_client_order_id() -> str:
        """A fresh client order id (a UUID4, as Coinbase suggests)."""
        return str(uuid.uuid4())

    def product(self, product_id: str) -> Product:
        """The rules of ``product_id``; ``InvalidValue`` when unknown."""
        product = self._products.get(product_id)
        if product is None and self._lookup is not None:
            product = self._lookup(product_id)
        if product is None:
            raise InvalidValue("order.product_id", product_id, "unknown product")
        return product

    def order(self, client_order_id: str) -> Order | None:
        """A snapshot of the order with this id (active, or touched since start), or None."""
        order = self._orders.get(client_order_id)
        return None if order is None else _copy(order)

    def open_orders(self, product_id: str | None = None) -> list[Order]:
        """Snapshots of every active order (IN_FLIGHT_UNKNOWN and CANCEL_PENDING included)."""
        return [
            _copy(o)
            for o in self._orders.values()
            if o.is_active or o.status is _S.NEW
            if product_id is None or o.product_id == product_id
        ]

    def live_orders(self, product_id: str | None = None) -> list[Order]:
        """The active orders themselves, not snapshots (the same selection as :meth:`open_orders`).

        For readers that are done within one synchronous call — the risk engine's pre-trade
        check reads every open order up to three times per order, and copying them all cost
        more than the check itself. Never keep these objects or change them.
        """
        return [
            o
            for o in self._orders.values()
            if o.is_active or o.status is _S.NEW
            if product_id is None or o.product_id == product_id
        ]

    async def venue_open_orders(self, product_id: str | None = None) -> list[VenueOrder]:
        """What the venue itself reports open (REST)."""
        return await self.venue.open_orders(product_id)

    async def venue_balances(self) -> Mapping[str, Balance]:
        """The venue's balances (REST)."""
        return await self.venue.balances()

    @property
    def stream_connected(self) -> bool:
        return self._stream_up

    def updates(self) -> AsyncIterator[OrderUpdate]:
        """Every order change from now on (status changes and fills), in order, until :meth:`close`."""
        stream: QueueStream[OrderUpdate] = QueueStream(self._streams.discard)  # unbounded: updates are never dropped
        if self._closed:
            stream.close()
        else:
            self._streams.add(stream)
        return stream

    # -- internals: memory, locks, persistence ---------------------------------------------

    def _remember(self, order: Order) -> None:
        self._orders[order.client_order_id] = order
        if order.venue_order_id:
            self._by_venue_id[order.venue_order_id] = order.client_order_id

    def _lock(self, client_order_id: str) -> asyncio.Lock:
        lock = self._locks.get(client_order_id)
        if lock is None:
            lock = self._locks[client_order_id] = asyncio.Lock()
        return lock

    def _publish(self, order: Order, fill: Fill | None = None) -> None:
        if self._streams:
            batch = self._batch.get()
            if batch is not None:
                batch.published.append((_copy(order), fill))
            else:
                self._publish_snapshot(_copy(order), fill)

    def _publish_snapshot(self, snapshot: Order, fill: Fill | None) -> None:
        update = OrderUpdate(snapshot, fill)
        for stream in list(self._streams):
            stream.push(update)

    def _new_entry(self, order: Order) -> tuple[str, dict[str, Any], datetime | None] | None:
        """The ``order.new`` journal entry still owed for an order written ahead to the intent journal only.

        It stays owed until the transaction that stores it commits (the caller pops it then).
        """
        spec = self._intent_only.get(order.client_order_id)
        if spec is None:
            return None
        record = {
            "client_order_id": order.client_order_id,
            "venue_order_id": None,
            "product_id": order.product_id,
            "status": _S.NEW.value,
            "spec": spec,
            "write_ahead": "intent_journal",
        }
        return "order.new", record, order.created_at

    async def _persist(self, order: Order, kind: str, **payload: Any) -> None:
        record = {
            "client_order_id": order.client_order_id,
            "venue_order_id": order.venue_order_id,
            "product_id": order.product_id,
            "status": order.status.value,
            **payload,
        }
        new = self._new_entry(order)
        batch = self._batch.get()
        if batch is not None:
            batch.orders[order.client_order_id] = order
            if new is not None:
                self._intent_only.pop(order.client_order_id, None)
                batch.journal.append((new[0], new[1]))
            batch.journal.append((kind, record))
            return
        async with self.storage.transaction():
            await self.storage.save_order(order, venue=self.venue.name)
            if new is not None:
                await self.storage.append_journal(new[0], new[1], at=new[2] or self._clock())
            await self.storage.append_journal(kind, record, at=self._clock())
        if new is not None:
            self._intent_only.pop(order.client_order_id, None)

    @contextlib.asynccontextmanager
    async def _batched(self) -> AsyncIterator[None]:
        """Within the block (this task only), state changes are stored in one transaction at the end, then published."""
        batch = _Batch()
        token = self._batch.set(batch)
        try:
            yield
        finally:
            self._batch.reset(token)
            if batch.orders or batch.journal:
                async with self.storage.transaction():
                    for order in batch.orders.values():
                        await self.storage.save_order(order, venue=self.venue.name)
                    for kind, record in batch.journal:
                        await self.storage.append_journal(kind, record, at=self._clock())
            for snapshot, fill in batch.published:
                self._publish_snapshot(snapshot, fill)

    def _hit(self, name: str) -> None:
        if self._checkpoint is not None:
            self._checkpoint(name)

    def _set_venue_id(self, order: Order, venue_order_id: str) -> None:
        if order.venue_order_id != venue_order_id:
            order.venue_order_id = venue_order_id
            self._by_venue_id[venue_order_id] = order.client_order_id

    # -- submit -----------------------------------------------------------------------------

    def prepare(self, spec: OrderSpec) -> OrderSpec:
        """``spec`` rounded to the product's increments, or ``RiskRejected`` with the rule it breaks.

        Sizes round down; limit and stop prices round toward the passive side (a buy
        down, a sell up). The product's status flags are checked too.
        """
        product = self.product(spec.product_id)
        problem = product.status_problem(is_market=spec.kind is OrderKind.MARKET, post_only=spec.post_only)
        if problem is not None:
            raise RiskRejected(problem, f"{spec.product_id} does not accept this order now ({spec.client_order_id})")
        changes: dict[str, Any] = {}
        if spec.base_size is not None:
            size = product.round_size(spec.base_size)
            if size <= 0 or product.size_problem(size) is not None:
                code = product.size_problem(size) if size > 0 else "ORDER_SIZE_TOO_SMALL"
                raise RiskRejected(
                    str(code),
                    f"order {spec.client_order_id}: base size {spec.base_size} rounds to {size}; {spec.product_id} "
                    f"allows {product.base_min_size}..{product.base_max_size} in steps of {product.base_increment}",
                )
            changes["base_size"] = size
        if spec.quote_size is not None:
            quote = product.round_quote_size(spec.quote_size)
            code = product.quote_size_problem(quote) if quote > 0 else "QUOTE_SIZE_TOO_SMALL"
            if code is not None:
                raise RiskRejected(
                    code,
                    f"order {spec.client_order_id}: quote size {spec.quote_size} rounds to {quote}; {spec.product_id} "
                    f"allows {product.quote_min_size}..{product.quote_max_size} in steps of {product.quote_increment}",
                )
            changes["quote_size"] = quote
        for name in ("limit_price", "stop_price", "stop_trigger_price"):
            price = getattr(spec, name)
            if price is not None:
                rounded = product.round_price(price, spec.side)
                if rounded <= 0:
                    raise RiskRejected(
                        "INVALID_PRICE_PRECISION",
                        f"order {spec.client_order_id}: {name} {price} rounds to {rounded} (step {product.price_increment})",
                    )
                changes[name] = rounded
        if all(getattr(spec, k) == v for k, v in changes.items()):
            return spec
        return dataclasses.replace(spec, **changes)

    async def submit(self, spec: OrderSpec) -> Order:
        """Round, check, write ahead, send; returns a snapshot of the order (see the module doc for errors)."""
        if self._closed:
            raise VenueUnavailable("order manager is closed")
        coid = spec.client_order_id
        if coid in self._orders or await self.storage.has_order(coid):
            raise InvalidValue("order.client_order_id", coid, "already used by another order; ids are never reused")
        now = self._clock()
        order = Order(spec=spec, created_at=now, updated_at=now)
        async with self._lock(coid):
            try:
                if self.halted_reason is not None:
                    raise TradingHalted(f"order manager halted: {self.halted_reason}")
                spec = self.prepare(spec)
                order.spec = spec
                if self._pre_trade is not None:
                    self._pre_trade(spec)
            except (RiskRejected, TradingHalted) as exc:
                reason = exc.reason if isinstance(exc, RiskRejected) else "TRADING_HALTED"
                order.transition(_S.REJECTED, at=now, reason=reason)
                self._remember(order)
                self.stats["rejected"] += 1
                await self._persist(order, "order.rejected", reason=reason, message=str(exc), stage="pre_trade")
                self._publish(order)
                log.info("order_rejected_pre_trade", client_order_id=coid, product_id=spec.product_id, reason=reason)
                raise
            self._remember(order)
            spec_json = spec_to_json(spec)
            if self.storage.write_intent(order, venue=self.venue.name, spec=spec_json):  # durable; the row follows the send
                self._intent_only[coid] = spec_json
            else:
                await self._persist(order, "order.new", spec=spec_json)
            self._hit("after_write_ahead")
            self.stats["submitted"] += 1
            try:
                ack = await self.venue.create_order(spec)
            except OrderRejected as exc:
                await self._reject(order, exc.reason, str(exc))
                raise
            except AmbiguousOutcome as exc:
                await self._mark_unknown(order, exc.cause)
                await self._resolve(order)
                return _copy(order)
            except MalformedMessage as exc:  # an answer we could not read: it may have been placed
                await self._mark_unknown(order, str(exc))
                await self._resolve(order)
                return _copy(order)
            except VenueError as exc:
                await self._reject(order, _reason_of(exc), str(exc))
                raise
            self._hit("after_send")
            self._set_venue_id(order, ack.order_id)
            if order.status is _S.NEW:
                order.transition(_S.SUBMITTED, at=self._clock())
            await self._persist(order, "order.ack")
            self._publish(order)
            log.info("order_submitted", client_order_id=coid, product_id=spec.product_id, venue_order_id=ack.order_id)
            return _copy(order)

    async def _reject(self, order: Order, reason: str, message: str) -> None:
        order.transition(_S.REJECTED, at=self._clock(), reason=reason)
        self.stats["rejected"] += 1
        await self._persist(order, "order.rejected", reason=reason, message=message, stage="venue")
        self._publish(order)
        log.info("order_rejected", client_order_id=order.client_order_id, reason=reason)

    async def _mark_unknown(self, order: Order, cause: str) -> None:
        self.stats["ambiguous"] += 1
        if order.status is not _S.IN_FLIGHT_UNKNOWN:
            order.transition(_S.IN_FLIGHT_UNKNOWN, at=self._clock())
        await self._persist(order, "order.unknown", cause=cause)
        self._hit("after_unknown")
        self._publish(order)
        log.warning("order_outcome_unknown", client_order_id=order.client_order_id, cause=cause)

    async def _resolve(self, order: Order, *, attempts: int | None = None, resend: bool = True) -> bool:
        """Settle an order whose create may not have reached the venue (caller holds its lock).

        Looks it up by ``client_order_id``; absent → re-sends with the same id (when
        ``resend``). True once the venue's answer is known.
        """
        tries = attempts if attempts is not None else self.config.resolve_attempts
        delay = self.config.resolve_backoff_seconds
        for attempt in range(tries):
            if attempt:
                await self._sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
            try:
                found = await self.venue.find_order(order.client_order_id, product_id=order.product_id)
                if found is not None:
                    await self._apply_venue_order(order, found, source="resolve")
                    self.stats["resolved"] += 1
                    return True
                if not resend:
                    return False
                self.stats["resent"] += 1
                ack = await self.venue.create_order(order.spec)
            except OrderRejected as exc:
                await self._reject(order, exc.reason, str(exc))
                return True
            except (AmbiguousOutcome, VenueError, DataError) as exc:
                self.stats["errors"] += 1
                log.warning("order_resolve_retry", client_order_id=order.client_order_id, attempt=attempt + 1, error=str(exc))
                continue
            self._set_venue_id(order, ack.order_id)
            order.transition(_S.SUBMITTED, at=self._clock())
            await self._persist(order, "order.ack", resent=True)
            self._publish(order)
            self.stats["resolved"] += 1
            return True
        return False

    # -- applying the venue's view ------------------------------------------------------------------

    def _own_fill(self, fill: Fill, order: Order) -> Fill:
        if fill.client_order_id == order.client_order_id:
            return fill
        return dataclasses.replace(fill, client_order_id=order.client_order_id)

    async def _apply_fills(self, order: Order, fills: Iterable[Fill], source: str) -> int:
        """Apply venue fills (deduplicated by trade id); returns how many were new.

        The new fills of one call are stored in one transaction (the order row once, one
        journal entry per fill) before any of them is published.
        """
        applied: list[tuple[Order, Fill]] = []
        for fill in sorted(fills, key=lambda f: (f.time, f.trade_id)):
            if fill.venue_order_id and order.venue_order_id and fill.venue_order_id != order.venue_order_id:
                continue
            own = self._own_fill(fill, order)
            if order.status is _S.NEW:
                order.transition(_S.SUBMITTED, at=self._clock())
            if not order.apply_fill(own):
                self.stats["duplicate_fills"] += 1
                continue
            self.stats["fills"] += 1
            applied.append((_copy(order), own))
        if not applied:
            return 0
        base = {"client_order_id": order.client_order_id, "venue_order_id": order.venue_order_id, "product_id": order.product_id}
        new = self._new_entry(order)
        async with self.storage.transaction():
            await self.storage.save_order(order, venue=self.venue.name)
            if new is not None:
                await self.storage.append_journal(new[0], new[1], at=new[2] or self._clock())
            for snapshot, fill in applied:
                record = {
                    **base,
                    "status": snapshot.status.value,
                    "trade_id": fill.trade_id,
                    "price": str(fill.price),
                    "size": str(fill.size),
                    "fee": str(fill.fee),
                    "source": source,
                }
                await self.storage.append_journal("order.fill", record, at=self._clock())
        if new is not None:
            self._intent_only.pop(order.client_order_id, None)
        for snapshot, fill in applied:
            self._publish_snapshot(snapshot, fill)
        return len(applied)

    async def _fetch_fills(self, order: Order, source: str) -> int:
        if not order.venue_order_id:
            return 0
        fills = await self.venue.fills(order_id=order.venue_order_id)
        return await self._apply_fills(order, fills, source)

    def _target_status(self, order: Order, venue_status: OrderStatus, *, keep_cancel_pending: bool) -> OrderStatus | None:
        if venue_status is _S.IN_FLIGHT_UNKNOWN:
            return None
        if order.status is _S.CANCEL_PENDING and keep_cancel_pending and not venue_status.is_terminal:
            return None
        if venue_status is _S.OPEN and order.status is _S.PARTIALLY_FILLED:
            return None
        if venue_status is _S.SUBMITTED and order.status not in (_S.NEW, _S.IN_FLIGHT_UNKNOWN):
            return None  # PENDING / QUEUED at the venue: nothing we do not know already
        return venue_status

    async def _set_status(self, order: Order, target: OrderStatus | None, source: str, **payload: Any) -> str | None:
        """Move to the venue's status; a problem string when our state machine cannot follow."""
        if target is None or target is order.status:
            return None
        if order.status is _S.NEW and target is not _S.REJECTED:
            order.transition(_S.SUBMITTED, at=self._clock())
        if order.status is target:
            await self._persist(order, "order.status", source=source, **payload)
            self._publish(order)
            return None
        if not order.can_transition(target):
            problem = (
                f"order {order.client_order_id} (venue id {order.venue_order_id}): stored status {order.status.value} "
                f"but the venue says {target.value}"
            )
            log.error("order_status_conflict", client_order_id=order.client_order_id, ours=order.status.value, venue=target.value)
            return problem
        order.transition(target, at=self._clock())
        await self._persist(order, "order.status", source=source, **payload)
        self._publish(order)
        return None

    async def _apply_venue_order(
        self, order: Order, vo: VenueOrder, *, source: str, keep_cancel_pending: bool = True
    ) -> list[str]:
        """Bring ``order`` up to the venue's record ``vo``: id, fills (from REST), status. Returns problems."""
        problems: list[str] = []
        if order.venue_order_id != vo.order_id:
            self._set_venue_id(order, vo.order_id)
            if order.status is _S.NEW:
                order.transition(_S.SUBMITTED, at=self._clock())
            await self._persist(order, "order.ack", source=source)
        if vo.filled_size > order.filled_size:
            await self._fetch_fills(order, source)
        if vo.filled_size != order.filled_size:
            problems.append(
                f"order {order.client_order_id} (venue id {vo.order_id}): venue filled {vo.filled_size} but the venue's "
                f"fills add up to {order.filled_size}"
            )
        elif vo.total_fees != order.fees:
            problems.append(
                f"order {order.client_order_id} (venue id {vo.order_id}): venue fees {vo.total_fees} but fills' fees "
                f"add up to {order.fees}"
            )
        target = self._target_status(order, vo.status, keep_cancel_pending=keep_cancel_pending)
        problem = await self._set_status(order, target, source, venue_status=vo.venue_status)
        if problem:
            problems.append(problem)
        if vo.reject_reason and order.status is _S.REJECTED and not order.reject_reason:
            order.reject_reason = vo.reject_reason
        return problems

    async def process_update(self, update: UserOrderUpdate) -> None:
        """Apply one ``user``-channel update (cumulative state; a snapshot never adds fills by itself)."""
        self.stats["stream_snapshots" if update.is_snapshot else "stream_updates"] += 1
        coid = update.client_order_id if update.client_order_id in self._orders else None
        if coid is None:
            coid = self._by_venue_id.get(update.order_id)
        if coid is None:
            coid = await self._load_or_adopt(update.order_id, update.client_order_id)
            if coid is None:
                return
        order = self._orders[coid]
        async with self._lock(coid):
            if order.venue_order_id != update.order_id:
                self._set_venue_id(order, update.order_id)
                if order.status in (_S.NEW, _S.IN_FLIGHT_UNKNOWN):
                    order.transition(_S.SUBMITTED, at=self._clock())
                await self._persist(order, "order.ack", source="stream")
            if update.cumulative_quantity > order.filled_size:
                await self._fetch_fills(order, "stream_snapshot" if update.is_snapshot else "stream")
            if update.cumulative_quantity > order.filled_size:
                self._fill_gaps.add(coid)  # REST has not caught up yet: the poll loop retries
            else:
                self._fill_gaps.discard(coid)
            target = self._target_status(order, update.status, keep_cancel_pending=True)
            problem = await self._set_status(order, target, "stream", venue_status=update.venue_status)
            if problem:
                self.stats["errors"] += 1

    async def _load_or_adopt(self, venue_order_id: str, client_order_id: str | None) -> str | None:
        """An order we do not hold in memory: load it from storage, or adopt it from the venue."""
        if client_order_id:
            stored = await self.storage.load_order(client_order_id)
            if stored is not None:
                self._remember(stored)
                return client_order_id
        vo = await self.venue.get_order(venue_order_id)
        if vo.client_order_id:
            stored = await self.storage.load_order(vo.client_order_id)
            if stored is not None:
                self._remember(stored)
                return vo.client_order_id
        report = ReconciliationReport(started_at=self._clock())
        return await self._adopt(vo, report)

    async def _adopt(self, vo: VenueOrder, report: ReconciliationReport) -> str | None:
        """Track a venue order storage does not know as EXTERNAL, or cancel it (``external_orders``)."""
        if self.config.external_orders == "cancel" and not vo.status.is_terminal:
            results = await self.venue.cancel_orders([vo.order_id])
            if results and results[0].success:
                report.cancelled_external.append(vo.order_id)
                await self.storage.append_journal(
                    "order.external_cancelled", {"venue_order_id": vo.order_id, "product_id": vo.product_id}, at=self._clock()
                )
                log.warning("external_order_cancelled", venue_order_id=vo.order_id, product_id=vo.product_id)
            else:
                reason = results[0].failure_reason if results else "no result"
                report.problems.append(f"external order {vo.order_id} ({vo.product_id}) could not be cancelled: {reason}")
            return None
        try:
            spec = vo.to_spec()
        except (InvalidValue, CryptojError) as exc:
            report.problems.append(f"venue order {vo.order_id} ({vo.product_id}) cannot be adopted: {exc}")
            return None
        coid = spec.client_order_id
        if coid in self._orders:  # the id is ours but the venue id differs: that is a conflict
            report.problems.append(f"venue order {vo.order_id} reuses our client_order_id {coid}")
            return None
        now = self._clock()
        order = Order(spec=spec, external=True, created_at=vo.created_time or now, updated_at=now)
        order.transition(_S.SUBMITTED, at=now)
        order.venue_order_id = vo.order_id
        self._remember(order)
        await self._persist(order, "order.adopted", venue_status=vo.venue_status)
        async with self._lock(coid):
            report.problems.extend(await self._apply_venue_order(order, vo, source="adopt"))
        report.adopted.append(coid)
        log.warning("external_order_adopted", client_order_id=coid, venue_order_id=vo.order_id, product_id=vo.product_id)
        return coid

    # -- cancel / replace -------------------------------------------------------------------------

    def _known(self, client_order_id: str) -> Order:
        order = self._orders.get(client_order_id)
        if order is None:
            raise OrderNotFound(f"no order with client_order_id={client_order_id} in this order manager")
        return order

    async def _prepare_cancel(self, order: Order) -> bool:
        """Make sure the order has a venue id and mark it CANCEL_PENDING (lock held). False: nothing to cancel."""
        if order.is_terminal:
            return False
        if order.status in _UNSENT and not order.venue_order_id:
            resolved = await self._resolve(order, attempts=1, resend=False)
            if not resolved:
                # the venue has no such order: it was never placed, so it never will be by us
                await self._reject_unsent(order, "CANCELLED_BEFORE_PLACED")
                return False
            if order.is_terminal:
                return False
        if order.status in _CANCELLABLE and order.status is not _S.CANCEL_PENDING:
            order.transition(_S.CANCEL_PENDING, at=self._clock())
            await self._persist(order, "order.cancel_requested")
            self._publish(order)
        return order.status is _S.CANCEL_PENDING

    async def _reject_unsent(self, order: Order, reason: str) -> None:
        order.transition(_S.REJECTED, at=self._clock(), reason=reason)
        await self._persist(order, "order.abandoned", reason=reason)
        self._publish(order)

    async def _finish_cancel(self, order: Order, success: bool, failure: str | None) -> None:
        """Apply one cancel result (lock held): success is the venue's confirmation; otherwise ask why."""
        if success:
            if not order.is_terminal:
                order.transition(_S.CANCELLED, at=self._clock())
                self.stats["cancels"] += 1
                await self._persist(order, "order.cancelled")
                self._publish(order)
            return
        assert order.venue_order_id is not None
        vo = await self.venue.get_order(order.venue_order_id)
        await self._apply_venue_order(order, vo, source="cancel", keep_cancel_pending=False)
        log.info("cancel_refused", client_order_id=order.client_order_id, reason=failure, status=order.status.value)

    async def cancel(self, client_order_id: str) -> Order:
        """Cancel one order; returns its snapshot (CANCELLED, or what the venue says it became)."""
        order = self._known(client_order_id)
        async with self._lock(client_order_id):
            if not await self._prepare_cancel(order):
                return _copy(order)
            assert order.venue_order_id is not None
            results = await self.venue.cancel_orders([order.venue_order_id])
            result = next((r for r in results if r.order_id == order.venue_order_id), None)
            await self._finish_cancel(order, bool(result and result.success), result.failure_reason if result else None)
            return _copy(order)

    async def cancel_all(self, product_id: str | None = None) -> list[Order]:
        """Cancel every active order (ours and venue open orders we did not know, which are adopted first).

        One batch request. Returns snapshots of every order it acted on.
        """
        for vo in await self.venue.open_orders(product_id):
            if vo.order_id not in self._by_venue_id and (vo.client_order_id or "") not in self._orders:
                await self._load_or_adopt(vo.order_id, vo.client_order_id)
        targets = [
            o for o in list(self._orders.values()) if not o.is_terminal and (product_id is None or o.product_id == product_id)
        ]
        pending: list[Order] = []
        async with self._batched():  # every CANCEL_PENDING stored in one transaction, before the request
            for order in targets:
                async with self._lock(order.client_order_id):
                    if await self._prepare_cancel(order):
                        pending.append(order)
        by_vid = {o.venue_order_id: o for o in pending if o.venue_order_id}
        results = await self.venue.cancel_orders(list(by_vid)) if by_vid else []
        seen: set[str] = set()
        async with self._batched():
            for result in results:
                target = by_vid.get(result.order_id)
                if target is None:
                    continue
                seen.add(result.order_id)
                async with self._lock(target.client_order_id):
                    await self._finish_cancel(target, result.success, result.failure_reason)
        for vid, order in by_vid.items():
            if vid not in seen:  # the venue returned no result for it: ask
                async with self._lock(order.client_order_id):
                    await self._finish_cancel(order, False, "no result")
        return [_copy(o) for o in targets]

    async def replace(
        self,
        client_order_id: str,
        *,
        price: Decimal | None = None,
        size: Decimal | None = None,
        new_client_order_id: str | None = None,
    ) -> Order:
        """Cancel ``client_order_id`` and place the same order with a new price and/or size under a new id.

        ``size`` defaults to what was left unfilled; the new id to :meth:`new_client_order_id`.
        Raises ``OrderRejected(REPLACE_NOT_CANCELLED)`` when the original could not be cancelled
        (e.g. it filled first).
        """
        old = self._known(client_order_id)
        if old.spec.kind is OrderKind.MARKET:
            raise InvalidValue(f"order {client_order_id}.kind", "MARKET", "market orders cannot be replaced")
        if price is None and size is None:
            raise InvalidValue(f"replace {client_order_id}", None, "give a new price and/or size")
        cancelled = await self.cancel(client_order_id)
        if cancelled.status is not _S.CANCELLED:
            raise OrderRejected(
                "REPLACE_NOT_CANCELLED",
                f"original is {cancelled.status.value}, not cancelled",
                client_order_id=client_order_id,
            )
        new_size = size if size is not None else cancelled.remaining_size
        if new_size is None or new_size <= 0:
            raise OrderRejected("REPLACE_NOTHING_LEFT", "nothing left to place", client_order_id=client_order_id)
        spec = dataclasses.replace(
            old.spec,
            client_order_id=new_client_order_id or self.new_client_order_id(),
            base_size=new_size,
            limit_price=price if price is not None else old.spec.limit_price,
        )
        await self.storage.append_journal(
            "order.replace", {"old": client_order_id, "new": spec.client_order_id}, at=self._clock()
        )
        return await self.submit(spec)

    # -- fills sync, polling, resync ------------------------------------------------------------------

    async def sync_fills(self, since: datetime | None = None) -> int:
        """Confirm fills against REST (since ``since``; default: see :meth:`_fill_window`).

        Applies any the storage lacks (dedup by trade id); returns how many were new.
        """
        if since is None:
            since = await self._fill_window()
            if since is None:
                return 0
        report = ReconciliationReport(started_at=self._clock())
        new = await self._sync_fills(since, report)
        for problem in report.problems:
            log.error("fill_sync_problem", problem=problem)
        return new

    async def _fill_window(self) -> datetime | None:
        """Where fill checks start: the newest stored fill, else the oldest order we hold, minus the lookback.

        None when there is neither (nothing of ours can have filled): the account's whole
        history is never pulled in and adopted.
        """
        start = await self.storage.last_fill_time(self.venue.name)
        if start is None:
            created = [o.created_at for o in self._orders.values() if o.created_at is not None]
            if not created:
                return None
            start = min(created)
        return start - timedelta(seconds=self.config.fill_lookback_seconds)

    async def _sync_fills(self, since: datetime | None, report: ReconciliationReport) -> int:
        before = self.stats["fills"]
        fills = await self.venue.fills(since=since)
        by_order: dict[str, list[Fill]] = {}
        for fill in fills:
            coid = fill.client_order_id if fill.client_order_id in self._orders else None
            if coid is None and fill.venue_order_id:
                coid = self._by_venue_id.get(fill.venue_order_id)
            if coid is None:
                stored = await self.storage.load_order(fill.client_order_id) if fill.client_order_id else None
                if stored is not None:
                    self._remember(stored)
                    coid = stored.client_order_id
                elif fill.venue_order_id:
                    vo = await self.venue.get_order(fill.venue_order_id)
                    stored = await self.storage.load_order(vo.client_order_id) if vo.client_order_id else None
                    if stored is not None:
                        self._remember(stored)
                        coid = stored.client_order_id
                    else:
                        coid = await self._adopt(vo, report)
            if coid is None:
                report.problems.append(f"fill {fill.trade_id} (venue order {fill.venue_order_id}) belongs to no order we track")
                continue
            by_order.setdefault(coid, []).append(fill)
        for coid, order_fills in by_order.items():
            order = self._orders[coid]
            async with self._lock(coid):
                await self._apply_fills(order, order_fills, "fill_check")
        new = self.stats["fills"] - before  # adopted orders bring their fills in too
        report.fills_recovered += new
        return new

    async def poll(self) -> None:
        """One REST pass over active orders (the fallback while the user stream is down).

        Also retries IN_FLIGHT_UNKNOWN resolution and fill gaps the stream showed.
        """
        self.stats["polls"] += 1
        candidates = [
            o for o in self._orders.values() if o.is_active or o.status is _S.NEW or o.client_order_id in self._fill_gaps
        ]
        for order in candidates:
            coid = order.client_order_id
            wanted = not self._stream_up or order.status in (_S.IN_FLIGHT_UNKNOWN, _S.NEW) or coid in self._fill_gaps
            if not wanted or self._lock(coid).locked():  # locked: a submit/cancel is working on it right now
                continue
            try:
                async with self._lock(coid):
                    if order.venue_order_id:
                        vo = await self.venue.get_order(order.venue_order_id)
                        for problem in await self._apply_venue_order(order, vo, source="poll"):
                            log.warning("poll_disagreement", client_order_id=coid, problem=problem)
                        if vo.filled_size == order.filled_size:
                            self._fill_gaps.discard(coid)
                    elif order.status is _S.IN_FLIGHT_UNKNOWN:
                        await self._resolve(order, attempts=1)
                    elif order.status is _S.NEW:  # its submit was interrupted (cancelled) before any answer
                        report = ReconciliationReport(started_at=self._clock())
                        await self._settle_unsent(order, report)
                        for problem in report.problems:
                            log.warning("poll_disagreement", client_order_id=coid, problem=problem)
            except (VenueError, DataError) as exc:
                self.stats["errors"] += 1
                log.warning("poll_failed", client_order_id=coid, error=str(exc))

    async def _resync(self, reason: str) -> None:
        self.stats["resyncs"] += 1
        await self.storage.append_journal("order.resync", {"reason": reason}, at=self._clock())
        up = self._stream_up
        self._stream_up = False  # poll() refreshes every active order when the stream is not trusted
        try:
            await self.poll()
        finally:
            self._stream_up = up
        await self.sync_fills()

    async def _stream_loop(self) -> None:
        while not self._closed:
            async for item in self.venue.user_updates():
                try:
                    if isinstance(item, UserStreamConnected):
                        self._stream_up = True
                        if item.reconnect:
                            await self._resync("user stream reconnected")
                    elif isinstance(item, UserStreamDown):
                        if self._stream_up or self.stats["stream_downs"] == 0:
                            log.warning("user_stream_down", reason=item.reason)
                        self._stream_up = False
                        self.stats["stream_downs"] += 1
                    else:
                        await self.process_update(item)
                except CryptojError as exc:
                    self.stats["errors"] += 1
                    log.error("user_update_failed", error=str(exc))
            self._stream_up = False
            if self._closed:
                return
            await self._sleep(self.config.poll_interval_seconds)

    async def _poll_loop(self) -> None:
        while not self._closed:
            await self._sleep(self.config.poll_interval_seconds)
            try:
                await self.poll()
            except CryptojError as exc:  # storage trouble: keep trying
                self.stats["errors"] += 1
                log.error("poll_loop_error", error=str(exc))

    async def _fill_check_loop(self) -> None:
        while not self._closed:
            await self._sleep(self.config.fill_check_interval_seconds)
            try:
                await self.sync_fills()
            except CryptojError as exc:
                self.stats["errors"] += 1
                log.error("fill_check_failed", error=str(exc))

    # -- reconciliation -------------------------------------------------------------------------------

    async def reconcile(self) -> ReconciliationReport:
        """Compare storage with the venue and bring storage up to date (see the module doc)."""
        report = ReconciliationReport(started_at=self._clock())
        try:
            await self._reconcile(report)
        except (VenueError, DataError) as exc:
            report.problems.append(f"venue error during reconciliation: {exc}")
        self.last_reconciliation = report
        payload = report.as_dict()
        if report.ok:
            self.halted_reason = None
            await self.storage.append_journal("reconcile.ok", payload, at=self._clock())
            log.info("reconciliation_ok", summary=report.summary())
            return report
        self.halted_reason = report.summary()
        async with self.storage.transaction():
            current = await self.storage.get_trading_state()
            if current is None or current.state != "HALTED":  # an existing HALTED record (a kill's) is kept as it is
                await self.storage.set_trading_state(
                    "HALTED",
                    f"reconciliation failed: {'; '.join(report.problems)}",
                    emergency={"source": "reconciliation", "report": payload},
                    at=self._clock(),
                )
            await self.storage.append_journal("reconcile.failed", payload, at=self._clock())
        log.error("reconciliation_failed", summary=report.summary())
        if self._on_halt is not None:
            result = self._on_halt(report)
            if result is not None:
                await result
        return report

    async def _settle_unsent(self, order: Order, report: ReconciliationReport) -> bool:
        """An order with no venue id whose send is not in progress (lock held): find it, or apply ``unsent_on_restart``.

        False when it was abandoned (stored REJECTED ``NOT_SENT``).
        """
        coid = order.client_order_id
        found = await self.venue.find_order(coid, product_id=order.product_id)
        if found is not None:
            report.problems.extend(await self._apply_venue_order(order, found, source="reconcile"))
            return True
        if self.config.unsent_on_restart == "abandon":
            await self._reject_unsent(order, "NOT_SENT")
            report.abandoned.append(coid)
            return False
        if order.status is _S.NEW:
            order.transition(_S.IN_FLIGHT_UNKNOWN, at=self._clock())
        if await self._resolve(order, attempts=self.config.resolve_attempts):
            report.resent.append(coid)
            if order.venue_order_id and not order.is_terminal:
                vo = await self.venue.get_order(order.venue_order_id)
                report.problems.extend(await self._apply_venue_order(order, vo, source="reconcile"))
        else:
            report.problems.append(f"order {coid}: re-sent after restart, still {order.status.value}")
        return True

    async def _reconcile(self, report: ReconciliationReport) -> None:
        for order in await self.storage.open_orders():
            if order.client_order_id not in self._orders:
                self._remember(order)
        venue_open = await self.venue.open_orders()
        report.venue_open_orders = len(venue_open)
        open_by_vid = {vo.order_id: vo for vo in venue_open}
        # 1. every stored active order against the venue
        for order in [o for o in self._orders.values() if not o.is_terminal]:
            coid = order.client_order_id
            async with self._lock(coid):
                before = (order.status, order.filled_size)
                if order.venue_order_id:
                    vo = open_by_vid.get(order.venue_order_id)
                    if vo is None:
                        try:
                            vo = await self.venue.get_order(order.venue_order_id)
                        except OrderNotFound:
                            report.problems.append(
                                f"order {coid} is stored {order.status.value} with venue id {order.venue_order_id}, "
                                "but the venue does not know that id"
                            )
                            continue
                    report.problems.extend(await self._apply_venue_order(order, vo, source="reconcile"))
                elif not await self._settle_unsent(order, report):
                    continue
                if (order.status, order.filled_size) != before:
                    report.updated.append(coid)
        # 2. venue open orders storage does not know
        for vo in venue_open:
            if vo.order_id in self._by_venue_id:
                continue
            cid = vo.client_order_id or ""
            stored = await self.storage.load_order(cid) if cid else None
            if stored is not None:
                self._remember(stored)
                self._set_venue_id(stored, vo.order_id)
                async with self._lock(cid):
                    report.problems.extend(await self._apply_venue_order(stored, vo, source="reconcile"))
                report.updated.append(cid)
                continue
            await self._adopt(vo, report)
        # 3. fills since the last one we stored
        since = await self._fill_window()
        if since is not None:
            await self._sync_fills(since, report)
        # 4. storage must now agree with the venue on every order still open there
        for vo in venue_open:
            coid_or_none = self._by_venue_id.get(vo.order_id)
            if coid_or_none is None:
                if vo.order_id not in report.cancelled_external:
                    report.problems.append(f"venue open order {vo.order_id} is not tracked")
                continue
            tracked = self._orders[coid_or_none]
            if tracked.is_terminal and vo.order_id not in report.cancelled_external:
                report.problems.append(
                    f"order {coid_or_none} is {tracked.status.value} here but open at the venue ({vo.venue_status})"
                )
        # 5. balances: snapshot what the venue holds now, noting what changed since the last snapshot
        balances = dict(await self.venue.balances())
        report.balances = balances
        previous = await self.storage.latest_balances()
        for currency in sorted(set(previous) | set(balances)):
            total_before = previous[currency].available + previous[currency].hold if currency in previous else ZERO
            total_now = balances[currency].available + balances[currency].hold if currency in balances else ZERO
            if total_before != total_now:
                report.balance_changes[currency] = (total_before, total_now)
        if balances:
            await self.storage.save_balances(
                {c: BalanceSnapshot(b.available, b.hold) for c, b in balances.items()}, at=self._clock()
            )

    # -- daily statistics ------------------------------------------------------------------------------

    async def daily_stats(self, day: date | None = None) -> DailyStats:
        """Statistics of one UTC day (default: today by the manager's clock) from the stored fills."""
        day = day or self._clock().astimezone(UTC).date()
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        fills: list[Fill] = []
        for order in await self.storage.all_orders():
            fills.extend(order.fills.values())
        fills.sort(key=lambda f: (f.time, f.trade_id))
        positions: dict[str, Position] = {}
        stats = DailyStats(day=day)
        for fill in fills:
            if fill.time >= end:
                break
            pos = positions.get(fill.product_id)
            if pos is None:
                base, _, quote = fill.product_id.partition("-")
                pos = Position(fill.product_id, base, quote)
            after = pos.with_fill(fill.side, fill.price, fill.size, fill.fee)
            positions[fill.product_id] = after
            if fill.time < start:
                continue
            ps = stats.products.setdefault(fill.product_id, ProductDayStats())
            ps.trades += 1
            ps.volume += fill.notional
            ps.fees += fill.fee
            pnl = after.realised_pnl - pos.realised_pnl
            ps.realised_pnl += pnl
            if fill.side is Side.SELL and pos.quantity > 0:
                if pnl > 0:
                    ps.wins += 1
                else:
                    ps.losses += 1
        for ps in stats.products.values():
            stats.total.add(ps)
        return stats


