"""Pre-trade risk: the checks every new order passes, the trading state, and protective exits.

:class:`RiskEngine` is synchronous and pure (no I/O): the order manager calls
:meth:`RiskEngine.check` as its ``pre_trade`` hook before anything is written or
sent. A refused order raises :class:`~cryptoj.errors.RiskRejected` with a stable
``reason`` code (the :class:`Reason` values) or, when trading is HALTED,
:class:`~cryptoj.errors.TradingHalted`. Every refusal is logged, counted by
reason (:attr:`RiskEngine.rejection_counts`) and queued as a
:class:`RiskRejection` record that :meth:`RiskEngine.drain_rejections` hands to
whoever stores it (the emergency manager's watcher loop appends them to the
journal as ``risk.rejected`` entries).

The engine reads the world through :class:`RiskContext`, a Protocol the trading
engine implements. Equity history is the risk engine's own: feed it with
:meth:`RiskEngine.on_equity` and it tracks start-of-UTC-day equity and peak
equity for the daily-loss and drawdown limits.

:class:`ProtectiveExits` turns price and position updates into exit orders
(stop loss, trailing stop, take-profit ladder) for long spot positions.

See ``docs/risk.md`` for every check and config key.
"""

from __future__ import annotations

import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final, Protocol

import structlog

from cryptoj.config import ExitsConfig, RiskConfig
from cryptoj.errors import InvalidValue, RiskRejected, TradingHalted
from cryptoj.model.instruments import Product
from cryptoj.model.money import ZERO, Side, round_to_increment
from cryptoj.model.orders import Order, OrderKind, OrderSpec, StopDirection, TimeInForce
from cryptoj.model.positions import Balance

__all__ = [
    "ExitAction",
    "ProtectiveExits",
    "Reason",
    "RiskContext",
    "RiskEngine",
    "RiskRejection",
    "TradingState",
]

log = structlog.get_logger("cryptoj.risk")

ONE: Final = Decimal(1)
MAX_RECENT_REJECTIONS: Final = 1000


class TradingState(StrEnum):
    """ACTIVE: anything the checks allow. REDUCE_ONLY: only position-reducing orders. HALTED: only cancels."""

    ACTIVE = "ACTIVE"
    REDUCE_ONLY = "REDUCE_ONLY"
    HALTED = "HALTED"


class Reason(StrEnum):
    """Stable reason codes carried by :class:`~cryptoj.errors.RiskRejected` (``exc.reason``)."""

    REDUCE_ONLY = "REDUCE_ONLY"
    UNKNOWN_PRODUCT = "UNKNOWN_PRODUCT"
    TRADING_DISABLED = "TRADING_DISABLED"
    CANCEL_ONLY = "CANCEL_ONLY"
    LIMIT_ONLY = "LIMIT_ONLY"
    POST_ONLY = "POST_ONLY"
    INVALID_SIZE_PRECISION = "INVALID_SIZE_PRECISION"
    INVALID_PRICE_PRECISION = "INVALID_PRICE_PRECISION"
    ORDER_SIZE_TOO_SMALL = "ORDER_SIZE_TOO_SMALL"
    ORDER_SIZE_TOO_LARGE = "ORDER_SIZE_TOO_LARGE"
    QUOTE_SIZE_TOO_SMALL = "QUOTE_SIZE_TOO_SMALL"
    QUOTE_SIZE_TOO_LARGE = "QUOTE_SIZE_TOO_LARGE"
    STALE_DATA = "STALE_DATA"
    NO_MARKET_PRICE = "NO_MARKET_PRICE"
    PRICE_BAND = "PRICE_BAND"
    MAX_ORDER_NOTIONAL = "MAX_ORDER_NOTIONAL"
    MAX_POSITION_NOTIONAL = "MAX_POSITION_NOTIONAL"
    MAX_TOTAL_EXPOSURE = "MAX_TOTAL_EXPOSURE"
    MAX_OPEN_ORDERS = "MAX_OPEN_ORDERS"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
    MAX_DRAWDOWN = "MAX_DRAWDOWN"
    ORDER_RATE = "ORDER_RATE"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"


