"""Orders: what was asked (:class:`OrderSpec`), and what happened (:class:`Order`).

The order state machine::

    NEW ──► SUBMITTED ──► OPEN ──► PARTIALLY_FILLED ──► FILLED
     │          │           │             │
     │          ├──► IN_FLIGHT_UNKNOWN ◄──┘ (create outcome not yet known)
     │          └──► REJECTED
     └──► REJECTED        OPEN / PARTIALLY_FILLED ──► CANCEL_PENDING ──► CANCELLED
                          any live state ──► CANCELLED | EXPIRED | FILLED (venue says so)

Illegal transitions raise :class:`~cryptoj.errors.InvalidOrderTransition`.
Fills are keyed by trade id: applying the same fill twice counts once.
Filled size, average price and fees are always derived from the fills.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final

from cryptoj.errors import InvalidOrderTransition, InvalidValue
from cryptoj.model.money import ZERO, Side, fast_frozen_init

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "Fill",
    "Liquidity",
    "Order",
    "OrderKind",
    "OrderSpec",
    "OrderStatus",
    "StopDirection",
    "TimeInForce",
]


class OrderKind(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP_LIMIT = "STOP_LIMIT"
    BRACKET = "BRACKET"


class TimeInForce(StrEnum):
    GTC = "GTC"
    GTD = "GTD"
    IOC = "IOC"
    FOK = "FOK"


class StopDirection(StrEnum):
    """Coinbase's stop directions: trigger when the last price rises to / falls to the stop."""

    STOP_UP = "STOP_DIRECTION_STOP_UP"
    STOP_DOWN = "STOP_DIRECTION_STOP_DOWN"


class Liquidity(StrEnum):
    MAKER = "MAKER"
    TAKER = "TAKER"
    UNKNOWN = "UNKNOWN"


class OrderStatus(StrEnum):
    NEW = "NEW"
    SUBMITTED = "SUBMITTED"
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCEL_PENDING = "CANCEL_PENDING"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"
    IN_FLIGHT_UNKNOWN = "IN_FLIGHT_UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: Final = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED})
ACTIVE_STATUSES: Final = frozenset(
    {
        OrderStatus.SUBMITTED,
        OrderStatus.OPEN,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.CANCEL_PENDING,
        OrderStatus.IN_FLIGHT_UNKNOWN,
    }
)

