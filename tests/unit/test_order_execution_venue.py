"""CoinbaseVenue's user stream: WebSocket items → UserOrderUpdate / UserStreamConnected / UserStreamDown.

The WebSocket handler is replaced by a scripted sequence of its items (the frames are real
Coinbase-shaped bytes, parsed by the real protocol code); the REST side is covered against the
simulator in tests/integration/test_order_execution_sim.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import orjson

from cryptoj.model.events import UserOrderUpdate
from cryptoj.model.orders import OrderStatus
from cryptoj.venues.base import UserStreamConnected, UserStreamDown, UserStreamItem, Venue
from cryptoj.venues.coinbase.rest import CoinbaseRestClient
from cryptoj.venues.coinbase.venue import CoinbaseVenue
from cryptoj.websocket_handler import OverflowPolicy, WsConnected, WsDisconnected, WsFrame, WsItem, WsOverflow


def user_frame(seq: int, *, kind: str = "update", filled: str = "0", status: str = "OPEN", coid: str = "c1") -> bytes:
    order = {
        "order_id": "o1", "client_order_id": coid, "product_id": "BTC-USD", "order_side": "BUY", "order_type": "Limit",
        "status": status, "cumulative_quantity": filled, "leaves_quantity": "1", "avg_price": "100", "total_fees": "0",
        "creation_time": "2026-03-01T12:00:00Z", "number_of_fills": "0", "filled_value": "0",
    }
    return orjson.dumps({
        "channel": "user", "client_id": "", "timestamp": "2026-03-01T12:00:00.000000001Z", "sequence_num": seq,
        "events": [{"type": kind, "orders": [order]}],
    })


def heartbeat_frame(seq: int) -> bytes:
    return orjson.dumps({
        "channel": "heartbeats", "client_id": "", "timestamp": "2026-03-01T12:00:00Z", "sequence_num": seq,
        "events": [{"current_time": "2026-03-01 12:00:00.0 +0000 UTC m=+1.0", "heartbeat_counter": seq}],
    })


class ScriptedHandler:
    """Stands in for the WebSocket handler: yields the given items, then ends (as a closed handler does)."""

    def __init__(self, items: Sequence[WsItem]) -> None:
        self.items = list(items)
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[WsItem]:
        for item in self.items:
            yield item

    async def close(self) -> None:
        self.closed = True


def frame(data: bytes, conn: int = 1) -> WsFrame:
    return WsFrame(data=data, recv_ns=0, connection_id=conn, seq=None)


async def collect(venue: CoinbaseVenue) -> list[UserStreamItem]:
    return [item async for item in venue.user_updates()]


def venue_with(items: Sequence[WsItem]) -> tuple[CoinbaseVenue, ScriptedHandler]:
    venue = CoinbaseVenue(CoinbaseRestClient("http://127.0.0.1:1"), "ws://127.0.0.1:1/ws/user")
    handler = ScriptedHandler(items)
    venue._handler = handler  # type: ignore[assignment]
    return venue, handler


async def test_updates_connect_and_disconnect_markers() -> None:
    venue, _ = venue_with([
        WsConnected(1, reconnect=False),
        frame(user_frame(0, kind="snapshot")),
        frame(heartbeat_frame(1)),
        frame(user_frame(2, filled="0.5")),
        WsDisconnected(1, "closed by peer"),
        WsConnected(2, reconnect=True),
        frame(user_frame(0, kind="snapshot", filled="0.5"), conn=2),
    ])
    items = await collect(venue)
    kinds = [type(i).__name__ for i in items]
    assert kinds == ["UserStreamConnected", "UserOrderUpdate", "UserOrderUpdate", "UserStreamDown", "UserStreamConnected",
                     "UserOrderUpdate"]
    first, second = items[1], items[2]
    assert isinstance(first, UserOrderUpdate) and first.is_snapshot and first.status is OrderStatus.OPEN
    assert isinstance(second, UserOrderUpdate) and not second.is_snapshot and second.cumulative_quantity == Decimal("0.5")
    assert second.status is OrderStatus.PARTIALLY_FILLED
    assert items[0] == UserStreamConnected(reconnect=False) and items[4] == UserStreamConnected(reconnect=True)
    assert items[3] == UserStreamDown("closed by peer")
    assert venue._client_ids == {"o1": "c1"}
    assert not venue.user_stream_connected  # the handler ended


async def test_sequence_gap_malformed_frame_and_overflow_ask_for_a_resync() -> None:
    venue, _ = venue_with([
        WsConnected(1, reconnect=False),
        frame(user_frame(0)),
        frame(user_frame(3)),  # 1 and 2 never came
        frame(b"{not json"),
        WsOverflow(1, discarded=7, policy=OverflowPolicy.RESYNC),
    ])
    items = await collect(venue)
    downs = [i.reason for i in items if isinstance(i, UserStreamDown)]
    assert downs[0] == "sequence gap: expected 1, received 3"
    assert downs[1].startswith("malformed user frame: invalid JSON")
    assert downs[2] == "7 user frames discarded (consumer too slow)"
    resyncs = [i for i in items if isinstance(i, UserStreamConnected) and i.reconnect]
    assert len(resyncs) == 3
    assert sum(isinstance(i, UserOrderUpdate) for i in items) == 2


async def test_connected_flag_follows_the_stream() -> None:
    states: list[bool] = []
    venue, _ = venue_with([WsConnected(1, reconnect=False), WsDisconnected(1, "stall")])
    async for _item in venue.user_updates():
        states.append(venue.user_stream_connected)
    assert states == [True, False]


async def test_no_stream_without_a_url_or_before_start() -> None:
    venue = CoinbaseVenue(CoinbaseRestClient("http://127.0.0.1:1"))
    assert [i async for i in venue.user_updates()] == [UserStreamDown("no user stream (not started, closed, or no ws_user_url)")]
    await venue.start()  # no ws url: only the REST session
    assert venue._handler is None
    assert repr(venue) == "CoinbaseVenue(rest=CoinbaseRestClient(base_url='http://127.0.0.1:1', key=None), ws_user_url=None)"
    assert await venue.cancel_orders([]) == []
    await venue.close()
    await venue.start()  # closed: no handler is created any more
    assert venue._handler is None
    await venue.close()


async def test_close_closes_the_handler() -> None:
    venue, handler = venue_with([])
    await venue.close()
    assert handler.closed


def test_venue_base_defaults() -> None:
    """A venue that does not say otherwise reports its user stream as down (so callers poll REST)."""
    prop: Any = Venue.__dict__["user_stream_connected"]
    assert prop.fget(CoinbaseVenue(CoinbaseRestClient("http://127.0.0.1:1"))) is False
    assert Venue.name == "venue" and len(Venue.native_kinds) == 4
