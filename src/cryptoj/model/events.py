"""The typed events a venue tells us about: market data and our own orders.

Pure values (frozen, slotted dataclasses), no I/O. The Coinbase protocol
(:mod:`cryptoj.venues.coinbase.protocol`) builds them from WebSocket frames; the
simulator and the backtester build the same events, so the engine never knows
where they came from.

Every event carries the ``sequence_num`` of the message (envelope) it came in.
Coinbase numbers messages per *connection*, shared by all channels on it, so a
consumer checks the sequence on :class:`Envelope` (one per frame, even when the
frame holds no events) rather than per event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TypeAlias

from cryptoj.model.book import BookSide
from cryptoj.model.money import Side
from cryptoj.model.orders import OrderStatus

__all__ = [
    "BookSide",
    "CandleEvent",
    "Envelope",
    "Event",
    "Heartbeat",
    "L2Snapshot",
    "L2Update",
    "LevelChange",
    "MarketTrade",
    "StatusEvent",
    "SubscriptionAck",
    "TickerEvent",
    "UnknownChannel",
    "UserOrderUpdate",
    "VenueErrorMessage",
]


LevelChange: TypeAlias = tuple[BookSide, Decimal, Decimal]
"""``(side, price, new_size)``: the new absolute size at a price; size 0 removes the level."""


@dataclass(frozen=True, slots=True)
class L2Snapshot:
    """The full book for one product (replace whatever was held before)."""

    product_id: str
    sequence_num: int
    changes: tuple[LevelChange, ...]
    time: datetime


@dataclass(frozen=True, slots=True)
class L2Update:
    """Changes to price levels of one product's book (absolute sizes, 0 = remove)."""

    product_id: str
    sequence_num: int
    changes: tuple[LevelChange, ...]
    time: datetime


@dataclass(frozen=True, slots=True)
class TickerEvent:
    """Last price, best bid/ask and 24 h statistics for one product."""

    product_id: str
    sequence_num: int
    price: Decimal
    time: datetime
    best_bid: Decimal | None = None
    best_bid_quantity: Decimal | None = None
    best_ask: Decimal | None = None
    best_ask_quantity: Decimal | None = None
    volume_24_h: Decimal | None = None
    low_24_h: Decimal | None = None
    high_24_h: Decimal | None = None
    price_percent_chg_24_h: Decimal | None = None
    is_snapshot: bool = False


@dataclass(frozen=True, slots=True)
class MarketTrade:
    """A public trade; ``side`` is the taker's side as Coinbase reports it."""

    trade_id: str
    product_id: str
    price: Decimal
    size: Decimal
    side: Side
    time: datetime
    sequence_num: int = 0
    is_snapshot: bool = False


@dataclass(frozen=True, slots=True)
class CandleEvent:
    """An OHLCV bar starting at ``start`` (Coinbase's WS candles are 5-minute bars)."""

    product_id: str
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    sequence_num: int = 0
    is_snapshot: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Keep-alive; ``counter`` rises by one per heartbeat."""

    counter: int
    current_time: datetime | None
    sequence_num: int = 0


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A product's status and rules as the ``status`` channel reports them."""

    product_id: str
    status: str
    sequence_num: int = 0
    status_message: str = ""
    base_increment: Decimal | None = None
    quote_increment: Decimal | None = None
    min_market_funds: Decimal | None = None
    is_snapshot: bool = False


@dataclass(frozen=True, slots=True)
class SubscriptionAck:
    """The venue's statement of what this connection is now subscribed to."""

    subscriptions: Mapping[str, tuple[str, ...]] = field(hash=False)
    sequence_num: int = 0


@dataclass(frozen=True, slots=True)
class UserOrderUpdate:
    """Cumulative state of one of our orders (the ``user`` channel carries state, not fills).

    ``is_snapshot`` marks the restatement sent after (re)subscribing: it must never
    be counted as new fills. New fills are the change in ``cumulative_quantity``.
    """

    order_id: str
    client_order_id: str | None
    product_id: str
    side: Side
    status: OrderStatus
    venue_status: str
    cumulative_quantity: Decimal
    leaves_quantity: Decimal
    avg_price: Decimal
    total_fees: Decimal
    sequence_num: int = 0
    is_snapshot: bool = False
    order_type: str = ""
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    number_of_fills: int | None = None
    filled_value: Decimal | None = None
    creation_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class UnknownChannel:
    """A message on a channel this client does not interpret (kept, not dropped)."""

    channel: str
    sequence_num: int
    raw: str


@dataclass(frozen=True, slots=True)
class VenueErrorMessage:
    """An ``{"type": "error"}`` message (e.g. a refused subscription)."""

    message: str
    reason: str = ""


Event: TypeAlias = (
    L2Snapshot
    | L2Update
    | TickerEvent
    | MarketTrade
    | CandleEvent
    | Heartbeat
    | StatusEvent
    | SubscriptionAck
    | UserOrderUpdate
    | UnknownChannel
    | VenueErrorMessage
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One WebSocket message: its channel, sequence number, timestamp and events.

    ``sequence_num`` is ``None`` only for messages without one (``type: error``).
    """

    channel: str
    sequence_num: int | None
    timestamp: datetime | None
    events: tuple[Event, ...]
