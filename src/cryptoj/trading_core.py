"""The trading engine: one kernel for every mode (sim, paper, live, and backtest through the same hooks).

:class:`Engine` owns the clock, the market data service, the order manager, the
risk engine, the emergency manager (when given), the portfolio and the
strategies. Modes differ only in the venue and the clock (see
``docs/integration-patterns.md``):

* ``sim``   — :class:`~cryptoj.venues.coinbase.venue.CoinbaseVenue` against the simulator on loopback;
* ``paper`` — :class:`~cryptoj.venues.paper.PaperVenue` (public market data, our matching engine);
* ``live``  — :class:`~cryptoj.venues.coinbase.venue.CoinbaseVenue` against Coinbase, reconciliation first;
* ``backtest`` — a venue implementing :class:`~cryptoj.venues.base.Venue` plus a
  :class:`SimulatedClock`; the runner calls :meth:`Engine.dispatch` /
  :meth:`Engine.fire_timers` itself, synchronously, bar by bar.

Dispatch is deterministic: every event goes through :meth:`Engine.dispatch`, which
updates the engine's own state first (portfolio, risk equity, protective exits)
and then calls the strategies **in the order they were added**, one callback at a
time. Callbacks are synchronous; a strategy's ``submit`` returns its
``client_order_id`` at once and the order is risk-checked and sent by a task the
engine owns (sends start in submission order). A callback that raises is logged
and counted (``stats.strategy_errors``); the engine keeps running.

Shutdown (:meth:`Engine.stop`, also on SIGINT/SIGTERM via :meth:`Engine.run`):
strategies get ``on_stop``, in-flight sends finish, open orders are cancelled or
left (``cancel_on_shutdown``), balances/positions and the trading state are
persisted, every task is cancelled and every connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Protocol

import structlog

from cryptoj.alerts import AlertSink, AlertWatch
from cryptoj.config import AppConfig, load_api_key
from cryptoj.emergency_manager import AlertHook, EmergencyManager, venue_failures
from cryptoj.errors import (
    ConfigError,
    CryptojError,
    InvalidValue,
    OrderRejected,
    RiskRejected,
    TradingHalted,
    VenueError,
)
from cryptoj.market_data import (
    BookReady,
    BookResync,
    BookUpdated,
    CandleClosed,
    DataFresh,
    Lagged,
    MarketDataConfig,
    MarketDataService,
    StaleData,
    rest_candle_fetcher,
)
from cryptoj.model.book import OrderBook
from cryptoj.model.candles import Candle, Timeframe
from cryptoj.model.events import MarketTrade, TickerEvent
from cryptoj.model.instruments import Product
from cryptoj.model.money import ZERO, Side
from cryptoj.model.orders import Fill, Order, OrderKind, OrderSpec, OrderStatus
from cryptoj.model.positions import Balance, Portfolio, Position
from cryptoj.order_execution import OrderManager, ReconciliationReport
from cryptoj.risk_management import ProtectiveExits, RiskEngine, TradingState
from cryptoj.storage import Storage
from cryptoj.storage.store import BalanceSnapshot, PositionSnapshot
from cryptoj.strategy import Strategy, StrategyLog
from cryptoj.venues.base import Venue
from cryptoj.venues.coinbase.auth import CdpKey, from_api_key
from cryptoj.venues.coinbase.protocol import parse_envelope
from cryptoj.venues.coinbase.rest import CoinbaseRestClient
from cryptoj.venues.coinbase.venue import CoinbaseVenue
from cryptoj.venues.paper import PaperVenue
from cryptoj.venues.simulated.exchange import FeeTier as SimFeeTier
from cryptoj.websocket_handler import WebSocketHandler

__all__ = [
    "Clock",
    "Endpoints",
    "Engine",
    "EngineOptions",
    "EngineStats",
    "OrderManagerLike",
    "RealClock",
    "Runtime",
    "SimulatedClock",
    "StartupRefused",
    "Timers",
    "alert_watch",
    "build_runtime",
    "check_live_allowed",
    "endpoints_for",
    "signals_stop",
]

log = structlog.get_logger("cryptoj.engine")

ONE: Final = Decimal(1)
MARKET_EVENTS: Final[tuple[type, ...]] = (
    BookUpdated,
    MarketTrade,
    CandleClosed,
    TickerEvent,
    BookResync,
    BookReady,
    StaleData,
    DataFresh,
)


# --- clocks -------------------------------------------------------------------------------


class Clock(Protocol):
    """The engine's time: aware UTC ``now()``, a monotonic counter and a ``sleep``."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """Wall-clock time (``datetime.now(UTC)``), ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class SimulatedClock:
    """Time that moves only when told to (backtests, deterministic tests).

    ``sleep(s)`` returns once :meth:`advance` / :meth:`set` has moved the clock ``s``
    seconds past the moment it was called. ``monotonic()`` is seconds since ``start``.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise InvalidValue("SimulatedClock.start", start, "must be timezone-aware (UTC)")
        self._start = start.astimezone(UTC)
        self._now = self._start
        self._moved = asyncio.Condition() if _has_loop() else None

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return (self._now - self._start).total_seconds()

    def set(self, when: datetime) -> None:
        """Move to ``when`` (never backwards)."""
        if when.tzinfo is None:
            raise InvalidValue("SimulatedClock.set", when, "must be timezone-aware (UTC)")
        when = when.astimezone(UTC)
        if when < self._now:
            raise InvalidValue("SimulatedClock.set", when, f"time cannot go backwards (now {self._now.isoformat()})")
        self._now = when
        cond = self._moved
        if cond is not None and _has_loop():
            asyncio.get_running_loop().create_task(self._notify(cond))

    def advance(self, seconds: float) -> datetime:
        """Move forward ``seconds``; returns the new time."""
        if seconds < 0:
            raise InvalidValue("SimulatedClock.advance", seconds, "must be >= 0")
        self.set(self._now + timedelta(seconds=seconds))
        return self._now

    @staticmethod
    async def _notify(cond: asyncio.Condition) -> None:
        async with cond:
            cond.notify_all()

    async def sleep(self, seconds: float) -> None:
        target = self._now + timedelta(seconds=max(0.0, seconds))
        if self._moved is None:
            self._moved = asyncio.Condition()
        cond = self._moved
        async with cond:
            await cond.wait_for(lambda: self._now >= target)


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# --- timers ----------------------------------------------------------------------------------


class Timers:
    """Named repeating timers, fired in a deterministic order (due time, then insertion order).

    Keys are any hashable (the engine uses ``(strategy_index, name)``). A timer set
    at ``now`` with interval ``i`` first fires at ``now + i``; after firing it is
    due again one interval after its previous due time (no drift), skipping
    whole intervals that were missed.
    """

    def __init__(self) -> None:
        self._timers: dict[Any, tuple[timedelta, datetime, int]] = {}
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._timers)

    def set(self, key: Any, interval: timedelta | None, now: datetime) -> None:
        if interval is None:
            self._timers.pop(key, None)
            return
        if interval <= timedelta(0):
            raise InvalidValue(f"timer {key!r}.interval", interval, "must be positive")
        self._timers[key] = (interval, now + interval, next(self._order))

    def next_due(self) -> datetime | None:
        return min((due for _, due, _ in self._timers.values()), default=None)

    def due(self, now: datetime) -> list[tuple[Any, datetime]]:
        """The timers due at ``now`` as ``(key, due_time)``, in firing order; each is re-armed."""
        fired = sorted(((due, seq, key) for key, (_, due, seq) in self._timers.items() if due <= now), key=lambda t: t[:2])
        out: list[tuple[Any, datetime]] = []
        for due, _, key in fired:
            interval, _, seq = self._timers[key]
            missed = (now - due) // interval
            self._timers[key] = (interval, due + interval * (missed + 1), seq)
            out.append((key, due))
        return out


# --- what the engine needs from the order manager ----------------------------------------------


class OrderUpdateLike(Protocol):
    @property
    def order(self) -> Order: ...

    @property
    def fill(self) -> Fill | None: ...


class OrderManagerLike(Protocol):
    """The part of :class:`cryptoj.order_execution.OrderManager` the engine uses."""

    async def submit(self, spec: OrderSpec) -> Order: ...

    async def cancel(self, client_order_id: str) -> Order: ...

    async def cancel_all(self, product_id: str | None = None) -> list[Order]: ...

    def order(self, client_order_id: str) -> Order | None: ...

    def open_orders(self, product_id: str | None = None) -> list[Order]: ...

    def updates(self) -> AsyncIterator[Any]: ...


# --- options and statistics ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine behaves (the ``[engine]`` config section maps onto this)."""

    quote_currency: str = "USD"
    cancel_on_shutdown: bool = True
    """Cancel every open order at shutdown (else leave them resting; the next start reconciles)."""
    equity_interval_s: float = 1.0
    """How often equity is valued and fed to the risk engine (and snapshots taken)."""
    client_order_prefix: str = "cj"
    shutdown_timeout_s: float = 30.0
    """Longest wait for in-flight sends and cancels at shutdown."""

    def __post_init__(self) -> None:
        problems = []
        if self.equity_interval_s <= 0:
            problems.append(("engine.equity_interval_s", f"must be > 0, got {self.equity_interval_s}"))
        if self.shutdown_timeout_s <= 0:
            problems.append(("engine.shutdown_timeout_s", f"must be > 0, got {self.shutdown_timeout_s}"))
        if not self.quote_currency:
            problems.append(("engine.quote_currency", "required"))
        if problems:
            from cryptoj.errors import ConfigError

            raise ConfigError(problems)