_S = OrderStatus
_LIVE_OUTCOMES = {_S.OPEN, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.EXPIRED}
_TRANSITIONS: Final[dict[OrderStatus, frozenset[OrderStatus]]] = {
    _S.NEW: frozenset({_S.SUBMITTED, _S.REJECTED, _S.IN_FLIGHT_UNKNOWN}),
    _S.SUBMITTED: frozenset(_LIVE_OUTCOMES | {_S.REJECTED, _S.IN_FLIGHT_UNKNOWN, _S.CANCEL_PENDING}),
    _S.IN_FLIGHT_UNKNOWN: frozenset(_LIVE_OUTCOMES | {_S.SUBMITTED, _S.REJECTED, _S.CANCEL_PENDING}),
    _S.OPEN: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCEL_PENDING, _S.CANCELLED, _S.EXPIRED}),
    _S.PARTIALLY_FILLED: frozenset({_S.FILLED, _S.CANCEL_PENDING, _S.CANCELLED, _S.EXPIRED}),
    _S.CANCEL_PENDING: frozenset({_S.OPEN, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.EXPIRED}),
    _S.FILLED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.EXPIRED: frozenset(),
    _S.REJECTED: frozenset(),
}


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class OrderSpec:
    """What the caller asks for. Exactly one of ``base_size`` / ``quote_size``.

    ``quote_size`` is only valid for market orders (spend/receive this much quote).
    For a BRACKET, ``limit_price`` is the take-profit exit and ``stop_trigger_price``
    the stop-loss trigger (Coinbase's ``trigger_bracket`` configuration).
    """

    client_order_id: str
    product_id: str
    side: Side
    kind: OrderKind
    base_size: Decimal | None = None
    quote_size: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_direction: StopDirection | None = None
    stop_trigger_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    end_time: datetime | None = None

    def __post_init__(self) -> None:
        # the checks in order, cheapest first for the common orders; the error location is built only to raise
        if not self.client_order_id:
            raise InvalidValue(f"{self._where}.client_order_id", self.client_order_id, "required")
        base_size, quote_size, kind, tif = self.base_size, self.quote_size, self.kind, self.time_in_force
        if (base_size is None) == (quote_size is None):
            raise InvalidValue(f"{self._where}.size", (base_size, quote_size), "give exactly one of base/quote size")
        size = base_size if base_size is not None else quote_size
        if size is not None and size <= ZERO:
            raise InvalidValue(f"{self._where}.size", size, "must be positive")
        if kind is OrderKind.MARKET:
            if tif is not TimeInForce.IOC and tif is not TimeInForce.FOK and tif not in (TimeInForce.IOC, TimeInForce.FOK):
                raise InvalidValue(f"{self._where}.time_in_force", tif, "market orders are IOC or FOK")
            if self.limit_price is not None or self.post_only:
                raise InvalidValue(f"{self._where}.limit_price", self.limit_price, "market orders take no price/post-only")
        else:
            if quote_size is not None:
                raise InvalidValue(f"{self._where}.quote_size", quote_size, "quote size is for market orders only")
            if self.limit_price is None or self.limit_price <= ZERO:
                raise InvalidValue(f"{self._where}.limit_price", self.limit_price, "a positive limit price is required")
            if kind is not OrderKind.LIMIT:
                self._check_stop_and_bracket()
        if tif is TimeInForce.GTD:
            if self.end_time is None:
                raise InvalidValue(f"{self._where}.end_time", None, "GTD orders need an end_time")
            if self.end_time.tzinfo is None:
                raise InvalidValue(f"{self._where}.end_time", self.end_time, "end_time must be timezone-aware")
        if self.post_only and tif in (TimeInForce.IOC, TimeInForce.FOK):
            raise InvalidValue(f"{self._where}.post_only", True, "post-only cannot be IOC/FOK")

    def _check_stop_and_bracket(self) -> None:
        kind = self.kind
        if kind is OrderKind.STOP_LIMIT:
            if self.stop_price is None or self.stop_price <= ZERO:
                raise InvalidValue(f"{self._where}.stop_price", self.stop_price, "a positive stop price is required")
            if self.stop_direction is None:
                raise InvalidValue(f"{self._where}.stop_direction", None, "stop-limit orders need a stop direction")
        if kind is OrderKind.BRACKET and (self.stop_trigger_price is None or self.stop_trigger_price <= ZERO):
            raise InvalidValue(f"{self._where}.stop_trigger_price", self.stop_trigger_price, "brackets need a stop trigger")
        if kind in (OrderKind.STOP_LIMIT, OrderKind.BRACKET) and self.time_in_force not in (
            TimeInForce.GTC,
            TimeInForce.GTD,
        ):
            raise InvalidValue(f"{self._where}.time_in_force", self.time_in_force, "stop/bracket orders are GTC or GTD")

    @property
    def _where(self) -> str:
        """Where an error is: ``order <client_order_id>`` (made only when raising)."""
        return f"order {self.client_order_id or '<no client_order_id>'}"

    @property
    def is_market(self) -> bool:
        return self.kind is OrderKind.MARKET


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class Fill:
    """One execution. ``fee`` is in the quote currency."""

    trade_id: str
    client_order_id: str
    product_id: str
    side: Side
    price: Decimal
    size: Decimal
    fee: Decimal
    time: datetime
    liquidity: Liquidity = Liquidity.UNKNOWN
    venue_order_id: str | None = None

    def __post_init__(self) -> None:
        if not self.trade_id:
            raise InvalidValue("fill.trade_id", self.trade_id, "required")
        if self.size <= ZERO:
            raise InvalidValue(f"fill {self.trade_id}.size", self.size, "must be positive")
        if self.price <= ZERO:
            raise InvalidValue(f"fill {self.trade_id}.price", self.price, "must be positive")
        if self.fee < ZERO:
            raise InvalidValue(f"fill {self.trade_id}.fee", self.fee, "must not be negative")

    @property
    def notional(self) -> Decimal:
        return self.price * self.size