class RiskContext(Protocol):
    """What the risk engine needs to know about the world (the trading engine implements it)."""

    def product(self, product_id: str) -> Product | None:
        """The product's rules, or None when unknown."""

    def mid_price(self, product_id: str) -> Decimal | None:
        """The current mid (or last) price, or None when there is none."""

    def data_age(self, product_id: str) -> float | None:
        """Seconds since the product's last market data (``MarketDataService.data_age``); None if none yet."""

    def position_size(self, product_id: str) -> Decimal:
        """Base quantity held in the product (spot: never negative)."""

    def balance(self, currency: str) -> Balance:
        """Available and held amounts of ``currency``."""

    def open_orders(self) -> Sequence[Order]:
        """Every live order we know of (any product)."""

    def fee_rate(self, product_id: str) -> Decimal:
        """The taker fee fraction that would apply to an order in the product."""

    def product_ids(self) -> Sequence[str]:
        """The products traded (their positions count toward the total exposure)."""


@dataclass(frozen=True, slots=True)
class RiskRejection:
    """One refused order: when, which, why (``reason``) and the human message."""

    time: datetime
    client_order_id: str
    product_id: str
    side: str
    reason: str
    message: str

    def as_payload(self) -> dict[str, str]:
        return {
            "time": self.time.isoformat(),
            "client_order_id": self.client_order_id,
            "product_id": self.product_id,
            "side": self.side,
            "reason": self.reason,
            "message": self.message,
        }