@dataclass(slots=True)
class EngineStats:
    """Counters for the panel, the summary and metrics."""

    events: int = 0
    books: int = 0
    trades: int = 0
    bars: int = 0
    timers: int = 0
    orders_submitted: int = 0
    orders_sent: int = 0
    risk_rejects: Counter[str] = field(default_factory=Counter)
    venue_rejects: Counter[str] = field(default_factory=Counter)
    send_errors: int = 0
    cancels: int = 0
    fills: int = 0
    fees: Decimal = ZERO
    traded_notional: Decimal = ZERO
    strategy_errors: int = 0
    book_resyncs: int = 0
    stale_events: int = 0
    lagged_events: int = 0
    start_equity: Decimal | None = None
    equity: Decimal | None = None
    peak_equity: Decimal | None = None
    max_drawdown: Decimal = ZERO
    """Largest fall from a peak, as a fraction of that peak."""
    max_drawdown_quote: Decimal = ZERO

    @property
    def rejects(self) -> int:
        return sum(self.risk_rejects.values()) + sum(self.venue_rejects.values())

    def observe_equity(self, equity: Decimal) -> None:
        if self.start_equity is None:
            self.start_equity = equity
        self.equity = equity
        if self.peak_equity is None or equity > self.peak_equity:
            self.peak_equity = equity
        peak = self.peak_equity
        if peak > 0:
            fall = peak - equity
            if fall > self.max_drawdown_quote:
                self.max_drawdown_quote = fall
            fraction = fall / peak
            if fraction > self.max_drawdown:
                self.max_drawdown = fraction


# --- the per-strategy context ------------------------------------------------------------------


class _Context:
    """A strategy's view of the engine (implements :class:`cryptoj.strategy.StrategyContext`)."""

    __slots__ = ("_engine", "_index", "log", "strategy")

    def __init__(self, engine: Engine, index: int, strategy: Strategy) -> None:
        self._engine = engine
        self._index = index
        self.strategy = strategy
        self.log: StrategyLog = log.bind(strategy=strategy.name)

    def now(self) -> datetime:
        return self._engine.clock.now()

    def new_client_order_id(self) -> str:
        return self._engine.new_client_order_id()

    def submit(self, spec: OrderSpec) -> str:
        return self._engine.submit(spec, owner=self._index)

    def cancel(self, client_order_id: str) -> None:
        self._engine.cancel(client_order_id)

    def position(self, product_id: str) -> Position | None:
        return self._engine.portfolio.position(product_id)

    def balance(self, currency: str) -> Balance:
        return self._engine.balance(currency)

    def equity(self) -> Decimal:
        return self._engine.equity()

    def candles(self, product_id: str, timeframe: Timeframe, n: int) -> Sequence[Candle]:
        return self._engine.market_data.candles(product_id, timeframe)[-n:]

    def product(self, product_id: str) -> Product:
        product = self._engine.products.get(product_id)
        if product is None:
            raise InvalidValue("product_id", product_id, f"not traded by this engine (have {sorted(self._engine.products)})")
        return product

    def book(self, product_id: str) -> OrderBook | None:
        return self._engine.market_data.book(product_id)

    def open_orders(self, product_id: str | None = None) -> Sequence[Order]:
        engine = self._engine
        return [o for o in engine.order_manager.open_orders(product_id) if engine.owner_of(o.client_order_id) == self._index]

    def set_timer(self, name: str, interval: timedelta | None) -> None:
        self._engine.set_timer((self._index, name), interval)