@dataclass(slots=True)
class Order:
    """An order's life: its spec, its status and its fills."""

    spec: OrderSpec
    status: OrderStatus = OrderStatus.NEW
    venue_order_id: str | None = None
    reject_reason: str | None = None
    external: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    fills: dict[str, Fill] = field(default_factory=dict)
    history: list[tuple[OrderStatus, OrderStatus]] = field(default_factory=list)

    # -- identity ---------------------------------------------------------

    @property
    def client_order_id(self) -> str:
        return self.spec.client_order_id

    @property
    def product_id(self) -> str:
        return self.spec.product_id

    @property
    def side(self) -> Side:
        return self.spec.side

    # -- derived from fills ----------------------------------------------

    @property
    def filled_size(self) -> Decimal:
        fills = self.fills
        if not fills:
            return ZERO
        return sum((f.size for f in fills.values()), ZERO)

    @property
    def filled_value(self) -> Decimal:
        return sum((f.notional for f in self.fills.values()), ZERO)

    @property
    def fees(self) -> Decimal:
        return sum((f.fee for f in self.fills.values()), ZERO)

    @property
    def average_price(self) -> Decimal | None:
        size = self.filled_size
        if size == 0:
            return None
        return self.filled_value / size

    @property
    def remaining_size(self) -> Decimal | None:
        """Base size still to fill, or None for quote-sized orders."""
        if self.spec.base_size is None:
            return None
        return max(self.spec.base_size - self.filled_size, ZERO)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    # -- state machine ----------------------------------------------------

    def can_transition(self, new: OrderStatus) -> bool:
        return new is self.status or new in _TRANSITIONS[self.status]

    def transition(self, new: OrderStatus, *, at: datetime | None = None, reason: str | None = None) -> bool:
        """Move to ``new``. Same-state is a no-op (returns False); illegal raises."""
        if new is self.status:
            return False
        if new not in _TRANSITIONS[self.status]:
            raise InvalidOrderTransition(self.client_order_id, self.status.value, new.value)
        self.history.append((self.status, new))
        self.status = new
        if reason is not None and new is OrderStatus.REJECTED:
            self.reject_reason = reason
        if at is not None:
            self.updated_at = at
        return True

    def apply_fill(self, fill: Fill) -> bool:
        """Record ``fill``; returns False if this trade id was already applied.

        Moves a live order to PARTIALLY_FILLED or FILLED as its base size fills.
        A fill for a quote-sized market order leaves the status to the venue.
        """
        if fill.trade_id in self.fills:
            return False
        if fill.client_order_id != self.client_order_id:
            raise InvalidValue(
                f"fill {fill.trade_id}.client_order_id",
                fill.client_order_id,
                f"belongs to another order, not {self.client_order_id}",
            )
        if fill.product_id != self.product_id or fill.side is not self.side:
            raise InvalidValue(
                f"fill {fill.trade_id}.product_id/side",
                (fill.product_id, fill.side.value),
                f"order {self.client_order_id} is {self.product_id} {self.side.value}",
            )
        if self.status in (OrderStatus.NEW, OrderStatus.REJECTED):
            raise InvalidOrderTransition(self.client_order_id, self.status.value, "fill")
        base = self.spec.base_size
        filled = self.filled_size + fill.size if base is not None else ZERO  # the fills summed once
        if base is not None and filled > base:
            raise InvalidValue(
                f"fill {fill.trade_id}.size", fill.size, f"would overfill order {self.client_order_id} of size {base}"
            )
        self.fills[fill.trade_id] = fill
        if self.venue_order_id is None and fill.venue_order_id:
            self.venue_order_id = fill.venue_order_id
        self.updated_at = fill.time
        if base is not None and not self.status.is_terminal:
            target = OrderStatus.FILLED if filled >= base else OrderStatus.PARTIALLY_FILLED
            if self.status is OrderStatus.CANCEL_PENDING and target is OrderStatus.PARTIALLY_FILLED:
                return True  # still waiting for the cancel to be confirmed
            if self.status is not target:
                self.transition(target)
        return True