def _utc_day(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise InvalidValue("risk.now", now, "time must be timezone-aware (UTC)")
    utc = now.astimezone(UTC)
    return utc.replace(hour=0, minute=0, second=0, microsecond=0)


class RiskEngine:
    """The pre-trade checks and the trading state. Not thread-safe; one event loop owns it.

    ``clock`` returns the current timezone-aware time (the engine's clock).
    """

    def __init__(self, config: RiskConfig, context: RiskContext, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.context = context
        self._clock = clock
        self._state = TradingState.ACTIVE
        self._state_reason = "start"
        self._state_since = clock()
        self.rejection_counts: Counter[str] = Counter()
        self.accepted_count = 0
        self._pending: deque[RiskRejection] = deque(maxlen=MAX_RECENT_REJECTIONS)
        self._order_times: deque[datetime] = deque()
        self._exit_allowed: set[str] = set()
        self._day: datetime | None = None
        self._day_start_equity: Decimal | None = None
        self._peak_equity: Decimal | None = None
        self._equity: Decimal | None = None

    # -- trading state ----------------------------------------------------------------

    @property
    def state(self) -> TradingState:
        return self._state

    @property
    def state_reason(self) -> str:
        return self._state_reason

    @property
    def state_since(self) -> datetime:
        return self._state_since

    def set_state(self, state: TradingState | str, reason: str) -> bool:
        """Switch to ``state`` (an unknown name raises); returns False when already there."""
        try:
            new = TradingState(state)
        except ValueError:
            raise InvalidValue("trading_state", state, f"must be one of {', '.join(s.value for s in TradingState)}") from None
        if not reason:
            raise InvalidValue("trading_state.reason", reason, "say why the state changes")
        if new is self._state:
            return False
        log.warning("trading_state_changed", old=self._state.value, new=new.value, reason=reason)
        self._state, self._state_reason, self._state_since = new, reason, self._clock()
        return True

    @contextmanager
    def allow_exit(self, client_order_id: str) -> Iterator[None]:
        """While the block runs, let this one position-reducing order through even when HALTED.

        The kill switch uses it to flatten after halting; nothing else gets past HALTED.
        """
        self._exit_allowed.add(client_order_id)
        try:
            yield
        finally:
            self._exit_allowed.discard(client_order_id)

    # -- equity tracking ------------------------------------------------------------------

    def on_equity(self, equity: Decimal, now: datetime | None = None) -> None:
        """Record the current total equity (quote currency); rolls the day at UTC midnight."""
        if not isinstance(equity, Decimal) or not equity.is_finite():
            raise InvalidValue("risk.equity", equity, "a finite Decimal is required")
        day = _utc_day(now or self._clock())
        if self._day is None or day > self._day:
            self._day = day
            self._day_start_equity = equity
        self._equity = equity
        if self._peak_equity is None or equity > self._peak_equity:
            self._peak_equity = equity

    def restore_equity(self, *, day_start: Decimal, peak: Decimal, day: datetime) -> None:
        """Restore the start-of-day and peak equity after a restart (from the journal)."""
        self._day = _utc_day(day)
        self._day_start_equity = day_start
        self._peak_equity = peak

    @property
    def equity(self) -> Decimal | None:
        return self._equity

    @property
    def day_start_equity(self) -> Decimal | None:
        return self._day_start_equity

    @property
    def peak_equity(self) -> Decimal | None:
        return self._peak_equity

    @property
    def daily_pnl(self) -> Decimal | None:
        """Realised + unrealised PnL since UTC midnight (equity now minus equity at the day's start)."""
        if self._equity is None or self._day_start_equity is None:
            return None
        return self._equity - self._day_start_equity

    @property
    def drawdown(self) -> Decimal | None:
        """Fraction below peak equity (0 at the peak)."""
        if self._equity is None or self._peak_equity is None or self._peak_equity <= 0:
            return None
        return (self._peak_equity - self._equity) / self._peak_equity

    def daily_loss_breach(self) -> str | None:
        """A message when today's loss reached a configured daily loss limit, else None."""
        pnl = self.daily_pnl
        if pnl is None or pnl >= 0:
            return None
        loss = -pnl
        limit_quote = self.config.daily_loss_limit_quote
        if limit_quote is not None and loss >= limit_quote:
            return f"daily loss {loss} reached risk.daily_loss_limit_quote={limit_quote}"
        fraction = self.config.daily_loss_limit_fraction
        start = self._day_start_equity
        if fraction is not None and start is not None and start > 0 and loss >= fraction * start:
            return f"daily loss {loss} reached risk.daily_loss_limit_fraction={fraction} of start-of-day equity {start}"
        return None

    def drawdown_breach(self) -> str | None:
        """A message when the drawdown from peak equity reached ``max_drawdown_fraction``, else None."""
        limit = self.config.max_drawdown_fraction
        dd = self.drawdown
        if limit is None or dd is None or dd < limit:
            return None
        return f"drawdown {dd:.6f} from peak equity {self._peak_equity} reached risk.max_drawdown_fraction={limit}"

    # -- the checks -------------------------------------------------------------------------

    def check(self, spec: OrderSpec) -> None:
        """Run every enabled check on a new order; raise on the first failure, else count it as accepted.

        HALTED raises :class:`TradingHalted`; any other refusal raises
        :class:`RiskRejected` whose ``reason`` is a :class:`Reason` value.
        """
        now = self._clock()
        if self._state is TradingState.HALTED and spec.client_order_id not in self._exit_allowed:
            self._record(spec, "TRADING_HALTED", f"trading is HALTED ({self._state_reason}); only cancels are allowed", now)
            raise TradingHalted(f"trading is HALTED ({self._state_reason}); order {spec.client_order_id} refused")
        problem = self._first_problem(spec, now)
        if problem is not None:
            reason, message = problem
            self._record(spec, reason, message, now)
            raise RiskRejected(reason, f"order {spec.client_order_id} {spec.side.value} {spec.product_id}: {message}")
        self._order_times.append(now)
        self.accepted_count += 1

    def _record(self, spec: OrderSpec, reason: str, message: str, now: datetime) -> None:
        self.rejection_counts[reason] += 1
        self._pending.append(RiskRejection(now, spec.client_order_id, spec.product_id, spec.side.value, reason, message))
        log.warning(
            "risk_rejected", reason=reason, message=message, client_order_id=spec.client_order_id, product_id=spec.product_id
        )

    def drain_rejections(self) -> list[RiskRejection]:
        """The rejections recorded since the last drain (oldest first), for storage."""
        out = list(self._pending)
        self._pending.clear()
        return out

    def is_reducing(self, spec: OrderSpec, price: Decimal | None = None) -> bool:
        """True when the order can only shrink the position (spot: a sell of no more than is held and not already offered)."""
        if spec.side is Side.BUY:
            return False
        size = self._base_size(spec, price)
        if size is None:
            return False
        sells = [o for o in self.context.open_orders() if o.product_id == spec.product_id and o.side is Side.SELL and o.is_active]
        offered = sum((o.remaining_size or ZERO for o in sells), ZERO)
        return size <= self.context.position_size(spec.product_id) - offered

    @staticmethod
    def _base_size(spec: OrderSpec, price: Decimal | None) -> Decimal | None:
        if spec.base_size is not None:
            return spec.base_size
        if price is None or price <= 0 or spec.quote_size is None:
            return None
        return spec.quote_size / price

    def _first_problem(self, spec: OrderSpec, now: datetime) -> tuple[str, str] | None:
        cfg = self.config
        ctx = self.context
        pid = spec.product_id
        product = ctx.product(pid)
        if product is None:
            return Reason.UNKNOWN_PRODUCT, f"product {pid} is not known"
        mid = ctx.mid_price(pid)
        reducing = self.is_reducing(spec, mid)
        if self._state is TradingState.REDUCE_ONLY and not reducing:
            return Reason.REDUCE_ONLY, f"trading is REDUCE_ONLY ({self._state_reason}); only position-reducing orders"
        if cfg.check_product_rules:
            problem = self._product_problem(spec, product)
            if problem is not None:
                return problem
        if cfg.stale_data_seconds is not None and not reducing:
            age = ctx.data_age(pid)
            if age is None or age > cfg.stale_data_seconds:
                shown = "none received" if age is None else f"{age:.3f}s old"
                return Reason.STALE_DATA, f"market data is stale ({shown}; risk.stale_data_seconds={cfg.stale_data_seconds})"
        reference = self._reference_price(spec, mid)
        if reference is None and self._needs_price(spec):
            return Reason.NO_MARKET_PRICE, "no market price to value the order"
        if cfg.price_band_fraction is not None:
            problem = self._band_problem(spec, mid, cfg.price_band_fraction)
            if problem is not None:
                return problem
        notional = self._notional(spec, reference)
        if cfg.max_order_notional is not None and notional is not None and notional > cfg.max_order_notional:
            return Reason.MAX_ORDER_NOTIONAL, f"notional {notional} exceeds risk.max_order_notional={cfg.max_order_notional}"
        if not reducing:
            problem = self._exposure_problem(spec, mid, reference)
            if problem is not None:
                return problem
            breach = self.daily_loss_breach()
            if breach is not None:
                return Reason.DAILY_LOSS_LIMIT, breach
            breach = self.drawdown_breach()
            if breach is not None:
                return Reason.MAX_DRAWDOWN, breach
        if cfg.max_open_orders is not None:
            count = sum(1 for o in ctx.open_orders() if o.is_active)
            if count >= cfg.max_open_orders:
                return Reason.MAX_OPEN_ORDERS, f"{count} open orders; risk.max_open_orders={cfg.max_open_orders}"
        if cfg.max_orders_per_minute is not None:
            cutoff = now - timedelta(minutes=1)
            while self._order_times and self._order_times[0] <= cutoff:
                self._order_times.popleft()
            if len(self._order_times) >= cfg.max_orders_per_minute:
                return (
                    Reason.ORDER_RATE,
                    f"{len(self._order_times)} orders in the last minute; risk.max_orders_per_minute={cfg.max_orders_per_minute}",
                )
        if cfg.check_balance:
            return self._balance_problem(spec, product, reference)
        return None

    def _needs_price(self, spec: OrderSpec) -> bool:
        cfg = self.config
        if spec.kind is OrderKind.MARKET:
            # a base-sized market order is valued at the mid; a quote-sized one is its own notional
            valued = spec.base_size is not None and (
                cfg.max_order_notional is not None
                or cfg.max_position_notional is not None
                or cfg.max_total_exposure is not None
                or (cfg.check_balance and spec.side is Side.BUY)
            )
            return valued or (spec.quote_size is not None and spec.side is Side.SELL and cfg.check_balance)
        return False

    @staticmethod
    def _reference_price(spec: OrderSpec, mid: Decimal | None) -> Decimal | None:
        """The price an order is valued at: its limit price, else the mid."""
        if spec.limit_price is not None:
            return spec.limit_price
        return mid

    @staticmethod
    def _notional(spec: OrderSpec, price: Decimal | None) -> Decimal | None:
        if spec.quote_size is not None:
            return spec.quote_size
        if spec.base_size is None or price is None:
            return None
        return spec.base_size * price

    @staticmethod
    def _product_problem(spec: OrderSpec, product: Product) -> tuple[str, str] | None:
        status = product.status_problem(is_market=spec.is_market, post_only=spec.post_only)
        if status is not None:
            return status, f"product {product.product_id} does not accept this order now ({status})"
        if spec.base_size is not None:
            size_problem = product.size_problem(spec.base_size)
            if size_problem is not None:
                return size_problem, (
                    f"base size {spec.base_size} breaks the product rules (increment {product.base_increment}, "
                    f"min {product.base_min_size}, max {product.base_max_size})"
                )
        if spec.quote_size is not None:
            quote_problem = product.quote_size_problem(spec.quote_size)
            if quote_problem is not None:
                return quote_problem, (
                    f"quote size {spec.quote_size} breaks the product rules (increment {product.quote_increment}, "
                    f"min {product.quote_min_size}, max {product.quote_max_size})"
                )
        for name in ("limit_price", "stop_price", "stop_trigger_price"):
            price = getattr(spec, name)
            if price is not None and product.price_problem(price) is not None:
                return Reason.INVALID_PRICE_PRECISION, f"{name} {price} is not on the price increment {product.price_increment}"
        return None

    @staticmethod
    def _band_problem(spec: OrderSpec, mid: Decimal | None, fraction: Decimal) -> tuple[str, str] | None:
        prices = [(name, getattr(spec, name)) for name in ("limit_price", "stop_price") if getattr(spec, name) is not None]
        if not prices:
            return None
        if mid is None or mid <= 0:
            return Reason.NO_MARKET_PRICE, "no mid price to check the price band against"
        low, high = mid * (ONE - fraction), mid * (ONE + fraction)
        for name, price in prices:
            if not low <= price <= high:
                return Reason.PRICE_BAND, (
                    f"{name} {price} is outside the band [{low}, {high}] (mid {mid} ± risk.price_band_fraction={fraction})"
                )
        return None

    def _exposure_problem(self, spec: OrderSpec, mid: Decimal | None, reference: Decimal | None) -> tuple[str, str] | None:
        cfg = self.config
        if cfg.max_position_notional is None and cfg.max_total_exposure is None:
            return None
        ctx = self.context
        open_orders = [o for o in ctx.open_orders() if o.is_active]
        add = self._base_size(spec, reference) if spec.side is Side.BUY else ZERO
        if add is None:  # a quote-sized buy without a price: value the quote amount itself
            add = ZERO
        extra_quote = spec.quote_size if spec.side is Side.BUY and spec.quote_size is not None and reference is None else ZERO

        def product_exposure(pid: str, price: Decimal | None, extra: Decimal) -> Decimal | None:
            pending = sum(
                (o.remaining_size or ZERO for o in open_orders if o.product_id == pid and o.side is Side.BUY), ZERO
            )
            size = ctx.position_size(pid) + pending + extra
            if size == 0:
                return ZERO
            if price is None:
                return None
            return size * price

        own_price = mid if mid is not None else reference
        own = product_exposure(spec.product_id, own_price, add)
        if own is None:
            return Reason.NO_MARKET_PRICE, f"no price to value the {spec.product_id} position"
        own += extra_quote
        if cfg.max_position_notional is not None and own > cfg.max_position_notional:
            return Reason.MAX_POSITION_NOTIONAL, (
                f"{spec.product_id} exposure would be {own}, above risk.max_position_notional={cfg.max_position_notional}"
            )
        if cfg.max_total_exposure is not None:
            total = own
            others = {o.product_id for o in open_orders} | set(ctx.product_ids())
            others.discard(spec.product_id)
            for pid in sorted(others):
                value = product_exposure(pid, ctx.mid_price(pid), ZERO)
                if value is None:
                    return Reason.NO_MARKET_PRICE, f"no price to value the {pid} position for the total exposure"
                total += value
            if total > cfg.max_total_exposure:
                limit = cfg.max_total_exposure
                return Reason.MAX_TOTAL_EXPOSURE, f"total exposure would be {total}, above risk.max_total_exposure={limit}"
        return None

    def _balance_problem(self, spec: OrderSpec, product: Product, reference: Decimal | None) -> tuple[str, str] | None:
        ctx = self.context
        if spec.side is Side.BUY:
            rate = self.config.fee_rate if self.config.fee_rate is not None else ctx.fee_rate(spec.product_id)
            notional = self._notional(spec, reference)
            if notional is None:  # unreachable: _needs_price refused it already
                return Reason.NO_MARKET_PRICE, "no price to value the order"
            need = notional * (ONE + rate)
            currency = product.quote_currency
        else:
            size = self._base_size(spec, reference)
            if size is None:
                return Reason.NO_MARKET_PRICE, "no price to turn the quote size into a base size"
            need = size
            currency = product.base_currency
        balance = ctx.balance(currency)
        if balance.available < need:
            return Reason.INSUFFICIENT_BALANCE, (
                f"needs {need} {currency} (fees included) but {balance.available} is available ({balance.hold} on hold)"
            )
        return None


# --- protective exits ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExitAction:
    """What the exit rules want done: submit ``spec``, or cancel ``cancel_client_order_id``."""

    reason: str
    spec: OrderSpec | None = None
    cancel_client_order_id: str | None = None


@dataclass(slots=True)
class _Tracked:
    entry: Decimal
    size: Decimal
    quantity: Decimal
    high: Decimal
    levels_done: set[int] = field(default_factory=set)
    exiting: bool = False
    native_stop: tuple[str, Decimal, Decimal] | None = None  # client_order_id, trigger, size


class ProtectiveExits:
    """Stop loss %, trailing stop % and a take-profit ladder for long spot positions.

    Feed it :meth:`on_position` (after each fill) and :meth:`on_price` (each tick);
    both return :class:`ExitAction` lists for the engine to run through the order
    manager (exits are position-reducing, so REDUCE_ONLY lets them through).
    With ``native_stops`` (and a venue that executes STOP_LIMIT natively) the stop (the
    higher of the fixed and trailing stop) rests at the venue as a stop-limit sell that
    is cancelled and re-placed when its trigger rises by at least one price increment or the position size changes; otherwise
    the stop fires a market sell when the price touches it. Take-profit levels sell
    ``sell_fraction`` of the largest size the position reached, at market, once each.
    """

    def __init__(
        self,
        config: ExitsConfig,
        products: Callable[[str], Product | None],
        *,
        new_client_order_id: Callable[[], str] | None = None,
        native_kinds: frozenset[OrderKind] | None = None,
    ) -> None:
        """``native_kinds`` is the venue's ``Venue.native_kinds``: without STOP_LIMIT the stop is engine-side."""
        self.config = config
        self.native = config.native_stops and (native_kinds is None or OrderKind.STOP_LIMIT in native_kinds)
        self._products = products
        self._new_id = new_client_order_id or (lambda: f"exit-{uuid.uuid4()}")
        self._tracked: dict[str, _Tracked] = {}

    @property
    def enabled(self) -> bool:
        c = self.config
        return c.stop_loss_fraction is not None or c.trailing_stop_fraction is not None or bool(c.take_profit)

    def tracked(self, product_id: str) -> _Tracked | None:
        return self._tracked.get(product_id)

    def _product(self, product_id: str) -> Product:
        product = self._products(product_id)
        if product is None:
            raise InvalidValue("exits.product_id", product_id, "unknown product")
        return product

    def stop_price(self, product_id: str) -> Decimal | None:
        """The current stop trigger (the higher of stop loss and trailing stop), or None."""
        t = self._tracked.get(product_id)
        if t is None:
            return None
        stops = []
        if self.config.stop_loss_fraction is not None:
            stops.append(t.entry * (ONE - self.config.stop_loss_fraction))
        if self.config.trailing_stop_fraction is not None:
            stops.append(t.high * (ONE - self.config.trailing_stop_fraction))
        return max(stops) if stops else None

    def on_position(
        self, product_id: str, quantity: Decimal, avg_entry: Decimal, last_price: Decimal | None = None
    ) -> list[ExitAction]:
        """The position changed (a fill): start, resize or stop tracking it."""
        if not self.enabled:
            return []
        product = self._product(product_id)
        t = self._tracked.get(product_id)
        if quantity < product.base_min_size or quantity <= 0:
            actions: list[ExitAction] = []
            if t is not None and t.native_stop is not None:
                actions.append(ExitAction("position closed", cancel_client_order_id=t.native_stop[0]))
            self._tracked.pop(product_id, None)
            return actions
        if t is None:
            start = max(avg_entry, last_price) if last_price is not None else avg_entry
            t = _Tracked(entry=avg_entry, size=quantity, quantity=quantity, high=start)
            self._tracked[product_id] = t
        else:
            t.entry = avg_entry
            t.size = max(t.size, quantity)
            t.quantity = quantity
            t.exiting = False
        return self._sync_native_stop(product, t)

    def on_price(self, product_id: str, price: Decimal) -> list[ExitAction]:
        """A new price: move the trail, fire stops and take-profit levels."""
        t = self._tracked.get(product_id)
        if t is None or t.exiting:
            return []
        product = self._product(product_id)
        if price > t.high:
            t.high = price
        actions: list[ExitAction] = []
        stop = self.stop_price(product_id)
        # Engine-side stop; in native mode also while no venue stop is resting (refused, or being re-placed):
        # a price at or through the stop then sells at market rather than leaving the position unprotected.
        if stop is not None and price <= stop and (not self.native or t.native_stop is None):
            t.exiting = True
            spec = self._market_sell(product, t.quantity)
            return [ExitAction(f"stop at {stop} touched by {price}", spec=spec)] if spec is not None else []
        remaining = t.quantity
        for index, (gain, fraction) in enumerate(self.config.take_profit):
            if index in t.levels_done or price < t.entry * (ONE + gain):
                continue
            t.levels_done.add(index)
            size = remaining if fraction >= ONE else min(remaining, t.size * fraction)
            if len(t.levels_done) == len(self.config.take_profit):
                size = remaining
            spec = self._market_sell(product, size)
            if spec is not None:
                remaining -= spec.base_size or ZERO
                actions.append(ExitAction(f"take profit +{gain} reached at {price}", spec=spec))
        if actions:
            t.quantity = remaining
            if t.native_stop is not None:
                actions.insert(0, ExitAction("take profit resizes the stop", cancel_client_order_id=t.native_stop[0]))
                t.native_stop = None
            if remaining < product.base_min_size:
                t.exiting = True
            return actions
        return self._sync_native_stop(product, t)

    def on_order_rejected(self, client_order_id: str) -> None:
        """An order the venue (or risk) refused: a refused native stop no longer counts as protection.

        E.g. a stop re-placed after the price has already gone through its trigger is refused by the
        venue (``INVALID_STOP_PRICE``); the next price at or below the stop then sells at market
        (:meth:`on_price`), and a price above it places a fresh native stop.
        """
        for t in self._tracked.values():
            if t.native_stop is not None and t.native_stop[0] == client_order_id:
                t.native_stop = None

    def _market_sell(self, product: Product, size: Decimal) -> OrderSpec | None:
        rounded = product.round_size(size)
        if rounded < product.base_min_size or rounded <= 0:
            return None
        return OrderSpec(
            client_order_id=self._new_id(),
            product_id=product.product_id,
            side=Side.SELL,
            kind=OrderKind.MARKET,
            base_size=rounded,
            time_in_force=TimeInForce.IOC,
        )

    def _sync_native_stop(self, product: Product, t: _Tracked) -> list[ExitAction]:
        if not self.native or t.exiting:
            return []
        stop = self.stop_price(product.product_id)
        if stop is None:
            return []
        trigger = round_to_increment(stop, product.price_increment, up=False)  # never above the configured stop
        size = product.round_size(t.quantity)
        current = t.native_stop
        if current is not None and current[2] == size and trigger - current[1] < product.price_increment:
            return []
        actions: list[ExitAction] = []
        if current is not None:
            actions.append(ExitAction(f"stop moves {current[1]} -> {trigger}", cancel_client_order_id=current[0]))
            t.native_stop = None
        if size < product.base_min_size:
            return actions
        limit = product.round_price(trigger * (ONE - self.config.stop_limit_offset_fraction), Side.SELL)
        spec = OrderSpec(
            client_order_id=self._new_id(),
            product_id=product.product_id,
            side=Side.SELL,
            kind=OrderKind.STOP_LIMIT,
            base_size=size,
            limit_price=min(limit, trigger),
            stop_price=trigger,
            stop_direction=StopDirection.STOP_DOWN,
        )
        t.native_stop = (spec.client_order_id, trigger, size)
        actions.append(ExitAction(f"native stop at {trigger}", spec=spec))
        return actions