@dataclass(slots=True)
class _Slot:
    strategy: Strategy
    ctx: _Context
    on_book: bool
    on_trade: bool
    on_bar: bool
    on_fill: bool
    on_timer: bool


# --- the engine --------------------------------------------------------------------------------


class Engine:
    """Wires the services together and runs the strategies (see the module doc).

    The engine implements :class:`cryptoj.risk_management.RiskContext` (``product``,
    ``mid_price``, ``data_age``, ``position_size``, ``balance``, ``open_orders``,
    ``fee_rate``, ``product_ids``). ``order_manager_factory`` builds the order
    manager once the engine exists (its ``pre_trade`` hook is usually the risk
    engine's ``check``, and the risk engine reads the engine). ``venue_reconnects``
    reports how many times the venue's streams reconnected (for the summary).
    """

    def __init__(
        self,
        *,
        mode: str,
        clock: Clock,
        market_data: MarketDataService,
        products: Mapping[str, Product],
        strategies: Sequence[Strategy] = (),
        options: EngineOptions | None = None,
        fee_rate: Decimal = Decimal("0.006"),
    ) -> None:
        self.mode = mode
        self.clock = clock
        self.market_data = market_data
        self.products: dict[str, Product] = dict(products)
        self.options = options or EngineOptions()
        self.taker_fee_rate = fee_rate
        self.portfolio = Portfolio()
        self.stats = EngineStats()
        self.timers = Timers()
        self._slots: list[_Slot] = []
        self._owners: dict[str, int] = {}
        self._order_manager: OrderManagerLike | None = None
        self.risk: Any = None
        self.exits: Any = None
        self.emergency: Any = None
        self.storage: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._timer_wakeup = asyncio.Event()
        self._started = False
        self._stopped = False
        self._halting = False
        self._submitted: set[str] = set()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._stop_requested = asyncio.Event()
        self._reported_rejections: dict[str, bool] = {}
        self.stop_reason: str | None = None
        self._ids = itertools.count(1)
        self._id_base = uuid.uuid4().hex[:8]
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.extra_stats: dict[str, Callable[[], int]] = {}
        for strategy in strategies:
            self.add_strategy(strategy)

    # -- wiring ----------------------------------------------------------------------------

    @property
    def order_manager(self) -> OrderManagerLike:
        om = self._order_manager
        if om is None:
            raise InvalidValue("engine.order_manager", None, "not attached: call attach(order_manager=...) before start()")
        return om

    def attach(
        self,
        *,
        order_manager: OrderManagerLike,
        risk: Any = None,
        exits: Any = None,
        emergency: Any = None,
        storage: Any = None,
    ) -> None:
        """Attach the services (the order manager is required; the others are optional)."""
        self._order_manager = order_manager
        self.risk = risk
        self.exits = exits
        self.emergency = emergency
        self.storage = storage

    def add_strategy(self, strategy: Strategy) -> None:
        if self._started:
            raise InvalidValue("engine.strategies", strategy.name, "strategies are added before start()")
        unknown = [p for p in strategy.products if p not in self.products]
        if unknown:
            raise InvalidValue(
                f"strategy {strategy.name}.products", unknown, f"not traded by this engine (have {sorted(self.products)})"
            )
        index = len(self._slots)
        cls = type(strategy)
        self._slots.append(
            _Slot(
                strategy=strategy,
                ctx=_Context(self, index, strategy),
                on_book=cls.handles("on_book"),
                on_trade=cls.handles("on_trade"),
                on_bar=cls.handles("on_bar"),
                on_fill=cls.handles("on_fill"),
                on_timer=cls.handles("on_timer"),
            )
        )

    @property
    def strategies(self) -> list[Strategy]:
        return [s.strategy for s in self._slots]

    def owner_of(self, client_order_id: str) -> int | None:
        return self._owners.get(client_order_id)

    # -- RiskContext --------------------------------------------------------------------------

    def product(self, product_id: str) -> Product | None:
        return self.products.get(product_id)

    def product_ids(self) -> Sequence[str]:
        return list(self.products)

    def mid_price(self, product_id: str) -> Decimal | None:
        if product_id not in self.products:
            return None
        book = self.market_data.book(product_id)
        if book is not None:
            mid = book.mid()
            if mid is not None:
                return mid
        return self.market_data.last_price(product_id)

    def data_age(self, product_id: str) -> float | None:
        if product_id not in self.products:
            return None
        return self.market_data.data_age(product_id)

    def position_size(self, product_id: str) -> Decimal:
        pos = self.portfolio.position(product_id)
        return ZERO if pos is None else pos.quantity

    def fee_rate(self, product_id: str) -> Decimal:
        return self.taker_fee_rate

    def open_orders(self, product_id: str | None = None) -> Sequence[Order]:
        om = self.order_manager
        if isinstance(om, OrderManager):
            return om.live_orders(product_id)  # the risk engine reads them within one synchronous check: no copies
        return om.open_orders(product_id)

    def balance(self, currency: str) -> Balance:
        """``currency``'s total (from fills) split into what our open orders reserve (hold) and the rest."""
        total = self.portfolio.balance(currency).total
        held = ZERO
        for order in self.order_manager.open_orders():
            held += self._reserved(order, currency)
        held = min(held, max(total, ZERO))
        return Balance(currency, total - held, held)

    def _reserved(self, order: Order, currency: str) -> Decimal:
        product = self.products.get(order.product_id)
        if product is None:
            return ZERO
        spec = order.spec
        remaining = order.remaining_size
        if spec.side is Side.SELL:
            if currency != product.base_currency:
                return ZERO
            return remaining if remaining is not None else ZERO
        if currency != product.quote_currency:
            return ZERO
        if spec.quote_size is not None:
            return spec.quote_size - order.filled_value if order.filled_value < spec.quote_size else ZERO
        price = spec.limit_price if spec.kind is not OrderKind.MARKET else self.mid_price(order.product_id)
        if price is None or remaining is None:
            return ZERO
        return remaining * price * (ONE + self.taker_fee_rate)

    # -- valuation ----------------------------------------------------------------------------

    def prices(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for pid in self.products:
            price = self.mid_price(pid)
            if price is not None:
                out[pid] = price
        return out

    def equity(self) -> Decimal:
        """Account value in the quote currency at current mids; raises InvalidValue if a held currency has no price."""
        return self.portfolio.equity(self.prices(), self.options.quote_currency)

    def try_equity(self) -> Decimal | None:
        try:
            return self.equity()
        except InvalidValue:
            return None

    # -- strategy actions -----------------------------------------------------------------------

    def new_client_order_id(self) -> str:
        return f"{self.options.client_order_prefix}-{self._id_base}-{next(self._ids)}"

    def submit(self, spec: OrderSpec, *, owner: int | None = None) -> str:
        """Queue ``spec``: the risk checks and the send happen in a task the engine owns. Returns the client order id.

        Once the engine is stopping, nothing new is sent: the order is reported REJECTED (``ENGINE_STOPPING``).
        """
        if owner is not None:
            self._owners[spec.client_order_id] = owner
        self._submitted.add(spec.client_order_id)
        self.stats.orders_submitted += 1
        if self._halting:
            log.warning("engine_order_refused_stopping", client_order_id=spec.client_order_id, product_id=spec.product_id)
            self.stats.risk_rejects["ENGINE_STOPPING"] += 1
            return spec.client_order_id
        self._spawn_send(self._send(spec), client_order_id=spec.client_order_id)
        return spec.client_order_id

    def cancel(self, client_order_id: str) -> None:
        """Queue a cancel; if the order's own send has not finished yet, the cancel waits for it first."""
        self.stats.cancels += 1
        self._spawn_send(self._cancel(client_order_id))

    def _spawn_send(self, coro: Coroutine[Any, Any, None], *, client_order_id: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)
        if client_order_id is not None:
            self._inflight[client_order_id] = task
            task.add_done_callback(lambda _t: self._inflight.pop(client_order_id, None))

    async def _send(self, spec: OrderSpec) -> None:
        try:
            await self.order_manager.submit(spec)
            self.stats.orders_sent += 1
        except (RiskRejected, TradingHalted) as exc:
            reason = getattr(exc, "reason", "TRADING_HALTED")
            self.stats.risk_rejects[reason] += 1
            self._rejected(spec, reason)
        except OrderRejected as exc:
            self.stats.venue_rejects[exc.reason] += 1
            self._rejected(spec, exc.reason)
        except (VenueError, CryptojError) as exc:
            # the kill switch's error-rate trigger counts failed venue requests at the REST client
            # (emergency_manager.venue_failures, the number /healthz reads): not counted twice here
            self.stats.send_errors += 1
            log.error("engine_send_failed", client_order_id=spec.client_order_id, product_id=spec.product_id, error=str(exc))
            self._rejected(spec, type(exc).__name__)

    def _rejected(self, spec: OrderSpec, reason: str) -> None:
        """Tell the owning strategy its order was refused (as a REJECTED order), unless the order manager already did."""
        if self.exits is not None:
            self.exits.on_order_rejected(spec.client_order_id)  # a refused protective stop stops counting as protection
        known = self.order_manager.order(spec.client_order_id)
        if known is not None and known.status is OrderStatus.REJECTED:
            order = known
        elif known is not None:
            return  # the order manager tracks it (e.g. IN_FLIGHT_UNKNOWN); its updates will follow
        else:
            order = Order(spec=spec, created_at=self.clock.now())
            order.transition(OrderStatus.REJECTED, at=self.clock.now(), reason=reason)
        slot = self._slot_of(spec.client_order_id)
        if slot is not None and not self._reported_rejections.get(spec.client_order_id):
            self._reported_rejections[spec.client_order_id] = True
            self._call(slot, "on_order_update", slot.strategy.on_order_update, order)

    async def _cancel(self, client_order_id: str) -> None:
        sending = self._inflight.get(client_order_id)
        if sending is not None:  # cancelling an order still being sent: let the send finish, then cancel it
            await asyncio.wait({sending})
        try:
            await self.order_manager.cancel(client_order_id)
        except CryptojError as exc:
            log.warning("engine_cancel_failed", client_order_id=client_order_id, error=str(exc))

    def set_timer(self, key: Any, interval: timedelta | None) -> None:
        self.timers.set(key, interval, self.clock.now())
        self._timer_wakeup.set()

    # -- dispatch ---------------------------------------------------------------------------------

    def _slot_of(self, client_order_id: str) -> _Slot | None:
        index = self._owners.get(client_order_id)
        return None if index is None else self._slots[index]

    def _call(self, slot: _Slot, name: str, fn: Callable[..., None], *args: Any) -> None:
        if self._halting:
            return
        try:
            fn(*args)
        except Exception as exc:  # a strategy bug must not take the engine down
            self.stats.strategy_errors += 1
            log.exception("strategy_callback_failed", strategy=slot.strategy.name, callback=name, error=str(exc))

    def dispatch(self, event: object) -> None:
        """Handle one event: engine state first, then every interested strategy in order."""
        self.stats.events += 1
        kind = type(event)
        if kind is BookUpdated:
            self._on_book(event)  # type: ignore[arg-type]
        elif kind is MarketTrade:
            self._on_trade(event)  # type: ignore[arg-type]
        elif kind is CandleClosed:
            self._on_bar(event)  # type: ignore[arg-type]
        elif hasattr(event, "order") and hasattr(event, "fill"):
            self._on_order_update(event)
        elif kind is BookResync:
            self.stats.book_resyncs += 1
        elif kind is StaleData:
            self.stats.stale_events += 1
            em = self.emergency
            if em is not None:
                em.observe_data_age(event.product_id, event.age_s)  # type: ignore[attr-defined]
        elif kind is Lagged:
            self.stats.lagged_events += event.dropped  # type: ignore[attr-defined]
            log.warning("engine_lagged", dropped=event.dropped)  # type: ignore[attr-defined]

    def _on_book(self, event: BookUpdated) -> None:
        self.stats.books += 1
        pid = event.product_id
        exits = self.exits
        if exits is not None and exits.tracked(pid) is not None and event.best_bid is not None:
            self._run_exits(exits.on_price(pid, event.best_bid[0]))
        book = None
        for slot in self._slots:
            if slot.on_book and pid in slot.strategy.products:
                if book is None:
                    book = self.market_data.book(pid)
                    if book is None:
                        return
                self._call(slot, "on_book", slot.strategy.on_book, pid, book)

    def _on_trade(self, event: MarketTrade) -> None:
        self.stats.trades += 1
        pid = event.product_id
        em = self.emergency
        if em is not None:
            em.observe_price(pid, event.price, event.time)
        for slot in self._slots:
            if slot.on_trade and pid in slot.strategy.products:
                self._call(slot, "on_trade", slot.strategy.on_trade, pid, event)

    def _on_bar(self, event: CandleClosed) -> None:
        pid = event.product_id
        for slot in self._slots:
            if slot.on_bar and slot.strategy.timeframe is event.timeframe and pid in slot.strategy.products:
                self.stats.bars += 1
                self._call(slot, "on_bar", slot.strategy.on_bar, pid, event.candle)

    def _on_order_update(self, update: OrderUpdateLike) -> None:
        order = update.order
        fill = update.fill
        if fill is not None:
            self._apply_fill(fill)
        slot = self._slot_of(order.client_order_id)
        if slot is None:
            return
        if fill is not None and slot.on_fill:
            self._call(slot, "on_fill", slot.strategy.on_fill, fill)
        self._call(slot, "on_order_update", slot.strategy.on_order_update, order)

    def _apply_fill(self, fill: Fill) -> None:
        product = self.products.get(fill.product_id)
        if product is None:
            log.warning("engine_fill_unknown_product", product_id=fill.product_id, trade_id=fill.trade_id)
            return
        try:
            applied = self.portfolio.apply_fill(fill, product)
        except InvalidValue as exc:
            log.error("engine_fill_not_applied", trade_id=fill.trade_id, client_order_id=fill.client_order_id, error=str(exc))
            return
        if not applied:
            return
        self.stats.fills += 1
        self.stats.fees += fill.fee
        self.stats.traded_notional += fill.price * fill.size
        exits = self.exits
        if exits is not None:
            pos = self.portfolio.position(fill.product_id)
            if pos is not None:
                mid = self.mid_price(fill.product_id)
                self._run_exits(exits.on_position(fill.product_id, pos.quantity, pos.avg_entry_price, mid))

    def _run_exits(self, actions: Iterable[Any]) -> None:
        for action in actions:
            if action.cancel_client_order_id is not None:
                self.cancel(action.cancel_client_order_id)
            if action.spec is not None:
                log.info("engine_protective_exit", reason=action.reason, client_order_id=action.spec.client_order_id)
                risk = self.risk
                if risk is not None and hasattr(risk, "allow_exit"):
                    self._spawn_send(self._send_exit(action.spec), client_order_id=action.spec.client_order_id)
                else:
                    self.submit(action.spec)

    async def _send_exit(self, spec: OrderSpec) -> None:
        self._submitted.add(spec.client_order_id)
        self.stats.orders_submitted += 1
        with self.risk.allow_exit(spec.client_order_id):
            await self._send(spec)

    def fire_timers(self, now: datetime | None = None) -> int:
        """Fire every due timer (``now`` defaults to the clock); returns how many fired. Backtests call this directly."""
        now = now or self.clock.now()
        fired = self.timers.due(now)
        for (index, name), due in fired:
            if index == -1:
                name()  # an engine-internal timer
                continue
            slot = self._slots[index]
            self.stats.timers += 1
            self._call(slot, "on_timer", slot.strategy.on_timer, name, due)
        return len(fired)

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the order manager, seed the portfolio from the venue, start the strategies and the loops."""
        if self._started:
            return
        self._started = True
        om = self.order_manager
        loop = asyncio.get_running_loop()
        market = self.market_data.subscribe(MARKET_EVENTS)
        updates = om.updates()
        self._tasks.append(loop.create_task(self._pump(market), name="engine-market"))
        self._tasks.append(loop.create_task(self._pump(updates), name="engine-orders"))
        for slot in self._slots:
            slot.strategy.bind(slot.ctx)
            self._call(slot, "on_start", slot.strategy.on_start)
        self.timers.set((-1, self._value_equity), timedelta(seconds=self.options.equity_interval_s), self.clock.now())
        self._value_equity()
        self._tasks.append(loop.create_task(self._timer_loop(), name="engine-timers"))
        names = [s.strategy.name for s in self._slots]
        log.info("engine_started", mode=self.mode, products=list(self.products), strategies=names)

    def seed_portfolio(self, balances: Mapping[str, Any]) -> None:
        """Start the portfolio from the venue's balances (``available`` + ``hold`` of each currency)."""
        for currency, bal in balances.items():
            self.portfolio.set_balance(currency, bal.available + bal.hold)

    async def _pump(self, source: AsyncIterator[Any]) -> None:
        dispatch = self.dispatch
        async for event in source:
            dispatch(event)

    async def _timer_loop(self) -> None:
        while True:
            due = self.timers.next_due()
            self._timer_wakeup.clear()
            if due is None:
                await self._timer_wakeup.wait()
                continue
            delay = (due - self.clock.now()).total_seconds()
            if delay > 0:
                sleeper = asyncio.ensure_future(self.clock.sleep(delay))
                waker = asyncio.ensure_future(self._timer_wakeup.wait())
                try:
                    await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    waker.cancel()
                continue
            self.fire_timers()

    def _value_equity(self) -> None:
        equity = self.try_equity()
        if equity is None:
            return
        self.stats.observe_equity(equity)
        if self.emergency is not None:
            self.emergency.observe_equity(equity, self.clock.now())  # feeds the risk engine and the loss/drawdown triggers
        elif self.risk is not None:
            self.risk.on_equity(equity, self.clock.now())

    def request_stop(self, reason: str = "requested") -> None:
        """Ask :meth:`run` to stop (safe from a signal handler)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop_requested.set()

    async def wait_stopped(self) -> None:
        await self._stop_requested.wait()

    async def stop(self, reason: str | None = None, *, sync_fills: Callable[[], Awaitable[object]] | None = None) -> None:
        """Stop cleanly (see the module doc); ``sync_fills`` (the order manager's) confirms the last fills before the books close.

        Order: ``on_stop`` → no strategy callbacks and no new orders from here on → in-flight sends finish →
        open orders cancelled (``cancel_on_shutdown``) or left → the last updates reach the portfolio →
        ``sync_fills`` → any fill the order manager holds that the portfolio lacks is applied → equity valued →
        shutdown hooks → tasks cancelled.
        """
        if self._stopped:
            return
        self._stopped = True
        if reason is not None and self.stop_reason is None:
            self.stop_reason = reason
        log.info("engine_stopping", reason=self.stop_reason, cancel_open_orders=self.options.cancel_on_shutdown)
        if self._started:
            for slot in self._slots:
                self._call(slot, "on_stop", slot.strategy.on_stop)
        self._halting = True
        await self._drain_sends()
        om = self._order_manager
        if om is not None and self.options.cancel_on_shutdown:
            try:
                cancelled = await asyncio.wait_for(om.cancel_all(), timeout=self.options.shutdown_timeout_s)
                log.info("engine_cancelled_open_orders", count=len(cancelled))
            except (CryptojError, TimeoutError) as exc:
                log.error("engine_cancel_all_failed", error=str(exc))
        await self._settle()
        if sync_fills is not None:
            try:
                await asyncio.wait_for(sync_fills(), timeout=self.options.shutdown_timeout_s)
            except (CryptojError, TimeoutError) as exc:
                log.error("engine_final_fill_sync_failed", error=str(exc))
            await self._settle()
        self.catch_up_fills()
        self._value_equity()
        for hook in self.on_shutdown:
            try:
                await hook()
            except Exception as exc:
                log.exception("engine_shutdown_hook_failed", error=str(exc))
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stop_requested.set()
        log.info("engine_stopped", reason=self.stop_reason)

    def catch_up_fills(self) -> int:
        """Apply fills the order manager holds for our orders that the portfolio has not seen; returns how many."""
        om = self._order_manager
        if om is None:
            return 0
        applied = 0
        for coid in sorted(self._submitted):
            order = om.order(coid)
            if order is None:
                continue
            for fill in sorted(order.fills.values(), key=lambda f: (f.time, f.trade_id)):
                if not self.portfolio.seen(fill.trade_id):
                    self._apply_fill(fill)
                    applied += 1
        if applied:
            log.warning("engine_fills_caught_up", count=applied)
        return applied

    async def _drain_sends(self) -> None:
        if self._sends:
            await asyncio.wait(list(self._sends), timeout=self.options.shutdown_timeout_s)

    async def _settle(self) -> None:
        """Give the last order updates time to reach the portfolio (bounded: at most 2 s)."""
        om = self._order_manager
        deadline = time.monotonic() + min(2.0, self.options.shutdown_timeout_s)
        while om is not None and self.options.cancel_on_shutdown and om.open_orders() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        for _ in range(10):
            await asyncio.sleep(0)

    async def wait_for_stop(self, duration: float | None = None) -> str:
        """Wait for :meth:`request_stop` (or a signal), or until ``duration`` seconds pass; returns the reason."""
        if duration is None:
            await self._stop_requested.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), timeout=duration)
            self.request_stop("duration elapsed")
        return self.stop_reason or "stopped"

    async def run(self, *, duration: float | None = None, install_signal_handlers: bool = True) -> str:
        """Start, run until ``duration`` elapses, a signal (SIGINT/SIGTERM) or :meth:`request_stop`, then stop.

        Returns the stop reason.
        """
        with signals_stop(self, install_signal_handlers):
            await self.start()
            await self.wait_for_stop(duration)
            await self.stop()
        return self.stop_reason or "stopped"


@contextlib.contextmanager
def signals_stop(engine: Engine, install: bool = True) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM ask ``engine`` to stop (on platforms and threads that allow it)."""
    installed: list[signal.Signals] = []
    loop = asyncio.get_running_loop()
    if install:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, engine.request_stop, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not on the main thread / platform
                pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


# --- assembling an engine from the configuration ---------------------------------------------------


class StartupRefused(CryptojError):
    """The engine refused to start (live without confirmation or key, failed reconciliation, ...)."""


@dataclass(slots=True)
class Endpoints:
    """Where the venue lives for this run."""

    rest_base_url: str
    ws_market_url: str
    ws_user_url: str
    key_file: Path | None


def endpoints_for(config: AppConfig, mode: str, simulator: Any = None) -> Endpoints:
    """The URLs and key file for ``mode``: the in-process ``simulator`` when given, ``engine.sim_url``, or ``[exchange]``."""
    ex = config.exchange
    if mode == "sim":
        if simulator is not None:
            return Endpoints(simulator.base_url, simulator.ws_url, simulator.ws_user_url, simulator.key_file)
        base = config.engine.sim_url
        if base is None:
            raise StartupRefused("mode 'sim' needs a simulator: give engine.sim_url or let the runner start one in-process")
        ws = "ws" + base[4:] if base.startswith("http") else base
        return Endpoints(base, f"{ws}/ws", f"{ws}/ws/user", ex.key_file)
    return Endpoints(ex.rest_base_url, ex.ws_market_url, ex.ws_user_url, ex.key_file)


def check_live_allowed(config: AppConfig, *, confirm_live: bool) -> None:
    """Raise :class:`StartupRefused` unless live trading is confirmed and a valid key file is configured."""
    problems = []
    if not (confirm_live or config.live_confirmed):
        problems.append("live trading needs an explicit confirmation: pass --confirm-live or set live_confirmed = true")
    key_file = config.exchange.key_file
    if key_file is None:
        problems.append("live trading needs an API key file: set exchange.key_file to your CDP key JSON")
    else:
        try:
            load_api_key(key_file)
        except ConfigError as exc:
            problems.extend(f"exchange.key_file: {message}" for _, message in exc.problems)
    if problems:
        raise StartupRefused("refusing to start live trading:\n  " + "\n  ".join(problems))


@dataclass(slots=True)
class Runtime:
    """Every piece of one running engine, in the order they are closed by :meth:`close`."""

    config: AppConfig
    mode: str
    engine: Engine
    venue: Venue
    order_manager: OrderManager
    risk: RiskEngine
    emergency: EmergencyManager
    storage: Storage
    market_data: MarketDataService
    market_ws: WebSocketHandler
    rest: CoinbaseRestClient
    simulator: Any = None
    alerts: AlertSink | None = None
    """The runtime's own alert sink (None when ``build_runtime`` was given an ``alert`` hook)."""
    startup_report: ReconciliationReport | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _closed: bool = False
    _disconnected_since: float | None = None

    @property
    def reconnects(self) -> int:
        """Reconnections of the market WebSocket plus user-stream resyncs."""
        ws = max(0, self.market_ws.stats.connects - 1)
        return ws + self.order_manager.stats.get("resyncs", 0)

    async def wait_for_books(self, seconds: float) -> bool:
        """Wait until every product has a valid book (at most ``seconds``); True when they all do."""
        if seconds <= 0:
            return all(self.market_data.is_book_valid(p) for p in self.market_data.products)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if all(self.market_data.is_book_valid(p) for p in self.market_data.products):
                return True
            await asyncio.sleep(0.02)
        return False

    def _disconnected_for(self) -> dict[str, float]:
        if self.market_ws.connected:
            self._disconnected_since = None
            return {}
        now = time.monotonic()
        if self._disconnected_since is None:
            self._disconnected_since = now
        return {"market": now - self._disconnected_since}

    async def start(self) -> None:
        """Connect, reconcile (live refuses to start when it fails), seed the portfolio, start strategies.

        On failure everything opened so far is closed again before the error propagates.
        """
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        if self.alerts is not None:
            await self.alerts.start()
        self.market_ws.start()
        self.market_data.start(self.market_ws)
        if self.config.engine.backfill_candles > 0:
            await self.market_data.backfill()
        self.startup_report = await self.order_manager.start()
        report = self.startup_report
        if report is not None:
            await self.storage.append_journal("engine.reconciliation", report.as_dict())
            if not report.ok:
                self.emergency.observe_reconciliation(report)
                if self.mode == "live":
                    raise StartupRefused("refusing to trade live: startup reconciliation failed: " + report.summary())
                log.error("engine_reconciliation_failed", summary=report.summary())
        await self.emergency.restore()
        self.engine.seed_portfolio(await self.venue.balances())
        books = await self.wait_for_books(self.config.engine.wait_for_books_seconds)
        if not books:
            log.warning("engine_books_not_ready", waited_s=self.config.engine.wait_for_books_seconds)
        await self.engine.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.emergency.run(), name="emergency-watch"))
        if self.alerts is not None:
            self._tasks.append(loop.create_task(self._watch_alerts(alert_watch(self, self.alerts)), name="alert-watch"))
        await self.storage.append_journal("engine.started", {"mode": self.mode, "products": list(self.engine.products)})

    async def run(self, *, duration: float | None = None, install_signal_handlers: bool = True) -> str:
        """Start, trade until ``duration`` / SIGINT / SIGTERM / :meth:`Engine.request_stop`, then :meth:`close`."""
        with signals_stop(self.engine, install_signal_handlers):
            try:
                await self.start()
                await self.engine.wait_for_stop(duration)
            finally:
                await self.close()
        return self.engine.stop_reason or "stopped"

    async def _watch_alerts(self, watch: AlertWatch) -> None:
        interval = max(self.config.engine.equity_interval_seconds, 0.05)
        while True:
            try:
                watch.tick(self.engine.clock.now())
            except Exception as exc:  # alerting must never take the engine down
                log.error("alert_watch_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(interval)

    async def persist(self) -> None:
        """Balances (from the venue when reachable), positions and the trading state to storage."""
        try:
            venue_balances = await self.venue.balances()
            balances = {c: BalanceSnapshot(b.available, b.hold) for c, b in venue_balances.items()}
        except CryptojError as exc:
            log.warning("engine_persist_venue_balances_failed", error=str(exc))
            balances = {c: BalanceSnapshot(b.available, b.hold) for c, b in self.engine.portfolio.balances().items()}
        await self.storage.save_balances(balances)
        positions = {
            pid: PositionSnapshot(p.quantity, p.avg_entry_price if not p.is_flat else None, p.realised_pnl, p.fees_paid)
            for pid, p in self.engine.portfolio.positions().items()
        }
        if positions:
            await self.storage.save_positions(positions)
        state = self.risk.state
        await self.storage.set_trading_state(state.value, self.risk.state_reason or f"engine stopped: {self.engine.stop_reason}")
        stats = self.engine.stats
        await self.storage.append_journal(
            "engine.stopped",
            {
                "reason": self.engine.stop_reason,
                "fills": stats.fills,
                "fees": str(stats.fees),
                "rejects": stats.rejects,
                "open_orders_left": len(self.order_manager.open_orders()),
                "cancel_on_shutdown": self.engine.options.cancel_on_shutdown,
            },
        )

    async def close(self) -> None:
        """Stop the engine (cancels or leaves orders as configured), persist, close everything."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.engine.stop(sync_fills=self.order_manager.sync_fills)
            await self.persist()
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.emergency.close()
            if self.alerts is not None:
                await self.alerts.close()
            await self.order_manager.close()
            await self.market_data.close()
            await self.market_ws.close()
            await self.rest.close()
            await self.storage.close()


def alert_watch(runtime: Runtime, sink: AlertSink) -> AlertWatch:
    """The :class:`~cryptoj.alerts.AlertWatch` of ``runtime``'s numbers over ``sink``."""
    engine, risk = runtime.engine, runtime.risk

    def summary() -> dict[str, Any]:
        stats = engine.stats
        equity = engine.try_equity()
        pnl = risk.daily_pnl
        return {"mode": runtime.mode, "trading_state": risk.state.value,
                "equity": None if equity is None else format(equity, "f"),
                "daily_pnl": None if pnl is None else format(pnl, "f"), "fills": stats.fills,
                "fees": format(stats.fees, "f"), "rejects": stats.rejects}

    return AlertWatch(
        sink,
        state=lambda: (risk.state.value, risk.state_reason),
        reconciliation=lambda: runtime.order_manager.last_reconciliation,
        reconnects=lambda: runtime.market_ws.stats.reconnects,
        summary=summary,
    )


async def build_runtime(
    config: AppConfig,
    *,
    mode: str | None = None,
    strategies: Sequence[Strategy] = (),
    simulator: Any = None,
    confirm_live: bool = False,
    clock: Clock | None = None,
    alert: AlertHook | None = None,
) -> Runtime:
    """Assemble (not start) every piece for ``mode`` (default ``config.mode``).

    ``simulator`` is an in-process :class:`~cryptoj.venues.simulated.server.SimulatorServer`
    for ``sim`` mode. ``alert`` receives the kill switch's alerts; without it the
    runtime owns an :class:`~cryptoj.alerts.AlertSink` built from ``[alerts]``
    (started and closed with the runtime), so alerts go out whether or not the
    operator API is served. Raises :class:`StartupRefused` / :class:`~cryptoj.errors.ConfigError`
    with a clear message when the run cannot go ahead.
    """
    mode = mode or config.mode
    if mode not in ("sim", "paper", "live"):
        raise ConfigError([("mode", f"must be sim, paper or live, got {mode!r}")])
    if mode == "live":
        check_live_allowed(config, confirm_live=confirm_live)
    clock = clock or RealClock()
    ep = endpoints_for(config, mode, simulator)
    ex = config.exchange
    key: CdpKey | None = None
    if mode != "paper":
        if ep.key_file is None:
            raise StartupRefused(f"mode {mode!r} needs an API key file (exchange.key_file)")
        key = from_api_key(load_api_key(Path(ep.key_file)))
    rest = CoinbaseRestClient(
        ep.rest_base_url, key, timeout=ex.request_timeout, public_rate=ex.public_rate_limit, private_rate=ex.private_rate_limit,
        order_lane=ex.order_lane,
    )
    storage: Storage | None = None
    try:
        await rest.open()
        catalogue = {p.product_id: p for p in await rest.products(config.products)}
        missing = [pid for pid in config.products if pid not in catalogue]
        if missing:
            raise ConfigError([("products", f"not offered by the venue at {ep.rest_base_url}: {', '.join(missing)}")])
        products = {pid: catalogue[pid] for pid in config.products}
        config.storage.state_dir.mkdir(parents=True, exist_ok=True)
        storage = await Storage.open(config.storage.url, **config.storage.intent_options())
        md = MarketDataService(
            MarketDataConfig(products=tuple(products), backfill_candles=config.engine.backfill_candles),
            parse=parse_envelope,
            fetch_candles=rest_candle_fetcher(rest) if config.engine.backfill_candles else None,
            wall_clock=clock.now,
        )
        channels = {"level2": list(products), "market_trades": list(products), "ticker": list(products)}
        market_ws = WebSocketHandler(ep.ws_market_url, channels, name="market-ws")
        venue: Venue
        if mode == "paper":
            pc = config.paper
            venue = PaperVenue(
                products, md, pc.balances, fee_tier=SimFeeTier(pc.maker_fee_rate, pc.taker_fee_rate, "paper"), depth=pc.depth,
                clock=clock.now,
            )
            fee_rate = pc.taker_fee_rate
        else:
            venue = CoinbaseVenue(rest, ep.ws_user_url, key=key)
            try:
                fee_rate = (await rest.transaction_summary()).taker_fee_rate
            except CryptojError as exc:
                log.warning("engine_fee_tier_unknown", error=str(exc), assumed="0.006")
                fee_rate = Decimal("0.006")
        options = EngineOptions(
            quote_currency=config.engine.quote_currency,
            cancel_on_shutdown=config.engine.cancel_on_shutdown,
            equity_interval_s=config.engine.equity_interval_seconds,
            shutdown_timeout_s=config.engine.shutdown_timeout_seconds,
        )
        engine = Engine(mode=mode, clock=clock, market_data=md, products=products, strategies=strategies, options=options,
                        fee_rate=fee_rate)
        risk = RiskEngine(config.risk, engine, clock.now)
        exits = ProtectiveExits(config.risk.exits, engine.product, new_client_order_id=engine.new_client_order_id)
        def halted(report: ReconciliationReport) -> None:
            risk.set_state(TradingState.HALTED, f"reconciliation failed: {'; '.join(report.problems)}")

        om = OrderManager(
            venue, storage, products=products, pre_trade=risk.check, clock=clock.now, config=config.execution, on_halt=halted
        )
        runtime_ref: list[Runtime] = []
        sink = AlertSink(config.alerts, clock=clock.now) if alert is None else None
        emergency = EmergencyManager(
            orders=om,
            risk=risk,
            storage=storage,
            state_dir=config.storage.state_dir,
            config=config.emergency,
            clock=clock.now,
            products=lambda: engine.products,
            cancel_venue_orders=venue.cancel_orders,
            data_ages=lambda: {pid: md.data_age(pid) for pid in products},
            disconnected_for=lambda: runtime_ref[0]._disconnected_for() if runtime_ref else {},
            venue_error_count=lambda: venue_failures(rest),
            alert=alert if alert is not None else sink,
        )
        engine.attach(order_manager=om, risk=risk, exits=exits if exits.enabled else None, emergency=emergency, storage=storage)
        runtime = Runtime(
            config, mode, engine, venue, om, risk, emergency, storage, md, market_ws, rest, simulator, alerts=sink
        )
        runtime_ref.append(runtime)
        return runtime
    except BaseException:
        await rest.close()
        if storage is not None:
            await storage.close()
        raise
