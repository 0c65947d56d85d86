"""Helpers shared by every OperatorView: live update fan-out, the equity series, order filters, risk limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cryptoj.api.views import EquityHistory, UpdateHub, dec, filter_orders, risk_view
from cryptoj.config import RiskConfig
from cryptoj.errors import InvalidValue
from cryptoj.model.money import Side
from cryptoj.model.orders import Order, OrderKind, OrderSpec
from cryptoj.risk_management import RiskEngine
from tests.api_support import LocalView

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_dec_is_exact() -> None:
    assert dec(Decimal("1E-8")) == "0.00000001"
    assert dec(Decimal("1.500")) == "1.500"
    assert dec(None) is None


async def test_hub_fans_out_and_ends() -> None:
    hub = UpdateHub(lambda: T0, maxsize=10)
    a, b = hub.subscribe(), hub.subscribe()
    assert hub.subscribers == 2
    hub.publish("order", {"n": 1})
    hub.publish("fill", {"n": 2})
    got_a = [await a.__anext__(), await a.__anext__()]
    assert [(u.kind, u.data["n"]) for u in got_a] == [("order", 1), ("fill", 2)]
    assert (await b.__anext__()).data == {"n": 1}
    await a.aclose()  # type: ignore[attr-defined]
    assert hub.subscribers == 1
    hub.close()
    assert (await b.__anext__()).data == {"n": 2}
    with pytest.raises(StopAsyncIteration):
        await b.__anext__()
    hub.publish("order", {"n": 3})  # after close: ignored
    late = hub.subscribe()
    with pytest.raises(StopAsyncIteration):
        await late.__anext__()


async def test_a_slow_subscriber_loses_the_oldest_and_is_told() -> None:
    hub = UpdateHub(lambda: T0, maxsize=3)
    sub = hub.subscribe()
    for i in range(5):
        hub.publish("equity", {"i": i})
    first = await sub.__anext__()
    assert first.kind == "lagged" and first.data == {"dropped": 2}
    rest = [(await sub.__anext__()).data["i"] for _ in range(3)]
    assert rest == [2, 3, 4]
    hub.close()  # the end marker gets through even to a full queue
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(sub.__anext__(), 5)


def test_hub_and_history_validation() -> None:
    with pytest.raises(InvalidValue):
        UpdateHub(lambda: T0, maxsize=0)
    with pytest.raises(InvalidValue):
        EquityHistory(1)
    h = EquityHistory(3)
    for i in range(5):
        h.add(T0 + timedelta(seconds=i), Decimal(100 + i), Decimal(0), Decimal(i))
    assert len(h) == 3
    assert [p.equity for p in h.last(2)] == ["103", "104"]
    with pytest.raises(InvalidValue):
        h.last(0)


def test_filter_orders_validation_and_order() -> None:
    spec = OrderSpec("c-1", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=Decimal(1), limit_price=Decimal(10))
    undated = Order(OrderSpec("c-2", "BTC-USD", Side.SELL, OrderKind.LIMIT, base_size=Decimal(1), limit_price=Decimal(11)))
    dated = Order(spec, created_at=T0)
    out = filter_orders([undated, dated], "all", product_id=None, side="buy", status=None, limit=5)
    assert [o.client_order_id for o in out] == ["c-1"]
    both = filter_orders([undated, dated], "open", product_id="BTC-USD", side=None, status="new", limit=5)
    assert [o.client_order_id for o in both] == ["c-1", "c-2"]
    with pytest.raises(InvalidValue, match="limit"):
        filter_orders([], "all", product_id=None, side=None, status=None, limit=0)


def test_risk_view_limits_and_usage() -> None:
    config = RiskConfig(max_open_orders=4, daily_loss_limit_fraction=Decimal("0.1"), stale_data_seconds=5.0)
    engine = RiskEngine(config, LocalView.__new__(LocalView), lambda: T0)
    view = risk_view(engine, config, {"max_open_orders": Decimal(3), "stale_data_seconds": Decimal("1.25")}, [])
    limits = {lim.name: lim for lim in view.limits}
    assert limits["max_open_orders"].fraction_used == 0.75 and limits["max_open_orders"].usage == "3"
    assert limits["stale_data_seconds"].limit == "5.0" and limits["stale_data_seconds"].fraction_used == 0.25
    assert limits["daily_loss_limit_fraction"].usage is None and limits["daily_loss_limit_fraction"].fraction_used is None
    assert limits["max_order_notional"].limit is None
    assert view.trading_state == "ACTIVE" and view.equity is None
