"""An in-memory :class:`~cryptoj.venues.base.Venue` for unit tests of the order manager.

It keeps orders and fills like a venue would (idempotent creates by ``client_order_id``,
cancels, fills), and can be told to fail: ``venue.fail("create_order", exc, ...)`` makes the
next calls of that method raise those exceptions in turn. The user stream is fed by hand
with :meth:`FakeVenue.push`. Integration tests use the real simulator instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from cryptoj.errors import OrderNotFound, OrderRejected
from cryptoj.model.events import UserOrderUpdate
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side
from cryptoj.model.orders import Fill, Liquidity, OrderKind, OrderSpec, OrderStatus, TimeInForce
from cryptoj.venues.base import Balance, CancelResult, FeeTier, OrderAck, UserStreamItem, Venue, VenueOrder
from cryptoj.venues.coinbase.protocol import OrderConfiguration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

BTC = Product(
    product_id="BTC-USD", base_currency="BTC", quote_currency="USD", base_increment=Decimal("0.0001"),
    quote_increment=Decimal("0.01"), price_increment=Decimal("0.01"), base_min_size=Decimal("0.001"),
    base_max_size=Decimal("100"), quote_min_size=Decimal("1"), quote_max_size=Decimal("1000000"),
)


def configuration(spec: OrderSpec) -> OrderConfiguration:
    return OrderConfiguration(
        name=f"{spec.kind.value.lower()}_{spec.time_in_force.value.lower()}", kind=spec.kind, time_in_force=spec.time_in_force,
        base_size=spec.base_size, quote_size=spec.quote_size, limit_price=spec.limit_price, stop_price=spec.stop_price,
        stop_direction=spec.stop_direction, stop_trigger_price=spec.stop_trigger_price, post_only=spec.post_only,
        end_time=spec.end_time,
    )


class FakeVenue(Venue):
    name = "fake"

    def __init__(self, products: Sequence[Product] = (BTC,)) -> None:
        self._products = list(products)
        self.orders: dict[str, VenueOrder] = {}
        self.all_fills: list[Fill] = []
        self.failures: dict[str, list[BaseException]] = defaultdict(list)
        self.calls: list[str] = []
        self.cancel_override: dict[str, CancelResult] = {}
        self.drop_cancel_results = False
        self.fills_hidden = False
        self.started = 0
        self.closed = 0
        self._stream: asyncio.Queue[UserStreamItem | None] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._trades = itertools.count(1)
        self.balances_data = {"USD": Balance("USD", Decimal(1000), Decimal(0)), "BTC": Balance("BTC", Decimal(1), Decimal(0))}
        self.connected = False

    # -- scripting ---------------------------------------------------------------

    def fail(self, method: str, *errors: BaseException) -> None:
        self.failures[method].extend(errors)

    def _call(self, method: str) -> None:
        self.calls.append(method)
        queue = self.failures.get(method)
        if queue:
            raise queue.pop(0)

    def place(self, spec: OrderSpec, status: OrderStatus = OrderStatus.OPEN, *, with_config: bool = True) -> VenueOrder:
        """Put an order at the venue directly (as if placed elsewhere, or before a crash)."""
        oid = f"v{next(self._ids)}"
        order = VenueOrder(
            order_id=oid, client_order_id=spec.client_order_id, product_id=spec.product_id, side=spec.side, status=status,
            venue_status=status.value, configuration=configuration(spec) if with_config else None, filled_size=Decimal(0),
            average_filled_price=None, total_fees=Decimal(0), filled_value=Decimal(0), number_of_fills=0, created_time=T0,
        )
        self.orders[oid] = order
        return order

    def execute(self, order_id: str, size: str, price: str, fee: str = "0.1", at: datetime = T0) -> Fill:
        """A fill of ``order_id`` at the venue; the order's cumulative state follows."""
        vo = self.orders[order_id]
        fill = Fill(
            trade_id=f"t{next(self._trades)}", client_order_id=vo.client_order_id or "", product_id=vo.product_id,
            side=vo.side, price=Decimal(price), size=Decimal(size), fee=Decimal(fee), time=at, liquidity=Liquidity.MAKER,
            venue_order_id=order_id,
        )
        self.all_fills.append(fill)
        filled = vo.filled_size + fill.size
        base = vo.configuration.base_size if vo.configuration else None
        status = OrderStatus.FILLED if base is not None and filled >= base else OrderStatus.PARTIALLY_FILLED
        self.orders[order_id] = dataclasses.replace(
            vo, filled_size=filled, total_fees=vo.total_fees + fill.fee, filled_value=vo.filled_value + fill.notional,
            number_of_fills=vo.number_of_fills + 1, status=status,
            venue_status="FILLED" if status is OrderStatus.FILLED else "OPEN",
        )
        return fill

    def update_of(self, order_id: str, *, snapshot: bool = False) -> UserOrderUpdate:
        vo = self.orders[order_id]
        base = vo.configuration.base_size if vo.configuration and vo.configuration.base_size else Decimal(0)
        return UserOrderUpdate(
            order_id=vo.order_id, client_order_id=vo.client_order_id, product_id=vo.product_id, side=vo.side, status=vo.status,
            venue_status=vo.venue_status, cumulative_quantity=vo.filled_size,
            leaves_quantity=max(base - vo.filled_size, Decimal(0)),
            avg_price=vo.filled_value / vo.filled_size if vo.filled_size else Decimal(0), total_fees=vo.total_fees,
            is_snapshot=snapshot,
        )

    def push(self, item: UserStreamItem | None) -> None:
        self._stream.put_nowait(item)

    # -- the Venue interface -----------------------------------------------------------

    async def start(self) -> None:
        self.started += 1

    async def close(self) -> None:
        self.closed += 1
        self._stream.put_nowait(None)

    async def products(self) -> list[Product]:
        self._call("products")
        return list(self._products)

    async def fee_tier(self) -> FeeTier:
        return FeeTier("fake", Decimal("0.006"), Decimal("0.004"))

    async def create_order(self, spec: OrderSpec) -> OrderAck:
        self._call("create_order")
        for vo in self.orders.values():
            if vo.client_order_id == spec.client_order_id:
                return OrderAck(vo.order_id, spec.client_order_id, spec.product_id, spec.side)
        status = OrderStatus.OPEN
        vo = self.place(spec, status)
        return OrderAck(vo.order_id, spec.client_order_id, spec.product_id, spec.side)

    async def cancel_orders(self, order_ids: Sequence[str]) -> list[CancelResult]:
        self._call("cancel_orders")
        if self.drop_cancel_results:
            return []
        out = []
        for oid in order_ids:
            if oid in self.cancel_override:
                out.append(self.cancel_override[oid])
                continue
            vo = self.orders.get(oid)
            if vo is None or vo.status.is_terminal:
                out.append(CancelResult(oid, False, "UNKNOWN_CANCEL_ORDER"))
                continue
            self.orders[oid] = dataclasses.replace(vo, status=OrderStatus.CANCELLED, venue_status="CANCELLED")
            out.append(CancelResult(oid, True))
        return out

    async def find_order(self, client_order_id: str, *, product_id: str | None = None) -> VenueOrder | None:
        self._call("find_order")
        return next((vo for vo in self.orders.values() if vo.client_order_id == client_order_id), None)

    async def get_order(self, order_id: str) -> VenueOrder:
        self._call("get_order")
        vo = self.orders.get(order_id)
        if vo is None:
            raise OrderNotFound(f"order {order_id} not found", status=404)
        return vo

    async def open_orders(self, product_id: str | None = None) -> list[VenueOrder]:
        self._call("open_orders")
        return [vo for vo in self.orders.values() if not vo.status.is_terminal and product_id in (None, vo.product_id)]

    async def fills(
        self, since: datetime | None = None, order_id: str | None = None, product_id: str | None = None
    ) -> list[Fill]:
        self._call("fills")
        if self.fills_hidden:
            return []
        return [
            f for f in self.all_fills
            if (since is None or f.time >= since) and order_id in (None, f.venue_order_id) and product_id in (None, f.product_id)
        ]

    async def balances(self) -> Mapping[str, Balance]:
        self._call("balances")
        return dict(self.balances_data)

    async def user_updates(self) -> AsyncIterator[UserStreamItem]:
        while True:
            item = await self._stream.get()
            if item is None:
                return
            yield item

    @property
    def user_stream_connected(self) -> bool:
        return self.connected


def limit_spec(coid: str, size: str = "0.01", price: str = "100", side: Side = Side.BUY) -> OrderSpec:
    return OrderSpec(coid, "BTC-USD", side, OrderKind.LIMIT, base_size=Decimal(size), limit_price=Decimal(price))


def market_spec(coid: str, size: str = "0.01", side: Side = Side.BUY) -> OrderSpec:
    return OrderSpec(coid, "BTC-USD", side, OrderKind.MARKET, base_size=Decimal(size), time_in_force=TimeInForce.IOC)


__all__ = ["BTC", "T0", "FakeVenue", "OrderRejected", "limit_spec", "market_spec"]
