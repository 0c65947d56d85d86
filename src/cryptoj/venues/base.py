"""The Venue interface every exchange adapter implements (execution side).

Services (the order manager, the emergency manager, the engine) talk to an
exchange only through :class:`Venue`; the concrete adapters are
:class:`~cryptoj.venues.coinbase.venue.CoinbaseVenue` (REST + the ``user``
WebSocket channel), the paper venue and the backtest venue. The result types are
the sans-IO protocol's and the model's, re-exported here so a service needs to
import nothing else:

* :class:`VenueOrder` — an order as the venue reports it (status, cumulative
  filled size/value/fees, configuration);
* :class:`OrderAck` — a successful create (the venue's order id);
* :class:`CancelResult`, :class:`Balance`, :class:`FeeTier`;
* :class:`~cryptoj.model.orders.Fill` — one execution with its venue trade id.

The user-order stream (:meth:`Venue.user_updates`) is an **async iterator**, in the
style of :meth:`cryptoj.market_data.MarketDataService.subscribe`. It yields

* :class:`~cryptoj.model.events.UserOrderUpdate` — the *cumulative* state of one
  of our orders (``is_snapshot`` marks the restatement after a (re)subscribe: it
  is state, never new fills);
* :class:`UserStreamConnected` — a connection is up and subscribed; with
  ``reconnect=True`` updates may have been missed, so a consumer re-syncs from
  REST (orders and fills) and treats the snapshot that follows as a snapshot;
* :class:`UserStreamDown` — the stream is down (or lost messages: a sequence gap
  or a consumer overflow); until the next :class:`UserStreamConnected` a
  consumer falls back to REST polling.

Errors are those of :mod:`cryptoj.errors`: ``OrderRejected(reason)`` (the venue
refused), ``RateLimited``, ``VenueUnavailable`` (not reached / 5xx, request not
processed as far as we know), ``AmbiguousOutcome`` (a create that may or may not
have reached the venue — resolve it with :meth:`Venue.find_order` and re-send with
the *same* ``client_order_id``), ``OrderNotFound``, ``AuthenticationFailed``.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from cryptoj.model.events import UserOrderUpdate
from cryptoj.model.instruments import Product
from cryptoj.model.orders import Fill, OrderKind, OrderSpec
from cryptoj.venues.coinbase.protocol import Balance, CancelResult, FeeTier, VenueOrder
from cryptoj.venues.coinbase.protocol import CreatedOrder as OrderAck

__all__ = [
    "Balance",
    "CancelResult",
    "FeeTier",
    "Fill",
    "OrderAck",
    "UserStreamConnected",
    "UserStreamDown",
    "UserStreamItem",
    "Venue",
    "VenueOrder",
]


@dataclass(frozen=True, slots=True)
class UserStreamConnected:
    """The user stream is connected and subscribed.

    ``reconnect`` is True for every connection after the first: whatever happened
    while it was down must be fetched from REST, and the snapshot that follows
    restates state (it never means new fills).
    """

    reconnect: bool


@dataclass(frozen=True, slots=True)
class UserStreamDown:
    """The user stream stopped (or lost messages); ``reason`` says why."""

    reason: str


UserStreamItem: TypeAlias = UserOrderUpdate | UserStreamConnected | UserStreamDown


class Venue(abc.ABC):
    """An exchange as the services see it. Every method may raise :mod:`cryptoj.errors` venue errors."""

    #: a short stable name, used as the ``venue`` column in storage (``"coinbase"``, ``"paper"``, ...)
    name: str = "venue"

    #: order kinds the venue executes natively (stop-limit, bracket...)
    native_kinds: frozenset[OrderKind] = frozenset(OrderKind)

    # -- lifecycle ----------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections (REST session, user stream). Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection and task; a running :meth:`user_updates` iteration ends."""

    # -- reference data -----------------------------------------------------

    @abc.abstractmethod
    async def products(self) -> list[Product]:
        """Every tradable product with its rules."""

    @abc.abstractmethod
    async def fee_tier(self) -> FeeTier:
        """The account's maker/taker fee rates."""

    # -- orders ---------------------------------------------------------------

    @abc.abstractmethod
    async def create_order(self, spec: OrderSpec) -> OrderAck:
        """Place ``spec``. Sending the same ``client_order_id`` again never places a second order.

        Raises ``OrderRejected``, ``RateLimited``, ``VenueUnavailable`` (not sent) or
        ``AmbiguousOutcome`` (may have been placed).
        """

    @abc.abstractmethod
    async def cancel_orders(self, order_ids: Sequence[str]) -> list[CancelResult]:
        """Cancel by venue order id; one result per id (idempotent, safe to retry)."""

    @abc.abstractmethod
    async def find_order(self, client_order_id: str, *, product_id: str | None = None) -> VenueOrder | None:
        """The order placed with ``client_order_id`` (any status), or None if the venue has none."""

    @abc.abstractmethod
    async def get_order(self, order_id: str) -> VenueOrder:
        """One order by venue id; ``OrderNotFound`` when unknown."""

    @abc.abstractmethod
    async def open_orders(self, product_id: str | None = None) -> list[VenueOrder]:
        """Every order the venue holds open (optionally of one product)."""

    @abc.abstractmethod
    async def fills(
        self, since: datetime | None = None, order_id: str | None = None, product_id: str | None = None
    ) -> list[Fill]:
        """Executions (at or after ``since``; of one venue order id / product), oldest first.

        ``Fill.client_order_id`` is ours when the venue knows it, else ``""``.
        """

    # -- account ----------------------------------------------------------------

    @abc.abstractmethod
    async def balances(self) -> Mapping[str, Balance]:
        """Currency → balance (available and hold)."""

    # -- streams ----------------------------------------------------------------

    @abc.abstractmethod
    def user_updates(self) -> AsyncIterator[UserStreamItem]:
        """The user-order stream (see the module doc); ends when the venue is closed."""

    @property
    def user_stream_connected(self) -> bool:
        """True while the user stream is up (REST polling is the fallback when it is not)."""
        return False
