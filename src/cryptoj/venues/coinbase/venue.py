"""Coinbase Advanced Trade as a :class:`~cryptoj.venues.base.Venue`.

REST calls go through :class:`~cryptoj.venues.coinbase.rest.CoinbaseRestClient`
(pacing, retries, same-id create retries, error mapping); the ``user`` channel
comes through a :class:`~cryptoj.websocket_handler.WebSocketHandler` on the user
WebSocket, subscribed with a fresh JWT each time it (re)connects. The same class
talks to the simulator (``cryptoj sim``): it speaks the same protocol.

What this adapter adds over the REST client:

* :meth:`CoinbaseVenue.find_order` — Coinbase has no "get by client_order_id", so
  the order history is listed (newest first, optionally of one product) and the id
  matched;
* REST fills name only the venue ``order_id``; the adapter keeps a map venue id →
  client_order_id (from creates, the user stream and listed orders) and looks an
  unknown id up once with ``GET /orders/historical/{id}``, so ``Fill.client_order_id``
  is ours whenever the venue knows it;
* the user stream as an async iterator of ``UserOrderUpdate`` / ``UserStreamConnected``
  / ``UserStreamDown``. A ``sequence_num`` gap on the connection, or frames the
  handler had to discard, is reported as ``UserStreamDown`` followed by
  ``UserStreamConnected(reconnect=True)``: the consumer re-syncs from REST.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Final

from cryptoj.errors import MalformedMessage, OrderNotFound
from cryptoj.logging import get_logger
from cryptoj.model.events import UserOrderUpdate
from cryptoj.model.instruments import Product
from cryptoj.model.orders import Fill, OrderSpec
from cryptoj.venues.base import (
    Balance,
    CancelResult,
    FeeTier,
    OrderAck,
    UserStreamConnected,
    UserStreamDown,
    UserStreamItem,
    Venue,
    VenueOrder,
)
from cryptoj.venues.coinbase.auth import CdpKey, ws_jwt
from cryptoj.venues.coinbase.protocol import parse_envelope
from cryptoj.venues.coinbase.rest import CoinbaseRestClient
from cryptoj.websocket_handler import OverflowPolicy, WebSocketHandler, WsConnected, WsDisconnected, WsFrame, WsOverflow

__all__ = ["OPEN_STATUSES", "CoinbaseVenue"]

OPEN_STATUSES: Final = ("OPEN", "PENDING", "QUEUED", "CANCEL_QUEUED")
"""Coinbase order statuses that still rest at the venue."""

log = get_logger(__name__)


class CoinbaseVenue(Venue):
    """Coinbase (or the simulator) through REST + the ``user`` WebSocket channel.

    ``rest`` must carry an API key (every call here is private). ``ws_user_url`` is
    the user WebSocket (``wss://advanced-trade-ws-user.coinbase.com``; the
    simulator's ``.../ws/user``); without it :meth:`user_updates` only reports
    the stream as down, and the order manager polls REST.
    """

    name = "coinbase"

    def __init__(
        self,
        rest: CoinbaseRestClient,
        ws_user_url: str | None = None,
        *,
        key: CdpKey | None = None,
        heartbeat_interval: float = 1.0,
        backoff_base: float = 0.25,
        backoff_cap: float = 10.0,
        find_order_pages: int = 10,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.rest = rest
        self.ws_user_url = ws_user_url
        self._key = key if key is not None else rest.key
        self._heartbeat_interval = heartbeat_interval
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._find_order_pages = find_order_pages
        self._rng = rng
        self._wall_clock = wall_clock
        self._client_ids: dict[str, str] = {}
        self._handler: WebSocketHandler | None = None
        self._connected = False
        self._closed = False

    def __repr__(self) -> str:
        return f"CoinbaseVenue(rest={self.rest!r}, ws_user_url={self.ws_user_url!r})"

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        await self.rest.open()
        if self.ws_user_url is not None and self._handler is None and not self._closed:
            key = self._key

            def jwt() -> str:
                assert key is not None
                return ws_jwt(key, now=self._wall_clock())

            self._handler = WebSocketHandler(
                self.ws_user_url,
                {"user": []},
                jwt_factory=jwt if key is not None else None,
                heartbeat_interval=self._heartbeat_interval,
                backoff_base=self._backoff_base,
                backoff_cap=self._backoff_cap,
                overflow_policy=OverflowPolicy.RESYNC,
                rng=self._rng,
                name="user-ws",
            )
            self._handler.start()

    async def close(self) -> None:
        self._closed = True
        self._connected = False
        if self._handler is not None:
            await self._handler.close()
        await self.rest.close()

    @property
    def user_stream_connected(self) -> bool:
        return self._connected

    # -- reference data ---------------------------------------------------------

    async def products(self) -> list[Product]:
        return await self.rest.products()

    async def fee_tier(self) -> FeeTier:
        return await self.rest.transaction_summary()

    # -- orders -------------------------------------------------------------------

    def _learn(self, order: VenueOrder) -> VenueOrder:
        if order.client_order_id:
            self._client_ids[order.order_id] = order.client_order_id
        return order

    async def create_order(self, spec: OrderSpec) -> OrderAck:
        ack = await self.rest.create_order(spec)
        self._client_ids[ack.order_id] = spec.client_order_id
        return ack

    async def cancel_orders(self, order_ids: Sequence[str]) -> list[CancelResult]:
        if not order_ids:
            return []
        return await self.rest.cancel_orders(order_ids)

    async def find_order(self, client_order_id: str, *, product_id: str | None = None) -> VenueOrder | None:
        orders = await self.rest.list_orders(
            product_ids=[product_id] if product_id else (), max_pages=self._find_order_pages
        )
        for order in orders:
            self._learn(order)
        for order in orders:
            if order.client_order_id == client_order_id:
                return order
        return None

    async def get_order(self, order_id: str) -> VenueOrder:
        return self._learn(await self.rest.get_order(order_id))

    async def open_orders(self, product_id: str | None = None) -> list[VenueOrder]:
        orders = await self.rest.list_orders(product_ids=[product_id] if product_id else (), order_status=OPEN_STATUSES)
        return [self._learn(o) for o in orders if not o.status.is_terminal]

    async def fills(
        self, since: datetime | None = None, order_id: str | None = None, product_id: str | None = None
    ) -> list[Fill]:
        raw = await self.rest.list_fills(
            order_ids=[order_id] if order_id else (),
            product_ids=[product_id] if product_id else (),
            client_order_ids=self._client_ids,
            start=since,
        )
        out: list[Fill] = []
        for fill in raw:
            if since is not None and fill.time < since:
                continue
            if not fill.client_order_id and fill.venue_order_id:
                fill = await self._with_client_id(fill, fill.venue_order_id)
            out.append(fill)
        out.sort(key=lambda f: (f.time, f.trade_id))
        return out

    async def _with_client_id(self, fill: Fill, order_id: str) -> Fill:
        cid = self._client_ids.get(order_id)
        if cid is None:
            try:
                order = await self.get_order(order_id)
            except OrderNotFound:
                order = None
            cid = order.client_order_id if order is not None and order.client_order_id else ""
            self._client_ids[order_id] = cid
        if not cid:
            return fill
        return Fill(
            trade_id=fill.trade_id,
            client_order_id=cid,
            product_id=fill.product_id,
            side=fill.side,
            price=fill.price,
            size=fill.size,
            fee=fill.fee,
            time=fill.time,
            liquidity=fill.liquidity,
            venue_order_id=fill.venue_order_id,
        )

    # -- account ----------------------------------------------------------------------

    async def balances(self) -> Mapping[str, Balance]:
        out: dict[str, Balance] = {}
        for bal in await self.rest.accounts():
            prev = out.get(bal.currency)
            if prev is not None:  # several accounts (portfolios) of one currency: add them up
                bal = Balance(bal.currency, prev.available + bal.available, prev.hold + bal.hold, bal.uuid, bal.name, bal.type)
            out[bal.currency] = bal
        return out

    # -- the user stream ----------------------------------------------------------------

    async def user_updates(self) -> AsyncIterator[UserStreamItem]:
        handler = self._handler
        if handler is None:
            yield UserStreamDown("no user stream (not started, closed, or no ws_user_url)")
            return
        expected: int | None = None
        async for item in handler:
            if isinstance(item, WsConnected):
                expected = None
                self._connected = True
                yield UserStreamConnected(reconnect=item.reconnect)
            elif isinstance(item, WsDisconnected):
                self._connected = False
                yield UserStreamDown(item.reason)
            elif isinstance(item, WsOverflow):
                yield UserStreamDown(f"{item.discarded} user frames discarded (consumer too slow)")
                yield UserStreamConnected(reconnect=True)
            elif isinstance(item, WsFrame):
                try:
                    envelope = parse_envelope(item.data)
                except MalformedMessage as exc:
                    log.warning("user_stream_malformed", error=str(exc))
                    yield UserStreamDown(f"malformed user frame: {exc.reason}")
                    yield UserStreamConnected(reconnect=True)
                    continue
                seq = envelope.sequence_num
                if seq is not None:
                    if expected is not None and seq != expected:
                        yield UserStreamDown(f"sequence gap: expected {expected}, received {seq}")
                        yield UserStreamConnected(reconnect=True)
                    expected = seq + 1
                for event in envelope.events:
                    if isinstance(event, UserOrderUpdate):
                        if event.client_order_id:
                            self._client_ids[event.order_id] = event.client_order_id
                        yield event
        self._connected = False
